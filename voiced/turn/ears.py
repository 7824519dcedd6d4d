"""The I/O that turn-taking and addressing ask for, on the router's threads: every source's Listener, the guesses
and early passes they request (ASR, the turn model, prefill), the stall timers, and the hearing of a finished
turn (its words, or the model's scoring pass) up to `Activation.address`'s decision.

Policy stays in the Listener and in Activation; this room only runs what they ask and hands the results back.
Prefill happens only while the model is free (`model_free`): a reply in progress owns the cores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from voiced.audio.activation import Addressing, Evidence
from voiced.audio.endpoint import EndOfTurnPolicy
from voiced.audio.smart_turn import SmartTurn
from voiced.audio.wakeword import WakeWordDetector, WakeWordModel
from voiced.brain import Brain
from voiced.bridge import run_in
from voiced.config import Settings
from voiced.errors import VoicedError
from voiced.turn import listener as li
from voiced.turn.responder import Turn

log = logging.getLogger(__name__)
T = TypeVar("T")
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class ScoringFailed(VoicedError):
    """The model's addressing pass failed: the turn is left unanswered (a turn is never answered unjudged)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"addressing pass failed: {cause}; the turn was not answered. Fix: see the daemon's log for "
                         "the model error (voiced model verify checks the bundle), or use wake_detector = \"model\"")  # fmt: skip


@dataclass(frozen=True)
class HeardTurn:
    """A finished turn, heard: the decision, and the words it was made on (None: no recogniser)."""

    addressing: Addressing
    text: str | None


