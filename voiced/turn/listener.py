"""One source's turn-taking, sans I/O: audio in, events out; results of the work it asked for come back in.

The Listener owns everything that decides when a user turn begins and ends on one source: the segmenter (VAD),
the wake-word detector, the end-of-turn policy's hangover, the half-duplex mute, push-to-talk, barge-in and the
speculation at a pause. It runs no model and knows no clock but the one it is handed: `feed(pcm, now)` returns
typed events, among them requests ("transcribe the segment so far", "prefill these words"), and the router
(voiced.pipeline) runs them on its threads and hands their results back (`on_guess`, `on_early`). So the loop
that tests/test_endpoint.py checks and benchmarks/turn_taking.py measures is the daemon's own.

How a silence ends a turn (voiced.audio.endpoint has the policy):
- at a pause's first frame, the hangover becomes the policy's answer for the prosody alone, held open while words
  are coming (`words_pending`);
- once the pause has lasted `activation.guess_after_ms` of audio, a guess is asked for: the segment so far, transcribed
  (and scored by the turn model where its answer can matter); its words set the hangover (a finished sentence
  ends the turn sooner, "... and" holds it open) and, if they are addressed to us, are offered for prefill;
- speech resuming drops the guess (its result, when it lands, is stale and ignored: each request has a job id).
While the user speaks, every `activation.prefill_while_speaking_s` of new speech an early pass is asked for
(only while no guess runs and the model is free): its words but the last are offered for prefill.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

import numpy as np

from voiced.audio import RATE, vad
from voiced.audio.activation import Activation
from voiced.audio.endpoint import TAIL_MS, EndOfTurnPolicy, Hangover, stalled_wait
from voiced.audio.wakeword import LEAD_S, WakeWordDetector
from voiced.config import ActivationSettings, AudioSettings


class Phase(Enum):
    """Where the source's open segment stands; one name for what used to be five flags."""

    IDLE = "idle"  # no open segment
    SPEAKING = "speaking"  # voice, or resumed after a pause
    PAUSED = "paused"  # a pause, not yet long enough to be worth a guess
    GUESSING = "guessing"  # the guess's transcription runs (job `guess_job`)
    GUESSED = "guessed"  # its words are in and set the hangover


# -- events out ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    t: float  # stream seconds


@dataclass(frozen=True)
class Discarded:
    """The open segment was too short, or dropped by the mute: no turn."""


@dataclass(frozen=True)
class Resumed:
    """Speech again after a pause: whatever was started on the pause's words is not the turn's."""


@dataclass(frozen=True)
class Ended:
    t_start: float
    t_end: float


@dataclass(frozen=True)
class Transcribe:
    """Please transcribe `audio` (the segment so far) and hand the words back: `on_guess` for a guess at a pause,
    `on_early` for an early pass while speaking."""

    job: int
    audio: np.ndarray
    guess: bool


@dataclass(frozen=True)
class Prefill:
    """Words addressed to us that are likely the start of the turn's prompt: put them in the cache now, if the
    model is free (an early pass's tokens are reported with `prefilled`). `sounds_final`: a guess whose words
    and voice sound finished (the hangover is the short one): a provisional end of turn, worth a preemptive
    reply (voiced.turn.draft); otherwise the user will likely go on, and a draft would only be dropped."""

    job: int
    query: str
    sounds_final: bool = False


@dataclass(frozen=True)
class BargeIn:
    """The source spoke over its own reply long enough (`activation.barge_in_min_ms`): stop the reply."""


@dataclass(frozen=True)
class Ignored:
    reason: str  # protocol TurnIgnored reason


@dataclass(frozen=True)
class UserTurn:
    """A finished spoken turn and the evidence gathered on the way. `guess_job`: a guess still running when the
    turn ended (its words will serve as the transcript); `guess`: its words when it had already landed."""

    audio: np.ndarray
    pushed: bool
    woken_s: float | None  # the wake-word model fired: seconds of the segment after its detection
    early_tokens: int
    silence_ms: float  # the silence after the last word that ended the turn (the hangover waited)
    guess_job: int | None = None
    guess: str | None = None


Event = Started | Discarded | Resumed | Ended | Transcribe | Prefill | BargeIn | Ignored | UserTurn


@dataclass(frozen=True)
class Hearing:
    """What the source's brain can tell from a segment: words (a local recogniser), and whether the turn model
    (end_of_turn = "model") runs at pauses."""

    transcribes: bool
    turn_model: bool


