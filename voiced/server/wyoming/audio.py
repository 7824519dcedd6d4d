"""Wyoming audio in: chunks of any PCM format -> the 16 kHz mono int16 the pipeline and the recogniser take."""

from __future__ import annotations

import numpy as np

from voiced.audio import RATE
from voiced.audio.resample import StreamResampler
from voiced.server.limits import AudioBudget, audio_cost_s
from voiced.server.wyoming.framing import InputLimit, InputLimits

# The whole door's audio budget, in peers streaming at full speed: a budget per connection alone resets with every
# reconnect, so a peer that reconnects would get a fresh burst each time.
DOOR_STREAMS = 4


def _samples(data: bytes, width: int) -> np.ndarray:
    """Little-endian PCM bytes of `width` bytes per sample -> int16 or int32 (what to_mono_int16 takes)."""
    if width == 2:
        return np.frombuffer(data, "<i2")
    if width == 4:
        return np.frombuffer(data, "<i4")
    if width == 1:  # 8-bit PCM is unsigned (WAV convention)
        return ((np.frombuffer(data, np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)  # 24-bit -> the top of an int32
    return (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)


class AudioIn:
    """Wyoming audio chunks of any format -> 16 kHz mono int16, without clicks between chunks.

    Every chunk carries its own format; a change mid-stream (rare, but legal) drains the old resampler and
    starts a new one. Bytes that do not make a whole frame wait for the next chunk.
    """

    def __init__(self) -> None:
        self._fmt: tuple[int, int, int] | None = None
        self._rs: StreamResampler | None = None
        self._rest = b""

    @staticmethod
    def check(rate: int, width: int, channels: int) -> None:
        if not (1000 <= rate <= 384000 and width in (1, 2, 3, 4) and 1 <= channels <= 32):
            raise ValueError(
                f"audio format rate={rate} width={width} channels={channels} is not supported; send PCM at "
                "1000..384000 Hz, width 1-4 bytes, 1-32 channels (16000/2/1 needs no conversion)"
            )

    def push(self, rate: int, width: int, channels: int, data: bytes) -> np.ndarray:
        fmt = (int(rate), int(width), int(channels))
        out = []
        if fmt != self._fmt:
            self.check(*fmt)
            out.append(self.flush())
            self._fmt, self._rs = fmt, StreamResampler(fmt[0], RATE, fmt[2])
        frame = fmt[1] * fmt[2]
        data = self._rest + data
        whole = len(data) - len(data) % frame
        self._rest = data[whole:]
        assert self._rs is not None
        if whole:
            out.append(self._rs.process(_samples(data[:whole], fmt[1])))
        return np.concatenate(out) if len(out) > 1 else (out[0] if out else np.zeros(0, np.int16))

    def flush(self) -> np.ndarray:
        tail = self._rs.flush() if self._rs is not None else np.zeros(0, np.int16)
        self._fmt, self._rs, self._rest = None, None, b""
        return tail


def door_budget(limits: InputLimits) -> AudioBudget:
    """The budget all Wyoming peers share (one per server)."""
    return AudioBudget(limits.audio_speed * DOOR_STREAMS, limits.audio_burst_s * DOOR_STREAMS)


class AudioMeter:
    """Charges one peer's audio to its own budget and to the door's, before any resampling work is done for it."""

    def __init__(self, limits: InputLimits, door: AudioBudget) -> None:
        self._limits = limits
        self._door = door
        self._own = limits.budget()

    def charge(self, rate: int, width: int, channels: int, nbytes: int) -> None:
        """Its duration, or its bytes for costly formats (limits.audio_cost_s); InputLimit when over a budget."""
        AudioIn.check(rate, width, channels)
        seconds = audio_cost_s(nbytes, rate, width, channels)
        limits = self._limits
        if not self._door.take(seconds):
            raise InputLimit(
                "rate-limited",
                f"audio from all Wyoming peers together arrives faster than {limits.audio_speed * DOOR_STREAMS:g}x real "
                f"time ({DOOR_STREAMS} x server.max_audio_speed); stream audio as it is recorded, or raise "
                "server.max_audio_speed. Connection closed.",
            )
        if not self._own.take(seconds):
            raise InputLimit(
                "rate-limited",
                f"audio arrives faster than {limits.audio_speed:g}x real time after a {limits.audio_burst_s:g} s burst "
                "(server.max_audio_speed, server.audio_burst_s); stream audio as it is recorded, or raise those "
                "settings. Connection closed.",
            )