class Ears:
    def __init__(
        self,
        settings: Settings,
        brain: Brain,
        asr: Executor,
        model: Executor,
        spawn: Spawn,
        model_free: Callable[[], bool],
        conversation_of: Callable[[str], str],
        on_words: Callable[[li.Listener, li.Prefill], Awaitable[None]],
    ) -> None:
        """`on_words(listener, request)`: a pause's guess heard words addressed to us (the router prefills their
        prompt, or starts a preemptive reply on them when they sound final)."""
        self.settings, self.brain = settings, brain
        self._asr, self._model = asr, model
        self._spawn, self._model_free, self._conversation_of, self._on_words = spawn, model_free, conversation_of, on_words
        self.policy = EndOfTurnPolicy(settings.activation, settings.audio)
        # Loaded now, so that a missing or damaged file stops the start with its fix, not the first turn.
        self.turn_model = SmartTurn() if self.policy.wants_model else None
        act = settings.activation
        # The wake-word model runs on every source's frames in front of the VAD, on the loop (one short call per
        # 80 ms: benchmarks/wakeword.py); loaded once, state per source.
        self.wake_model = WakeWordModel(act.wake_model) if act.mode == "wake" and act.wake_detector == "model" else None
        self.hearing = li.Hearing(transcribes=brain.transcribes, turn_model=self.turn_model is not None)
        self.listeners: dict[str, li.Listener] = {}
        self._guesses: dict[tuple[str, int], asyncio.Task[str | None]] = {}
        self._stalls: dict[str, asyncio.TimerHandle] = {}

    def listener(self, source: str) -> li.Listener:
        lis = self.listeners.get(source)
        if lis is None:
            act = self.settings.activation
            wake = WakeWordDetector(self.wake_model, act.wake_model_threshold) if self.wake_model is not None else None
            lis = self.listeners[source] = li.Listener(source, self.settings.audio, act, self.policy, self.hearing, wake)
        return lis

    def forget(self, source: str) -> None:
        self.listeners.pop(source, None)
        if (stall := self._stalls.pop(source, None)) is not None:
            stall.cancel()

    # -- what the listeners ask for -------------------------------------------------------------------------
    def transcribe_for(self, lis: li.Listener, ev: li.Transcribe) -> None:
        if not ev.guess:
            self._spawn(self._early(lis, ev))
            return
        key = (lis.source, ev.job)
        task = self._guesses[key] = self._spawn(self._guess(lis, ev))
        task.add_done_callback(lambda _t: self._guesses.pop(key, None))

    def guess_of(self, source: str, job: int | None) -> asyncio.Task[str | None] | None:
        """The guess still running for a turn that just ended (its words will be the turn's)."""
        return self._guesses.get((source, job)) if job is not None else None

    async def _guess(self, lis: li.Listener, ev: li.Transcribe) -> str | None:
        """Words (and the turn model's p where it can matter) back to the listener, then the prompt prefilled if
        they are ours and the model is free. A finished turn awaits this as its words."""
        text = await run_in(self._asr, self.brain.transcribe, ev.audio) if self.brain.transcribes else None
        turn_p = None  # the turn model runs only where its answer can change the decision (after the words)
        if self.turn_model is not None and lis.wants_turn_model(ev.job, text):
            turn_p = await run_in(self._asr, self.turn_model.probability, ev.audio)
        for req in lis.on_guess(ev.job, text, turn_p, time.monotonic()):
            if isinstance(req, li.Prefill) and self._model_free():
                await self._on_words(lis, req)
        return text

    async def _early(self, lis: li.Listener, ev: li.Transcribe) -> None:
        try:
            text = await run_in(self._asr, self.brain.transcribe, ev.audio)
            for req in lis.on_early(ev.job, text, time.monotonic()):
                if isinstance(req, li.Prefill) and self._model_free():
                    conversation = self._conversation_of(lis.source)
                    lis.prefilled(await run_in(self._model, self.brain.prepare_in, conversation, req.query))
        except Exception as e:  # a guess: the end of the turn transcribes and prefills whatever is missing
            lis.early_failed(ev.job)
            log.warning("prefill while speaking failed: %s", e)

    # -- a source that stops sending inside a turn ----------------------------------------------------------
    def watch_stall(self, lis: li.Listener, on_stalled: Callable[[str], None], delay: float | None = None) -> None:
        """(Re)arm the timer that ends the open turn if the source sends nothing more (endpoint.stalled_wait)."""
        old = self._stalls.pop(lis.source, None)
        if old is not None:
            old.cancel()
        if lis.open:
            delay = self.settings.audio.stalled_stream_ms / 1000 if delay is None else delay
            self._stalls[lis.source] = asyncio.get_running_loop().call_later(delay, self._stalled, lis, on_stalled)

    def _stalled(self, lis: li.Listener, on_stalled: Callable[[str], None]) -> None:
        self._stalls.pop(lis.source, None)
        if self.listeners.get(lis.source) is not lis or (wait := lis.stall_wait(time.monotonic())) is None:
            return  # gone, turn already over, or push-to-talk held (the release ends it)
        if wait > 0:  # the hangover may still shorten (words landing): look again soon
            self.watch_stall(lis, on_stalled, min(wait, 0.1))
            return
        log.info("no audio from %s for %.1f s inside a turn: ending it", lis.source, time.monotonic() - lis.last_audio_at)
        on_stalled(lis.source)

    # -- a finished turn ------------------------------------------------------------------------------------
    async def hear(self, turn: Turn, guess: asyncio.Task[str | None] | None, heard: str | None) -> HeardTurn:
        """The words of a spoken turn (the guess's, or a full pass) or, for an encoder-free bundle, the model's
        scoring pass where the rules want it; then the decision. ScoringFailed: the pass failed (unanswered)."""
        activation = self.listener(turn.source).activation
        wake_model = self.wake_model is not None
        text, p_yes = None, None
        if not self.brain.transcribes:
            if activation.needs_score(turn.pushed, wake_model, time.monotonic()):
                phrases = self.settings.activation.wake_phrases
                try:
                    p_yes = await run_in(self._model, self.brain.addressed_probability, turn.audio, phrases, turn.cancel)
                except Exception as e:
                    log.exception("turn %s: addressing pass failed", turn.id)
                    raise ScoringFailed(e) from e
                turn.mark("addressed")
                log.info("turn %s: p(addressed)=%.3f (threshold %.2f) in %.0f ms", turn.id, p_yes,
                         self.settings.activation.model_threshold, self.brain.last_scoring_ms)  # fmt: skip
        else:
            text = heard
            if not text and guess is not None:
                try:
                    text = await guess
                except Exception as e:  # the full pass below decides; a failed guess costs only time
                    log.warning("speculative transcription failed: %s", e)
            if not text:  # no pause seen, or the guess heard nothing: transcribe the whole segment
                audio = turn.audio if turn.audio is not None else np.zeros(0, np.int16)
                text = await run_in(self._asr, self.brain.transcribe, audio)
            turn.mark("transcribed")
        evidence = Evidence(text, turn.pushed, wake_model, turn.woken_s, p_yes)
        return HeardTurn(activation.address(evidence, time.monotonic()), text)
