"""WAV sources in every common layout become the same 16 kHz mono int16 stream; bad files say how to fix them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.support.speech import compose, write_wav
from voiced.audio.capture import AudioChunk, AudioFileError, WavSource, load_wav_16k, read_wav
from voiced.audio.resample import resample


def riff(path: Path, body: bytes, tag: int, channels: int, rate: int, bits: int, extensible: bool = False) -> Path:
    block = channels * bits // 8
    if extensible:
        fmt = (
            struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
            + struct.pack("<H", tag)
            + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = (
        b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", 3)
        + b"abc\x00"
        + b"data"
        + struct.pack("<I", len(body))
        + body
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return compose([0.3, "Hello there.", 0.3]).pcm


def test_layouts_all_decode_to_the_same_audio(tmp_path: Path, speech: np.ndarray) -> None:
    ref = load_wav_16k(write_wav(tmp_path / "ref.wav", speech))
    assert np.array_equal(ref, speech)
    x = speech.astype(np.float64) / 32768
    stereo = np.stack([x, x], axis=1)
    files = {
        "s16-stereo": riff(tmp_path / "a.wav", (stereo * 32768).astype("<i2").tobytes(), 1, 2, 16000, 16),
        "s24-ext": riff(
            tmp_path / "b.wav",
            b"".join(int(v).to_bytes(4, "little", signed=True)[1:] for v in (x * 2**31).astype(np.int64).clip(-(2**31), 2**31 - 1)),
            1,
            1,
            16000,
            24,
            extensible=True,
        ),
        "s32": riff(tmp_path / "c.wav", (x * 2**31).clip(-(2**31), 2**31 - 1).astype("<i4").tobytes(), 1, 1, 16000, 32),
        "f32-stereo": riff(tmp_path / "d.wav", stereo.astype("<f4").tobytes(), 3, 2, 16000, 32),
        "f64": riff(tmp_path / "e.wav", x.astype("<f8").tobytes(), 3, 1, 16000, 64),
        "u8": riff(tmp_path / "f.wav", ((x * 128).round() + 128).clip(0, 255).astype(np.uint8).tobytes(), 1, 1, 16000, 8),
    }
    for name, path in files.items():
        got = load_wav_16k(path)
        tol = 300 if name == "u8" else 2
        assert len(got) == len(speech), name
        assert np.abs(got.astype(np.int32) - speech).max() <= tol, name


def test_other_rates_are_resampled(tmp_path: Path, speech: np.ndarray) -> None:
    hi = resample(np.stack([speech, speech], axis=1), 16000, 44100)
    path = riff(tmp_path / "hi.wav", np.stack([hi, hi], axis=1).astype("<i2").tobytes(), 1, 2, 44100, 16)
    samples, rate, channels = read_wav(path)
    assert (rate, channels) == (44100, 2)
    got = load_wav_16k(path)
    assert abs(len(got) - len(speech)) <= 1
    n = min(len(got), len(speech))
    assert np.corrcoef(got[:n].astype(float), speech[:n].astype(float))[0, 1] > 0.99


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "no such file"),
        (b"not a wav at all", "not a WAV file"),
        (b"RIFF\x04\x00\x00\x00WAVE", "corrupt"),
        ("adpcm", "not supported"),
        ("12bit", "not supported"),
    ],
)
def test_bad_files_name_the_fix(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "bad.wav"
    if content == "adpcm":
        riff(path, b"\x00" * 64, 2, 1, 16000, 4)
    elif content == "12bit":
        riff(path, b"\x00" * 64, 1, 1, 16000, 12)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(AudioFileError, match=match) as err:
        load_wav_16k(path)
    assert "sox" in str(err.value) or "check the path" in str(err.value)


async def test_wav_source_chunks_cover_the_file_in_order(tmp_path: Path, speech: np.ndarray) -> None:
    path = write_wav(tmp_path / "s.wav", speech)
    src = WavSource(path, chunk_ms=20)
    chunks: list[AudioChunk] = [c async for c in src]
    assert all(len(c.pcm) == 320 for c in chunks[:-1])
    assert [c.t for c in chunks] == pytest.approx([i * 0.02 for i in range(len(chunks))])
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), speech)


async def test_wav_source_realtime_and_aclose(tmp_path: Path, speech: np.ndarray) -> None:
    path = write_wav(tmp_path / "s.wav", speech[:1600])  # 0.1 s, paced
    src = WavSource(path, realtime=True, chunk_ms=30)
    got = []
    async for c in src:
        got.append(c)
        if len(got) == 2:
            await src.aclose()
    assert len(got) == 2
    assert src.duration_s == pytest.approx(0.1)
    with pytest.raises(AudioFileError, match="no such file"):
        WavSource(tmp_path / "missing.wav")
