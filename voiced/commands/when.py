"""When, in words: "at 7:30", "tomorrow at nine", "in ten minutes", "half past six pm" -> a moment. Pure.

hassil matches the shape of a sentence and hands the time phrase over as a wildcard; this module reads it. It
knows what Whisper writes for spoken times ("7:30", "7.30 a.m.", "9 o'clock", digits or words) and the day words
people use with alarms and reminders. `resolve` turns a phrase into a zone-aware datetime against `now`, which
is a parameter like every clock in the project's policies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS = {
    "zero": 0,
    "oh": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "a": 1,
    "an": 1,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_LEADS = frozenset({"at", "by", "in", "on", "today", "tomorrow", "tonight", "this", "next", "after", *_WEEKDAYS})
_SECONDS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class After:
    """A span from now: "in ten minutes"."""

    seconds: float


@dataclass(frozen=True)
class At:
    """A clock time, maybe on a named day. `meridiem` is "am"/"pm" when said; `day` is an offset in days from
    today (0 today, 1 tomorrow) or None; `weekday` 0-6 (Monday first) when a day's name was said."""

    hour: int
    minute: int
    meridiem: str | None = None
    day: int | None = None
    weekday: int | None = None


When = After | At


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("o'clock", " oclock").replace("a.m.", " am").replace("p.m.", " pm")
    text = re.sub(r"(\d)(am|pm)\b", r"\1 \2", text)
    text = re.sub(r"(\d)[:.](\d\d)\b", r"\1 : \2", text)
    text = re.sub(r"-", " ", text)
    return re.findall(r"\d+|:|[a-z']+", text)


def _number(words: list[str], i: int) -> tuple[int, int] | None:
    """The number starting at words[i] (digits, or words up to 99): (value, words used)."""
    if i >= len(words):
        return None
    w = words[i]
    if w.isdigit():
        return int(w), 1
    if w in _TENS:
        if i + 1 < len(words) and words[i + 1] in _UNITS and 0 < _UNITS[words[i + 1]] < 10 and words[i + 1] not in ("a", "an"):
            return _TENS[w] + _UNITS[words[i + 1]], 2
        return _TENS[w], 1
    if w in _UNITS:
        return _UNITS[w], 1
    return None


def parse_duration(text: str) -> float | None:
    """ "10 minutes", "an hour and a half", "two hours and 5 minutes", "half an hour" -> seconds."""
    words = [w for w in _tokens(text) if w not in ("and", "in", "for")]
    total, i, found, last_unit = 0.0, 0, False, 0
    while i < len(words):
        if words[i] == "half" and i + 2 < len(words) and words[i + 1] in ("a", "an") and words[i + 2].rstrip("s") in _SECONDS:
            total += _SECONDS[words[i + 2].rstrip("s")] / 2
            i, found = i + 3, True
            continue
        if words[i] in ("a", "an") and i + 1 < len(words) and words[i + 1] == "half" and found:
            total += last_unit / 2
            i += 2
            continue
        num = _number(words, i)
        if num is None or i + num[1] >= len(words):
            return None if not found else total
        unit = words[i + num[1]].rstrip("s")
        if unit not in _SECONDS:
            return None
        last_unit = _SECONDS[unit]
        total += num[0] * last_unit
        i, found = i + num[1] + 1, True
    return total if found and total > 0 else None