class Listener:
    def __init__(
        self,
        source: str,
        audio: AudioSettings,
        activation: ActivationSettings,
        policy: EndOfTurnPolicy,
        hearing: Hearing,
        wake: WakeWordDetector | None = None,
    ) -> None:
        self.source = source
        self.audio, self.settings = audio, activation
        self.policy = policy
        self.hearing = hearing
        self.activation = Activation(activation)
        # The guess's audio is taken a little into the pause, not at its first frame: a last word's soft end (a
        # decaying vowel, a final consonant) may fall below the gate before it is over. Every ms of it delays
        # the words that end the turn and start the draft (benchmarks/pause_asr.py measures the WER of each).
        self._guess_after_s = activation.guess_after_ms / 1000
        self.segmenter = vad.Segmenter(audio, source=source)
        self.hangover: Hangover = policy.at_start()  # the silence that ends the turn now, and why
        self.wake = wake
        self.phase = Phase.IDLE
        self.pushed = False  # push-to-talk held (or releasing): turns ending now were asked for by the button
        self.replying = False  # a reply to this source runs: its speech counts towards barge-in
        self.last_audio_at = 0.0  # wall clock of the last audio fed (the stall check's reference)
        self._jobs = itertools.count(1)
        self._audio: list[np.ndarray] = []
        self._audio_t0 = 0.0  # stream time where the open segment's audio (its pre-roll first) begins
        self._tail = np.zeros(0, np.int16)  # the voice before the current pause (TAIL_MS)
        self._guess_job: int | None = None
        self._guess: str | None = None
        self._early_job: int | None = None  # an early pass in flight (one at a time)
        self._early_at = 0.0  # stream time the last early pass heard up to
        self._early_tokens = 0
        self._barge: int | None = None  # speech samples counted during a reply to this source; None: not armed

    # -- audio in -------------------------------------------------------------------------------------------
    @property
    def muted(self) -> bool:
        return self.segmenter.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        """Half duplex: our own speaker is talking; an open segment is dropped (Discarded comes next feed)."""
        self.segmenter.muted = value

    @property
    def open(self) -> bool:
        """A segment is open: a turn is being spoken."""
        return self.segmenter.in_speech

    def feed(self, pcm: np.ndarray, now: float, model_busy: bool = False) -> list[Event]:
        """16 kHz mono int16, in order. `now`: wall clock (monotonic s); `model_busy`: a reply runs, so no early
        pass is asked for (the cores are the reply's)."""
        if self.wake is not None:  # first, so a detection is known when the VAD ends the turn it belongs to
            self.wake.feed(pcm)
        out: list[Event] = []
        for ev in self.segmenter.feed(pcm):
            out += self._on_vad(ev, model_busy)
        if self.phase is Phase.PAUSED and self.segmenter.in_speech and self.segmenter.silence_s >= self._guess_after_s:
            out += self._start_guess()
        self.last_audio_at = now
        return out

    def flush(self) -> list[Event]:
        """End of the source's stream (or push-to-talk released): an open segment ends now."""
        out: list[Event] = []
        for ev in self.segmenter.flush():
            out += self._on_vad(ev, True)
        return out

    def press(self) -> None:
        """Push-to-talk held: no pause ends the turn while it is; the release does."""
        self.pushed = True
        self.segmenter.held = True

    def release(self) -> list[Event]:
        """Push-to-talk released: the utterance ends now, without waiting for the hangover."""
        self.segmenter.held = False
        self.pushed = True
        try:
            return self.flush()
        finally:
            self.pushed = False

    def stall_wait(self, now: float) -> float | None:
        """Seconds until an open turn whose source stopped sending is over by the wall clock (0: end it now with
        `flush`); None when there is nothing to end (no open segment, or push-to-talk held)."""
        seg = self.segmenter
        if not seg.in_speech or seg.held:
            return None
        return stalled_wait(now, self.last_audio_at, seg.silence_s, seg.hangover_ms, self.audio.stalled_stream_ms)

    # -- results in -----------------------------------------------------------------------------------------
    def wants_turn_model(self, job: int, text: str | None) -> bool:
        """Whether the turn model's p(end of turn) could change the guess's answer (the router skips it if not)."""
        return self.hearing.turn_model and job == self._guess_job and self.policy.needs_model(text, self._tail)

    def on_guess(self, job: int, text: str | None, turn_p: float | None, now: float) -> list[Event]:
        """The guess's words (None: no recogniser) and the turn model's p, when it ran. A stale job is ignored."""
        if job != self._guess_job or self.phase is not Phase.GUESSING:
            return []
        self.phase, self._guess = Phase.GUESSED, text
        self._set_hangover(self.policy.decide(text, self._tail, turn_p=turn_p))
        if not text:
            return []
        addressed = self.activation.peek(text, now)
        return [Prefill(job, addressed.query, sounds_final=self.hangover.final)] if addressed.answer else []

    def on_early(self, job: int, text: str, now: float) -> list[Event]:
        """An early pass's words: all but the last (it may be cut mid-way) are offered for prefill, unless a pause
        came meanwhile (its guess hears more audio and supersedes this pass)."""
        if job != self._early_job:
            return []
        self._early_job = None
        words = text.split()[:-1]
        if not words or self.phase is not Phase.SPEAKING:
            return []
        addressed = self.activation.peek(" ".join(words), now)
        return [Prefill(job, addressed.query)] if addressed.answer and addressed.query else []

    def early_failed(self, job: int) -> None:
        if job == self._early_job:
            self._early_job = None

    def prefilled(self, tokens: int) -> None:
        """Tokens an early pass's prefill put in the cache (reported in reply_done's timings)."""
        self._early_tokens += tokens

    # -- the segmenter's events -----------------------------------------------------------------------------
    def _on_vad(self, ev: vad.Event, model_busy: bool) -> list[Event]:
        if isinstance(ev, vad.SpeechStarted):
            self._audio = [ev.pre_roll]
            self._audio_t0 = ev.t - len(ev.pre_roll) / RATE
            self._early_at, self._early_tokens, self._early_job = self._audio_t0, 0, None
            self._drop_guess(Phase.SPEAKING)
            self._barge = 0 if self.replying else None
            return [Started(ev.t)]
        if isinstance(ev, vad.SpeechFrames):
            self._audio.append(ev.pcm)
            if self.phase is not Phase.SPEAKING:
                return []
            out = self._maybe_early(ev.t + len(ev.pcm) / RATE, model_busy)
            if self._barge is not None and self.replying:
                self._barge += len(ev.pcm)
                if self._barge * 1000 >= self.settings.barge_in_min_ms * RATE:
                    self._barge = None
                    out.append(BargeIn())
            return out
        if isinstance(ev, vad.SpeechPaused):
            self.phase = Phase.PAUSED
            if self._audio:
                self._tail = np.concatenate(self._audio)[-RATE * TAIL_MS // 1000 :]
                hears = self.hearing.transcribes or self.hearing.turn_model  # words or the turn model will tell
                self._set_hangover(self.policy.decide(None, self._tail, words_pending=hears))
                if not hears:
                    self.phase = Phase.GUESSED  # nothing will come to change the hangover
            return []
        if isinstance(ev, vad.SpeechResumed):
            self._drop_guess(Phase.SPEAKING)
            return [Resumed()]
        if isinstance(ev, vad.SpeechDiscarded):
            self._close()
            return [Discarded()]
        return self._ended(ev)

    def _ended(self, ev: vad.SpeechEnded) -> list[Event]:
        out: list[Event] = [Ended(ev.t_start, ev.t_end)]
        guess_job = self._guess_job if self.phase is Phase.GUESSING else None  # still running: its words will do
        guess = self._guess if self.phase is Phase.GUESSED else None
        # The segment's audio runs to the last frame fed, so past its last voiced frame lies the silence waited.
        silence_ms = max(0.0, (self._audio_t0 + len(ev.audio) / RATE - ev.t_end) * 1e3)
        pushed, early = self.pushed, self._early_tokens
        self._close()
        if self.settings.mode == "push" and not pushed:
            return [*out, Ignored("outside_push_to_talk")]
        woken_s = None
        if self.wake is not None and (hits := self.wake.take(ev.t_start - LEAD_S)):
            woken_s = ev.t_end - hits[-1].t
        out.append(UserTurn(ev.audio, pushed, woken_s, early, silence_ms, guess_job=guess_job, guess=guess))
        return out

    def _start_guess(self) -> list[Event]:
        self.phase, self._guess = Phase.GUESSING, None
        self._guess_job = next(self._jobs)
        return [Transcribe(self._guess_job, np.concatenate(self._audio), guess=True)]

    def _maybe_early(self, heard_to: float, model_busy: bool) -> list[Event]:
        every = self.settings.prefill_while_speaking_s
        if every <= 0 or not self.hearing.transcribes or model_busy or self._early_job is not None:
            return []
        if heard_to - self._early_at < every:
            return []
        self._early_at = heard_to
        self._early_job = next(self._jobs)
        return [Transcribe(self._early_job, np.concatenate(self._audio), guess=False)]

    def _drop_guess(self, phase: Phase) -> None:
        self.phase, self._guess_job, self._guess = phase, None, None
        self._set_hangover(self.policy.at_start())

    def _set_hangover(self, h: Hangover) -> None:
        self.hangover = h
        self.segmenter.hangover_ms = h.ms

    def _close(self) -> None:
        self.phase, self._guess_job, self._guess = Phase.IDLE, None, None
        self._audio, self._barge, self._early_job = [], None, None
