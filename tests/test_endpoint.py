"""End-of-turn policy: unit rules on transcripts, pitch on real espeak audio, and the whole loop (real
Segmenter, real Whisper) on espeak turns with natural pauses, against the fixed hangover."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.asr import shared_recognizer
from tests.support.speech import PAUSED_TURNS, PLAIN_TURNS, Recording, espeak, make_turn
from voiced.audio.endpoint import TAIL_MS, EndOfTurnPolicy, asks, completeness, prosody
from voiced.config import ActivationSettings, AudioSettings
from voiced.turn.listener import Hearing, Listener
from voiced.turn.replay import Replay, Transcriber, replay

AUDIO = AudioSettings()
TAIL = 16000 * TAIL_MS // 1000


def policy(mode: str = "adaptive") -> EndOfTurnPolicy:
    return EndOfTurnPolicy(ActivationSettings(end_of_turn=mode), AUDIO)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("What is the capital of France?", "complete"),
        ("Turn off the lights.", "complete"),
        ("Tell me about the moon and how far away it is.", "complete"),
        ("I'd like to know,", "incomplete"),
        ("Tell me about the moon and", "incomplete"),
        ("Tell me about the moon and...", "incomplete"),
        ("What is the capital of?", "incomplete"),  # Whisper punctuates partial questions too
        ("Can you, um", "incomplete"),
        ("I'd like to know", "unsure"),
        ("", "unsure"),
    ],
)
def test_completeness_of_partial_transcripts(text: str, expected: str) -> None:
    assert completeness(text) == expected


def test_decisions_by_clue() -> None:
    p = policy()
    assert p.decide("What time is it?").reason == "words-complete"
    assert p.decide("What time is it?").ms == ActivationSettings().hangover_complete_ms
    assert p.decide("Set a timer for").ms == 1500
    assert p.decide("I'd like to know").reason == "words-unpunctuated"
    assert p.fixed_ms < p.decide("I'd like to know").ms < 1500
    assert p.decide(None, words_pending=True).ms == 1500
    assert p.decide(None).reason == "no-evidence" and p.decide(None).ms == AUDIO.hangover_ms
    assert p.at_start().ms == AUDIO.hangover_ms
    fixed = policy("fixed")
    assert {fixed.decide("What time is it?").ms, fixed.decide("Set a timer for").ms, fixed.decide(None, words_pending=True).ms} == {600}


def test_statement_end_falls_and_clause_end_does_not() -> None:
    final = prosody(espeak("I'd like to know.")[-TAIL:])
    clause = prosody(espeak("Remind me to call my mother,")[-TAIL:])
    assert final.pitch_slope is not None and final.pitch_slope <= EndOfTurnPolicy.FALL_ST_PER_S
    assert clause.pitch_slope is not None and clause.pitch_slope > EndOfTurnPolicy.FALL_ST_PER_S
    p = policy()
    assert p.decide(None, espeak("I'd like to know.")[-TAIL:]).reason == "pitch-falling"
    assert p.decide(None, espeak("Remind me to call my mother,")[-TAIL:]).reason == "no-evidence"
    # a statement heard as finished but spoken with a level voice is doubted, not cut short
    assert p.decide("Set a timer for it.", espeak("Set a timer for")[-TAIL:]).reason == "words-complete-pitch-level"


def test_a_rise_on_words_that_ask_ends_like_a_question_whatever_whisper_punctuated() -> None:
    rise = espeak("Which planet is the one called the red planet?")[-TAIL:]
    slope = prosody(rise).pitch_slope
    assert slope is not None and slope >= EndOfTurnPolicy.RISE_ST_PER_S, slope
    p = policy()
    heard = "We were talking about the solar system at school today, which planet is the one called the Red Planet."
    assert asks(heard) and p.decide(heard, rise).reason == "words-complete"
    # the same rise on a statement, or on a relative clause, still proves nothing
    assert p.decide("We were talking about the solar system at school today.", rise).reason == "words-complete-pitch-level"
    assert not asks("I have a cat, which is black.")
    assert p.decide("I have a cat, which is black.", rise).reason == "words-complete-pitch-level"
    # and words that ask, spoken level, stay doubted
    assert p.decide(heard, espeak("Set a timer for")[-TAIL:]).reason == "words-complete-pitch-level"


def test_prosody_of_silence_and_noise_has_no_pitch() -> None:
    assert prosody(np.zeros(TAIL, np.int16)).pitch_slope is None
    rng = np.random.default_rng(0)
    assert prosody(rng.normal(0, 3000, TAIL).astype(np.int16)).pitch_slope is None
    assert prosody(np.zeros(0, np.int16)).voiced_frames == 0


def run(rec: Recording, mode: str, transcribe: Transcriber | None = None, asr_delay_ms: float | None = None) -> Replay:
    """The daemon's Listener over `rec` (voiced.turn.replay), with words from `transcribe` when given."""
    activation = ActivationSettings(end_of_turn=mode, prefill_while_speaking_s=0)
    listener = Listener("test", AUDIO, activation, EndOfTurnPolicy(activation, AUDIO), Hearing(transcribe is not None, False))
    return replay(listener, rec.pcm, transcribe, asr_delay_ms)


