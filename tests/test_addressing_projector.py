"""Wake mode for encoder-free bundles: the model itself judges, in one scoring pass, whether it was addressed.

Runs the real tiny Gemma 4 projector bundle (random weights) on real espeak speech through the real pipeline
and server. The tiny model's p(yes) means nothing, so these tests pin the mechanism (a probability, its own
cache, the thresholds, the follow-up window and push-to-talk skipping the pass); how well the real 12B judges
addressing has to be measured on the real bundle.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import pytest
from pydantic import ValidationError

from protocol import messages as m
from protocol.client import VoicedClient
from tests.support.gemma4 import tiny_bundle
from tests.support.speech import compose
from tests.support.turn import daemon
from voiced.assistant import ADDRESS_SYSTEM_PROMPT, SPOKEN, Assistant, answer_token_ids
from voiced.audio.activation import Activation, Decision
from voiced.config import ActivationSettings, Settings, load_settings
from voiced.model.bundle import load_bundle
from voiced.pipeline import Pipeline
from voiced.turn_cli import Collector

TOKEN = "test-token-0123456789abcdef"
PHRASES = ["hey voiced"]


def _settings(**activation: Any) -> Settings:
    settings, _ = load_settings(
        None,
        {
            "server": {"port": 0},
            "model": {"max_new_tokens": 8, "threads": 2},
            "audio": {"input_device": "none", "output_device": "none", "hangover_ms": 400},
            "activation": {"mode": "wake", **activation},
        },
    )
    return settings


@cache
def _assistant() -> Assistant:
    """Loading the graphs costs seconds: the tests share one assistant and reset what they look at."""
    return Assistant(load_bundle(tiny_bundle("fp32")), _settings().model)


def _fresh_assistant() -> Assistant:
    a = _assistant()
    a.forget()
    a.conversation.reset()
    a.scoring_passes = 0
    return a


def _daemon(settings: Settings):
    return daemon(settings, TOKEN, assistant=_fresh_assistant(), pace=False)


async def _say(pipeline: Pipeline, words: str, seed: int) -> None:
    pcm = compose([0.4, words, 2.0], seed=seed).pcm
    for i in range(0, len(pcm), 480):
        await pipeline.feed("local", pcm[i : i + 480])


async def _settle(pipeline: Pipeline) -> None:
    await asyncio.sleep(0.05)
    async with asyncio.timeout(60):
        while pipeline._tasks or pipeline.turn is not None:
            await asyncio.sleep(0.05)


def _count(collector: Collector, kind: type) -> int:
    return sum(isinstance(x, kind) for x in collector.messages)


# -- the scoring pass ------------------------------------------------------------------------------------------


def test_addressed_probability_is_deterministic_and_leaves_the_main_cache_alone() -> None:
    a = _fresh_assistant()
    # Short clips: the tiny model's sliding window (16) plus the engine's rollback slack (64) must span the audio
    # and the question for the prefix to survive the rollback (the 12B's window is far longer than a turn).
    called = compose(["Hi."], seed=0).pcm
    other = compose(["Oh."], seed=1).pcm
    list(a.reply_audio(compose(["What is the capital of France?"], seed=2).pcm))  # audio and a reply in the cache
    a.remember(SPOKEN, "Paris.", False)
    main = list(a.conversation.tokens)

    p1 = a.addressed_probability(called, PHRASES)
    first_prefill = a.last_scoring_prefill
    p2 = a.addressed_probability(called, PHRASES)
    again_prefill = a.last_scoring_prefill
    p3 = a.addressed_probability(other, PHRASES)

    assert 0.0 < p1 < 1.0 and 0.0 < p3 < 1.0
    # equal up to float rounding: the first pass ran the prefix in one chunk, the second reused it
    assert p2 == pytest.approx(p1, rel=1e-5), "the same audio must be judged the same"
    assert p3 != pytest.approx(p1, rel=1e-3), "the judgement must depend on the audio"
    assert a.scoring_passes == 3
    assert a.conversation.tokens == main, "the scoring pass must not evict the conversation's cache"
    # the prefix before the audio (the system prompt at least) stays cached: later passes run only the audio,
    # the question and the prefix's last token again
    system = len(a.bundle.tokenizer.encode(ADDRESS_SYSTEM_PROMPT.format(names="voiced"), add_special_tokens=False).ids)
    assert again_prefill <= first_prefill - system + 1
    frames = {k: a.projector.project(pcm)[1] for k, pcm in (("called", called), ("other", other))}
    assert a.last_scoring_prefill - again_prefill == frames["other"] - frames["called"]


def test_answer_ids_are_disjoint_and_come_from_the_tokenizer() -> None:
    tok = _assistant().bundle.tokenizer
    yes, no = answer_token_ids(tok)
    assert yes and no and not set(yes) & set(no)
    assert tok.encode("yes", add_special_tokens=False).ids[0] in yes
    assert tok.encode("no", add_special_tokens=False).ids[0] in no


# -- the decision ----------------------------------------------------------------------------------------------


def test_decide_addressed_follows_mode_threshold_and_windows() -> None:
    wake = Activation(ActivationSettings(mode="wake", model_threshold=0.6, follow_up_s=5.0))
    assert wake.wants_score(0.0)
    assert wake.decide_addressed(0.6, 0.0).answer
    assert wake.decide_addressed(0.59, 0.0) == Decision(False, "", "not-addressed p=0.59")
    with pytest.raises(ValueError, match="addressed_probability"):
        wake.decide_addressed(None, 0.0)
    wake.replied(10.0)
    assert wake.in_follow_up(14.0) and not wake.wants_score(14.0)
    assert wake.decide_addressed(None, 14.0) == Decision(True, "", "follow-up")
    assert wake.decide_addressed(0.0, 14.0).answer, "the window comes before the score"
    assert wake.wants_score(15.5) and not wake.decide_addressed(0.1, 15.5).answer
    for mode in ("always", "push"):
        other = Activation(ActivationSettings(mode=mode, model_threshold=1.0))
        assert not other.wants_score(0.0)
        assert other.decide_addressed(None, 0.0) == Decision(True, "", mode)


def test_model_threshold_is_a_probability() -> None:
    assert ActivationSettings().model_threshold == 0.5
    with pytest.raises(ValidationError, match="model_threshold"):
        ActivationSettings(model_threshold=1.5)


# -- in the running pipeline -----------------------------------------------------------------------------------


async def test_wake_mode_answers_what_the_model_judges_addressed_and_the_follow_up_window() -> None:
    settings = _settings(model_threshold=1.0, follow_up_s=600.0)
    async with _daemon(settings) as (pipeline, _, collector):
        a = pipeline.assistant

        await _say(pipeline, "Hey voiced, what is the capital of France?", seed=0)
        await _settle(pipeline)
        assert a.scoring_passes == 1
        assert [x.reason for x in collector.messages if isinstance(x, m.TurnIgnored)] == ["not_addressed"]
        assert _count(collector, m.ReplyStarted) == 0 and _count(collector, m.ReplyDone) == 0
        assert a.memory.exchanges == [], "an unaddressed turn leaves nothing behind"

        settings.activation.model_threshold = 0.0
        await _say(pipeline, "Hey voiced, what is the capital of Spain?", seed=1)
        await _settle(pipeline)
        assert a.scoring_passes == 2
        assert _count(collector, m.ReplyDone) == 1
        assert [e.user for e in a.memory.exchanges] == [SPOKEN]

        settings.activation.model_threshold = 1.0  # would refuse, but the follow-up window answers unasked
        await _say(pipeline, "And of Italy?", seed=2)
        await _settle(pipeline)
        assert a.scoring_passes == 2, "inside the follow-up window the scoring pass must not run"
        assert _count(collector, m.ReplyDone) == 2
        assert [e.user for e in a.memory.exchanges] == [SPOKEN, SPOKEN]

        settings.activation.follow_up_s = 0.0  # the window has closed: the model is asked again, and says no
        await _say(pipeline, "And of Portugal?", seed=3)
        await _settle(pipeline)
        assert a.scoring_passes == 3
        assert _count(collector, m.ReplyDone) == 2
        assert _count(collector, m.TurnIgnored) == 2
    assert not any(isinstance(x, m.Transcript) for x in collector.messages), "an encoder-free bundle has no transcript"


async def test_push_to_talk_bypasses_the_scoring_pass() -> None:
    settings = _settings(model_threshold=1.0)
    question = compose([0.4, "What is the capital of France?", 0.3], seed=6).pcm
    async with _daemon(settings) as (pipeline, server, collector):
        async with VoicedClient(server.url, TOKEN, roles=["microphone", "listener"], audio_rate=16000) as c:
            await c.send(m.PushToTalk(pressed=True))
            await c.send_audio(question, 16000, end=False)
            await c.send(m.PushToTalk(pressed=False))
            reply = await asyncio.wait_for(c.collect_reply(), 60)
        assert pipeline.assistant.scoring_passes == 0
    assert reply.timings_ms.get("decode_tokens", 0) > 0
    assert _count(collector, m.TurnIgnored) == 0


async def test_always_mode_runs_no_scoring_pass() -> None:
    settings = _settings(mode="always", model_threshold=1.0)
    async with _daemon(settings) as (pipeline, _, collector):
        await _say(pipeline, "Tell me a joke.", seed=4)
        await _settle(pipeline)
        assert pipeline.assistant.scoring_passes == 0
        assert _count(collector, m.ReplyDone) == 1
