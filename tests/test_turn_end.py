"""Where a spoken turn ends, in the running daemon: a held push-to-talk button keeps it open through pauses, and
a client that stops sending inside a turn still gets it ended (the segmenter's clock is the samples fed)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from protocol import messages as m
from protocol.client import VoicedClient
from tests.support.speech import compose
from tests.support.turn import daemon, turn_settings

TOKEN = "test-token-0123456789abcdef"


def _transcripts(collector) -> list[str]:
    return [x.text for x in collector.messages if isinstance(x, m.Transcript) and x.final and x.text]


@pytest.mark.parametrize("mode", ["push", "always"])
async def test_a_held_button_keeps_the_turn_open_through_a_pause(mode: str) -> None:
    # Holding the page's button through "What is the capital of" + 2 s + "France?" gave two turns.
    settings = turn_settings(activation={"mode": mode})
    speech = compose([0.4, "What is the capital of", 2.0, "France?", 0.3], seed=11).pcm
    async with daemon(settings, TOKEN, pace=False) as (pipeline, server, collector):
        async with VoicedClient(server.url, TOKEN, roles=["microphone", "listener"], audio_rate=16000) as c:
            await c.send(m.PushToTalk(pressed=True))
            await c.send_audio(speech, 16000, end=False)
            await asyncio.sleep(0.5)  # the pause is long over on the segmenter's clock: still one open turn
            assert not _transcripts(collector), "the turn ended at a pause while the button was held"
            await c.send(m.PushToTalk(pressed=False))
            reply = await asyncio.wait_for(c.collect_reply(), 60)
        async with asyncio.timeout(30):
            while pipeline._tasks or pipeline.turn is not None:
                await asyncio.sleep(0.05)
    heard = _transcripts(collector)
    assert len(heard) == 1, f"one press, one turn; got {heard}"
    assert "capital" in heard[0].lower() and "france" in heard[0].lower()
    assert reply.text
    assert len([x for x in collector.messages if isinstance(x, m.ReplyDone)]) == 1


async def test_a_client_that_stops_sending_mid_turn_still_gets_an_answer() -> None:
    # A satellite that gates its silence: a spoken question, half a second of zeros, then nothing more on an
    # open connection (no audio_end). It used to wait for ever for silence that never came.
    settings = turn_settings()
    question = compose([0.4, "What is the capital of France?"], seed=12).pcm
    clip = np.concatenate([question, np.zeros(8000, np.int16)])
    async with daemon(settings, TOKEN, pace=False) as (pipeline, server, collector):
        async with VoicedClient(server.url, TOKEN, roles=["microphone", "listener"], audio_rate=16000) as c:
            await c.send_audio(clip, 16000, end=False)
            reply = await asyncio.wait_for(c.collect_reply(), 60)
            assert c.connection.state.name == "OPEN"  # answered while the client still holds its stream open
    heard = _transcripts(collector)
    assert len(heard) == 1 and "france" in heard[0].lower(), heard
    assert reply.text