def _clock(words: list[str]) -> At | None:
    """A clock time with nothing else around it: "7:30", "seven thirty", "half past six", "noon", "9 pm"."""
    words = [w for w in words if w not in ("at", "oclock", "sharp", "by")]
    meridiem = None
    if words and words[-1] in ("am", "pm"):
        meridiem = words.pop()
    for suffix, mer in (
        (["in", "the", "morning"], "am"),
        (["in", "the", "afternoon"], "pm"),
        (["in", "the", "evening"], "pm"),
        (["at", "night"], "pm"),
        (["tonight"], "pm"),
    ):
        if words[-len(suffix) :] == suffix:
            words, meridiem = words[: -len(suffix)], mer
    if words in (["noon"], ["midday"]):
        return At(12, 0, "pm")
    if words == ["midnight"]:
        return At(0, 0, "am")
    if len(words) >= 3 and words[1] in ("past", "after", "to", "till", "before"):
        head = {"half": 30, "quarter": 15}.get(words[0])
        if head is None:
            n = _number(words, 0)
            if n is None or n[1] != 1:
                return None
            head = n[0]
        rest = words[2:]
        hour = _number(rest, 0)
        if hour is None or hour[1] != len(rest) or not 0 <= hour[0] <= 23 or not 0 < head < 60:
            return None
        if words[1] in ("past", "after"):
            return _checked(hour[0], head, meridiem)
        return _checked((hour[0] - 1) % 24 if hour[0] != 0 else 23, 60 - head, meridiem)
    hour = _number(words, 0)
    if hour is None:
        return None
    i = hour[1]
    if i < len(words) and words[i] == ":":
        i += 1
    minute = 0
    if i < len(words):
        if words[i] == "oh" and i + 1 < len(words):  # "seven oh five"
            m = _number(words, i + 1)
            if m is None or m[0] > 9:
                return None
            minute, i = m[0], i + 1 + m[1]
        else:
            m = _number(words, i)
            if m is None:
                return None
            minute, i = m[0], i + m[1]
    if i != len(words):
        return None
    if hour[0] >= 100 and minute == 0 and hour[1] == 1:  # "0730", "730"
        hour, minute = (hour[0] // 100, 1), hour[0] % 100
    return _checked(hour[0], minute, meridiem)


def _checked(hour: int, minute: int, meridiem: str | None) -> At | None:
    if not (0 <= minute < 60) or not (0 <= hour <= 23) or (meridiem and not 1 <= hour <= 12):
        return None
    return At(hour, minute, meridiem)


def parse_when(text: str) -> When | None:
    """A whole phrase: "tomorrow at 9", "at 7:30 on friday", "in 10 minutes", "6 am"."""
    words = _tokens(text)
    if not words:
        return None
    if words[0] == "in" or words[0] == "after":
        seconds = parse_duration(" ".join(words[1:]))
        return After(seconds) if seconds else None
    day: int | None = None
    weekday: int | None = None
    rest: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("today",):
            day = 0
        elif w == "tomorrow":
            day = 1
        elif w == "tonight":
            day, rest = 0, [*rest, "tonight"]
        elif w in _WEEKDAYS or w.rstrip("s") in _WEEKDAYS:
            weekday = _WEEKDAYS.index(w.rstrip("s") if w not in _WEEKDAYS else w)
        elif w in ("on", "this", "next") and i + 1 < len(words) and words[i + 1].rstrip("s") in _WEEKDAYS:
            pass
        elif w in ("the", "day", "after") and words[i : i + 4] == ["the", "day", "after", "tomorrow"]:
            day, i = 2, i + 3
        elif w == "morning" and rest == [] and i > 0:  # "tomorrow morning" with no time: the morning's default
            rest = ["9", "am"]
        else:
            rest.append(w)
        i += 1
    if not rest:
        return At(9, 0, "am", day, weekday) if day is not None or weekday is not None else None
    clock = _clock(rest)
    if clock is None:
        return None
    return At(clock.hour, clock.minute, clock.meridiem, day, weekday)


def resolve(when: When, now: datetime, morning: bool = False) -> datetime:
    """The moment `when` names, in `now`'s zone: the next such moment after `now`.

    A clock time said without am/pm and without a day is the next time the clock shows it (in 12-hour terms:
    "at 9" at 10 am is 9 pm), or with `morning` (an alarm: "wake me at 7") the morning's. With a day named, 1-6 o'clock means the afternoon (people set "tomorrow at 3" for
    3 pm far more often than for 3 am) and 7-12 the morning; the reply says which was set."""
    if isinstance(when, After):
        return now + timedelta(seconds=when.seconds)
    hour = when.hour
    if when.meridiem == "pm" and hour < 12:
        hour += 12
    elif when.meridiem == "am" and hour == 12:
        hour = 0
    start = now.replace(second=0, microsecond=0)
    if morning and not when.meridiem and 1 <= hour < 12:
        when = At(hour, when.minute, "am", when.day, when.weekday)
    if when.day is None and when.weekday is None:
        candidates = [hour] if when.meridiem or hour > 12 or hour == 0 else [hour % 12, hour % 12 + 12]
        options = []
        for d in (0, 1):
            for h in candidates:
                t = (start + timedelta(days=d)).replace(hour=h, minute=when.minute)
                if t > now:
                    options.append(t)
        return min(options)
    if not when.meridiem and 1 <= hour <= 6:
        hour += 12
    if when.weekday is not None:
        ahead = (when.weekday - now.weekday()) % 7
        t = (start + timedelta(days=ahead)).replace(hour=hour, minute=when.minute)
        return t if t > now else t + timedelta(days=7)
    t = (start + timedelta(days=when.day or 0)).replace(hour=hour, minute=when.minute)
    return t if t > now or when.day else t + timedelta(days=1)


def split_reminder(text: str) -> tuple[str, When | None]:
    """A reminder's words and the time phrase at their end, if one parses; the longest such phrase wins."""
    text = text.strip().rstrip(".!?")
    words = text.split()
    for k in range(1, len(words)):  # the shortest prefix whose remainder is a time phrase
        head, tail = " ".join(words[:k]), " ".join(words[k:])
        if words[k].lower().strip(",") not in _LEADS:  # "call five" is a name, not a time: times start so
            continue
        when = parse_when(tail)
        if when is not None:
            return head, when
    return text, None