@pytest.fixture(scope="module")
def transcribe():
    rec = shared_recognizer()

    def run(pcm: np.ndarray) -> tuple[str, float]:
        t = rec.transcribe(pcm)
        return t.text, t.ms

    return run


@pytest.mark.slow
@pytest.mark.parametrize("parts", PAUSED_TURNS[:4], ids=[str(p[0]) for p in PAUSED_TURNS[:4]])
def test_paused_turn_survives_where_the_fixed_hangover_cuts_it(parts, transcribe) -> None:
    rec = make_turn(parts)
    end = rec.segments[-1][1]
    fixed = run(rec, "fixed")
    assert fixed.cut_early(end), "the fixture's pause should be longer than the fixed hangover"
    # ASR answers 400 ms (of audio time) after the guess: what 2 idle cores give on a short turn.
    adaptive = run(rec, "adaptive", transcribe, asr_delay_ms=400)
    assert adaptive.turn is not None and not adaptive.cut_early(end), adaptive.decisions
    assert (adaptive.latency_ms(end) or 0) > 0
    assert any(h.reason in ("words-incomplete", "words-unpunctuated", "words-complete-pitch-level") for _, h, _ in adaptive.decisions)


@pytest.mark.slow
@pytest.mark.parametrize("parts", PLAIN_TURNS[:2], ids=[str(p[0]) for p in PLAIN_TURNS[:2]])
def test_finished_question_ends_on_its_words(parts, transcribe) -> None:
    rec = make_turn(parts)
    out = run(rec, "adaptive", transcribe, asr_delay_ms=400)
    assert out.turn is not None and not out.cut_early(rec.segments[-1][1])
    assert out.decisions[-1][1].reason == "words-complete" and out.decisions[-1][2]


def test_the_turn_model_settles_doubt_but_never_overrides_unfinished_words() -> None:
    model, adaptive = policy("model"), policy()
    level = espeak("Set a timer for it.")[-TAIL:]  # a statement whose voice did not fall
    assert adaptive.decide("Set a timer for it.", level).reason == "words-complete-pitch-level"
    assert model.decide("Set a timer for it.", level, turn_p=0.9).ms == ActivationSettings().hangover_complete_ms
    assert model.decide("Set a timer for it.", level, turn_p=0.1).reason == "words-complete-model-unfinished"
    assert model.decide("Set a timer for", turn_p=0.99).ms == 1500  # the words' veto stands
    assert model.decide("I'd like to know", turn_p=0.99).reason == "words-unpunctuated"
    assert model.decide(None, words_pending=True, turn_p=0.99).reason == "awaiting-words"
    assert (
        model.decide(None, turn_p=0.9).reason == "model-finished"
        and model.decide(None, turn_p=0.9).ms == ActivationSettings().hangover_complete_ms
    )
    assert model.decide(None, turn_p=0.1).reason == "model-unfinished"
    assert adaptive.decide(None, turn_p=0.9).reason == "no-evidence"  # other modes ignore the model


def test_a_stalled_source_has_its_wall_clock_gap_counted_as_silence() -> None:
    from voiced.audio.endpoint import stalled_wait

    # 0.5 s of silence heard, hangover 300 ms: owed nothing but the stall margin itself.
    assert stalled_wait(10.0, 10.0, 0.5, 300, 500) == pytest.approx(0.5)
    assert stalled_wait(10.6, 10.0, 0.5, 300, 500) == 0.0
    # Mid-word, hangover 1500 ms: the whole hangover must pass on the wall clock.
    assert stalled_wait(10.2, 10.0, 0.0, 1500, 500) == pytest.approx(1.3)
    assert stalled_wait(11.5, 10.0, 0.0, 1500, 500) == 0.0


def test_the_turn_model_is_asked_only_where_it_can_change_the_answer() -> None:
    model = policy("model")
    level = espeak("Set a timer for it.")[-TAIL:]
    assert model.needs_model(None) and model.needs_model("Set a timer for it.", level)
    assert not model.needs_model("What time is it?") and not model.needs_model("Set a timer for")
    assert not policy().needs_model(None)
