"""Real Whisper tiny.en on real espeak-ng speech: the cascade's first stage."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soxr

from tests.support.asr import shared_recognizer, tiny_en_dir, words
from tests.support.speech import espeak, noise
from voiced.config import ModelSettings
from voiced.model.asr import AsrError, Recognizer, Transcript, looks_like_loop, recognizer_for
from voiced.model.manifest import AsrAudio

QUESTIONS = [
    ("What is the capital of France?", {"capital", "france"}),
    ("What time is it in Tokyo?", {"time", "tokyo"}),
    ("How far away is the moon?", {"far", "moon"}),
    ("Please turn off the kitchen lights.", {"turn", "kitchen", "lights"}),
    ("What is the boiling point of water?", {"boiling", "water"}),
]


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return shared_recognizer()


@pytest.mark.slow
@pytest.mark.parametrize("question,keys", QUESTIONS, ids=[q for q, _ in QUESTIONS])
def test_questions_transcribe_to_their_key_words(rec: Recognizer, question: str, keys: set[str]) -> None:
    result = rec.transcribe(espeak(question))
    assert isinstance(result, Transcript)
    assert keys <= words(result.text), f"{question!r} heard as {result.text!r}"
    assert result.ms > 0 and result.audio_ms > 500


def test_silence_gives_empty_text(rec: Recognizer) -> None:
    assert rec.transcribe(np.zeros(32000, np.int16)).text == ""
    assert rec.transcribe(np.zeros(0, np.int16)).empty


@pytest.mark.slow
def test_room_noise_runs_the_model_and_gives_empty_text(rec: Recognizer) -> None:
    # -40 dBFS white noise is above the energy gate, so this is Whisper's own no-speech judgement.
    result = rec.transcribe(noise(2.0, dbfs=-40.0))
    assert result.ms > 0
    assert result.text == ""


def test_44k1_input_is_refused_naming_the_fix(rec: Recognizer) -> None:
    pcm16 = espeak("hello there")
    pcm44 = soxr.resample(pcm16.astype(np.float32), 16000, 44100).astype(np.int16)
    with pytest.raises(AsrError, match=r"44100 Hz.*16000 Hz.*resample"):
        rec.transcribe(pcm44, sample_rate=44100)


@pytest.mark.parametrize(
    "pcm,match",
    [(np.zeros((100, 2), np.int16), "mono"), (np.zeros(100, np.float32), "int16")],
    ids=["stereo", "float"],
)
def test_other_shapes_and_dtypes_are_refused(rec: Recognizer, pcm: np.ndarray, match: str) -> None:
    with pytest.raises(AsrError, match=match):
        rec.transcribe(pcm)


def test_missing_model_dir_names_the_fix(tmp_path) -> None:
    with pytest.raises(AsrError, match="voiced model prepare"):
        Recognizer(tmp_path / "asr")


@pytest.mark.slow
def test_concurrent_calls_from_threads_each_get_their_own_result(rec: Recognizer) -> None:
    """The pipeline's speculative pass may still run when the end-of-turn pass starts."""
    clips = {"moon": espeak("How far away is the moon?"), "france": espeak("What is the capital of France?")}
    results: dict[str, str] = {}

    def work(key: str) -> None:
        results[key] = rec.transcribe(clips[key]).text

    threads = [threading.Thread(target=work, args=(k,)) for k in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert "moon" in words(results["moon"]) and "moon" not in words(results["france"])
    assert "france" in words(results["france"])


@pytest.mark.slow
def test_word_timings_on_request(rec: Recognizer) -> None:
    result = rec.transcribe(espeak("Please turn off the kitchen lights."), words=True)
    assert [w.text.strip(".,").lower() for w in result.words][-2:] == ["kitchen", "lights"]
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and result.words[-1].end <= result.audio_ms / 1000 + 0.5


@pytest.mark.slow
def test_recognizer_for_reads_the_bundle_layout(tmp_path) -> None:
    (tmp_path / "asr").symlink_to(tiny_en_dir(), target_is_directory=True)
    rec = recognizer_for(tmp_path, AsrAudio(dir="asr"), threads=1, hotwords="hey voiced")
    assert rec.model_dir == tmp_path / "asr" and rec.threads == 1 and rec.hotwords == "hey voiced"
    assert "voiced" in words(rec.transcribe(espeak("hey voiced, what time is it?")).text)


@pytest.mark.slow
def test_short_window_at_30_s_is_faster_whispers_own_decode(rec: Recognizer) -> None:
    """The short-window path reuses faster-whisper's features, prompt and suppression: on the native window it
    must give what WhisperModel.transcribe gives, so any difference at 15 s is the window's alone."""
    full = Recognizer(tiny_en_dir(), threads=2, window_s=30.0)
    assert full._short is None  # 30 s: faster-whisper's own transcribe
    for question, _ in QUESTIONS[:3]:
        pcm = espeak(question)
        audio = pcm.astype(np.float32) / 32768.0
        assert rec._short is not None
        assert rec._short.transcribe(audio, 30.0, 64) == full.transcribe(pcm).text


def test_asr_window_outside_whispers_range_is_refused_naming_the_setting() -> None:
    with pytest.raises(AsrError, match="model.asr_window_s"):
        Recognizer(tiny_en_dir(), window_s=45.0)


@pytest.mark.parametrize(
    ("text", "loop"),
    [
        ("5, 5, 5, 5, 5, 5, 5,", True),  # real speech "five five", cut at a pause
        ("4.3.3.3.3.3.3.3", True),
        ("and the and the and the and the and the and the and the and the and the and the", True),  # gzip's case
        ("5 5.", False),
        ("No, no, no.", False),
        ("What is the capital of France?", False),
        ("", False),
    ],
)
def test_loop_check_catches_short_and_long_repeats(text: str, loop: bool) -> None:
    assert looks_like_loop(text) is loop


def test_a_repeated_word_falls_back_to_the_full_window_and_keeps_the_words() -> None:
    # A real repetition looks like a loop to the short window: the full 30 s window decides, and the words stay.
    rec = shared_recognizer()
    said = np.concatenate([np.zeros(4000, np.int16), espeak("no no no no no no", wpm=160), np.zeros(8000, np.int16)])
    got = rec.transcribe(said)
    assert got.window_s == 30.0, got
    assert got.text.lower().count("no") >= 4, got
    plain = rec.transcribe(np.concatenate([np.zeros(4000, np.int16), espeak("Turn on the kitchen lights.", wpm=160)]))
    assert plain.window_s == rec.window_s == ModelSettings().asr_window_s and "kitchen" in words(plain.text), plain


def test_whisper_runs_on_model_asr_threads_and_zero_means_the_models_threads() -> None:
    from tests.support.turn import asr_tiny_bundle
    from voiced.assistant import Assistant
    from voiced.model.bundle import load_bundle

    bundle = load_bundle(asr_tiny_bundle())
    default = Assistant(bundle, ModelSettings(threads=2))
    assert default.recognizer is not None and default.recognizer.threads == ModelSettings().asr_threads == 1
    same = Assistant(bundle, ModelSettings(threads=2, asr_threads=0))
    assert same.recognizer is not None and same.recognizer.threads == 2
