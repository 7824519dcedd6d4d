"""Binary audio frames: a fixed 16-byte header, then PCM. Pure functions, no I/O.

A fixed header (rather than JSON metadata per chunk) keeps audio framing trivially parseable in any language
and costs nothing per frame on the hot fan-out path. Layout, little-endian:

    offset size field
    0      1    version   (1)
    1      1    kind      (1 = microphone audio, client -> server; 2 = reply audio, server -> client)
    2      1    format    (1 = s16le)
    3      1    channels  (1)
    4      4    stream    u32, the id from audio_start / reply_audio_start
    8      4    seq       u32, 0 for the first frame of a stream, +1 per frame
    12     4    rate      u32, samples per second
    16     ...  payload   PCM, whole samples (even length for s16le)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

HEADER = struct.Struct("<BBBBIII")
HEADER_SIZE = HEADER.size  # 16
FRAME_VERSION = 1


class FrameKind(IntEnum):
    MIC_AUDIO = 1
    REPLY_AUDIO = 2


class SampleFormat(IntEnum):
    S16LE = 1


FORMAT_NAMES = {SampleFormat.S16LE: "s16le"}


class FrameError(ValueError):
    """A binary frame that cannot be read; the message says which field is wrong."""


@dataclass(frozen=True, slots=True)
class AudioFrame:
    kind: FrameKind
    stream: int
    seq: int
    rate: int
    payload: bytes
    format: SampleFormat = SampleFormat.S16LE
    channels: int = 1

    def pcm(self) -> np.ndarray:
        """The payload as int16 samples (a read-only view, no copy)."""
        return np.frombuffer(self.payload, dtype="<i2")


def pack_header(kind: FrameKind, stream: int, seq: int, rate: int, fmt: SampleFormat = SampleFormat.S16LE, channels: int = 1) -> bytes:
    return HEADER.pack(FRAME_VERSION, int(kind), int(fmt), channels, stream & 0xFFFFFFFF, seq & 0xFFFFFFFF, rate)


def pack(kind: FrameKind, stream: int, seq: int, rate: int, pcm: np.ndarray | bytes) -> bytes:
    """One frame: header + s16le PCM."""
    payload = pcm if isinstance(pcm, (bytes, bytearray, memoryview)) else np.asarray(pcm, dtype="<i2").tobytes()
    return pack_header(kind, stream, seq, rate) + bytes(payload)


def unpack(data: bytes | bytearray | memoryview) -> AudioFrame:
    """Parse and check one frame; FrameError names the first field that is wrong."""
    if len(data) < HEADER_SIZE:
        raise FrameError(f"frame of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    version, kind, fmt, channels, stream, seq, rate = HEADER.unpack_from(data)
    if version != FRAME_VERSION:
        raise FrameError(f"frame version {version} unsupported; this server speaks frame version {FRAME_VERSION}")
    try:
        kind = FrameKind(kind)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}; 1 = microphone audio, 2 = reply audio") from None
    try:
        fmt = SampleFormat(fmt)
    except ValueError:
        raise FrameError(f"unknown sample format {fmt}; 1 = s16le") from None
    if channels != 1:
        raise FrameError(f"{channels} channels; only mono (1) is carried, mix down before sending")
    payload = bytes(data[HEADER_SIZE:])
    if len(payload) % 2:
        raise FrameError(f"payload of {len(payload)} bytes is not whole s16le samples (must be even)")
    return AudioFrame(kind, stream, seq, rate, payload, fmt, channels)


def split(pcm: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """Cut a chunk into frames of at most `max_samples` (views, no copy)."""
    if len(pcm) <= max_samples:
        return [pcm]
    return [pcm[i : i + max_samples] for i in range(0, len(pcm), max_samples)]
