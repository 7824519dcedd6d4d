"""The local speaker: queued reply audio played through a PortAudio callback, interruptible within one block.

The callback pulls from a queue guarded by a lock, so `play` (on the event loop) only resamples a ~100 ms chunk
and appends it, and `interrupt` (barge-in) empties the queue: the next 20 ms block is silence. `playing` stays
True until the device's own output latency has passed after the last real sample, because the pipeline mutes
the local microphone from VAD while it is True (half duplex, no echo canceller).

A speaker is never worth the daemon: with output_device 'none', no device, no PortAudio, or a device that
vanishes mid-reply, the state is reported through `on_state(state, detail)` and audio is dropped; network
clients keep getting the reply. States: 'playing', 'idle', 'unavailable' (no speaker; detail says why and how to
fix), 'error' (the device failed mid-stream; the next reply tries to open it again).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from voiced.audio.resample import StreamResampler
from voiced.config import AudioSettings

log = logging.getLogger(__name__)

BLOCK_MS = 20
_DRAIN_POLL_S = 0.01

StateCallback = Callable[[str, str], None]


class _Queue:
    """Samples waiting for the callback; touched from the loop thread and PortAudio's thread under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: collections.deque[np.ndarray] = collections.deque()
        self.offset = 0  # samples of chunks[0] already played
        self.queued = 0
        self.audible_until = 0.0  # monotonic time the last real sample leaves the speaker

    def put(self, pcm: np.ndarray) -> None:
        with self.lock:
            self.chunks.append(pcm)
            self.queued += len(pcm)

    def clear(self) -> None:
        with self.lock:
            self.chunks.clear()
            self.offset = self.queued = 0
            self.audible_until = 0.0

    def fill(self, out: np.ndarray, latency_s: float) -> None:
        """Write the next len(out) samples into `out` (silence past the end of the queue)."""
        n, pos = len(out), 0
        with self.lock:
            while pos < n and self.chunks:
                head = self.chunks[0]
                take = min(n - pos, len(head) - self.offset)
                out[pos : pos + take] = head[self.offset : self.offset + take]
                pos += take
                self.offset += take
                self.queued -= take
                if self.offset >= len(head):
                    self.chunks.popleft()
                    self.offset = 0
            if pos:
                self.audible_until = time.monotonic() + latency_s + BLOCK_MS / 1000
        out[pos:] = 0

    def busy(self) -> bool:
        with self.lock:
            return self.queued > 0 or time.monotonic() < self.audible_until


