"""Words -> a command, or None (the model answers). hassil with Home Assistant's own sentence templates.

Why hassil and home-assistant-intents: they are how Home Assistant Assist recognises timers and the clock
locally, before any LLM; the templates are maintained by that community for many phrasings, and the matcher is
deterministic (a sentence matches a template or it does not), so a question to the model is never taken for a
command by a guess. Licences (read from the wheels' metadata): hassil 3.13.1 Apache-2.0; home-assistant-intents
2026.12.1 Apache-2.0 (its LICENSE.md is the Apache License 2.0). Used as libraries; their data is loaded at run
time from the installed package, not copied here.

From Home Assistant's English intents we take the timer and clock ones (HassStartTimer, HassCancelTimer,
HassCancelAllTimers, HassTimerStatus, HassPauseTimer, HassUnpauseTimer, HassIncreaseTimer, HassDecreaseTimer,
HassGetCurrentTime, HassGetCurrentDate) and drop their sentences that need Home Assistant's own lists: areas
("the kitchen timer" as a room) and `timer_command` ("turn off the lights in 5 minutes": a delayed home
command, which voiced cannot run, so that sentence goes to the model, which says so). Alarms and reminders are
not Home Assistant intents; voiced's own templates for them (and a few everyday timer phrasings Home Assistant
lacks) are in data/en.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import cast

import yaml
from hassil import Intents, recognize_best
from hassil.intents import SlotList, TextSlotList

DATA = Path(__file__).with_name("data")

HA_INTENTS = (
    "HassStartTimer", "HassCancelTimer", "HassCancelAllTimers", "HassTimerStatus", "HassPauseTimer",
    "HassUnpauseTimer", "HassIncreaseTimer", "HassDecreaseTimer", "HassGetCurrentTime", "HassGetCurrentDate",
)  # fmt: skip
# Home Assistant's lists that name its own entities; a sentence that needs one is not for voiced.
_HA_ONLY = ("{area}", "{floor}", "{timer_command", "{name}")


class Action(StrEnum):
    START_TIMER = "start_timer"
    CANCEL_TIMER = "cancel_timer"
    CANCEL_ALL_TIMERS = "cancel_all_timers"
    TIMER_STATUS = "timer_status"
    LIST_TIMERS = "list_timers"
    PAUSE_TIMER = "pause_timer"
    RESUME_TIMER = "resume_timer"
    ADD_TIME = "add_time"
    CURRENT_TIME = "current_time"
    CURRENT_DATE = "current_date"
    SET_ALARM = "set_alarm"
    CANCEL_ALARM = "cancel_alarm"
    LIST_ALARMS = "list_alarms"
    SET_REMINDER = "set_reminder"
    CANCEL_REMINDER = "cancel_reminder"
    LIST_REMINDERS = "list_reminders"


_ACTIONS: dict[str, Action] = {
    "HassStartTimer": Action.START_TIMER, "VoicedStartTimer": Action.START_TIMER,
    "HassCancelTimer": Action.CANCEL_TIMER, "HassCancelAllTimers": Action.CANCEL_ALL_TIMERS,
    "HassTimerStatus": Action.TIMER_STATUS, "VoicedTimerStatus": Action.TIMER_STATUS,
    "VoicedListTimers": Action.LIST_TIMERS, "HassPauseTimer": Action.PAUSE_TIMER,
    "HassUnpauseTimer": Action.RESUME_TIMER, "HassIncreaseTimer": Action.ADD_TIME, "HassDecreaseTimer": Action.ADD_TIME,
    "HassGetCurrentTime": Action.CURRENT_TIME, "VoicedCurrentTime": Action.CURRENT_TIME,
    "HassGetCurrentDate": Action.CURRENT_DATE, "VoicedCurrentDate": Action.CURRENT_DATE,
    "VoicedSetAlarm": Action.SET_ALARM, "VoicedCancelAlarm": Action.CANCEL_ALARM, "VoicedListAlarms": Action.LIST_ALARMS,
    "VoicedSetReminder": Action.SET_REMINDER, "VoicedCancelReminder": Action.CANCEL_REMINDER,
    "VoicedListReminders": Action.LIST_REMINDERS,
}  # fmt: skip


@dataclass(frozen=True)
class Command:
    """What was asked. `seconds`: a duration said (to start, or to add: negative to take off); `of_seconds`: the
    duration naming which timer ("the 5 minute timer"); `when`: a time phrase, read by voiced.commands.when."""

    action: Action
    intent: str
    seconds: float | None = None
    of_seconds: float | None = None
    name: str | None = None
    day: int = 0
    when: str | None = None
    text: str | None = None


# hassil's intents data as JSON: {"intents": {name: {"data": [{"sentences": [...]}]}}, "lists": ..., ...}
IntentsData = dict[str, object]


def _load_yaml(path: Path) -> IntentsData:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("intents"), dict):
        raise ValueError(f"{path} is not a hassil intents file (needs 'intents'); reinstall voiced")
    return data


def _section(data: IntentsData, key: str) -> dict[str, object]:
    value = data.get(key, {})
    return cast(dict[str, object], value) if isinstance(value, dict) else {}


def build_intents(language: str = "en") -> Intents:
    """Home Assistant's timer and clock intents for `language`, less what needs its entities, plus ours."""
    import home_assistant_intents

    ha = home_assistant_intents.get_intents(language)
    if ha is None:
        raise ValueError(f"home-assistant-intents has no language {language!r}; voiced's commands speak 'en'")
    ours = _load_yaml(DATA / f"{language}.yaml")
    intents: dict[str, object] = {}
    for name in HA_INTENTS:
        data = []
        intent = _section(_section(ha, "intents"), name)
        for block in cast(list[dict[str, object]], intent.get("data", [])):
            sentences = [s for s in cast(list[str], block["sentences"]) if not any(k in s for k in _HA_ONLY)]
            if sentences:
                data.append({**block, "sentences": sentences})
        if data:
            intents[name] = {"data": data}
    intents.update(_section(ours, "intents"))
    skip = cast(list[str], ha.get("skip_words", []))
    return Intents.from_dict({
        "language": language,
        "intents": intents,
        "lists": {**_section(ha, "lists"), **_section(ours, "lists")},
        "expansion_rules": {**_section(ha, "expansion_rules"), **_section(ours, "expansion_rules")},
        "skip_words": [*skip, "hey", "okay", "ok", "um", "uh", "and", "then", "now"],
    })  # fmt: skip


