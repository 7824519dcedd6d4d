"""Playback through a real PulseAudio null sink, recorded back from its monitor with sounddevice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
import sounddevice as sd

from tests.support.pulse import Pulse, pulse_daemon
from voiced.audio.resample import resample
from voiced.config import AudioSettings
from voiced.speech.espeak import EspeakEngine
from voiced.speech.playback import Playback

RATE = 16000
REPLY = "The weather today is sunny and warm, with a light breeze from the west."


def rescan_devices() -> None:
    """PortAudio lists ALSA's 'pulse' device only if a server answered when it initialised."""
    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="module")
def pulse() -> Iterator[Pulse]:
    with pulse_daemon() as daemon:
        rescan_devices()
        yield daemon
    rescan_devices()


class Monitor:
    """Records vspk.monitor (the default source) with a monotonic timestamp per block."""

    def __init__(self) -> None:
        self.blocks: list[tuple[float, np.ndarray]] = []
        self._stream = sd.InputStream(
            device="pulse", samplerate=RATE, channels=1, dtype="int16", blocksize=160, latency="low", callback=self._cb
        )

    def _cb(self, indata: np.ndarray, frames: int, t: object, status: object) -> None:
        self.blocks.append((time.monotonic(), indata[:, 0].copy()))

    def __enter__(self) -> "Monitor":
        self._stream.start()
        deadline = time.monotonic() + 10
        while len(self.blocks) < 20 and time.monotonic() < deadline:  # a fresh pulse stream can take ~2 s to flow
            time.sleep(0.01)
        assert len(self.blocks) >= 20, "the pulse monitor never started delivering audio"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.stop()
        self._stream.close()

    def audio(self) -> np.ndarray:
        return np.concatenate([b for _, b in self.blocks]) if self.blocks else np.zeros(0, np.int16)

    def loud_times(self, threshold: int = 500) -> list[float]:
        return [t for t, b in self.blocks if np.abs(b.astype(np.int32)).max() > threshold]


def speech() -> tuple[list[np.ndarray], int]:
    engine = EspeakEngine()
    return list(engine.synthesize(REPLY)), engine.sample_rate


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of two clips (alignment unknown)."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    return float(xc.max() / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_reply_reaches_the_speaker(pulse: Pulse) -> None:
    chunks, rate = speech()
    states: list[tuple[str, str]] = []
    pb = Playback(AudioSettings(output_device="pulse"), on_state=lambda s, d: states.append((s, d)))
    with Monitor() as mon:
        await asyncio.sleep(0.1)
        for chunk in chunks:
            await pb.play(chunk, rate)
        assert pb.playing
        await pb.drain()
        assert not pb.playing
        await asyncio.sleep(0.2)
    await pb.aclose()
    recorded = mon.audio()
    sent = resample(np.concatenate(chunks), rate, RATE)
    assert [s for s, _ in states] == ["playing", "idle"]
    assert np.abs(recorded.astype(np.int32)).max() > 3000
    assert correlation(recorded, sent) > 0.8, "the monitor carries the reply itself, not noise"
    loud = np.abs(recorded.astype(np.int32)) > 300
    assert abs(loud.sum() / RATE - (np.abs(sent.astype(np.int32)) > 300).sum() / RATE) < 0.5


async def test_interrupt_silences_the_speaker(pulse: Pulse) -> None:
    chunks, rate = speech()
    pb = Playback(AudioSettings(output_device="pulse"))
    with Monitor() as mon:
        for chunk in chunks:
            await pb.play(chunk, rate)
        await asyncio.sleep(1.5)
        assert pb.playing
        t_interrupt = time.monotonic()
        pb.interrupt()
        await pb.drain()  # returns once the queue is empty and the device latency has passed
        assert not pb.playing
        await asyncio.sleep(0.6)
    await pb.aclose()
    loud = mon.loud_times()
    reply_s = sum(len(c) for c in chunks) / rate
    assert reply_s > 3.0 and loud and loud[0] < t_interrupt
    last = max(loud)
    print(f"monitor quiet {1000 * (last - t_interrupt):.0f} ms after interrupt()")
    assert last < t_interrupt + 0.3, "sound went on long after interrupt()"


async def test_no_speaker_is_a_quiet_no_op() -> None:
    states: list[tuple[str, str]] = []
    pb = Playback(AudioSettings(output_device="none"), on_state=lambda s, d: states.append((s, d)))
    for _ in range(3):
        await pb.play(np.ones(1600, np.int16), 16000)
    await pb.drain()
    assert not pb.playing
    await pb.aclose()
    assert len(states) == 1 and states[0][0] == "unavailable" and "output_device" in states[0][1]


async def test_unknown_device_reports_and_never_raises(pulse: Pulse) -> None:
    states: list[tuple[str, str]] = []
    pb = Playback(AudioSettings(output_device="no-such-speaker"), on_state=lambda s, d: states.append((s, d)))
    for _ in range(3):
        await pb.play(np.ones(1600, np.int16), 16000)
    await pb.drain()
    assert not pb.playing
    assert [s for s, _ in states] == ["unavailable"]
    assert "no-such-speaker" in states[0][1] and "voiced devices" in states[0][1]
    await pb.aclose()


async def test_device_vanishing_mid_reply_is_reported(pulse: Pulse) -> None:
    chunks, rate = speech()
    states: list[tuple[str, str]] = []
    try:
        with pulse_daemon() as doomed:
            rescan_devices()
            pb = Playback(AudioSettings(output_device="pulse"), on_state=lambda s, d: states.append((s, d)))
            for chunk in chunks[:10]:
                await pb.play(chunk, rate)
            await asyncio.sleep(0.3)
            assert pb.playing
            os.kill(doomed.pid, signal.SIGKILL)  # the sound server dies mid-reply
            for chunk in chunks[10:]:  # the reply goes on; the speaker is gone
                await pb.play(chunk, rate)
                await asyncio.sleep(0.02)
            await asyncio.wait_for(pb.drain(), 10)
            assert not pb.playing
            assert "error" in [s for s, _ in states], states
            await pb.aclose()
    finally:
        rescan_devices()


async def test_a_reply_logs_no_warning_on_the_speaker(pulse: Pulse, caplog: pytest.LogCaptureFixture) -> None:
    """`serve`'s speaker observer: playing/idle are the ordinary rhythm (one debug line each), not empty WARNINGs."""
    import logging

    from voiced.startup import device_logger

    chunks, rate = speech()
    caplog.set_level(logging.DEBUG, logger="voiced")
    pb = Playback(AudioSettings(output_device="pulse"), on_state=device_logger("speaker"))
    for chunk in chunks[:3]:
        await pb.play(chunk, rate)
    await pb.drain()
    await pb.aclose()
    speaker = [r for r in caplog.records if r.name == "voiced" and r.getMessage().startswith("speaker")]
    assert [r.getMessage() for r in speaker] == ["speaker playing", "speaker idle"]
    assert all(r.levelno == logging.DEBUG for r in speaker)
