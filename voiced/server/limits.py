"""Per-client limits, as plain objects with an injectable clock so they are tested without sleeping."""

from __future__ import annotations

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
