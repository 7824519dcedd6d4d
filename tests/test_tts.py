"""TTS engines: real libespeak-ng (and the espeak-ng command), real Piper with the bundled MIT voice."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voiced.config import TTSSettings
from voiced.speech.espeak import EspeakEngine, _libespeak, _Sink
from voiced.speech.piper import PiperEngine
from voiced.speech.tts import TTSEngine, TTSUnavailable, make_tts

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away."
LONG = " ".join([SENTENCE] * 6)


def loud(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine()


def test_espeak_streams_100ms_chunks(espeak: EspeakEngine) -> None:
    assert espeak.backend == "library" and espeak.sample_rate == 22050
    chunks = list(espeak.synthesize(SENTENCE))
    assert len(chunks) > 10
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    block = espeak.sample_rate // 10
    assert all(len(c) <= block + 2 for c in chunks)  # espeak also flushes a short block at a clause end
    assert sum(abs(len(c) - block) <= 2 for c in chunks) >= 0.8 * len(chunks)
    audio = np.concatenate(chunks)
    assert 2.0 < len(audio) / espeak.sample_rate < 6.0
    assert loud(audio) > 1000


def test_library_delivers_pcm_while_synthesising() -> None:
    """The C loop hands over each block from its callback and aborts at the next one when told to."""
    lib = _libespeak()
    got: list[np.ndarray] = []
    lib.synth(LONG, "en-us", 175, _Sink(got.append, lambda: False))
    cut: list[np.ndarray] = []
    lib.synth(LONG, "en-us", 175, _Sink(cut.append, lambda: len(cut) >= 3))
    assert len(got) > 100
    assert len(cut) == 3
    assert sum(len(c) for c in cut) < 0.05 * sum(len(c) for c in got)


def test_espeak_cancel_stops_and_leaves_the_engine_clean(espeak: EspeakEngine) -> None:
    cancel = threading.Event()
    seen = 0
    for _ in espeak.synthesize(LONG, cancel):
        seen += 1
        if seen == 2:
            cancel.set()
    assert seen == 2
    # nothing of the cancelled reply leaks into the next one (espeak's output varies by a few samples per call)
    after = sum(len(c) for c in espeak.synthesize(SENTENCE))
    clean = sum(len(c) for c in espeak.synthesize(SENTENCE))
    assert abs(after - clean) < 0.05 * clean


def test_espeak_closing_the_generator_frees_the_library(espeak: EspeakEngine) -> None:
    gen = espeak.synthesize(LONG)
    next(gen)
    gen.close()
    assert loud(np.concatenate(list(espeak.synthesize("Still here.")))) > 500


def test_espeak_reads_a_leading_minus_and_empty_text(espeak: EspeakEngine) -> None:
    assert list(espeak.synthesize("   ")) == []
    assert loud(np.concatenate(list(espeak.synthesize("-5 degrees")))) > 500


def test_espeak_command_fallback_matches_the_library(espeak: EspeakEngine) -> None:
    cmd = EspeakEngine(use_library=False)
    assert cmd.backend == "command"
    chunks = list(cmd.synthesize(SENTENCE))
    assert cmd.sample_rate == espeak.sample_rate and len(chunks) > 10
    lib_len = sum(len(c) for c in espeak.synthesize(SENTENCE))
    assert abs(sum(len(c) for c in chunks) - lib_len) / lib_len < 0.15
    assert loud(np.concatenate(chunks)) > 1000
    cancel = threading.Event()
    assert len([cancel.set() for _ in cmd.synthesize(LONG, cancel)]) == 1


@pytest.mark.parametrize("use_library", [True, False])
def test_unknown_voice_names_the_fix(use_library: bool) -> None:
    with pytest.raises(TTSUnavailable, match="espeak-ng --voices"):
        list(EspeakEngine(voice="xx-nonexistent", use_library=use_library).synthesize("hello"))


def test_make_tts_picks_the_engine() -> None:
    engine = make_tts(TTSSettings(voice="en-gb", rate_wpm=220))
    assert isinstance(engine, EspeakEngine) and isinstance(engine, TTSEngine)
    slow = sum(len(c) for c in make_tts(TTSSettings(rate_wpm=120)).synthesize(SENTENCE))
    fast = sum(len(c) for c in engine.synthesize(SENTENCE))
    assert fast < 0.8 * slow
    assert isinstance(make_tts(TTSSettings(engine="piper")), PiperEngine)


def test_piper_streams_speech(piper: PiperEngine) -> None:
    assert isinstance(piper, TTSEngine) and piper.sample_rate == 22050
    chunks = list(piper.synthesize("Hello there. This is the Piper voice, speaking two sentences."))
    assert len(chunks) > 10 and all(c.dtype == np.int16 for c in chunks)
    assert all(len(c) <= piper.sample_rate // 10 for c in chunks)
    audio = np.concatenate(chunks)
    assert 1.5 < len(audio) / piper.sample_rate < 8.0 and loud(audio) > 1000


def test_piper_cancel_stops(piper: PiperEngine) -> None:
    cancel = threading.Event()
    seen = 0
    for _ in piper.synthesize("One sentence here. Another sentence there. And a third one.", cancel):
        seen += 1
        cancel.set()
    assert seen == 1
    assert list(piper.synthesize("")) == []


def test_piper_bad_voice_file_names_the_fix(tmp_path) -> None:
    with pytest.raises(TTSUnavailable, match="tts.voice"):
        PiperEngine(voice=str(tmp_path / "missing.onnx"))
