"""voiced.commands, the pure parts: matching many phrasings, time phrases, the schedule with `now`, replies,
the store, the system prompt, the Wyoming mapping. Real hassil and Home Assistant's real templates."""

from __future__ import annotations

import json
import stat
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from wyoming.timer import TimerCancelled, TimerFinished, TimerStarted, TimerUpdated

from protocol import messages as m
from voiced.commands import actions, prompt
from voiced.commands.match import Action, Matcher
from voiced.commands.schedule import Kind, Schedule, ScheduleFull
from voiced.commands.store import Store
from voiced.commands.when import After, At, parse_duration, parse_when, resolve, split_reminder
from voiced.commands.wyoming import timer_event

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 4, 10, 15, 0, tzinfo=BERLIN)  # a Friday


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher()


@pytest.mark.parametrize(
    "text, action, seconds, name",
    [
        ("Set a timer for three seconds.", Action.START_TIMER, 3, None),
        ("set a timer for 3 seconds", Action.START_TIMER, 3, None),
        ("Set a timer for ten minutes.", Action.START_TIMER, 600, None),
        ("Timer for 5 minutes", Action.START_TIMER, 300, None),
        ("Start a 10 minute timer.", Action.START_TIMER, 600, None),
        ("Set a timer for one hour and thirty minutes", Action.START_TIMER, 5400, None),
        ("Set a timer for 2 minutes and 30 seconds.", Action.START_TIMER, 150, None),
        ("Set a pasta timer for 8 minutes.", Action.START_TIMER, 480, "pasta"),
        ("set a 10 minute pasta timer", Action.START_TIMER, 600, "pasta"),
        ("Please set a timer for twenty five minutes.", Action.START_TIMER, 1500, None),
        ("Cancel the timer.", Action.CANCEL_TIMER, None, None),
        ("Stop the pasta timer.", Action.CANCEL_TIMER, None, "pasta"),
        ("Cancel all timers.", Action.CANCEL_ALL_TIMERS, None, None),
        ("How much time is left?", Action.TIMER_STATUS, None, None),
        ("How much time is left on my timer?", Action.TIMER_STATUS, None, None),
        ("How long is left on the pasta timer?", Action.TIMER_STATUS, None, "pasta"),
        ("Timer status", Action.TIMER_STATUS, None, None),
        ("What timers do I have?", Action.LIST_TIMERS, None, None),
        ("Pause the timer.", Action.PAUSE_TIMER, None, None),
        ("Resume the timer.", Action.RESUME_TIMER, None, None),
        ("Continue the pasta timer", Action.RESUME_TIMER, None, "pasta"),
        ("Add 5 minutes to the timer.", Action.ADD_TIME, 300, None),
        ("Take 2 minutes off the timer.", Action.ADD_TIME, -120, None),
        ("What time is it?", Action.CURRENT_TIME, None, None),
        ("What's the time?", Action.CURRENT_TIME, None, None),
        ("what\u2019s the time right now", Action.CURRENT_TIME, None, None),
        ("What's the date?", Action.CURRENT_DATE, None, None),
        ("What day is it?", Action.CURRENT_DATE, None, None),
        ("What day is it tomorrow?", Action.CURRENT_DATE, None, None),
        ("Wake me up at 7:30.", Action.SET_ALARM, None, None),
        ("Set an alarm for 6 am tomorrow.", Action.SET_ALARM, None, None),
        ("Cancel my alarm.", Action.CANCEL_ALARM, None, None),
        ("What alarms do I have?", Action.LIST_ALARMS, None, None),
        ("Remind me to call my mother tomorrow at 9.", Action.SET_REMINDER, None, None),
        ("Remind me in 10 minutes to check the oven.", Action.SET_REMINDER, None, None),
        ("What are my reminders?", Action.LIST_REMINDERS, None, None),
        ("Delete my reminders.", Action.CANCEL_REMINDER, None, None),
    ],
)
def test_phrasings_match_their_command(matcher: Matcher, text: str, action: Action, seconds: float | None, name: str | None) -> None:
    cmd = matcher.match(text)
    assert cmd is not None, text
    assert cmd.action == action, (text, cmd)
    assert cmd.seconds == seconds, (text, cmd)
    assert cmd.name == name, (text, cmd)


@pytest.mark.parametrize(
    "text",
    [
        "Turn on the kitchen light.",
        "Turn off the lights in 5 minutes.",  # a delayed home command: voiced cannot run it, the model says so
        "What is the capital of France?",
        "Tell me a very long story about the sea.",
        "What time is it in Tokyo?",
        "How many minutes are in an hour?",
        "Who invented the timer?",
        "stop",
        "",
    ],
)
def test_questions_are_not_commands(matcher: Matcher, text: str) -> None:
    assert matcher.match(text) is None


