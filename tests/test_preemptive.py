"""The preemptive reply (voiced.turn.draft), end to end on the real pipeline: tiny real model, real Whisper, real
espeak speech fed in real time. A draft whose user goes on is never heard and never remembered; a draft on the
turn's final words is the reply; a command's words are never drafted."""

from __future__ import annotations

import asyncio

import numpy as np

from protocol import messages as m
from tests.support.speech import compose
from tests.support.turn import daemon, turn_settings

TOKEN = "test-token-0123456789abcdef"


async def speak(pipeline, pcm: np.ndarray) -> None:
    """30 ms blocks at a microphone's pace, so that the pause's guess lands while the user is silent."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for n, i in enumerate(range(0, len(pcm), 480)):
        await pipeline.feed("local", pcm[i : i + 480])
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.03 - loop.time()))


def settings(preemptive: bool = True, **activation: object):
    return turn_settings(activation={"preemptive_reply": preemptive, "prefill_while_speaking_s": 0, **activation})


async def test_a_draft_whose_user_goes_on_is_never_heard_nor_remembered() -> None:
    # A finished question, a pause, and more: the pause's words sound final, so a draft starts on them; the
    # short window is made long enough here (1 s) for the user to go on inside it.
    pcm = compose([0.4, "What is the capital of France?", 0.7, "And of Spain?", 1.8], noise_dbfs=-60.0, seed=2).pcm
    async with daemon(settings(hangover_complete_ms=1000), TOKEN) as (pipeline, _, collector):
        await speak(pipeline, pcm)
        await asyncio.wait_for(collector.finished.wait(), 60)
        await asyncio.sleep(0.3)
        drafts = dict(pipeline.drafts.counts)
        history = pipeline.assistant.memory.messages(None)
    assert drafts["started"] >= 1 and drafts["dropped"] >= 1, drafts
    started = [x for x in collector.messages if isinstance(x, m.ReplyStarted)]
    assert len(started) == 1, "one reply: the draft put nothing on the wire"
    assert {x.reply_id for x in collector.messages if isinstance(x, m.ReplyDelta)} <= {started[0].reply_id}
    users = [x["content"] for x in history if x["role"] == "user"]
    # the one remembered question is the whole turn, its continuation included (Whisper may mishear "of Spain")
    assert len(users) == 1 and "france" in users[0].lower() and len(users[0].split()) > 6, users


async def test_words_that_do_not_sound_final_are_only_prefilled() -> None:
    # "of" cannot end a sentence: the user will likely go on, so the pause's words are prefilled, not answered
    pcm = compose([0.4, "What is the capital of", 0.9, "France?", 1.5], noise_dbfs=-60.0, seed=2).pcm
    async with daemon(settings(), TOKEN) as (pipeline, _, collector):
        await speak(pipeline, pcm)
        await asyncio.wait_for(collector.finished.wait(), 60)
        drafts = dict(pipeline.drafts.counts)
    assert sum(isinstance(x, m.ReplyDone) for x in collector.messages) == 1
    assert drafts["dropped"] == 0 and drafts["started"] == drafts["adopted"] <= 1, drafts


async def test_a_draft_on_the_final_words_is_the_reply() -> None:
    pcm = compose([0.4, "What time is it in Tokyo?", 1.5], noise_dbfs=-60.0, seed=4).pcm
    texts: dict[bool, str] = {}
    for preemptive in (True, False):
        async with daemon(settings(preemptive), TOKEN) as (pipeline, _, collector):
            await speak(pipeline, pcm)
            await asyncio.wait_for(collector.finished.wait(), 60)
            drafts = dict(pipeline.drafts.counts)
        done = [x for x in collector.messages if isinstance(x, m.ReplyDone)]
        assert len(done) == 1 and done[0].text and not done[0].interrupted
        texts[preemptive] = done[0].text
        if preemptive:
            assert drafts == {"started": 1, "adopted": 1, "dropped": 0}, drafts
            assert done[0].timings_ms["first_token"] < done[0].timings_ms["done"]
        else:
            assert drafts["started"] == 0
    assert texts[True] == texts[False], "greedy decoding: the adopted draft is the very reply the turn would give"


async def test_a_commands_words_are_never_drafted() -> None:
    pcm = compose([0.4, "Set a timer for ten minutes.", 1.5], noise_dbfs=-60.0, seed=5).pcm
    async with daemon(settings(), TOKEN) as (pipeline, _, collector):
        await speak(pipeline, pcm)
        await asyncio.wait_for(collector.finished.wait(), 60)
        drafts = dict(pipeline.drafts.counts)
    assert drafts["started"] == 0, drafts
    assert any(isinstance(x, m.TimerStarted) for x in collector.messages), "the command ran, on the finished turn"
