"""Timers, alarms and reminders as pure state: every operation takes `now` (seconds on the wall clock).

Why the wall clock and not a monotonic one: alarms and reminders name a time of day, and persisted items must
mean the same moment after a restart; a monotonic clock restarts with the process. A timer keeps its due time
on the same clock so that one list, one ordering and one file hold all three kinds.

Nothing here sleeps, speaks or writes: voiced.commands.runtime does that, asking `due(now)` when the next
`next_due()` comes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from voiced.errors import VoicedError

# An item as JSON (the store's file, a test's look): plain values only.
ItemDict = dict[str, str | float | None]


class Kind(StrEnum):
    TIMER = "timer"
    ALARM = "alarm"
    REMINDER = "reminder"


class ScheduleFull(VoicedError):
    """More items than `max_items`: a bound, so that a loop of commands cannot grow the list (or the file)."""


@dataclass(frozen=True)
class Item:
    id: str
    kind: Kind
    due: float  # wall-clock seconds when it rings; for a paused timer, when it would have
    total_s: float  # the span it was set for (timers: the duration plus what was added; others: from creation)
    name: str | None = None
    text: str | None = None  # a reminder's words
    paused_left: float | None = None  # seconds left, while paused; None = running

    @property
    def active(self) -> bool:
        return self.paused_left is None

    def remaining(self, now: float) -> float:
        return max(0.0, self.paused_left if self.paused_left is not None else self.due - now)

    def to_dict(self) -> ItemDict:
        return asdict(self)

    @staticmethod
    def from_dict(d: ItemDict) -> Item:
        """Raises ValueError (or KeyError) on a field missing or of the wrong kind."""

        def num(key: str) -> float:
            v = d[key]
            if not isinstance(v, (int, float)):
                raise ValueError(f"{key} must be a number, got {v!r}")
            return float(v)

        def text(key: str) -> str | None:
            v = d.get(key)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{key} must be text, got {v!r}")
            return v

        return Item(
            id=str(d["id"]), kind=Kind(str(d["kind"])), due=num("due"), total_s=num("total_s"), name=text("name"),
            text=text("text"), paused_left=None if d.get("paused_left") is None else num("paused_left"),
        )  # fmt: skip


class Schedule:
    """The items, by id, in the order they were made."""

    def __init__(self, items: Iterable[Item] = (), max_items: int = 100):
        self.max_items = max_items
        self.items: dict[str, Item] = {i.id: i for i in items}

    def _add(self, item: Item) -> Item:
        if len(self.items) >= self.max_items:
            raise ScheduleFull(f"{len(self.items)} timers, alarms and reminders already; cancel some first")
        self.items[item.id] = item
        return item

    @staticmethod
    def _id() -> str:
        return secrets.token_hex(4)

    def start_timer(self, seconds: float, now: float, name: str | None = None) -> Item:
        return self._add(Item(self._id(), Kind.TIMER, now + seconds, seconds, name=name))

    def add_alarm(self, due: float, now: float, name: str | None = None) -> Item:
        return self._add(Item(self._id(), Kind.ALARM, due, max(0.0, due - now), name=name))

    def add_reminder(self, due: float, now: float, text: str) -> Item:
        return self._add(Item(self._id(), Kind.REMINDER, due, max(0.0, due - now), text=text))

    def of(self, kind: Kind, name: str | None = None) -> list[Item]:
        """Items of a kind, soonest first; with `name`, only those so named (case and spaces aside)."""
        key = _norm(name) if name else None
        found = [i for i in self.items.values() if i.kind == kind and (key is None or _norm(i.name or "") == key)]
        return sorted(found, key=lambda i: (i.paused_left is not None, i.due))

    def cancel(self, item_id: str) -> Item | None:
        return self.items.pop(item_id, None)

    def pause(self, item_id: str, now: float) -> Item | None:
        item = self.items.get(item_id)
        if item is None or not item.active:
            return None
        self.items[item_id] = item = replace(item, paused_left=item.remaining(now))
        return item

    def resume(self, item_id: str, now: float) -> Item | None:
        item = self.items.get(item_id)
        if item is None or item.active:
            return None
        self.items[item_id] = item = replace(item, due=now + (item.paused_left or 0.0), paused_left=None)
        return item

    def add_time(self, item_id: str, seconds: float, now: float) -> Item | None:
        """Adds (or with a negative `seconds`, takes off) time; never below zero left."""
        item = self.items.get(item_id)
        if item is None:
            return None
        left = max(0.0, item.remaining(now) + seconds)
        total = max(0.0, item.total_s + seconds)
        if item.active:
            item = replace(item, due=now + left, total_s=total)
        else:
            item = replace(item, paused_left=left, total_s=total)
        self.items[item_id] = item
        return item

    def due(self, now: float) -> list[Item]:
        """The running items whose time has come, removed from the schedule (they have finished)."""
        done = [i for i in self.items.values() if i.active and i.due <= now]
        for i in done:
            del self.items[i.id]
        return sorted(done, key=lambda i: i.due)

    def next_due(self) -> float | None:
        running = [i.due for i in self.items.values() if i.active]
        return min(running) if running else None

    def to_list(self) -> list[ItemDict]:
        return [i.to_dict() for i in self.items.values()]


def _norm(name: str) -> str:
    return " ".join(name.lower().split())
