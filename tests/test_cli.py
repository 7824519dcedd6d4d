"""`python -m voiced segments FILE --json`: the stdout contract that checks outside the suite rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.speech import Recording, compose, write_wav
from voiced.audio.resample import resample

ROOT = Path(__file__).resolve().parents[1]


def segments(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voiced", "segments", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def rec() -> Recording:
    return compose([0.7, "Hello there, how are you today?", 1.4, "What time is it?", 0.9])


def check(stdout: str, rec: Recording) -> None:
    turns = json.loads(stdout)  # exactly one JSON document, nothing else
    assert isinstance(turns, list) and len(turns) == len(rec.segments)
    for t, (s, e) in zip(turns, rec.segments):
        assert set(t) == {"start_s", "end_s"}
        assert abs(t["start_s"] - s) <= 0.15 and abs(t["end_s"] - e) <= 0.15


def test_segments_json_on_16k_mono(tmp_path: Path, rec: Recording) -> None:
    proc = segments(str(write_wav(tmp_path / "a.wav", rec.pcm)), "--json")
    assert proc.returncode == 0, proc.stderr
    check(proc.stdout, rec)


def test_segments_json_on_44k_stereo(tmp_path: Path, rec: Recording) -> None:
    import wave

    hi = resample(rec.pcm, 16000, 44100)
    path = tmp_path / "b.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.stack([hi, hi], axis=1).astype("<i2").tobytes())
    proc = segments(str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    check(proc.stdout, rec)


def test_segments_text_output(tmp_path: Path, rec: Recording) -> None:
    proc = segments(str(write_wav(tmp_path / "a.wav", rec.pcm)))
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == len(rec.segments)


@pytest.mark.parametrize("content", [None, b"garbage, not audio"])
def test_segments_bad_file_exit_1_with_fix(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.wav"
    if content is not None:
        path.write_bytes(content)
    proc = segments(str(path), "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert ("no such file" in proc.stderr) or ("sox" in proc.stderr)