def test_day_offsets_and_reminder_words(matcher: Matcher) -> None:
    assert matcher.match("What day is it tomorrow?").day == 1
    assert matcher.match("What's the date today?").day == 0
    r = matcher.match("Remind me to call my mother tomorrow at 9.")
    assert r.text == "call my mother tomorrow at 9" and r.when is None
    r = matcher.match("remind me in 10 minutes to check the oven")
    assert (r.text, r.when) == ("check the oven", "in 10 minutes")


@pytest.mark.parametrize(
    "phrase, expected",
    [
        ("7:30", datetime(2026, 12, 4, 19, 30)),  # the next time the clock shows 7:30
        ("at 7.30 a.m.", datetime(2026, 12, 5, 7, 30)),
        ("tomorrow at 9", datetime(2026, 12, 5, 9, 0)),
        ("tomorrow at 3", datetime(2026, 12, 5, 15, 0)),  # with a day, 1-6 o'clock is the afternoon
        ("seven thirty pm", datetime(2026, 12, 4, 19, 30)),
        ("half past six pm", datetime(2026, 12, 4, 18, 30)),
        ("quarter to eight in the morning", datetime(2026, 12, 5, 7, 45)),
        ("noon", datetime(2026, 12, 4, 12, 0)),
        ("midnight", datetime(2026, 12, 5, 0, 0)),
        ("in 10 minutes", datetime(2026, 12, 4, 10, 25)),
        ("in an hour and a half", datetime(2026, 12, 4, 11, 45)),
        ("at 9 o'clock", datetime(2026, 12, 4, 21, 0)),
        ("on monday at 8 am", datetime(2026, 12, 7, 8, 0)),
        ("friday at 10", datetime(2026, 12, 11, 10, 0)),  # today's 10:00 has passed: next week's
        ("tomorrow", datetime(2026, 12, 5, 9, 0)),
    ],
)
def test_time_phrases_resolve_against_now(phrase: str, expected: datetime) -> None:
    when = parse_when(phrase)
    assert when is not None, phrase
    assert resolve(when, NOW) == expected.replace(tzinfo=BERLIN), phrase


def test_time_phrase_edges() -> None:
    assert parse_when("banana") is None and parse_when("at 25:00") is None and parse_when("") is None
    assert resolve(At(7, 0), NOW, morning=True) == datetime(2026, 12, 5, 7, 0, tzinfo=BERLIN)  # "wake me at 7"
    assert parse_duration("two hours and 5 minutes") == 7500 and parse_duration("half an hour") == 1800
    assert parse_duration("some time") is None
    assert split_reminder("call my mother tomorrow at 9") == ("call my mother", At(9, 0, None, 1))
    assert split_reminder("take the pizza out in 10 minutes.") == ("take the pizza out", After(600))
    assert split_reminder("call five") == ("call five", None)  # a bare number is not a time
    assert split_reminder("buy milk") == ("buy milk", None)


def test_timer_state_machine_with_now() -> None:
    s = Schedule()
    t = s.start_timer(300, now=1000.0, name="Pasta")
    assert t.remaining(1100.0) == 200 and s.next_due() == 1300.0
    assert s.pause(t.id, 1100.0).remaining(5000.0) == 200  # paused: time stands still
    assert s.next_due() is None and s.due(99999.0) == []
    assert s.pause(t.id, 1200.0) is None  # already paused
    resumed = s.resume(t.id, 2000.0)
    assert resumed.due == 2200.0 and s.resume(t.id, 2001.0) is None
    assert s.add_time(t.id, 60, 2100.0).remaining(2100.0) == 160
    assert s.add_time(t.id, -1000, 2100.0).remaining(2100.0) == 0  # never below zero
    assert [i.id for i in s.of(Kind.TIMER, "pasta ")] == [t.id]  # names match without case or spaces
    assert [i.id for i in s.due(2100.0)] == [t.id] and s.items == {}
    full = Schedule(max_items=1)
    full.start_timer(1, 0.0)
    with pytest.raises(ScheduleFull):
        full.start_timer(1, 0.0)


