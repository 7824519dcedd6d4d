"""Non-speech that fools an energy gate, made at test time: the ground truth for "opens no turn".

`stepping_noise`: brown and white noise with a 50 Hz mains hum (and its odd harmonics), whose level jumps to a
new value every `step_s` (a fan switching speed, a passing car). webrtcvad calls loud broadband noise speech,
and each step up lifts the frame energy above the noise floor the gate learnt from the quieter second before.
"""

from __future__ import annotations

import numpy as np

RATE = 16000


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def stepping_noise(seconds: float = 60.0, seed: int = 0, step_s: float = 1.0, lo_dbfs: float = -50.0, hi_dbfs: float = -22.0) -> np.ndarray:
    """int16 16 kHz noise + hum whose level (dBFS RMS) is redrawn uniformly in [lo, hi] every `step_s`, with
    steps alternating up and down."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    brown = np.cumsum(rng.normal(0, 1, n))
    brown -= np.convolve(brown, np.ones(1601) / 1601, mode="same")  # keep it from wandering off as a DC drift
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 3, 5))
    mix = 0.6 * _unit(brown) + 0.3 * _unit(rng.normal(0, 1, n)) + 0.4 * _unit(hum)
    steps = int(np.ceil(seconds / step_s))
    levels = np.empty(steps)
    mid = (lo_dbfs + hi_dbfs) / 2
    for i in range(steps):  # alternate: a quiet second, then a loud one, so every other step goes up
        levels[i] = rng.uniform(lo_dbfs, mid) if i % 2 == 0 else rng.uniform(mid, hi_dbfs)
    gain = 32768 * 10 ** (np.repeat(levels, int(step_s * RATE))[:n] / 20)
    return (_unit(mix) * gain).clip(-32768, 32767).astype(np.int16)


def music(seconds: float = 30.0, seed: int = 0, dbfs: float = -24.0) -> np.ndarray:
    """int16 16 kHz instrumental music without voice: two voices of plucked harmonic notes on a pentatonic
    scale (decaying, 0.25-0.5 s each) and a noise-burst drum on the beat, at `dbfs` RMS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12)
    for voice, octave in ((0, 1.0), (1, 0.5)):
        pos = 0
        while pos < n:
            dur = int(rng.choice([0.25, 0.5]) * RATE)
            f0 = rng.choice(scale) * octave
            tt = np.arange(min(dur, n - pos)) / RATE
            note = sum(np.sin(2 * np.pi * f0 * k * tt) * 0.6**k for k in range(1, 6)) * np.exp(-tt * 6)
            out[pos : pos + len(tt)] += note * (1.0 if voice == 0 else 0.7)
            pos += dur
    beat = int(0.5 * RATE)
    for pos in range(0, n, beat):
        m = min(int(0.06 * RATE), n - pos)
        out[pos : pos + m] += rng.normal(0, 0.8, m) * np.exp(-np.arange(m) / (0.015 * RATE))
    return (_unit(out) * 32768 * 10 ** (dbfs / 20)).clip(-32768, 32767).astype(np.int16)
