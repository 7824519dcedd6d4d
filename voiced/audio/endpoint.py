"""End-of-turn policy: how much silence ends this turn, given what has been said so far.

A fixed hangover is a bad compromise: 600 ms cuts "I'd like to know, um, ... what the weather is" at the "um",
and still makes "What time is it?" wait 600 ms for nothing. People signal the end of a turn with words and
melody, so at each pause the pipeline asks this policy, and sets `Segmenter.hangover_ms` to the answer:

- words (from the speculative ASR pass the pipeline runs at SpeechPaused): a trailing comma, an ellipsis, a
  last word that cannot end a sentence ("... and", "the", "um", "because") -> `hangover_incomplete_ms`; a
  sentence that ends in . ? ! on a word that can end one -> `hangover_complete_ms`.
- while a speculative ASR pass runs: hold the turn open (`decide(words_pending=True)`), so the words decide.
- melody: the pitch of the last ~300 ms of voice (autocorrelation F0, numpy only). A steep fall (< -12
  semitones/s on espeak; see the benchmark) is how statements end; clauses, "um" and questions stay level or
  rise. So a fall alone shortens the hangover (encoder-free bundles have no words), a statement whose words end
  in "." but whose voice stayed level gets the doubtful middle value, and a rise alone proves nothing (questions
  rise, and so do clauses that go on). A rise on words that ask (the last clause opens with "which", "what",
  "can you", ...) is a question whatever Whisper's punctuation: it ends like one with "?" (espeak's "..., which
  planet is the one called the red planet?" came out with a full stop; benchmarks/voice_to_voice.py --long).
- doubt (no final punctuation, or the words and the pitch disagree): halfway between fixed and incomplete.
- otherwise the fixed `audio.hangover_ms`.
- `end_of_turn = "model"`: the Smart Turn model's p(end of turn) from the audio (voiced.audio.smart_turn) is one
  more clue beside the pitch. Words that cannot end a sentence still hold the turn open whatever the audio
  says (the model hears "Set a timer for" as finished often enough: benchmarks/turn_taking.py), and so does
  a transcript without final punctuation; the model settles a statement whose pitch stayed level, and with no
  words at all (encoder-free bundles) it decides alone.

Pure code: no audio devices, no clock; the pipeline owns the Segmenter and the ASR thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from voiced.audio import RATE
from voiced.config import ActivationSettings, AudioSettings

TAIL_MS = 300

# Words a sentence does not end on: conjunctions, articles, possessives, prepositions, fillers. Not auxiliaries
# or pronouns ("how far away it is.", "I like that."), which end sentences often.
CONTINUATIONS = frozenset(
    """and or but because since though although if unless until while whereas than the a an my your his her
    its our their every each of to in on at for with from by about into onto over under between through after
    before during without as very um umm uh uhh er erm hmm mm ah eh i'm it's let's what's""".split()
)
_INCOMPLETE_END = re.compile(r"(,|;|:|-|—|–|\.\.\.|…)\s*$")
_COMPLETE_END = re.compile(r"[.?!]['\")\]]*\s*$")
_AUXILIARIES = frozenset(
    """is are was were am do does did can could will would should shall may might have has had isn't aren't don't
    doesn't didn't can't couldn't won't wouldn't""".split()
)
# Words that open a question (a wh-word or an inverted auxiliary) when they open its last clause.
_QUESTION_OPENERS = _AUXILIARIES | frozenset("what which who whom whose where when why how".split())
_CLAUSE = re.compile(r"[^,;:.?!]+[.?!]*\s*$")
_WORD = re.compile(r"[\w']+")

Completeness = Literal["complete", "incomplete", "unsure"]
_FINAL = frozenset({"words-complete", "words-complete-model-finished"})  # decide()'s short window on words


@dataclass(frozen=True)
class Hangover:
    """The silence (ms) that ends the turn from now on, and why (for logs and the benchmark)."""

    ms: int
    reason: str

    @property
    def final(self) -> bool:
        """The words so far sound like a finished turn (the short window on words): a provisional end of turn."""
        return self.reason in _FINAL


@dataclass(frozen=True)
class Prosody:
    """Features of the last voiced stretch before a pause. `pitch_slope` in semitones per second, None when
    fewer than 3 frames had a pitch (whispered, noisy, or too short)."""

    pitch_slope: float | None
    energy_slope: float  # dB per second
    voiced_frames: int


def completeness(transcript: str) -> Completeness:
    """Whether the words so far read as a finished utterance."""
    text = transcript.strip()
    words = _WORD.findall(text.lower())
    if not words:
        return "unsure"
    if _INCOMPLETE_END.search(text) or words[-1] in CONTINUATIONS:
        return "incomplete"
    if _COMPLETE_END.search(text):
        return "complete"
    return "unsure"


def asks(transcript: str) -> bool:
    """Whether the last clause of `transcript` is worded as a question ("..., which planet is the red planet.")."""
    m = _CLAUSE.search(transcript.strip())
    words = _WORD.findall(m.group(0).lower()) if m else []
    if m is None or not words or words[0] not in _QUESTION_OPENERS:
        return False
    # "I have a cat, which is black": after a comma, "which is" / "who was" opens a relative clause, not a question
    relative = m.start() > 0 and words[0] in ("which", "who") and words[1:2] != [] and words[1] in _AUXILIARIES
    return not relative


def prosody(tail: np.ndarray, rate: int = RATE, frame_ms: int = 30) -> Prosody:
    """Pitch and energy trend over `tail` (int16, the last ~300 ms of speech before the pause)."""
    x = np.asarray(tail, dtype=np.float32)
    n = rate * frame_ms // 1000
    frames = x[: len(x) // n * n].reshape(-1, n) if len(x) >= n else np.zeros((0, n), np.float32)
    if len(frames) == 0:
        return Prosody(None, 0.0, 0)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) / 32768.0**2 + 1e-10)
    loud = energy_db > energy_db.max() - 25  # frames near the speech level, not the fading tail
    lo, hi = rate // 400, rate // 60  # 60-400 Hz
    times, semis = [], []
    for i, f in enumerate(frames):
        if not loud[i]:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, mode="full")[n - 1 :]
        if ac[0] <= 0 or hi >= len(ac):
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] / ac[0] < 0.45:  # not periodic enough: unvoiced
            continue
        times.append(i * frame_ms / 1000)
        semis.append(12 * np.log2(rate / lag / 100.0))
    t_all = np.arange(len(frames)) * frame_ms / 1000
    e_slope = float(np.polyfit(t_all[loud], energy_db[loud], 1)[0]) if loud.sum() >= 2 else 0.0
    if len(times) < 3:
        return Prosody(None, e_slope, len(times))
    semis_arr = np.asarray(semis)
    keep = np.abs(semis_arr - np.median(semis_arr)) < 7  # octave errors of the picker
    if keep.sum() < 3:
        return Prosody(None, e_slope, int(keep.sum()))
    slope = float(np.polyfit(np.asarray(times)[keep], semis_arr[keep], 1)[0])
    return Prosody(slope, e_slope, int(keep.sum()))


class EndOfTurnPolicy:
    """Hangover to use after a pause. `fixed` mode always answers audio.hangover_ms (the baseline)."""

    # A fall steeper than this (semitones per second) reads as a statement's end.
    FALL_ST_PER_S = -12.0
    # A rise steeper than this, on words that ask, reads as a question's end (the same steepness, mirrored).
    RISE_ST_PER_S = 12.0

    def __init__(self, activation: ActivationSettings, audio: AudioSettings) -> None:
        self.mode = activation.end_of_turn
        self.model_threshold = activation.turn_model_threshold
        self.fixed_ms = audio.hangover_ms
        self.complete_ms = activation.hangover_complete_ms
        self.incomplete_ms = activation.hangover_incomplete_ms
        self.doubt_ms = max(self.fixed_ms, (self.fixed_ms + self.incomplete_ms) // 2)

    @staticmethod
    def asks(transcript: str) -> bool:
        """Whether the words are worded as a question (`asks`; benchmarks/voice_to_voice.py's `noasks` lever turns
        it off)."""
        return asks(transcript)

    def at_start(self) -> Hangover:
        """For a new segment and after SpeechResumed: no evidence yet."""
        return Hangover(self.fixed_ms, "fixed" if self.mode == "fixed" else "no-evidence")

    @property
    def wants_model(self) -> bool:
        """Whether decide() takes the turn model's probability (end_of_turn = "model")."""
        return self.mode == "model"

    def needs_model(self, transcript: str | None, tail: np.ndarray | None = None) -> bool:
        """Whether the turn model's probability could change decide()'s answer: only in "model" mode, and only
        with no words or a statement whose pitch stayed level; the pipeline skips the model pass otherwise."""
        if self.mode != "model":
            return False
        return transcript is None or self.decide(transcript, tail).reason == "words-complete-pitch-level"

    def decide(
        self, transcript: str | None = None, tail: np.ndarray | None = None, *, words_pending: bool = False, turn_p: float | None = None
    ) -> Hangover:
        """At a pause: `transcript` from the speculative ASR pass, `tail` the last ~300 ms of audio before the
        pause (TAIL_MS). `words_pending`: a speculative pass is running and will call back with its text;
        then the turn is held open (up to `hangover_incomplete_ms`) so that the words, the better clue, decide
        rather than a race between the hangover and the ASR. `turn_p`: the turn model's p(end of turn) for the
        audio up to this pause (used in "model" mode only)."""
        if self.mode == "fixed":
            return Hangover(self.fixed_ms, "fixed")
        pitch = prosody(tail).pitch_slope if tail is not None and len(tail) else None
        falling = pitch is not None and pitch <= self.FALL_ST_PER_S
        rising = pitch is not None and pitch >= self.RISE_ST_PER_S
        finished = None if turn_p is None or self.mode != "model" else turn_p >= self.model_threshold
        if transcript is not None:
            c = completeness(transcript)
            if c == "incomplete":
                return Hangover(self.incomplete_ms, "words-incomplete")
            if c == "unsure":  # Whisper punctuates what it hears as finished; no full stop is a doubt
                # The model is not asked here: tiny.en leaves "Set a timer for" as "Set a timer for it" unpunctuated
                # and the model called it finished, so trusting it cut the turn (benchmarks/turn_taking.py).
                return Hangover(self.doubt_ms, "words-unpunctuated")
            question = transcript.rstrip().endswith("?") or (rising and self.asks(transcript))
            if question or falling or (pitch is None and finished is not False):
                return Hangover(self.complete_ms, "words-complete")
            if finished:
                return Hangover(self.complete_ms, "words-complete-model-finished")
            # "Set a timer for" heard as "Set a timer for it.": a statement whose voice did not fall.
            return Hangover(self.doubt_ms, "words-complete-pitch-level" if finished is None else "words-complete-model-unfinished")
        if words_pending:
            return Hangover(max(self.fixed_ms, self.incomplete_ms), "awaiting-words")
        if finished is not None:  # no words to come: the audio decides
            return Hangover(self.complete_ms, "model-finished") if finished else Hangover(self.doubt_ms, "model-unfinished")
        if falling:
            return Hangover(self.complete_ms, "pitch-falling")
        return Hangover(self.fixed_ms, "no-evidence")


def stalled_wait(now: float, last_audio_at: float, silence_s: float, hangover_ms: int, stalled_ms: int) -> float:
    """Seconds from `now` until a turn whose source has sent nothing since `last_audio_at` (wall clock) is over;
    0 means end it now. The segmenter's clock is the samples it was fed, so a client that stops sending inside
    a turn (a satellite that gates its silence, a dropped link) would leave the turn open for ever: once the
    gap exceeds `stalled_ms` (longer than network jitter), the wall-clock gap counts as the silence still owed."""
    gap = now - last_audio_at
    due = max(stalled_ms / 1000, hangover_ms / 1000 - silence_s)
    return max(0.0, due - gap)
