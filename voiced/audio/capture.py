"""Audio sources for the front end: a WAV file or a live microphone, both as 16 kHz mono int16 chunks.

Both are async iterables of `AudioChunk` with `aclose()`, so the pipeline reads a file in a test exactly as it
reads the microphone in the daemon. The microphone side is built so that the daemon outlives the hardware:
PortAudio's callback thread only copies samples into a bounded buffer; a missing or vanished device is
reported through `on_state` and retried with backoff while the iterator keeps waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from voiced.audio import RATE
from voiced.audio.resample import StreamResampler, resample
from voiced.config import AudioSettings
from voiced.errors import VoicedError

log = logging.getLogger(__name__)

_CONVERT_HINT = "convert it with: sox IN.wav -r 16000 -c 1 -b 16 OUT.wav (or ffmpeg -i IN -ar 16000 -ac 1 OUT.wav)"


class AudioFileError(VoicedError):
    """A file voiced cannot read; the message names the fix."""


@dataclass
class AudioChunk:
    pcm: np.ndarray  # int16, 16 kHz, mono
    t: float  # seconds on the source's clock (samples before this chunk / 16000)


# -- WAV files ----------------------------------------------------------------------------------------------

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: Path | str) -> tuple[np.ndarray, int, int]:
    """Samples (frames, channels) as int16/int32/float, the rate and the channel count, of any PCM/float WAV.

    The stdlib `wave` module of Python 3.11 reads neither float nor WAVE_FORMAT_EXTENSIBLE files (what most
    tools write for 24-bit or multichannel audio), hence this small RIFF reader.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AudioFileError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise AudioFileError(f"{path} is a directory; pass a WAV file") from None
    except OSError as e:
        raise AudioFileError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise AudioFileError(f"{path} is not a WAV file; {_CONVERT_HINT}")
    fmt: tuple[int, int, int, int] | None = None
    body: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(chunk) < 16:
                raise AudioFileError(f"{path}: the WAV header is corrupt (short fmt chunk); {_CONVERT_HINT}")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
            if tag == _EXTENSIBLE and len(chunk) >= 26:
                tag = struct.unpack_from("<H", chunk, 24)[0]  # first two bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            body = chunk  # a truncated file keeps what is there
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None or body is None:
        raise AudioFileError(f"{path}: the WAV file is corrupt (no {'fmt' if fmt is None else 'data'} chunk); {_CONVERT_HINT}")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1000:
        raise AudioFileError(f"{path}: the WAV header is corrupt ({channels} channels at {rate} Hz); {_CONVERT_HINT}")
    width = bits // 8
    if tag == _PCM and bits in (8, 16, 24, 32):
        raw = np.frombuffer(body[: len(body) - len(body) % (width * channels)], dtype=np.uint8)
        if bits == 8:
            samples = ((raw.astype(np.int16) - 128) << 8).astype(np.int16)
        elif bits == 16:
            samples = raw.view("<i2").astype(np.int16)
        elif bits == 24:
            b = raw.reshape(-1, 3).astype(np.int32)
            samples = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
        else:
            samples = raw.view("<i4").astype(np.int32)
    elif tag == _FLOAT and bits in (32, 64):
        raw = np.frombuffer(body[: len(body) - len(body) % (width * channels)], dtype=np.uint8)
        samples = raw.view("<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        kind = {_PCM: "integer PCM", _FLOAT: "float"}.get(tag, f"compressed (format tag {tag:#x})")
        raise AudioFileError(f"{path}: {bits}-bit {kind} WAV is not supported (8/16/24/32-bit PCM or 32/64-bit float are); {_CONVERT_HINT}")
    return samples.reshape(-1, channels), rate, channels


def load_wav_16k(path: Path | str) -> np.ndarray:
    """A whole WAV as the front end's format: 16 kHz mono int16 (channels averaged, soxr HQ)."""
    samples, rate, _ = read_wav(path)
    return resample(samples, rate, RATE)


class WavSource:
    """A WAV file as an audio source; `realtime=True` paces chunks at the speed of speech, as a mic would."""

    def __init__(self, path: Path | str, realtime: bool = False, chunk_ms: int = 30) -> None:
        if chunk_ms < 1:
            raise ValueError(f"chunk_ms must be at least 1, got {chunk_ms}")
        self.path = Path(path)
        self.realtime = realtime
        self.chunk = RATE * chunk_ms // 1000
        self.pcm = load_wav_16k(self.path)  # fail at construction, where the caller can still say which file
        self._closed = False

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / RATE

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[AudioChunk]:
        t0 = time.monotonic()
        for start in range(0, len(self.pcm), self.chunk):
            if self._closed:
                return
            if self.realtime:
                # Deliver each chunk when its last sample would have been recorded.
                due = t0 + (start + self.chunk) / RATE - time.monotonic()
                if due > 0:
                    await asyncio.sleep(due)
            else:
                await asyncio.sleep(0)  # let the consumer's other tasks run between chunks
            yield AudioChunk(self.pcm[start : start + self.chunk], start / RATE)

    async def aclose(self) -> None:
        self._closed = True


# -- the microphone -----------------------------------------------------------------------------------------


class _InputStream(Protocol):
    """What MicSource uses of a `sounddevice.InputStream` (sounddevice ships no types)."""

    @property
    def active(self) -> bool: ...

    def abort(self, ignore_errors: bool = True) -> None: ...

    def close(self, ignore_errors: bool = True) -> None: ...


class _CallbackFlags(Protocol):
    """What the stream callback reads of sounddevice's `CallbackFlags`."""

    @property
    def input_overflow(self) -> bool: ...


class MicSource:
    """The local microphone through sounddevice, at the device's native rate, resampled to 16 kHz mono.

    `on_state(state, detail)` hears: "open" (capturing; detail names device and rate), "absent" (no such device
    or it cannot be opened; retrying), "lost" (it stopped delivering audio; retrying), "disabled"
    (input_device = 'none': the iterator ends at once). Samples are lost only while the device is away, or
    when the event loop stalls long enough to fill the buffer (counted in `overruns`, logged).

    Devices that appear after start-up are invisible to PortAudio until it re-reads the device list, which
    needs all PortAudio streams closed; so while the microphone is missing and `rescan_devices` is true, each
    retry re-initialises PortAudio. A process that keeps an output stream open meanwhile should pass False.
    """

    BLOCK_MS = 30
    QUEUE_BLOCKS = 100  # 3 s of audio before the loop is considered stalled and blocks are dropped
    STALL_S = 2.0  # no callback for this long while open = the device is gone
    BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, settings: AudioSettings, on_state: Callable[[str, str], None] | None = None, *, rescan_devices: bool = True) -> None:
        self.settings = settings
        self.on_state = on_state or (lambda state, detail: None)
        self.rescan_devices = rescan_devices
        self.overruns = 0  # PortAudio input overflows + blocks dropped because the loop did not keep up
        self.state = "idle"
        self._closed = False
        self._blocks: collections.deque[np.ndarray] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._stream: _InputStream | None = None
        self._samples_out = 0

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._chunks()

    def _set_state(self, state: str, detail: str) -> None:
        if state == self.state and state != "open":
            return
        self.state = state
        (log.info if state == "open" else log.warning)("microphone %s: %s", state, detail)
        try:
            self.on_state(state, detail)
        except Exception:  # a faulty observer must not stop the microphone
            log.exception("on_state observer failed")

    async def _chunks(self) -> AsyncIterator[AudioChunk]:
        if self.settings.input_device == "none":
            self._set_state("disabled", "audio.input_device = 'none': no local microphone")
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        attempt = 0
        try:
            while not self._closed:
                try:
                    resampler, sd = self._open(loop)
                except _DeviceAbsent as e:
                    self._set_state("absent", f"{e}; retrying. A machine without a microphone: --input-device none")
                    await self._sleep(self.BACKOFF_S[min(attempt, len(self.BACKOFF_S) - 1)])
                    attempt += 1
                    if self.rescan_devices:
                        self._rescan()
                    continue
                attempt = 0
                async for chunk in self._read(resampler, sd):
                    yield chunk
                if not self._closed:
                    await self._sleep(self.BACKOFF_S[0])
        finally:
            self._close_stream()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)  # aclose() wakes us early
        except asyncio.TimeoutError:
            pass

    def _open(self, loop: asyncio.AbstractEventLoop) -> tuple[StreamResampler, ModuleType]:
        try:
            import sounddevice as sd
        except OSError as e:
            raise _DeviceAbsent(f"PortAudio is not installed ({e}); install it: apt-get install libportaudio2") from None
        device = self.settings.input_device
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as e:
            raise _DeviceAbsent(f"no input device {device!r} ({e}); see `voiced devices`, or start PulseAudio/PipeWire") from None
        rate = int(info["default_samplerate"])
        channels = 1 if info["max_input_channels"] >= 1 else 0
        if channels == 0:
            raise _DeviceAbsent(f"device {info['name']!r} has no input channels; pick another with --input-device (see `voiced devices`)")
        blocks, wake = self._blocks, self._wake
        assert wake is not None
        blocks.clear()
        maxlen = self.QUEUE_BLOCKS

        def callback(indata: np.ndarray, frames: int, _time: object, status: _CallbackFlags) -> None:
            # PortAudio's thread: copy and hand over, never block, never log here.
            if status.input_overflow:
                self.overruns += 1
            if len(blocks) >= maxlen:
                self.overruns += 1
                return
            blocks.append(indata.copy())
            loop.call_soon_threadsafe(wake.set)

        def finished() -> None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is already closed
                pass

        try:
            stream = sd.InputStream(
                device=info["index"],
                samplerate=rate,
                channels=channels,
                dtype="int16",
                latency="low",
                blocksize=rate * self.BLOCK_MS // 1000,
                callback=callback,
                finished_callback=finished,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise _DeviceAbsent(
                f"cannot open input device {info['name']!r} at {rate} Hz ({e}); check it is not in use, or pick another with --input-device"
            ) from None
        self._stream = stream
        self._set_state("open", f"{info['name']} at {rate} Hz")
        return StreamResampler(rate, RATE, channels), sd

    async def _read(self, resampler: StreamResampler, sd: ModuleType) -> AsyncIterator[AudioChunk]:
        assert self._wake is not None
        reported = 0
        last = opened = time.monotonic()
        delivered = 0
        while not self._closed:
            if not self._blocks:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.STALL_S / 4)
                except asyncio.TimeoutError:
                    pass
            if self.overruns != reported:
                log.warning("microphone: %d block(s) lost so far (input overflow or a stalled event loop)", self.overruns)
                reported = self.overruns
            got = False
            while self._blocks:
                pcm = resampler.process(self._blocks.popleft())
                got = True
                if pcm.size:
                    chunk = AudioChunk(pcm, self._samples_out / RATE)
                    self._samples_out += pcm.size
                    delivered += pcm.size
                    yield chunk
            now = time.monotonic()
            if delivered / RATE > now - opened + self.STALL_S:
                # A server that died under the ALSA plugin can make it spin out garbage faster than real time.
                self._close_stream()
                self._set_state("lost", "the device delivers audio faster than real time (a broken stream); reconnecting")
                return
            if got:
                last = now
                continue
            stream = self._stream
            if self._closed:
                return
            if stream is None or not stream.active or now - last > self.STALL_S:
                why = "the stream stopped" if stream is None or not stream.active else f"no audio for {now - last:.1f} s"
                self._close_stream()
                self._set_state("lost", f"{why}; reconnecting")
                return

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:  # the device is already gone; nothing left to release
                log.debug("closing the input stream failed", exc_info=True)

    @staticmethod
    def _rescan() -> None:
        """Make PortAudio re-read the device list (it enumerates once, at initialisation)."""
        try:
            import sounddevice as sd

            sd._terminate()
            sd._initialize()
        except Exception:
            log.debug("PortAudio re-initialisation failed", exc_info=True)

    async def aclose(self) -> None:
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        self._close_stream()


class _DeviceAbsent(VoicedError):
    pass
