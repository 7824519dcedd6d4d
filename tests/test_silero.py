"""Silero VAD from its pinned wheel: the file is checked, the stream state carries across calls, speech scores
high and stepping noise low (real onnxruntime, the real model file)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.support.noise import music, stepping_noise
from tests.support.speech import compose
from voiced.audio import assets
from voiced.audio.silero import SileroModel, shared_model

RATE = 16000


def _frames(pcm: np.ndarray, n: int = 480) -> np.ndarray:
    return pcm[: len(pcm) // n * n].reshape(-1, n)


@pytest.mark.parametrize("name", list(assets.MODELS))
def test_model_file_is_verified_and_a_missing_or_damaged_one_refused_with_the_fix(name: str, tmp_path, monkeypatch) -> None:
    good = assets.model_path(name)  # the shared cache's copy, verified
    record = (good.parent / f"{good.name}.json").read_text()
    assert assets.MODELS[name].sha256 in record and assets.MODELS[name].licence in record
    assert (good.parent / f"{good.name}.LICENSE").read_text().strip()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(assets.FrontendModelError, match=f"voiced model prepare {name}`"):
        assets.model_path(name)
    copy = assets.frontend_dir() / good.name
    copy.parent.mkdir(parents=True)
    shutil.copyfile(good, copy)
    assert assets.model_path(name) == copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(assets.FrontendModelError, match=f"damaged.*voiced model prepare {name} --force"):
        assets.model_path(name)
    if name == "silero-vad":
        with pytest.raises(assets.FrontendModelError, match="damaged"):
            SileroModel()  # loading goes through the same check


def test_speech_scores_high_and_noise_hum_and_music_low() -> None:
    speech = compose([0.3, "Turn on the kitchen lights please.", 0.3], noise_dbfs=-60.0).pcm
    p_speech = shared_model().stream().frame_probs(_frames(speech))
    assert p_speech.max() > 0.9
    assert (p_speech > 0.5).mean() > 0.4  # most of the clip is voice
    for bed in (stepping_noise(20.0, seed=3), music(10.0, seed=3)):
        p = shared_model().stream().frame_probs(_frames(bed))
        assert np.quantile(p, 0.99) < 0.5, np.quantile(p, [0.5, 0.9, 0.99])


def test_the_stream_state_carries_across_calls_of_any_size() -> None:
    pcm = compose([0.2, "What is the capital of France?", 0.4], noise_dbfs=-55.0, seed=4).pcm
    frames = _frames(pcm)
    whole = shared_model().stream().frame_probs(frames)
    s = shared_model().stream()
    odd = np.concatenate([s.frame_probs(frames[i : i + 7]) for i in range(0, len(frames), 7)])
    assert np.allclose(whole, odd, atol=1e-5)
    s2 = shared_model().stream()
    pieces = np.concatenate([s2.frame_probs(frames[i : i + 1]) for i in range(len(frames))])
    assert np.allclose(whole, pieces, atol=1e-5)
    s2.reset()
    assert np.allclose(s2.frame_probs(frames), whole, atol=1e-5)  # reset: a fresh stream again


def test_voiced_model_prepare_takes_a_front_end_model_by_name() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "voiced", "model", "prepare", "silero-vad"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(assets.model_path("silero-vad"))
