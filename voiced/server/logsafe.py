"""Log lines that a client cannot forge or flood: its values escaped and cut, repeated warnings rate-limited.

A name or an event type with a newline in it would otherwise print a second, made-up log line; one 1 MiB value
would print a megabyte; a peer that triggers the same warning in a loop would fill the journal. Pure helpers:
the clock is a parameter.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SHOWN_CHARS = 80
# C0/C1 controls, line and paragraph separators, bidi overrides: what can break a line or disguise its text
_UNSAFE = re.compile(r"[\\'\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in "\\'":
        return "\\" + c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def printable(value: object, limit: int = SHOWN_CHARS) -> str:
    """A client's value for a log line: control characters escaped, at most `limit` characters of it, quoted
    (as repr quotes a plain string, so a clean value reads the same as before)."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    shown = _UNSAFE.sub(_escape, text[:limit])
    return f"'{shown}'" + (f"... ({len(text)} chars)" if cut else "")


def words(text: str, shown: bool) -> str:
    """What a user said or was told, for a log line: the words only when configured (privacy.log_transcripts),
    otherwise just their length, which is enough to follow a turn."""
    return printable(text) if shown else f"<{len(text)} chars>"


@dataclass
class RateLimit:
    """At most `burst` lines per key, refilled at `per_s` a second; says how many were held back meanwhile."""

    per_s: float = 2.0
    burst: int = 20
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 1024
    _level: dict[str, float] = field(default_factory=dict)
    _at: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str) -> tuple[bool, int]:
        """(print it?, lines of this key held back since the last printed one)."""
        now = self.clock()
        if key not in self._level and len(self._level) >= self.max_keys:  # many keys: forget the idle ones
            self._level.clear()
            self._at.clear()
        level = min(float(self.burst), self._level.get(key, float(self.burst)) + (now - self._at.get(key, now)) * self.per_s)
        self._at[key] = now
        if level < 1.0:
            self._level[key] = level
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        self._level[key] = level - 1.0
        return True, self._held.pop(key, 0)


class LimitedLog:
    """`log(level, key, msg, *args)` through a RateLimit: one noisy peer's warnings cannot fill the journal."""

    def __init__(self, logger: logging.Logger, limit: RateLimit | None = None):
        self._logger = logger
        self._limit = limit or RateLimit()

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        if not self._logger.isEnabledFor(level):
            return
        ok, held = self._limit.allow(key)
        if ok:
            self._logger.log(level, msg + (f" ({held} similar lines held back)" if held else ""), *args)

    def allows(self, key: str) -> bool:
        """For lines logged another way (log.exception): whether this one may be printed now."""
        return self._limit.allow(key)[0]
