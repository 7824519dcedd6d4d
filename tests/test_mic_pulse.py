"""MicSource on a real (virtual) microphone: a private PulseAudio daemon's null-sink monitor, fed by paplay.

No sound card is needed: sounddevice -> PortAudio -> ALSA 'pulse' -> PulseAudio is the same path as on a
desktop, and the audio comes back on PulseAudio's own clock, so the front end sees a live stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.pulse import Pulse, pulse_daemon
from tests.support.speech import Recording, compose, write_wav
from voiced.audio.capture import MicSource
from voiced.audio.vad import Segmenter, SpeechEnded
from voiced.config import AudioSettings


@pytest.fixture(scope="session")
def pulse() -> Iterator[Pulse]:
    with pulse_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def recording() -> Recording:
    return compose([0.6, "Hello there, how are you today?", 1.2, "Turn on the lights.", 1.0])


class States:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def __call__(self, state: str, detail: str) -> None:
        self.seen.append((state, detail))
        self.changed.set()

    async def wait_for(self, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(s == state for s, _ in self.seen):
            self.changed.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"no {state!r} state within {timeout} s: {self.seen}"
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass


async def test_turns_captured_from_the_microphone_match_the_file(pulse: Pulse, recording: Recording, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "turns.wav", recording.pcm)
    states = States()
    mic = MicSource(AudioSettings(input_device="pulse"), on_state=states)
    seg = Segmenter(AudioSettings())
    found: list[SpeechEnded] = []
    captured = 0

    async def capture() -> None:
        nonlocal captured
        player = None
        async for chunk in mic:
            assert chunk.pcm.dtype == np.int16 and chunk.pcm.ndim == 1
            assert chunk.t == pytest.approx(captured / 16000)
            captured += len(chunk.pcm)
            found.extend(e for e in seg.feed(chunk.pcm) if isinstance(e, SpeechEnded))
            if player is None:
                player = pulse.play(wav)
                t0 = captured / 16000
            elif player.poll() is not None and captured / 16000 > t0 + recording.duration_s + 0.8:
                assert player.returncode == 0, player.stderr.read() if player.stderr else ""
                return

    try:
        await asyncio.wait_for(capture(), 60)
    finally:
        await mic.aclose()
    assert states.seen[-1][0] == "open" and "pulse" in states.seen[-1][1]
    assert mic.overruns == 0
    assert len(found) == len(recording.segments), [(e.t_start, e.t_end) for e in found]
    # The mic's clock starts before playback: compare each turn relative to where the first one starts.
    offset = found[0].t_start - recording.segments[0][0]
    assert 0.0 <= offset < 5.0
    for e, (s, end) in zip(found, recording.segments):
        assert abs(e.t_start - offset - s) <= 0.15 and abs(e.t_end - offset - end) <= 0.15, (e.t_start - offset, e.t_end - offset, s, end)


async def test_missing_device_is_reported_and_retried_until_closed(pulse: Pulse) -> None:
    states = States()
    mic = MicSource(AudioSettings(input_device="no-such-microphone"), on_state=states, rescan_devices=False)
    task = asyncio.create_task(anext(aiter(mic), None))
    await states.wait_for("absent", 10)
    assert "no-such-microphone" in states.seen[0][1] and "voiced devices" in states.seen[0][1]
    assert not task.done()  # the iterator keeps waiting for the device instead of ending
    await mic.aclose()
    assert await asyncio.wait_for(task, 10) is None


async def test_disabled_microphone_ends_at_once() -> None:
    states = States()
    chunks = [c async for c in MicSource(AudioSettings(input_device="none"), on_state=states)]
    assert chunks == [] and states.seen[0][0] == "disabled"
