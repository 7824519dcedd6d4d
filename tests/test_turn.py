"""The turn, end to end with real parts: espeak question -> real WebSocket client -> daemon -> spoken reply."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from protocol import messages as m
from protocol.client import VoicedClient
from tests.support.speech import compose
from tests.support.turn import daemon, turn_settings

TOKEN = "test-token-0123456789abcdef"


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


async def _gather_until_done(client: VoicedClient, n_done: int = 1, timeout: float = 60) -> list:
    got: list = []

    async def run() -> None:
        done = 0
        async for msg in client.events():
            got.append(msg)
            if isinstance(msg, m.ReplyDone):
                done += 1
            if done == n_done and isinstance(msg, m.State) and msg.state == "idle":
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_spoken_question_reaches_every_listener_as_speech() -> None:
    settings = turn_settings()
    question = compose([0.5, "What is the capital of France?", 1.0], rate=22050).pcm
    async with daemon(settings, TOKEN) as (pipeline, server, _):
        url = server.url
        async with (
            VoicedClient(url, TOKEN, name="a", audio_rate=24000) as a,
            VoicedClient(url, TOKEN, name="b", audio_rate=24000) as b,
            VoicedClient(url, TOKEN, name="mic", roles=["microphone", "listener"], audio_rate=16000) as mic,
        ):
            la = asyncio.create_task(_gather_until_done(a))
            lb = asyncio.create_task(_gather_until_done(b))
            reply_task = asyncio.create_task(mic.collect_reply())
            await mic.send_audio(question, 22050)
            reply = await asyncio.wait_for(reply_task, 60)
            msgs_a, msgs_b = await la, await lb

    assert reply.transcript is not None and {"capital", "france"} <= set(reply.transcript.lower().replace("?", "").split())
    assert reply.text.strip(), "the model said nothing"
    assert reply.rate == 16000 and reply.audio().size > 16000 * 0.3
    assert _rms(reply.audio()) > 300, "reply audio is silent"
    t = reply.timings_ms
    assert t["end_of_speech_to_first_audio"] > 0
    # The silence that ended the turn is measured, not assumed (the adaptive end of turn varies it between its
    # bounds), and last word -> first audio adds it to the time after the end of speech.
    act = settings.activation
    assert act.hangover_complete_ms <= t["end_of_turn_silence"] <= act.hangover_incomplete_ms + 2 * settings.audio.frame_ms, t
    assert t["last_word_to_first_audio"] == pytest.approx(t["end_of_speech_to_first_audio"] + t["end_of_turn_silence"], abs=0.2)

    states = [x.state for x in msgs_a if isinstance(x, m.State)]
    assert states[:4] == ["listening", "thinking", "speaking", "idle"], states
    kinds = [type(x).__name__ for x in msgs_a if not hasattr(x, "pcm")]
    assert (
        kinds.index("SpeechStarted")
        < kinds.index("SpeechEnded")
        < kinds.index("Transcript")
        < kinds.index("ReplyStarted")
        < kinds.index("ReplyDone")
    )

    audio_a = np.concatenate([x.pcm for x in msgs_a if hasattr(x, "pcm")])
    audio_b = np.concatenate([x.pcm for x in msgs_b if hasattr(x, "pcm")])
    assert all(x.rate == 24000 for x in msgs_a if hasattr(x, "pcm"))
    assert np.array_equal(audio_a, audio_b), "two listeners at the same rate must get identical audio"
    assert abs(len(audio_a) / 24000 - len(reply.audio()) / 16000) < 0.05


async def test_text_query_is_answered_and_remembered() -> None:
    settings = turn_settings()
    async with daemon(settings, TOKEN) as (pipeline, server, collector):
        async with VoicedClient(server.url, TOKEN) as c:
            rid = await c.text_query("Hello there, who are you?")
            reply = await asyncio.wait_for(c.collect_reply(request_id=rid), 60)
            assert reply.text and reply.request_id == rid
            rid2 = await c.text_query("And what did I just ask?")
            await asyncio.wait_for(c.collect_reply(request_id=rid2), 60)
        history = pipeline.assistant.memory.exchanges
        assert [h.user for h in history] == ["Hello there, who are you?", "And what did I just ask?"]
        # the second turn reused the cached prefix: it prefilled fewer tokens than its whole prompt
        second = pipeline.turns_done[-1].timings_ms
        prompt_len = len(pipeline.assistant.conversation.tokens)
        assert 0 < second["prefill_tokens"] < prompt_len


async def test_barge_in_cancels_the_reply_and_history_records_it() -> None:
    settings = turn_settings(model={"max_new_tokens": 96}, activation={"barge_in_min_ms": 200})
    first = compose([0.5, "Tell me a very long story about the sea.", 1.0]).pcm
    second = compose([0.3, "What time is it?", 1.0], seed=2).pcm
    async with daemon(settings, TOKEN) as (pipeline, server, collector):
        async with VoicedClient(server.url, TOKEN, roles=["microphone", "listener"], audio_rate=16000) as mic:
            await mic.send_audio(first, 16000)
            async for msg in mic.events():  # wait until the daemon is speaking its reply
                if isinstance(msg, m.State) and msg.state == "speaking":
                    break
            await mic.send_audio(second, 16000, realtime=True)
            done = []
            async for msg in mic.events():
                if isinstance(msg, m.ReplyDone):
                    done.append(msg)
                    if len(done) == 2:
                        break
    assert done[0].interrupted is True
    assert done[1].interrupted is False
    history = pipeline.assistant.memory.exchanges
    assert history[0].interrupted and not history[1].interrupted
    assert "time" in history[1].user.lower()


async def test_half_duplex_own_voice_does_not_start_a_turn() -> None:
    async def run(half_duplex: bool) -> list:
        settings = turn_settings(model={"max_new_tokens": 64}, audio={"half_duplex": half_duplex})
        q = compose([0.3, "What is the weather like today?", 0.8], noise_dbfs=None).pcm
        async with daemon(settings, TOKEN) as (pipeline, server, collector):
            await pipeline.feed("local", q)
            while pipeline.state != "speaking":
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # the reply audio is synthesised faster than real time
            echo = np.concatenate(collector.audio)
            from voiced.audio.resample import resample

            echo = resample(echo, collector.rate, 16000)
            step = 480
            for i in range(0, len(echo), step):  # our own voice, back through the local microphone, in real time
                if pipeline.state != "speaking":
                    break
                await pipeline.feed("local", echo[i : i + step])
                await asyncio.sleep(step / 16000)
            await asyncio.sleep(0.1)
            return list(collector.messages)

    muted = await run(True)
    assert sum(isinstance(x, m.SpeechStarted) for x in muted) == 1, "our own voice started a turn"
    assert sum(isinstance(x, m.ReplyDone) for x in muted) == 1
    # control: without half duplex the same echo is heard as speech, so the assertion above can fail
    open_mic = await run(False)
    assert sum(isinstance(x, m.SpeechStarted) for x in open_mic) >= 2


async def _speak_in_real_time(pipeline, pcm: np.ndarray) -> None:
    """30 ms blocks at the pace a microphone delivers them, so passes that run while the user speaks can run."""
    t0 = asyncio.get_running_loop().time()
    for n, i in enumerate(range(0, len(pcm), 480)):
        await pipeline.feed("local", pcm[i : i + 480])
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.03 - asyncio.get_running_loop().time()))


@pytest.mark.parametrize("every_s", [0.8, 0.0])
async def test_words_are_prefilled_while_the_user_is_still_speaking(every_s: float) -> None:
    """A long question, spoken in real time: with prefill_while_speaking_s its first words are in the cache before
    the speaker stops (counted in reply_done's timings), and the turn is answered as usual; 0 turns it off."""
    settings = turn_settings(activation={"prefill_while_speaking_s": every_s})
    question = "Could you please tell me, in one short sentence, what the capital city of France is?"
    pcm = compose([0.4, question, 1.2], seed=3).pcm
    async with daemon(settings, TOKEN) as (pipeline, _, collector):
        await _speak_in_real_time(pipeline, pcm)
        await asyncio.wait_for(collector.finished.wait(), 60)
    done = next(x for x in collector.messages if isinstance(x, m.ReplyDone))
    transcript = next(x.text for x in collector.messages if isinstance(x, m.Transcript) and x.final)
    assert {"capital", "france"} <= set(transcript.lower().replace("?", "").replace(",", "").split()), transcript
    early = done.timings_ms.get("prefill_while_speaking_tokens", 0)
    print(f"\nprefilled while speaking: {early:.0f} tokens; timings {done.timings_ms}")
    if every_s:
        assert early >= 5, done.timings_ms  # several words' worth, plus the template's closing tokens
    else:
        assert early == 0, done.timings_ms
