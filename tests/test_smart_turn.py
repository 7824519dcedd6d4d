"""Smart Turn v3.2 from its pinned wheel: its input features are what transformers' WhisperFeatureExtractor
makes for it (a real peer we did not write), and the model tells a finished request from a held "um"."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.speech import compose
from voiced.audio.smart_turn import RATE, WINDOW_S, SmartTurn


@pytest.fixture(scope="module")
def smart() -> SmartTurn:
    return SmartTurn()


@pytest.mark.parametrize("seconds", [1.5, 9.0])  # shorter than the window (zeros in front) and longer (cut)
def test_features_match_transformers_whisper_extractor(smart: SmartTurn, seconds: float) -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    speech = compose([0.2, "What is the capital of France?"], noise_dbfs=-50.0).pcm
    pcm = np.concatenate([speech] * int(np.ceil(seconds * RATE / len(speech))))[: int(seconds * RATE)]
    pcm = (pcm + rng.normal(0, 30, len(pcm))).clip(-32768, 32767).astype(np.int16)
    x = pcm.astype(np.float32) / 32768
    n = RATE * WINDOW_S
    x = x[-n:] if len(x) >= n else np.concatenate([np.zeros(n - len(x), np.float32), x])
    ref = WhisperFeatureExtractor(chunk_length=WINDOW_S)(
        x, sampling_rate=RATE, padding="max_length", max_length=n, truncation=True, do_normalize=True, return_tensors="np"
    ).input_features[0]
    ours = smart.features(pcm)
    assert ours.shape == ref.shape == (80, 800)
    assert np.abs(ours - ref).max() < 1e-3


def test_a_finished_request_scores_above_a_held_um(smart: SmartTurn) -> None:
    finished = compose([0.3, "Please turn off the kitchen lights.", 0.2], noise_dbfs=-60.0, seed=8).pcm
    held = compose([0.3, "Can you, um,", 0.2], noise_dbfs=-60.0, seed=3).pcm
    p_done, p_held = smart.probability(finished), smart.probability(held)
    assert 0.0 <= p_held < 0.5 < p_done <= 1.0, (p_held, p_done)
