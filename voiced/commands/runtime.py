"""The commands at the daemon's edge: matching a finished turn's words, the clock, the schedule's wake-ups,
ringing what is due, publishing timer messages and saving (when allowed). The policies it calls are pure.

The pipeline calls `handle(words)` once per turn, with the final transcript of a finished turn (or a text
query), never from its speculative or early passes: a command is an action, and a guess at words still being
spoken must not run one. A matched command runs at once and its reply is the turn's reply; None means the
model answers.

Ringing: when items come due, `timer_finished` is published at once and the announcement is handed to the
pipeline's `announce`, which speaks it after any turn in progress (and any speech still open) has ended, on
the local speaker and to every listener. It repeats every `commands.ring_every_s` for `commands.ring_for_s`
unless silenced (`silence()`: the stop word, push-to-talk, a `cancel` message, or a new request once it has
been heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from protocol import messages as m
from voiced.commands import actions
from voiced.commands.actions import Change
from voiced.commands.match import Matcher
from voiced.commands.schedule import Item, Schedule
from voiced.commands.store import Store
from voiced.config import Settings

log = logging.getLogger(__name__)

Announce = Callable[[str], Awaitable[None]]
WATCH_S = 30.0
TimerMessage = m.TimerStarted | m.TimerUpdated | m.TimerCancelled | m.TimerFinished


class Publish(Protocol):
    def __call__(self, msg: TimerMessage) -> None: ...


class _Ring:
    def __init__(self, items: list[Item], until: float):
        self.items = items
        self.until = until
        self.stopped = asyncio.Event()
        self.spoken = 0
        self.task: asyncio.Task[None] | None = None


class Commands:
    def __init__(self, settings: Settings, publish: Publish, announce: Announce, wall: Callable[[], float] = time.time):
        """`wall`: the wall clock (seconds); a parameter so that benchmarks and tests can name the moment."""
        cs = settings.commands
        self.settings = cs
        self.enabled = cs.enabled
        self.zone = ZoneInfo(cs.timezone) if cs.timezone else None  # None: the system's zone, read at each use
        self.publish = publish
        self.announce = announce
        self.wall = wall
        self.matcher = Matcher() if cs.enabled else None
        privacy = settings.privacy
        self.store = Store(privacy.data_dir) if cs.enabled and privacy.save_reminders and privacy.data_dir else None
        self.schedule = Schedule(self.store.load() if self.store else (), cs.max_items)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._ring: _Ring | None = None
        with contextlib.suppress(RuntimeError):  # no loop yet (built outside one): the first use starts it
            asyncio.get_running_loop()
            self.start()

    # -- the turn's hook ---------------------------------------------------------------------------------------
    def now(self) -> datetime:
        t = self.wall()
        return datetime.fromtimestamp(t, self.zone) if self.zone else datetime.fromtimestamp(t).astimezone()

    def matches(self, words: str) -> bool:
        """Whether these words ask for a command (pure: nothing runs); a preemptive reply is never started on them."""
        return self.matcher is not None and bool(words) and self.matcher.match(words) is not None

    def handle(self, words: str) -> str | None:
        """Run the command these words ask for and return its reply, or None when they ask for none."""
        if self.matcher is None or not words:
            return None
        cmd = self.matcher.match(words)
        if cmd is None:
            return None
        now = self.now()
        out = actions.run(cmd, self.schedule, now)
        log.info("command %s (%s): %d change(s)", cmd.action.value, cmd.intent, len(out.changes))
        for change, item in out.changes:
            self.publish(self._message(change, item, now.timestamp()))
        if out.changes:
            self._save()
            self.start()
            if self._wake is not None:
                self._wake.set()
        return out.reply

    def warm_up(self) -> None:
        if self.matcher is not None:
            self.matcher.warm_up()
        self.start()

    def silence(self) -> bool:
        """Stop a ringing announcement that has been heard at least once; True if one was."""
        ring = self._ring
        if ring is None or ring.spoken == 0 or ring.stopped.is_set():
            return False
        ring.stopped.set()
        log.info("ringing silenced: %s", ", ".join(i.id for i in ring.items))
        return True

    @property
    def ringing(self) -> bool:
        return self._ring is not None and not self._ring.stopped.is_set()

    # -- scheduling --------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, self._ring.task if self._ring else None) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self) -> None:
        assert self._wake is not None
        while True:
            due_at = self.schedule.next_due()
            # Looked at again at least every WATCH_S: the wall clock can be set or jump (NTP, suspend), and an
            # alarm days away must not sleep through the change on a timeout computed before it.
            timeout = WATCH_S if due_at is None else min(WATCH_S, max(0.0, due_at - self.wall()))
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            due = self.schedule.due(self.wall())
            if due:
                self._save()
                for item in due:
                    self.publish(m.TimerFinished(id=item.id, kind=item.kind.value, name=item.name, text=item.text))
                self._ring_for(due)

    def _ring_for(self, items: list[Item]) -> None:
        until = time.monotonic() + self.settings.ring_for_s
        ring = self._ring
        if ring is not None and not ring.stopped.is_set():
            ring.items.extend(items)  # said with the others from its next repeat on
            ring.until = max(ring.until, until)
            return
        ring = self._ring = _Ring(list(items), until)
        ring.task = asyncio.get_running_loop().create_task(self._ringing(ring))

    async def _ringing(self, ring: _Ring) -> None:
        try:
            while not ring.stopped.is_set():
                await self.announce(actions.announcement(ring.items, self.now()))
                ring.spoken += 1
                if ring.stopped.is_set() or time.monotonic() + self.settings.ring_every_s > ring.until:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ring.stopped.wait(), self.settings.ring_every_s)
        except Exception:
            log.exception("announcing %s failed", ", ".join(i.id for i in ring.items))
        finally:
            ring.stopped.set()
            if self._ring is ring:
                self._ring = None

    # -- messages, disk ----------------------------------------------------------------------------------------
    def _message(self, change: Change, item: Item, now: float) -> TimerMessage:
        if change == Change.CANCELLED:
            return m.TimerCancelled(id=item.id, kind=item.kind.value, name=item.name, text=item.text)
        left = item.remaining(now)
        due = datetime.fromtimestamp(now + left, self.zone) if self.zone else datetime.fromtimestamp(now + left).astimezone()
        cls = m.TimerStarted if change == Change.STARTED else m.TimerUpdated
        return cls(id=item.id, kind=item.kind.value, name=item.name, text=item.text, total_s=round(item.total_s, 3),
                   remaining_s=round(left, 3), active=item.active, due_at=due.isoformat(timespec="seconds"))  # fmt: skip

    def snapshot(self) -> list[m.TimerInfo]:
        """Every item as it stands now, soonest first (a `timers` answer: for a client that comes in late)."""
        now = self.wall()
        items = sorted(self.schedule.items.values(), key=lambda i: (not i.active, i.due))
        return [m.TimerInfo(**self._message(Change.UPDATED, i, now).model_dump(exclude={"type"})) for i in items]

    def _save(self) -> None:
        if self.store is not None:
            try:
                self.store.save(list(self.schedule.items.values()))
            except OSError as e:
                log.error(
                    "cannot save timers and reminders to %s (%s); fix the directory's permissions or privacy.data_dir", self.store.path, e
                )