_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


class Matcher:
    """Built once (tens of ms), then about a millisecond an utterance (benchmarks/commands.py)."""

    def __init__(self, language: str = "en"):
        self.intents = build_intents(language)
        self._lists: dict[str, SlotList] = {k: TextSlotList.from_strings([]) for k in ("area", "floor", "name")}

    def match(self, text: str) -> Command | None:
        text = _clean(text)
        if not text:
            return None
        result = recognize_best(text, self.intents, slot_lists=self._lists, language="en")
        if result is None or result.intent.name not in _ACTIONS:
            return None
        return _command(result.intent.name, {k: (e.value, e.text) for k, e in result.entities.items()})

    def warm_up(self) -> None:
        """hassil expands number words for range lists on first use; pay for that before the first turn."""
        self.match("set a timer for three seconds")


def _clean(text: str) -> str:
    text = text.translate(_QUOTES).strip()
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .!?,")


Entities = dict[str, tuple[object, str]]  # slot name -> (value, the words that said it)


def _num(entities: Entities, key: str) -> float:
    v = entities.get(key, (0, ""))[0]
    return float(v) if isinstance(v, (int, float)) else 0.0


def _command(intent: str, e: Entities) -> Command:
    action = _ACTIONS[intent]
    seconds = _num(e, "hours") * 3600 + _num(e, "minutes") * 60 + _num(e, "seconds")
    of = _num(e, "start_hours") * 3600 + _num(e, "start_minutes") * 60 + _num(e, "start_seconds")
    name = e.get("name", (None, ""))[0]
    name = str(name).strip(" .,!?") if name else None
    if intent == "HassDecreaseTimer":
        seconds = -seconds
    day = e.get("day", (0, ""))[0]
    when = e.get("when", (None, ""))[0]
    text = e.get("text", (None, ""))[0]
    return Command(
        action, intent, seconds=seconds or None, of_seconds=of or None, name=name or None,
        day=int(day) if isinstance(day, (int, float)) else 0, when=str(when).strip() if when else None,
        text=str(text).strip(" .,!?") if text else None,
    )  # fmt: skip
