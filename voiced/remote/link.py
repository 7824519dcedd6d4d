"""What we know of the model server, and when to look again: a pure policy, `now` always a parameter.

Turns never wait on this policy: each one tries the server (a refused connection costs a millisecond, and the
user asked). The policy paces the background probes (GET /v1/models) that notice when a server that went away
is back, and say so in the log once, instead of a line per turn.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LinkState(enum.Enum):
    UNKNOWN = "unknown"  # not probed yet
    UP = "up"  # the last request or probe reached it and it serves our model
    DOWN = "down"  # unreachable, or it failed the last request
    WRONG_MODEL = "wrong_model"  # reachable, but it does not serve brain.model


@dataclass
class Link:
    initial_s: float = 1.0
    max_s: float = 30.0
    factor: float = 2.0
    state: LinkState = LinkState.UNKNOWN
    failures: int = 0
    retry_at: float = 0.0
    problem: str = ""  # what the last failure was, for the log and the spoken line

    def failed(self, now: float, problem: str, state: LinkState = LinkState.DOWN) -> float:
        """Record a failure; returns the delay until the next probe (doubling from initial_s up to max_s)."""
        delay = min(self.max_s, self.initial_s * self.factor**self.failures)
        self.failures += 1
        self.state, self.problem, self.retry_at = state, problem, now + delay
        return delay

    def succeeded(self) -> bool:
        """Record a success; True when it ends an outage (worth a log line)."""
        back = self.state in (LinkState.DOWN, LinkState.WRONG_MODEL)
        self.state, self.failures, self.problem, self.retry_at = LinkState.UP, 0, "", 0.0
        return back

    def probe_due(self, now: float) -> bool:
        return self.state in (LinkState.DOWN, LinkState.WRONG_MODEL, LinkState.UNKNOWN) and now >= self.retry_at
