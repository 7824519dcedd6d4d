"""The Listener and Addressing on their own: real webrtcvad + Silero, real espeak speech, real Whisper where words
matter, no pipeline, no threads. Each turn behaviour (barge-in, the stop word, push-to-talk, the wake window,
follow-up, the guess at a pause) is decided here; tests/test_turn*.py check the same end to end."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.asr import shared_recognizer
from tests.support.speech import compose, espeak
from voiced.audio.activation import Activation, Evidence, Heard
from voiced.audio.endpoint import EndOfTurnPolicy
from voiced.config import ActivationSettings, AudioSettings
from voiced.turn import listener as li

AUDIO = AudioSettings(hangover_ms=400)
FRAME = 480  # 30 ms


def make(mode: str = "always", words: bool = True, **activation: object) -> li.Listener:
    act = ActivationSettings(mode=mode, prefill_while_speaking_s=0, **activation)  # type: ignore[arg-type]
    return li.Listener("test", AUDIO, act, EndOfTurnPolicy(act, AUDIO), li.Hearing(transcribes=words, turn_model=False))


def feed(lis: li.Listener, pcm: np.ndarray, t0: float = 0.0) -> list[tuple[float, li.Event]]:
    """`pcm` 30 ms at a time, in real time from `t0` (the wall clock the Listener is given)."""
    out: list[tuple[float, li.Event]] = []
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        t = t0 + (i + FRAME) / 16000
        out += [(t, ev) for ev in lis.feed(pcm[i : i + FRAME], now=t)]
    return out


def of(events: list[tuple[float, li.Event]] | list[li.Event], kind: type) -> list:
    plain = [e[1] if isinstance(e, tuple) else e for e in events]
    return [ev for ev in plain if isinstance(ev, kind)]


def test_a_turn_starts_ends_and_carries_its_audio_and_silence() -> None:
    rec = compose([0.5, "What is the capital of France?", 1.0], noise_dbfs=-60.0)
    lis = make(words=False)  # no recogniser: the prosody alone sets the hangover, nothing is awaited
    events = feed(lis, rec.pcm)
    assert len(of(events, li.Started)) == 1 and lis.phase is li.Phase.IDLE
    (turn,) = of(events, li.UserTurn)
    assert abs(len(turn.audio) / 16000 - (rec.segments[0][1] - rec.segments[0][0])) < 0.8
    assert AUDIO.hangover_ms - 60 <= turn.silence_ms <= 1500 and not turn.pushed


def test_a_pause_asks_for_a_guess_and_resumed_speech_makes_it_stale() -> None:
    lis = make()
    first = feed(lis, compose([0.5, "Set a timer for"], noise_dbfs=-60.0).pcm)
    pause = feed(lis, np.random.default_rng(1).normal(0, 30, 16000 * 3 // 10).astype(np.int16), t0=2.0)
    assert lis.phase is li.Phase.GUESSING, (first, pause)
    (guess,) = of(pause, li.Transcribe)
    assert guess.guess and lis.hangover.reason == "awaiting-words"
    feed(lis, espeak("ten minutes"), t0=2.3)  # the user goes on before the words land
    assert lis.on_guess(guess.job, "Set a timer for it.", None, now=3.0) == [], "a stale guess changes nothing"
    assert lis.hangover.reason == "no-evidence"


def test_the_guess_takes_its_audio_guess_after_ms_into_the_pause() -> None:
    speech = compose([0.5, "What is the capital of France?"], noise_dbfs=-60.0).pcm
    quiet = np.random.default_rng(2).normal(0, 30, 16000).astype(np.int16)
    waited, heard = {}, {}
    for after in (0, 240):
        lis = make(guess_after_ms=after)
        feed(lis, speech)
        paused_at = None
        for i in range(0, len(quiet) - FRAME + 1, FRAME):
            events = lis.feed(quiet[i : i + FRAME], now=10.0 + i / 16000)
            if paused_at is None and lis.phase is not li.Phase.SPEAKING:
                paused_at = i
            if asked := of(events, li.Transcribe):
                assert paused_at is not None
                waited[after], heard[after] = (i - paused_at) / 16, len(asked[0].audio) / 16
                break
    assert waited[0] <= 30 and 210 <= waited[240] <= 270, waited  # ms from the pause's first frame, 30 ms frames
    assert 200 <= heard[240] - heard[0] <= 280, heard  # the later guess hears the pause's silence too


def test_a_guess_sets_the_hangover_and_offers_its_words_for_prefill() -> None:
    lis = make()
    events = feed(lis, compose([0.5, "What time is it?", 0.3], noise_dbfs=-60.0).pcm)
    (guess,) = of(events, li.Transcribe)
    assert lis.phase is li.Phase.GUESSING and lis.hangover.reason == "awaiting-words"
    text = shared_recognizer().transcribe(guess.audio).text
    requests = lis.on_guess(guess.job, text, None, now=2.0)
    assert lis.hangover.reason == "words-complete" and lis.hangover.ms < AUDIO.hangover_ms, text
    assert [type(r) for r in requests] == [li.Prefill] and "time" in requests[0].query.lower()
    (turn,) = of(feed(lis, np.zeros(16000, np.int16) + 3, t0=2.0), li.UserTurn)
    assert turn.guess == text and turn.guess_job is None, "the landed words are the turn's transcript"


def test_barge_in_needs_speech_over_the_reply_for_barge_in_min_ms() -> None:
    lis = make(barge_in_min_ms=300)
    lis.replying = True
    click = compose([0.5, 0.0, 0.5], noise_dbfs=-60.0).pcm
    click[8000 : 8000 + 1600] = (np.sin(np.arange(1600) / 3) * 20000).astype(np.int16)  # 100 ms of tone
    assert of(feed(lis, click), li.BargeIn) == []
    events = feed(lis, compose([0.3, "No, I meant the other one, please stop.", 0.6], noise_dbfs=-60.0).pcm, t0=2.0)
    assert len(of(events, li.BargeIn)) == 1, "one barge-in per turn"
    lis.replying = False
    assert of(feed(lis, compose([0.3, "And another thing.", 0.6], noise_dbfs=-60.0).pcm, t0=6.0), li.BargeIn) == []


def test_push_to_talk_keeps_the_turn_open_through_a_pause_until_release() -> None:
    lis = make(mode="push")
    lis.press()
    rec = compose([0.3, "What is the capital of", 2.0, "France?", 0.8], noise_dbfs=-60.0)
    events = feed(lis, rec.pcm)
    assert of(events, li.UserTurn) == [] and lis.open, "no pause ends a held turn"
    (turn,) = of(lis.release(), li.UserTurn)
    assert turn.pushed and len(turn.audio) / 16000 > rec.segments[-1][1] - rec.segments[0][0] - 0.2
    # in push mode, speech without the button is not a turn
    ignored = feed(make(mode="push"), rec.pcm)
    assert of(ignored, li.UserTurn) == [] and [i.reason for i in of(ignored, li.Ignored)] == ["outside_push_to_talk"]


def test_mute_drops_an_open_segment() -> None:
    lis = make()
    feed(lis, compose([0.4, "Hello there my friend"], noise_dbfs=-60.0).pcm)
    assert lis.open
    lis.muted = True
    events = feed(lis, np.zeros(FRAME * 4, np.int16))
    assert of(events, li.Discarded) and of(events, li.UserTurn) == []


def test_a_stalled_source_is_ended_by_the_wall_clock() -> None:
    lis = make()
    feed(lis, compose([0.4, "What is the capital of France"], noise_dbfs=-60.0).pcm)
    assert lis.open
    wait = lis.stall_wait(now=lis.last_audio_at)
    assert wait is not None and wait > 0
    assert lis.stall_wait(now=lis.last_audio_at + 5.0) == 0.0
    assert of(lis.flush(), li.UserTurn)
    assert lis.stall_wait(now=100.0) is None


# -- Addressing ------------------------------------------------------------------------------------------------
def test_the_stop_word_stops_in_every_mode_even_unaddressed() -> None:
    text = shared_recognizer().transcribe(espeak("Stop.")).text
    for mode in ("always", "wake", "push"):
        a = Activation(ActivationSettings(mode=mode))
        assert a.address(Evidence(text), now=0.0).heard is Heard.STOP, (mode, text)
    assert Activation(ActivationSettings()).address(Evidence(""), 0.0).heard is Heard.NOTHING


def test_the_wake_window_and_the_follow_up_window() -> None:
    a = Activation(ActivationSettings(mode="wake", query_window_s=8.0, follow_up_s=8.0))
    # transcripts as Whisper writes them with the wake phrase as hotwords (voiced.model.asr)
    bare, question = "Hey, voiced.", shared_recognizer().transcribe(espeak("What is the capital of France?")).text
    assert a.address(Evidence(bare), now=10.0).heard is Heard.NOT_ADDRESSED  # the phrase alone: waits for its query
    q = a.address(Evidence(question), now=13.0)
    assert q.heard is Heard.QUERY and q.reason == "after-wake" and "capital" in q.query.lower()
    assert a.address(Evidence(question), now=14.0).heard is Heard.NOT_ADDRESSED, "the window is used once"
    a.replied(now=20.0)
    assert a.address(Evidence(question), now=25.0).reason == "follow-up"
    assert a.address(Evidence(question), now=40.0).heard is Heard.NOT_ADDRESSED


def test_push_to_talk_answers_without_the_wake_phrase_and_encoder_free_turns_score_only_outside_windows() -> None:
    a = Activation(ActivationSettings(mode="wake"))
    pushed = a.address(Evidence("what time is it", pushed=True), now=0.0)
    assert pushed.heard is Heard.QUERY and pushed.query == "what time is it"
    assert a.needs_score(pushed=False, wake_model=False, now=0.0)
    assert not a.needs_score(pushed=True, wake_model=False, now=0.0)
    assert a.address(Evidence(None, p_addressed=0.9), now=0.0).heard is Heard.QUERY
    assert a.address(Evidence(None, p_addressed=0.1), now=0.0).heard is Heard.NOT_ADDRESSED
    with pytest.raises(ValueError, match="p_yes"):
        a.address(Evidence(None), now=0.0)
    a.replied(now=1.0)
    assert not a.needs_score(False, False, now=2.0) and a.address(Evidence(None), now=2.0).reason == "follow-up"


def test_the_wake_word_model_decides_whether_the_phrase_was_said() -> None:
    a = Activation(ActivationSettings(mode="wake", wake_detector="model"))
    assert a.address(Evidence("Hey voiced, what time is it?", wake_model=True), 0.0).heard is Heard.NOT_ADDRESSED
    woken = a.address(Evidence("Hey voiced, what time is it?", wake_model=True, woken_s=1.2), 0.0)
    assert woken.heard is Heard.QUERY and woken.query == "what time is it?"
    assert a.address(Evidence(None, wake_model=True, woken_s=0.1), 10.0).heard is Heard.NOT_ADDRESSED  # bare phrase
    assert a.address(Evidence(None, wake_model=True), 12.0).reason == "after-wake"