class Playback:
    def __init__(self, settings: AudioSettings, on_state: StateCallback | None = None) -> None:
        self._device = settings.output_device
        self._on_state = on_state or (lambda state, detail: None)
        self._queue = _Queue()
        self._stream: Any = None
        self._rate = 0
        self._gave_up = False  # no speaker for the rest of this reply; drain() (the reply's end) lets it retry
        self._latency_s = 0.0
        self._resamplers: dict[int, StreamResampler] = {}
        self._failed: str | None = None  # set by PortAudio's thread when the device dies
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._state = ""
        self._closed = False
        self._disabled = isinstance(self._device, str) and self._device.strip().lower() == "none"
        if self._disabled:
            self._report(
                "unavailable",
                "audio.output_device is 'none': no local speaker (set it to a device name from `voiced devices` to hear replies)",
            )

    # -- the contract -------------------------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._stream is not None and self._queue.busy()

    @property
    def device_rate(self) -> int:
        return self._rate

    async def play(self, chunk: np.ndarray, rate: int) -> None:
        """Queue int16 mono `chunk` at `rate`; returns at once (resampling ~100 ms costs well under 1 ms)."""
        if self._closed or self._disabled or len(chunk) == 0:
            return
        self._loop = asyncio.get_running_loop()
        self._check_failure()
        if self._stream is None and (self._gave_up or not await self._open_async()):
            return
        resampler = self._resamplers.get(rate)
        if resampler is None:
            resampler = self._resamplers[rate] = StreamResampler(rate, self._rate)
        pcm = resampler.process(np.asarray(chunk, dtype=np.int16))
        if len(pcm):
            self._queue.put(pcm)
        self._report("playing", "")

    async def drain(self) -> None:
        """Until everything queued has left the speaker (or the device failed, or interrupt() was called)."""
        for rate, resampler in list(self._resamplers.items()):
            tail = resampler.flush()
            del self._resamplers[rate]
            if len(tail) and self._stream is not None:
                self._queue.put(tail)
        while self._stream is not None and self._queue.busy():
            self._check_failure()
            await asyncio.sleep(_DRAIN_POLL_S)
        self._check_failure()
        self._gave_up = False
        if self._state == "playing":
            self._report("idle", "")

    def interrupt(self) -> None:
        """Barge-in: drop everything queued; the next callback block is silence. Safe from any thread."""
        self._queue.clear()
        self._resamplers.clear()

    async def aclose(self) -> None:
        self._closed = True
        self.interrupt()
        self._close_stream()

    # -- device -------------------------------------------------------------------------------------------------

    async def _open_async(self) -> bool:
        # Opening a PortAudio stream can take seconds (a sound server waking up): keep it off the event loop.
        self._opening = self._opening or asyncio.Lock()
        async with self._opening:
            if self._stream is not None:
                return True
            if self._gave_up:
                return False
            return await asyncio.to_thread(self._open)

    def _open(self) -> bool:
        try:
            import sounddevice as sd
        except OSError as e:
            self._disable(f"PortAudio is missing ({e}); install it: sudo apt-get install libportaudio2")
            return False
        try:
            index = _find_output(sd, self._device)
            info = sd.query_devices(index)
            self._rate = int(info["default_samplerate"])
            block = self._rate * BLOCK_MS // 1000
            stream = sd.OutputStream(
                device=index,
                samplerate=self._rate,
                channels=1,
                dtype="int16",
                blocksize=block,
                latency="low",
                callback=self._callback,
                finished_callback=self._finished,
            )
            self._latency_s = float(stream.latency)
            stream.start()
        except LookupError as e:
            self._disable(str(e))
            return False
        except Exception as e:  # PortAudioError and friends: a speaker problem must not end a reply
            self._disable(
                f"could not open output device {self._device!r} ({e}); pick one from `voiced devices` or set audio.output_device = 'none'"
            )
            return False
        self._stream = stream
        self._failed = None
        log.info("speaker: %s at %d Hz, latency %.0f ms", info["name"], self._rate, self._latency_s * 1000)
        return True

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self._queue.fill(outdata[:, 0], self._latency_s)

    def _finished(self) -> None:
        if not self._closed and self._stream is not None:
            self._failed = "the output device stopped (unplugged or its server went away)"
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._check_failure)

    def _check_failure(self) -> None:
        stream = self._stream
        if stream is None:
            return
        if self._failed is None and not stream.active and not stream.closed:
            self._failed = "the output stream stopped"
        if self._failed is not None:
            reason, self._failed = self._failed, None
            self._queue.clear()
            self._close_stream()
            self._gave_up = True
            self._report("error", f"{reason}; the reply goes on to network clients and the next reply reopens the speaker")

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as e:  # the device is already gone; nothing left to release
                log.debug("closing the output stream: %s", e)

    def _disable(self, detail: str) -> None:
        self._gave_up = True
        self._report("unavailable", detail)

    def _report(self, state: str, detail: str) -> None:
        if state == self._state and state in ("playing", "unavailable"):
            return  # once per change, not once per chunk
        self._state = state
        try:
            self._on_state(state, detail)
        except Exception:
            log.exception("on_state callback failed")


def _find_output(sd: Any, device: str | int | None) -> int:
    devices = sd.query_devices()
    outputs = [i for i, d in enumerate(devices) if d["max_output_channels"] > 0]
    if device is None:
        index = sd.default.device[1]
        if index is None or index < 0 or index not in outputs:
            if not outputs:
                raise LookupError("no audio output device found; connect a speaker, or set audio.output_device = 'none'")
            index = outputs[0]
        return int(index)
    if isinstance(device, int):
        if device in outputs:
            return device
        raise LookupError(f"audio.output_device {device} is not an output device; pick one from `voiced devices`")
    exact = [i for i in outputs if devices[i]["name"] == device]
    partial = [i for i in outputs if device.lower() in devices[i]["name"].lower()]
    if exact or partial:
        return (exact or partial)[0]
    names = ", ".join(repr(devices[i]["name"]) for i in outputs) or "none"
    raise LookupError(f"no output device matches audio.output_device {device!r} (outputs: {names}); pick one from `voiced devices`")
