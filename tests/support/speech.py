"""Speech made at test time with espeak-ng, with known boundaries: the ground truth for VAD and turn tests."""

from __future__ import annotations

import io
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

RATE = 16000


def read_wav(data: bytes | Path) -> tuple[np.ndarray, int]:
    """int16 mono samples and rate of a PCM WAV (channels averaged)."""
    src = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")
    with src, wave.open(src) as w:
        rate, ch = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return pcm, rate


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype=np.int16).tobytes())
    return path


def espeak(text: str, voice: str = "en-us", wpm: int = 165, rate: int = RATE, trim: bool = True) -> np.ndarray:
    """espeak-ng speech as int16 at `rate`, trimmed of the silence espeak puts around it."""
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], check=True, capture_output=True).stdout
    pcm, src_rate = read_wav(out)
    if src_rate != rate:
        pcm = soxr.resample(pcm.astype(np.float32), src_rate, rate).clip(-32768, 32767).astype(np.int16)
    if trim:
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
        if loud.size:
            pcm = pcm[loud[0] : loud[-1] + 1]
    return pcm


@dataclass
class Recording:
    """Audio plus where each utterance really is (seconds)."""

    pcm: np.ndarray
    rate: int
    segments: list[tuple[float, float]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.rate


def compose(parts: list[str | float], noise_dbfs: float | None = -60.0, seed: int = 0, rate: int = RATE, **espeak_kw) -> Recording:
    """Strings become speech, floats become that many seconds of silence (with low noise unless None)."""
    rng = np.random.default_rng(seed)
    chunks: list[np.ndarray] = []
    rec = Recording(np.zeros(0, np.int16), rate)
    t = 0
    for part in parts:
        if isinstance(part, str):
            pcm = espeak(part, rate=rate, **espeak_kw)
            rec.segments.append((t / rate, (t + len(pcm)) / rate))
            rec.texts.append(part)
        else:
            pcm = np.zeros(int(part * rate), np.int16)
        chunks.append(pcm)
        t += len(pcm)
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if noise_dbfs is not None:
        audio += rng.normal(0, 32768 * 10 ** (noise_dbfs / 20), audio.shape)
    rec.pcm = audio.clip(-32768, 32767).astype(np.int16)
    return rec


def noise(seconds: float, dbfs: float = -30.0, seed: int = 1, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 32768 * 10 ** (dbfs / 20), int(seconds * rate)).clip(-32768, 32767).astype(np.int16)


# Questions with the pauses people make: after a comma, around "um", before the last words (tests/test_endpoint.py
# and benchmarks/turn_taking.py).
PAUSED_TURNS: list[list[str | float]] = [
    ["I'd like to know,", 0.9, "what the weather is like in Berlin tomorrow."],
    ["Set a timer for", 0.8, "ten minutes."],
    ["Tell me about the moon and", 0.9, "how far away it is."],
    ["Can you, um,", 0.9, "turn off the kitchen lights?"],
    ["Remind me to call my mother,", 0.8, "um,", 0.8, "tomorrow morning."],
    ["What is the capital of", 0.8, "Australia?"],
]
# Turns without a pause inside: only latency is at stake.
PLAIN_TURNS: list[list[str | float]] = [
    ["What is the capital of France?"],
    ["What time is it in Tokyo?"],
    ["Please turn off the kitchen lights."],
]


def make_turn(parts: list[str | float], seed: int = 0) -> Recording:
    """A turn in room tone, with 2.5 s of it after the speech so that even the longest hangover can elapse."""
    return compose([0.4, *parts, 2.5], noise_dbfs=-60.0, seed=seed)
