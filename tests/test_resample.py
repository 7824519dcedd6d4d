"""Resampling: rates, channel mixing, streaming equals one-shot, and no wrap-around at full scale."""

from __future__ import annotations

import numpy as np
import pytest

from voiced.audio.resample import StreamResampler, resample, to_mono_int16


def tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_freq(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000])
def test_one_shot_keeps_duration_and_pitch(in_rate: int) -> None:
    out = resample(tone(440, in_rate, 1.0), in_rate, 16000)
    assert out.dtype == np.int16 and out.ndim == 1
    assert abs(len(out) - 16000) <= 1
    assert abs(peak_freq(out, 16000) - 440) < 3


def test_stereo_is_averaged_not_summed() -> None:
    left = tone(440, 48000, 0.5, amp=30000)
    stereo = np.stack([left, left], axis=1)
    out = resample(stereo, 48000, 16000)
    assert 28000 < np.abs(out).max() <= 32767  # a sum would have clipped or wrapped
    opposite = np.stack([left, (-left.astype(np.int32)).clip(-32768, 32767).astype(np.int16)], axis=1)
    assert np.abs(resample(opposite, 48000, 16000)).max() <= 2


def test_float_and_int32_inputs_are_scaled() -> None:
    f = np.full(100, 0.5, np.float32)
    assert to_mono_int16(f)[0] == 16384
    i32 = np.full(100, 1 << 30, np.int32)
    assert to_mono_int16(i32)[0] == 1 << 14
    with pytest.raises(TypeError, match="int16, int32 or float32"):
        to_mono_int16(np.zeros(4, np.uint16))


def test_same_rate_is_identity_copy() -> None:
    x = tone(300, 16000, 0.1)
    y = resample(x, 16000, 16000)
    assert np.array_equal(x, y) and y is not x


@pytest.mark.parametrize("block", [1, 441, 1440, 4800])
def test_stream_matches_one_shot(block: int) -> None:
    x = np.stack([tone(440, 48000, 1.0), tone(1000, 48000, 1.0)], axis=1)
    s = StreamResampler(48000, 16000, channels=2)
    parts = [s.process(x[i : i + block]) for i in range(0, len(x), block)] + [s.flush()]
    streamed = np.concatenate(parts)
    whole = resample(x, 48000, 16000)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    err = np.abs(streamed[100 : n - 100].astype(np.int32) - whole[100 : n - 100].astype(np.int32))
    assert err.max() <= 2


def test_stream_interleaved_channels_and_passthrough() -> None:
    x = np.stack([tone(440, 16000, 0.1), tone(440, 16000, 0.1)], axis=1)
    s = StreamResampler(16000, 16000, channels=2)
    assert np.array_equal(s.process(x.reshape(-1)), x[:, 0])
    assert s.flush().size == 0
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)
