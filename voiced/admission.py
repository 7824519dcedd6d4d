"""Which turns may wait for the model: a pure policy, consulted by the pipeline (which does the cancelling).

One model thread answers one turn at a time, so every other turn waits. Unbounded, a client that sends many
queries (or many clients) pushes a legitimate question behind minutes of work, and turns of a client that has
gone still run for nobody. The rules are what people expect of someone taking questions:

- a new question from the same source replaces its waiting one (the person changed their mind, or repeated
  themselves); the replaced one is answered with `busy`, so a request waiting on it is not left hanging;
- at most `max_waiting` turns wait in all; a turn from another source over that gets `busy` at once;
- when a source leaves (or cancels), its waiting turns are withdrawn.

The running turn is not this policy's business: it already holds the model, and cancel/barge-in stop it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Protocol, TypeVar, runtime_checkable

from protocol.messages import Error

T = TypeVar("T")


@runtime_checkable
class Addressed(Protocol):
    """A publisher that can deliver a message to one source (a `busy` concerns its requester, not everyone)."""

    def send(self, client_id: str, msg: Error) -> bool: ...


class Verdict(Enum):
    ADMITTED = "admitted"  # waits in line
    REPLACED = "replaced"  # waits in line in place of the source's previous waiting turn (`evicted`)
    BUSY = "busy"  # refused: too many turns wait already


@dataclass(frozen=True)
class Offer(Generic[T]):
    verdict: Verdict
    evicted: T | None = None


@dataclass
class WaitingTurns(Generic[T]):
    """Turns waiting for the model, keyed by their source; `max_waiting` bounds them all together."""

    max_waiting: int
    per_source: int = 1
    _waiting: list[tuple[str, T]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_waiting < 1 or self.per_source < 1:
            raise ValueError("max_waiting and per_source must be at least 1")

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, source: str, turn: T) -> Offer[T]:
        """Ask to wait; the caller cancels `evicted` (and tells its requester) when the verdict is REPLACED."""
        mine = [i for i, (s, _) in enumerate(self._waiting) if s == source]
        if len(mine) >= self.per_source:
            _, evicted = self._waiting.pop(mine[0])  # the oldest of this source's waiting turns
            self._waiting.append((source, turn))
            return Offer(Verdict.REPLACED, evicted)
        if len(self._waiting) >= self.max_waiting:
            return Offer(Verdict.BUSY)
        self._waiting.append((source, turn))
        return Offer(Verdict.ADMITTED)

    def started(self, turn: T) -> bool:
        """The turn got the model: it no longer waits. False if it was not waiting (evicted or withdrawn)."""
        for i, (_, t) in enumerate(self._waiting):
            if t is turn:
                del self._waiting[i]
                return True
        return False

    def withdraw(self, source: str, match: Callable[[T], bool] = lambda _: True) -> list[T]:
        """Remove and return the source's waiting turns that `match` (all of them by default): it left or cancelled."""
        gone = [t for s, t in self._waiting if s == source and match(t)]
        self._waiting = [(s, t) for s, t in self._waiting if not (s == source and any(t is g for g in gone))]
        return gone