def test_actions_say_what_was_done() -> None:
    s, mm = Schedule(), Matcher()

    def say(text: str, now: datetime = NOW) -> actions.Outcome:
        return actions.run(mm.match(text), s, now)

    out = say("Set a pasta timer for 8 minutes.")
    assert out.reply == "Your pasta timer is set for 8 minutes." and [c for c, _ in out.changes] == [actions.Change.STARTED]
    assert say("Set a timer for 3 seconds.").reply == "Your timer is set for 3 seconds."
    later = datetime.fromtimestamp(NOW.timestamp() + 60, BERLIN)
    assert say("How much time is left on the pasta timer?", later).reply == "Your pasta timer has 7 minutes left."
    assert "2 timers" in say("What timers do I have?").reply
    assert "say which" in say("Pause the timer.").reply  # two timers and no name: nothing is paused
    assert say("Pause the pasta timer.").reply == "I paused your pasta timer."
    assert say("Cancel all timers.").reply == "I cancelled 2 timers."
    assert say("Cancel the timer.").reply == "You have no timers running."
    assert say("How much time is left?").reply == "You have no timers running."
    assert say("What time is it?").reply == "It's 10:15 AM."
    assert say("What day is it tomorrow?").reply == "Tomorrow is Saturday, December 5, 2026."
    assert say("Wake me up at 7:30.").reply == "Your alarm is set for 7:30 AM tomorrow."
    out = say("Remind me to call my mother tomorrow at 9.")
    assert out.reply == "I'll remind you tomorrow at 9:00 AM to call your mother."
    assert out.changes[0][1].text == "call my mother"
    assert say("Remind me to buy milk.").reply.startswith("When should I remind you")  # no time: nothing kept
    assert len(s.of(Kind.REMINDER)) == 1
    assert say("What are my reminders?").reply == "You have 1 reminder: tomorrow at 9:00 AM, call your mother."
    assert say("Set a timer for").reply.startswith("For how long?")
    due = s.due(datetime(2026, 12, 5, 9, 0, tzinfo=BERLIN).timestamp())
    assert actions.announcement(due, NOW) == "It's 10:15 AM. This is your alarm. Reminder: call your mother."


def test_store_round_trip_is_private_and_a_bad_file_is_kept(tmp_path) -> None:
    s = Schedule()
    s.add_reminder(2000.0, 1000.0, "call my mother")
    s.pause(s.start_timer(60, 1000.0, "tea").id, 1010.0)
    store = Store(tmp_path / "data")
    store.save(list(s.items.values()))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert Store(tmp_path / "data").load() == list(s.items.values())
    store.path.write_text("{not json")
    again = Store(tmp_path / "data")
    assert again.load() == [] and not again.writable
    again.save(list(s.items.values()))  # refused: the user's file is not overwritten
    assert store.path.read_text() == "{not json"
    assert json.loads(json.dumps(s.to_list()))[0]["text"] == "call my mother"


def test_system_prompt_says_what_voiced_can_do() -> None:
    bundle = ("You are a voice assistant. Say numbers as a person would say them. If asked to set a timer or "
              "reminder, confirm it in one sentence.")  # fmt: skip
    text = prompt.compose(bundle)
    assert prompt.STALE not in text and "no connection to lights" in text and "never say or suggest that you did it" in text
    assert "didn't catch it" in text
    assert prompt.compose(text) == text
    assert "You cannot set timers" in prompt.compose(bundle, commands_enabled=False)
    words = lambda text: len(text.split())  # noqa: E731
    assert prompt.for_assistant(bundle, words, 4000, True) == text
    assert prompt.NO_COMMANDS in prompt.for_assistant(bundle, words, 4000, False)  # encoder-free: nothing runs
    assert prompt.for_assistant(bundle, words, 100, True) == bundle  # would crowd out a tiny context


def test_wyoming_timer_events() -> None:
    started = timer_event(m.TimerStarted(id="t1", name="pasta", total_s=5400, remaining_s=5400, due_at="x"))
    assert TimerStarted.from_event(started) == TimerStarted(id="t1", total_seconds=5400, name="pasta", start_hours=1, start_minutes=30)
    updated = timer_event(m.TimerUpdated(id="t1", total_s=60, remaining_s=42.4, active=False, due_at="x"))
    assert TimerUpdated.from_event(updated) == TimerUpdated(id="t1", is_active=False, total_seconds=42)
    assert TimerCancelled.is_type(timer_event(m.TimerCancelled(id="t1")).type)
    assert TimerFinished.from_event(timer_event(m.TimerFinished(id="t1"))).id == "t1"
    reminder = timer_event(m.TimerStarted(id="r", kind="reminder", text="call mum", total_s=60, remaining_s=60, due_at="x"))
    assert TimerStarted.from_event(reminder).name == "call mum"
    assert timer_event(m.Pong()) is None
