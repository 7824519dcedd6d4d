"""Per-client limits, as plain objects with an injectable clock so they are tested without sleeping."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class AudioBudget:
    """Token bucket in seconds of audio: a client may send `burst_s` at once, then `speed` x real time.

    Bounds the CPU a single client can make the VAD and resampler spend, while letting `voiced ask --wav`
    push a whole question without pacing itself.
    """

    speed: float
    burst_s: float
    clock: Callable[[], float] = time.monotonic
    _level: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._level = self.burst_s
        self._at = self.clock()

    def take(self, seconds: float) -> bool:
        """Spend `seconds` of audio if the budget allows; False means drop this audio and tell the client."""
        now = self.clock()
        self._level = min(self.burst_s, self._level + (now - self._at) * self.speed)
        self._at = now
        if seconds > self._level:
            return False
        self._level -= seconds
        return True


# The costliest input format that is still charged by its duration: 48 kHz, stereo, 32-bit. Past it, a chunk is
# charged by its bytes, since the resampler's work grows with them: 384 kHz x 32 channels x int32 would otherwise
# pass as "real time" while costing a hundred times the work.
REFERENCE_BYTES_PER_S = 48000 * 2 * 4


def audio_cost_s(nbytes: int, rate: int, width: int, channels: int) -> float:
    """Seconds of budget a chunk of PCM spends: its duration, or its bytes at REFERENCE_BYTES_PER_S if more."""
    return max(nbytes / (rate * width * channels), nbytes / REFERENCE_BYTES_PER_S)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; a name or a wildcard (0.0.0.0, ::) is not."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def raise_open_files_limit() -> int:
    """Lift this process's soft descriptor limit to its hard one (the unit sets LimitNOFILE; a shell often leaves
    1024), so that a flood of connections on one door runs into the connection caps, not into EMFILE for every
    door. Returns the soft limit now in force."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft
