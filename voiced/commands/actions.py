"""A matched command, run against the schedule at `now`: the reply to speak and what changed. Pure.

Every reply says what was really done, in words that the speech normaliser reads well ("8 minutes", "7:30 AM"),
and a command that cannot be done ("cancel the timer" with none running, a time that does not parse) says so
instead of pretending. Announcements of what is due are phrased here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from voiced.commands.match import Action, Command
from voiced.commands.schedule import Item, Kind, Schedule, ScheduleFull
from voiced.commands.when import parse_when, resolve, split_reminder


class Change(StrEnum):
    STARTED = "started"
    UPDATED = "updated"
    CANCELLED = "cancelled"


@dataclass
class Outcome:
    reply: str
    changes: list[tuple[Change, Item]] = field(default_factory=list)


def duration_words(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in ((h, "hour"), (m, "minute"), (sec, "second")) if n]
    if not parts:
        return "less than a second"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def clock_words(t: datetime) -> str:
    return f"{t.hour % 12 or 12}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


def day_words(t: datetime, now: datetime) -> str:
    days = (t.date() - now.date()).days
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if 1 < days < 7:
        return f"on {t.strftime('%A')}"
    return f"on {t.strftime('%A, %B')} {t.day}"


def _label(item: Item) -> str:
    if item.kind == Kind.TIMER:
        return f"{item.name} timer" if item.name else "timer"
    if item.kind == Kind.ALARM:
        return "alarm"
    return "reminder"


def announcement(items: list[Item], now: datetime) -> str:
    """What is said when items come due: "Your pasta timer is done." / "Reminder: call your mother." """
    parts = []
    for i in items:
        if i.kind == Kind.TIMER:
            parts.append(f"Your {_label(i)} is done.")
        elif i.kind == Kind.ALARM:
            parts.append(f"It's {clock_words(now)}. This is your alarm.")
        else:
            parts.append(f"Reminder: {_you(i.text or '')}.")
    return " ".join(parts)


def _you(text: str) -> str:
    """The user's words said back to them: "call my mother" -> "call your mother"."""
    swaps = {"my": "your", "me": "you", "i": "you", "mine": "yours", "myself": "yourself", "i'm": "you're"}
    return " ".join(swaps.get(w.lower(), w) for w in text.split())


def _pick(schedule: Schedule, kind: Kind, cmd: Command, now: float) -> tuple[list[Item], str | None]:
    """The items a command names (by name, or by the duration it was set for), or why none."""
    items = schedule.of(kind, cmd.name)
    if cmd.of_seconds:
        items = [i for i in items if abs(i.total_s - cmd.of_seconds) < 1.0]
    if items:
        return items, None
    what = f"{cmd.name} timer" if cmd.name else f"{duration_words(cmd.of_seconds)} timer" if cmd.of_seconds else kind.value
    if schedule.of(kind):
        return [], f"I couldn't find a {what}."
    return [], f"You have no {kind.value}s running." if kind == Kind.TIMER else f"You have no {kind.value}s set."


def run(cmd: Command, schedule: Schedule, now: datetime) -> Outcome:
    """Run `cmd` on `schedule` at `now` (zone-aware: the zone alarms, reminders and the clock speak in)."""
    t = now.timestamp()
    a = cmd.action
    try:
        if a == Action.CURRENT_TIME:
            return Outcome(f"It's {clock_words(now)}.")
        if a == Action.CURRENT_DATE:
            day = now + timedelta(days=cmd.day)
            which = {0: "Today is", 1: "Tomorrow is", -1: "Yesterday was", 2: "The day after tomorrow is"}.get(cmd.day, "It is")
            return Outcome(f"{which} {day.strftime('%A, %B')} {day.day}, {day.year}.")
        if a == Action.START_TIMER:
            if not cmd.seconds or cmd.seconds <= 0:
                return Outcome("For how long? Say, for example, set a timer for five minutes.")
            item = schedule.start_timer(cmd.seconds, t, cmd.name)
            return Outcome(f"Your {_label(item)} is set for {duration_words(cmd.seconds)}.", [(Change.STARTED, item)])
        if a in (Action.TIMER_STATUS, Action.LIST_TIMERS):
            items, why = _pick(schedule, Kind.TIMER, cmd, t) if a == Action.TIMER_STATUS else (schedule.of(Kind.TIMER), None)
            if not items:
                return Outcome(why or "You have no timers running.")
            said = [f"{'Your ' + _label(i) if len(items) == 1 else 'The ' + _label(i)} has {duration_words(i.remaining(t))} left"
                    + ("" if i.active else ", paused") for i in items]  # fmt: skip
            return Outcome(("You have {} timers. ".format(len(items)) if len(items) > 1 else "") + ". ".join(said) + ".")
        if a in (Action.CANCEL_TIMER, Action.CANCEL_ALL_TIMERS, Action.CANCEL_ALARM, Action.CANCEL_REMINDER):
            kind = {Action.CANCEL_ALARM: Kind.ALARM, Action.CANCEL_REMINDER: Kind.REMINDER}.get(a, Kind.TIMER)
            if a == Action.CANCEL_ALL_TIMERS:
                items, why = schedule.of(Kind.TIMER), "You have no timers running."
            else:
                items, why = _pick(schedule, kind, cmd, t)
            if not items:
                return Outcome(why or "There is nothing to cancel.")
            gone = [i for i in (schedule.cancel(i.id) for i in items) if i is not None]
            what = _label(gone[0]) if len(gone) == 1 else f"{len(gone)} {kind.value}s"
            return Outcome(f"I cancelled your {what}." if len(gone) == 1 else f"I cancelled {what}.",
                           [(Change.CANCELLED, i) for i in gone])  # fmt: skip
        if a in (Action.PAUSE_TIMER, Action.RESUME_TIMER, Action.ADD_TIME):
            items, why = _pick(schedule, Kind.TIMER, cmd, t)
            if not items:
                return Outcome(why or "You have no timers running.")
            if len(items) > 1 and not cmd.name:
                return Outcome(f"You have {len(items)} timers; say which, for example the {_label(items[0])}.")
            item = items[0]
            if a == Action.PAUSE_TIMER:
                done = schedule.pause(item.id, t)
                reply = f"I paused your {_label(item)}." if done else f"Your {_label(item)} is already paused."
            elif a == Action.RESUME_TIMER:
                done = schedule.resume(item.id, t)
                reply = f"I resumed your {_label(item)}." if done else f"Your {_label(item)} is already running."
            else:
                if not cmd.seconds:
                    return Outcome("How much time? Say, for example, add two minutes to the timer.")
                done = schedule.add_time(item.id, cmd.seconds, t)
                verb = "added" if cmd.seconds > 0 else "took"
                where = "to" if cmd.seconds > 0 else "off"
                reply = (f"I {verb} {duration_words(abs(cmd.seconds))} {where} your {_label(item)}; "
                         f"{duration_words(done.remaining(t)) if done else 'no time'} left.")  # fmt: skip
            return Outcome(reply, [(Change.UPDATED, done)] if done else [])
        if a == Action.SET_ALARM:
            when = parse_when(cmd.when or "")
            if when is None:
                return Outcome("I didn't catch the time. Say, for example, wake me up at 7:30 AM.")
            due = resolve(when, now, morning=True)
            item = schedule.add_alarm(due.timestamp(), t)
            return Outcome(f"Your alarm is set for {clock_words(due)} {day_words(due, now)}.", [(Change.STARTED, item)])
        if a == Action.SET_REMINDER:
            text, when = cmd.text or "", parse_when(cmd.when) if cmd.when else None
            if cmd.when is None:
                text, when = split_reminder(text)
            if not text:
                return Outcome("What should I remind you of?")
            if when is None:
                return Outcome(f"When should I remind you to {_you(text)}? Say, for example, remind me to {text} at 5 PM.")
            due = resolve(when, now)
            item = schedule.add_reminder(due.timestamp(), t, text)
            at = (
                f"in {duration_words(due.timestamp() - t)}"
                if (due - now) < timedelta(hours=1)
                else f"{day_words(due, now)} at {clock_words(due)}"
            )
            return Outcome(f"I'll remind you {at} to {_you(text)}.", [(Change.STARTED, item)])
        if a in (Action.LIST_ALARMS, Action.LIST_REMINDERS):
            kind = Kind.ALARM if a == Action.LIST_ALARMS else Kind.REMINDER
            items = schedule.of(kind)
            if not items:
                return Outcome(f"You have no {kind.value}s set.")
            said = []
            for i in items:
                due = datetime.fromtimestamp(i.due, now.tzinfo)
                said.append(f"{day_words(due, now)} at {clock_words(due)}" + (f", {_you(i.text or '')}" if kind == Kind.REMINDER else ""))
            n = len(items)
            return Outcome(f"You have {n} {kind.value}{'' if n == 1 else 's'}: " + "; ".join(said) + ".")
    except ScheduleFull as e:
        return Outcome(f"I can't: {e}.")
    raise ValueError(f"no action for {a}; add it to voiced.commands.actions.run")
