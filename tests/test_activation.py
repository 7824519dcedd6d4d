"""Activation decisions on transcripts, as Whisper writes them (case, punctuation, misspellings)."""

from __future__ import annotations

import pytest

from tests.support.asr import tiny_en_dir
from tests.support.speech import espeak
from voiced.audio.activation import Activation, Decision
from voiced.config import ActivationSettings
from voiced.model.asr import Recognizer


def wake(**kw) -> Activation:
    return Activation(ActivationSettings(mode="wake", **kw))


@pytest.mark.parametrize(
    "heard,query",
    [
        ("Hey voiced, what time is it?", "what time is it?"),
        ("hey voiced what time is it", "what time is it"),
        ("HEY VOICED. Turn off the lights.", "Turn off the lights."),
        ("Hey voice, what time is it?", "what time is it?"),
        ("A voiced. What is the weather?", "What is the weather?"),
        ("Hey, voice it, turn off the lights.", "turn off the lights."),
        ("Heyvoiced, set a timer.", "set a timer."),
        ("Um, hey voiced, tell me a joke.", "tell me a joke."),
        ("Hay voiced! Who wrote Hamlet?", "Who wrote Hamlet?"),
    ],
)
def test_wake_phrase_as_asr_writes_it_starts_a_query(heard: str, query: str) -> None:
    d = wake().decide(heard, now=0.0)
    assert d == Decision(True, query, "wake")


@pytest.mark.parametrize(
    "chatter",
    [
        "Hey boys, dinner is ready.",
        "Hey guys, what's up?",
        "The voice of reason says no.",
        "I voted yesterday.",
        "What time is it?",
        "hey you",
        "Tell me, hey voiced, what time it is.",  # not at the start of the turn
        "Okay, so the meeting is at three.",
        "voiced from the hallway called his name",  # the hotword-biased recogniser writes "A voice from" so
    ],
)
def test_chatter_without_the_phrase_is_not_answered(chatter: str) -> None:
    d = wake().decide(chatter, now=100.0)
    assert d.answer is False and d.reason == "not-addressed" and d.query == ""


def test_phrase_alone_makes_the_next_turn_the_query_until_the_window_closes() -> None:
    a = wake(query_window_s=5.0)
    assert a.decide("Hey voiced.", now=10.0) == Decision(False, "", "wake-alone")
    assert a.decide("What is the capital of France?", now=13.0) == Decision(True, "What is the capital of France?", "after-wake")
    # used up: the turn after that is chatter again
    assert a.decide("And what about Spain?", now=14.0).answer is False
    a.decide("hey voiced", now=20.0)
    assert a.decide("What is the capital of France?", now=25.01).answer is False  # 5.01 s later: too late


def test_follow_up_window_after_a_reply_expires() -> None:
    a = wake(follow_up_s=8.0)
    assert a.decide("hey voiced what is the capital of France", now=0.0).answer
    a.replied(now=3.0)
    assert a.in_follow_up(10.9)
    assert a.decide("And of Spain?", now=10.9) == Decision(True, "And of Spain?", "follow-up")
    a.replied(now=12.0)  # each reply reopens the window from its own end
    assert a.decide("And Italy?", now=19.5).reason == "follow-up"
    assert a.decide("Nice weather today.", now=20.5 + 8.0) == Decision(False, "", "not-addressed")
    assert not a.in_follow_up(100.0)


def test_follow_up_zero_disables_the_window() -> None:
    a = wake(follow_up_s=0.0)
    a.replied(now=5.0)
    assert a.decide("And of Spain?", now=5.5).answer is False


def test_always_mode_answers_everything_and_strips_a_phrase() -> None:
    a = Activation(ActivationSettings(mode="always"))
    assert a.decide("What is the capital of France?", now=0.0) == Decision(True, "What is the capital of France?", "always")
    assert a.decide("Hey voiced, what time is it?", now=1.0) == Decision(True, "what time is it?", "wake")
    assert a.decide("  ", now=2.0) == Decision(False, "", "empty")
    assert a.decide("...", now=2.0).reason == "empty"


def test_push_mode_answers_each_pushed_turn() -> None:
    a = Activation(ActivationSettings(mode="push"))
    assert a.decide("what time is it", now=0.0) == Decision(True, "what time is it", "push")
    assert a.decide("hey voiced, what time is it", now=0.0).query == "what time is it"
    assert a.decide("", now=0.0).answer is False


def test_threshold_is_respected() -> None:
    strict = wake(wake_threshold=1.0)
    assert strict.decide("Hey voice, what time is it?", now=0.0).answer is False
    assert strict.decide("Hey voiced, what time is it?", now=0.0).answer is True


def test_several_and_custom_phrases() -> None:
    a = wake(wake_phrases=["hey voiced", "ok computer"])
    m = a.match_wake("Okay computer, play some jazz.")
    assert m is not None and m.phrase == "ok computer" and m.rest == "play some jazz."
    assert a.decide("OK, computer. Lights off.", now=0.0).query == "Lights off."


@pytest.mark.parametrize(
    "heard,is_stop",
    [
        ("Stop.", True),
        ("stop", True),
        ("Cancel that, please.", True),
        ("Okay, stop talking.", True),
        ("Hey voiced, stop!", True),
        ("Stop it now.", True),
        ("Don't stop believing.", False),
        ("Stop the music and play some jazz.", False),
        ("Where is the bus stop?", False),
        ("", False),
    ],
)
def test_stop_commands(heard: str, is_stop: bool) -> None:
    assert wake().is_stop_command(heard) is is_stop


def test_stop_words_come_from_settings_and_work_in_every_mode() -> None:
    for mode in ("always", "wake", "push"):
        a = Activation(ActivationSettings(mode=mode, stop_words=["be quiet", "halt"]))
        assert a.is_stop_command("Be quiet, please.") and a.is_stop_command("Halt!")
        assert not a.is_stop_command("Stop.")


@pytest.mark.slow
def test_spoken_wake_phrase_through_the_recognizer_with_hotwords(tmp_path) -> None:
    """End to end on audio: espeak says the phrase, Whisper (biased by the phrase as hotwords) hears it."""
    biased = Recognizer(tiny_en_dir(), threads=2, hotwords="hey voiced")
    a = wake()
    d = a.decide(biased.transcribe(espeak("Hey voiced, what time is it in Tokyo?")).text, now=0.0)
    assert d.answer and d.reason == "wake"
    assert {"time", "tokyo"} <= set(d.query.lower().strip("?.").split())
    # chatter through the same biased recogniser does not turn into the phrase
    chat = biased.transcribe(espeak("Please turn off the kitchen lights.")).text
    assert a.decide(chat, now=100.0).answer is False, chat
