"""The wake-word model (voiced.audio.wakeword): real espeak-ng speech, real onnxruntime, the committed classifier,
and the pipeline in wake mode with activation.wake_detector = "model"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from protocol import messages as m
from tests.support.speech import compose, espeak
from tests.support.turn import daemon, turn_settings
from voiced.audio.wakeword import RATE, WakeWordDetector, WakeWordModel, WakeWordUnavailable, model_path
from voiced.config import ActivationSettings

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def model() -> WakeWordModel:
    return WakeWordModel()


def _stream(model: WakeWordModel, pcm: np.ndarray, block: int = 480) -> WakeWordDetector:
    det = WakeWordDetector(model)
    for i in range(0, len(pcm), block):
        det.feed(pcm[i : i + block])
    return det


def test_streaming_scores_equal_whole_clip_scores(model: WakeWordModel) -> None:
    """Chunking does not change a score: the mel and each embedding are computed once, exactly as for the clip."""
    pcm = compose([1.2, "Hey voiced, what time is it?", 1.0], seed=3).pcm
    ends, scores = model.scores(pcm)
    expected = {int(e): float(s) for e, s in zip(ends, scores)}
    for block in (320, 480, 1000, 7000):
        det = WakeWordDetector(model, threshold=1e-9, refractory_s=0.0)  # fires on every score: all are recorded
        for i in range(0, len(pcm), block):
            det.feed(pcm[i : i + block])
        got = {d.sample: d.score for d in det.detections}
        assert set(got) <= set(expected) and len(got) >= len(expected) - 1  # a partial last step may be pending
        assert max(abs(got[k] - expected[k]) for k in got) < 1e-4, block


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-gbclan"])  # a training voice and a held-out one
def test_phrase_led_question_fires_once_where_the_phrase_ends(model: WakeWordModel, voice: str) -> None:
    rec = compose([1.5, "Hey voiced, what time is it?", 2.0], seed=1, voice=voice)
    phrase_s = len(espeak("Hey voiced", voice=voice)) / RATE
    start = rec.segments[0][0]
    det = _stream(model, rec.pcm)
    assert len(det.detections) == 1, det.detections
    t = det.detections[0].t
    assert start + phrase_s - 0.1 <= t <= start + phrase_s + 1.0, (t, start, phrase_s)


def test_chatter_near_misses_and_noise_fire_nothing(model: WakeWordModel) -> None:
    chatter = compose(
        [0.5, "Did you see the game last night?", 0.6, "Yes, it was a great match.", 0.5, "They voted for the bridge.",
         0.5, "Hey boys, the food is ready.", 0.5, "Your voice is lovely today.", 0.5, "Okay, what time is it?", 1.0],
        seed=2, voice="en-gb",
    )  # fmt: skip
    rng = np.random.default_rng(7)
    white = rng.normal(0, 32768 * 10 ** (-30 / 20), RATE * 8)
    spec = np.fft.rfft(rng.normal(0, 1, RATE * 8)) / np.sqrt(np.maximum(np.fft.rfftfreq(RATE * 8, 1 / RATE), 10.0))
    pink = np.fft.irfft(spec, RATE * 8)
    pink *= 32768 * 10 ** (-25 / 20) / pink.std()  # 1/f power: closer to a fan or traffic than white noise
    for pcm in (chatter.pcm, white, pink):
        det = _stream(model, np.asarray(pcm).clip(-32768, 32767).astype(np.int16))
        assert det.detections == [], det.detections


def test_take_claims_a_detection_once(model: WakeWordModel) -> None:
    det = _stream(model, compose([1.0, "Hey voiced.", 1.5], seed=4).pcm)
    assert len(det.detections) == 1
    hit = det.detections[0]
    assert det.take(hit.t + 0.5) == []  # too old for a turn starting later: dropped
    det2 = _stream(model, compose([1.0, "Hey voiced.", 1.5], seed=4).pcm)
    assert det2.take(hit.t - 1.0) == [hit] and det2.take(0.0) == []


def test_missing_or_broken_classifier_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(WakeWordUnavailable, match="train-wakeword"):
        WakeWordModel("no_such_phrase")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(WakeWordUnavailable, match="not a valid ONNX model.*train-wakeword"):
        WakeWordModel(bad)
    assert model_path("hey_voiced").stat().st_size < 1_000_000  # the shipped file is small package data
    with pytest.raises(ValidationError):
        ActivationSettings(wake_detector="porcupine")


async def _say(pipeline, parts: list, seed: int) -> None:
    pcm = compose(parts, seed=seed).pcm
    for i in range(0, len(pcm), 480):
        await pipeline.feed("local", pcm[i : i + 480])


async def _settle(pipeline) -> None:
    await asyncio.sleep(0.05)
    async with asyncio.timeout(60):
        while pipeline._tasks or pipeline.turn is not None:
            await asyncio.sleep(0.05)


async def test_pipeline_wake_model_answers_the_phrase_led_question_only() -> None:
    settings = turn_settings(activation={"mode": "wake", "wake_detector": "model", "follow_up_s": 0.0})
    async with daemon(settings, TOKEN, pace=False) as (pipeline, _, collector):
        await _say(pipeline, [0.4, "Did you see the game last night?", 0.9, "Yes, it was a great match.", 2.0], seed=0)
        await _settle(pipeline)
        assert not [x for x in collector.messages if isinstance(x, m.ReplyDone)]
        assert pipeline.assistant.memory.exchanges == []

        await _say(pipeline, [0.4, "Hey voiced, what is the capital of France?", 2.0], seed=1)
        await _settle(pipeline)
        assert len([x for x in collector.messages if isinstance(x, m.ReplyDone)]) == 1
        asked = pipeline.assistant.memory.exchanges[0].user.lower()
        assert "capital" in asked and "voiced" not in asked


async def test_encoder_free_bundle_is_woken_by_the_model_without_a_scoring_pass() -> None:
    """An encoder-free bundle has no transcript: the detector alone wakes it. model_threshold = 1.0 would refuse
    every turn if the bundle's own scoring pass were asked, so a reply proves the detector decided."""
    from tests.test_addressing_projector import _daemon, _settings

    settings = _settings(wake_detector="model", model_threshold=1.0, follow_up_s=0.0)
    async with _daemon(settings) as (pipeline, _, collector):
        await _say(pipeline, [0.4, "What is the capital of Spain?", 2.0], seed=5)
        await _settle(pipeline)
        assert [x.reason for x in collector.messages if isinstance(x, m.TurnIgnored)] == ["not_addressed"]
        await _say(pipeline, [0.4, "Hey voiced, what is the capital of France?", 2.0], seed=6)
        await _settle(pipeline)
        assert len([x for x in collector.messages if isinstance(x, m.ReplyDone)]) == 1
        assert pipeline.assistant.scoring_passes == 0
        # the phrase, a pause, then the question: answered once, whether the VAD split it in two turns or not
        await _say(pipeline, [0.4, "Hey voiced.", 1.2, "What is the capital of Italy?", 2.0], seed=7)
        await _settle(pipeline)
        assert len([x for x in collector.messages if isinstance(x, m.ReplyDone)]) == 2
        assert pipeline.assistant.scoring_passes == 0
