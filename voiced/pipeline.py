"""The router: sources' audio -> their Listeners -> addressing -> one Responder at a time, under the lock.

Each source (the local microphone, a WebSocket client, a Wyoming peer) has a Listener (voiced.turn.listener), a
sans-I/O state machine that says when a turn begins and ends and asks for the work that decides it; the router
runs that work on three single-thread executors, so it overlaps on two cores: ASR, the model (one KV cache, one
thread) and TTS. A finished turn is heard (its words transcribed, then `Activation.address` decides), admitted
(voiced.admission bounds the waiting ones), and answered by the Responder (voiced.turn.responder), which streams
clauses -> speech -> the publishers and the turn's hearer. Commands (timers, the clock) answer before the model.

Latency, in the order the audio meets it:
- while the user speaks, every `activation.prefill_while_speaking_s` of new speech the segment so far is
  transcribed and its words but the last are prefilled into the cache, on cores that are idle then;
- at a pause the segment so far is transcribed (a guess): its words set the hangover, and its prompt is prefilled
  during it; if the speaker resumes, the guess is dropped (sync() keeps whatever prefix still holds);
- the system prompt and history stay in the KV cache between turns, and after each turn the reply's close and
  the next user turn's opening are prefilled while nobody speaks.
Barge-in: the turn's own source speaking over its reply for `activation.barge_in_min_ms` cancels it (the
partial reply is kept in memory marked interrupted). Half duplex: the local microphone is muted while we speak.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from protocol import messages as m
from voiced.admission import Addressed, Verdict, WaitingTurns
from voiced.assistant import SPOKEN
from voiced.audio.activation import Heard
from voiced.audio.silero import shared_model
from voiced.brain import Brain, BrainUnavailable
from voiced.bridge import run_in
from voiced.commands import prompt as command_prompt
from voiced.commands.runtime import Commands
from voiced.config import Settings
from voiced.conversations import key_of
from voiced.model.engine import ContextOverflow
from voiced.model.manifest import Manifest
from voiced.routing import ANNOUNCE, Delivery
from voiced.server.handler import Publisher
from voiced.server.logsafe import words
from voiced.speech.tts import TTSEngine
from voiced.turn import listener as li
from voiced.turn.draft import Drafts
from voiced.turn.ears import Ears, ScoringFailed
from voiced.turn.responder import Playback, Responder, Turn

log = logging.getLogger(__name__)

LOCAL = "local"
ECHO_TAIL_S = 0.25  # room reverb and output latency after our last sample still reach the mic
T = TypeVar("T")

__all__ = ["LOCAL", "Pipeline", "Turn"]


class Pipeline:
    """Implements the server's TurnHandler and SpeechBackend; `feed` also takes the local microphone."""

    def __init__(self, settings: Settings, assistant: Brain, tts: TTSEngine, playback: Playback | None = None, pace: bool = True):
        """`pace`: without a local speaker, a turn still lasts as long as its audio plays at the listeners (off
        for `voiced ask`, which waits for nobody)."""
        self.settings = settings
        self.assistant = assistant
        self.tts = tts
        self.playback = playback
        self.publishers: list[Publisher] = []
        self.state: m.StateName = "idle"
        self.turn: Turn | None = None
        self.turns_done: list[m.ReplyDone] = []
        self._lock = asyncio.Lock()
        self._waiting: WaitingTurns[Turn] = WaitingTurns(settings.server.max_waiting_turns)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._echo_until = 0.0
        self._named: dict[str, str] = {}  # source -> the conversation its client named (voiced.conversations)
        self._model = ThreadPoolExecutor(1, thread_name_prefix="voiced-model")
        self._asr = ThreadPoolExecutor(1, thread_name_prefix="voiced-asr")
        self._tts = ThreadPoolExecutor(1, thread_name_prefix="voiced-tts")
        if settings.audio.vad != "webrtc":
            shared_model()  # loaded now: a missing or damaged file stops the start with its fix, not the first turn
        self.drafts = Drafts(assistant, self._model)  # a preemptive reply held until its turn is confirmed
        free = lambda: self.turn is None and self.drafts.held is None  # noqa: E731
        self.ears = Ears(settings, assistant, self._asr, self._model, self._spawn, free, self.conversation_of, self._on_words)
        self.responder = Responder(
            assistant, tts, self._model, self._tts, self.publishers, self._set_state,
            settings.audio.speaker_plays, playback, pace,
        )  # fmt: skip
        # Timers, alarms, reminders and the clock run before the model (voiced.commands); the system prompt says
        # what voiced really does, so the model never claims a timer or a switched light it did not set.
        self.commands = Commands(settings, self._publish, self.announce)
        count = lambda text: len(assistant.bundle.tokenizer.encode(text).ids)  # noqa: E731
        runs = self.commands.enabled and assistant.transcribes  # encoder-free bundles have no words to match
        assistant.system_prompt = command_prompt.for_assistant(assistant.system_prompt, count, assistant.budget, runs)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        self.commands.warm_up()
        await run_in(self._model, self.assistant.warm_up)

    async def aclose(self) -> None:
        if self.turn is not None:
            self.responder.cancel(self.turn)
        self.drafts.discard()
        await self.commands.aclose()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ex in (self._model, self._asr, self._tts):
            ex.shutdown(wait=False, cancel_futures=True)

    def add_publisher(self, publisher: Publisher) -> None:
        self.publishers.append(publisher)

    # -- services of their own (voiced.server.handler.SpeechBackend: Wyoming's stt and tts) ---------------------
    @property
    def hears_audio(self) -> bool:
        return self.assistant.hears_audio

    @property
    def language(self) -> str | None:
        return getattr(self.assistant.bundle.manifest.audio, "language", None)

    @property
    def manifest(self) -> Manifest:
        return self.assistant.bundle.manifest

    @property
    def voice_language(self) -> str | None:
        return getattr(self.tts, "language", None)  # only engines that know their voice's language say it

    @property
    def tts_sample_rate(self) -> int:
        return self.tts.sample_rate

    async def transcribe(self, pcm: np.ndarray) -> str:
        return await run_in(self._asr, self.assistant.transcribe, pcm)

    def synthesize(self, text: str, cancel: threading.Event) -> AsyncIterator[np.ndarray]:
        return self.responder.synthesize(text, cancel)

    # -- audio in -------------------------------------------------------------------------------------------
    async def feed(self, source: str, pcm: np.ndarray) -> None:
        """16 kHz mono int16 from a source, in order."""
        lis = self.ears.listener(source)
        if source == LOCAL and self.settings.audio.half_duplex:
            lis.muted = self._echo()
        await self._on(lis, lis.feed(pcm, time.monotonic(), model_busy=self.turn is not None))
        self.ears.watch_stall(lis, self._stalled)

    async def _on_words(self, lis: li.Listener, req: li.Prefill) -> None:
        """A pause's guess heard words addressed to us, and the model is free: when they sound final, start the
        reply on them, held until the turn is confirmed (activation.preemptive_reply); otherwise prefill their
        prompt. Never a draft on a command's words: an action runs only on a finished turn."""
        conversation, query = self.conversation_of(lis.source), req.query
        if self.settings.activation.preemptive_reply and req.sounds_final and not self.commands.matches(query):
            self.drafts.start(lis.source, conversation, query)
            return
        await run_in(self._model, self.assistant.prepare_in, conversation, query)

    def _stalled(self, source: str) -> None:
        self._spawn(self.end_of_stream(source))

    async def end_of_stream(self, source: str) -> None:
        lis = self.ears.listeners.get(source)
        if lis is not None:
            await self._on(lis, lis.flush())

    def _echo(self) -> bool:
        now = time.monotonic()
        if self.responder.audible():
            self._echo_until = now + ECHO_TAIL_S
        return now < self._echo_until

    async def _on(self, lis: li.Listener, events: list[li.Event]) -> None:
        source, turn = lis.source, self.turn
        for ev in events:
            if isinstance(ev, (li.Started, li.Resumed, li.Discarded)):
                self.drafts.discard(source)  # the user went on: not the draft's turn (its decode stops by itself)
            if isinstance(ev, li.Started):
                self._publish(m.SpeechStarted(t=ev.t, source=source))
                if (turn is None or turn.source != source) and self.state == "idle":
                    self._set_state("listening", source)
            elif isinstance(ev, li.Discarded):
                if self.state == "listening" and self.turn is None:
                    self._set_state("idle", None)
            elif isinstance(ev, li.Ended):
                self._publish(m.SpeechEnded(t_start=ev.t_start, t_end=ev.t_end, source=source))
            elif isinstance(ev, li.Ignored):
                log.info("speech on %s outside push-to-talk: not answered", source)
                self._publish(m.TurnIgnored(source=source, reason="outside_push_to_talk"))
                if self.turn is None:
                    self._set_state("idle", None)
            elif isinstance(ev, li.Transcribe):
                self.ears.transcribe_for(lis, ev)
            elif isinstance(ev, li.BargeIn):
                if self.turn is not None and self.turn.source == source:
                    log.info("barge-in on %s: interrupting reply %s", source, self.turn.id)
                    self.responder.cancel(self.turn)
            elif isinstance(ev, li.UserTurn):
                self._user_turn(lis, ev)

    def _user_turn(self, lis: li.Listener, ev: li.UserTurn) -> None:
        if not self.assistant.hears_audio:
            self._publish(m.Error(code="unavailable", message="this bundle takes no audio; send a text_query"))
            return
        if ev.woken_s is not None:
            log.info("wake-word model fired for the turn on %s", lis.source)
        guess = self.ears.guess_of(lis.source, ev.guess_job)
        turn = Turn(source=lis.source, audio=ev.audio, pushed=ev.pushed, woken_s=ev.woken_s,
                    early_tokens=ev.early_tokens, silence_ms=ev.silence_ms)  # fmt: skip
        self._spawn(self._run_turn(turn, guess, ev.guess))

    # -- TurnHandler (the server calls these) ---------------------------------------------------------------
    async def on_client_audio(self, client_id: str, pcm16k: np.ndarray) -> None:
        await self.feed(client_id, pcm16k)

    async def on_client_audio_end(self, client_id: str) -> None:
        await self.end_of_stream(client_id)

    async def on_text_query(self, client_id: str, text: str, request_id: str | None) -> None:
        turn = Turn(source=client_id, query=text.strip(), request_id=request_id, conversation=self.conversation_of(client_id))
        self._spawn(self._run_turn(turn))

    async def on_handle(self, client_id: str, text: str, request_id: str, conversation: str) -> None:
        """A text turn whose asker speaks the answer itself (Home Assistant's conversation agent): the reply is
        text only, done when its last token is (voiced.routing)."""
        turn = Turn(source=client_id, query=text.strip(), request_id=request_id, conversation=conversation, delivery=Delivery.TEXT)
        self._spawn(self._run_turn(turn))

    def name_conversation(self, client_id: str, conversation: str | None) -> None:
        """The conversation `client_id`'s turns belong to from now on (None: its own, keyed by the source)."""
        if conversation:
            self._named[client_id] = conversation
        else:
            self._named.pop(client_id, None)

    def conversation_of(self, source: str) -> str:
        return key_of(source, self._named.get(source))

    async def on_cancel(self, client_id: str, request_id: str | None) -> None:
        turn = self.turn
        if request_id is None:
            self.commands.silence()
        if turn is not None and (request_id is None or request_id == turn.request_id):
            self.responder.cancel(turn)
        for waiting in self._waiting.withdraw(client_id, lambda t: request_id is None or t.request_id == request_id):
            self.responder.cancel(waiting)

    async def on_push_to_talk(self, client_id: str, pressed: bool) -> None:
        lis = self.ears.listener(client_id)
        if pressed:
            lis.press()
            self.commands.silence()
            if self.turn is not None:
                self.responder.cancel(self.turn)
            self._set_state("listening", client_id)
            return
        await self._on(lis, lis.release())
        if self.turn is None and self.state == "listening" and not self._tasks:
            self._set_state("idle", None)  # released without speaking

    async def on_forget(self, client_id: str) -> None:
        await run_in(self._model, self.assistant.forget, self.conversation_of(client_id))

    async def on_list_timers(self, client_id: str) -> list[m.TimerInfo]:
        return self.commands.snapshot()

    async def on_client_disconnect(self, client_id: str) -> None:
        self.ears.forget(client_id)
        await self.drafts.drop(client_id)
        for waiting in self._waiting.withdraw(client_id):  # nobody is left to hear them
            self.responder.cancel(waiting)
        if self.turn is not None and self.turn.source == client_id:  # its asker is gone: free the model for others
            log.info("client %s left: interrupting its reply %s", client_id, self.turn.id)
            self.responder.cancel(self.turn)
        if self._named.pop(client_id, None) is None:  # its own conversation: nobody can reach it again
            try:  # on the model thread, which alone touches conversations while turns run
                await run_in(self._model, self.assistant.drop_conversation, client_id)
            except RuntimeError:  # the pipeline closed first (shutdown): nothing is left to forget
                pass

    # -- the turn -------------------------------------------------------------------------------------------
    async def _run_turn(self, turn: Turn, guess: asyncio.Task[str | None] | None = None, heard: str | None = None) -> None:
        if turn.audio is not None and not await self._hear(turn, guess, heard):
            await self.drafts.drop(turn.source)
            if self.turn is None and self.state == "listening":
                self._set_state("idle", None)
            return
        if not self._admit(turn):
            await self.drafts.drop(turn.source)
            return
        async with self._lock:  # one model, one turn at a time; later turns wait their go
            self._waiting.started(turn)
            if turn.cancelled:
                return
            self.turn = turn
            lis = self.ears.listeners.get(turn.source)
            if lis is not None:
                lis.replying = True
            try:
                await self._answer(turn)
            except BrainUnavailable as e:  # the model could not answer (its server down): said, and named with the fix
                log.warning("turn %s: %s", turn.id, e)
                self._publish(m.Error(code=e.code, message=str(e), request_id=turn.request_id))
            except ContextOverflow as e:  # the user's words alone are over the model's context: their input, no bug
                log.warning("turn %s: %d tokens do not fit the context of %d", turn.id, e.tokens, e.max_context)
                message = (f"the question is too long for the model ({e.tokens} tokens, the context holds "
                           f"{e.max_context}); ask a shorter question, or use a bundle with a longer context")  # fmt: skip
                self._publish(m.Error(code="too_large", message=message, request_id=turn.request_id))
            except Exception as e:
                log.exception("turn %s failed", turn.id)
                self._publish(m.Error(code="internal", message=f"turn failed: {e}", request_id=turn.request_id))
            finally:
                self.turn = None
                if lis is not None:
                    lis.replying = False
                self._set_state("idle", None)

    def _admit(self, turn: Turn) -> bool:
        """Bound the turns waiting for the model (voiced.admission); the refused and the replaced hear `busy`."""
        offer = self._waiting.offer(turn.source, turn)
        if offer.evicted is not None:
            self.responder.cancel(offer.evicted)
            why = "replaced by a newer request from the same client before it was answered"
            self._tell(offer.evicted.source, m.Error(code="busy", message=why, request_id=offer.evicted.request_id))
        if offer.verdict is Verdict.BUSY:
            n = self.settings.server.max_waiting_turns
            why = f"{n} requests already wait for the model (server.max_waiting_turns); ask again when a reply is done"
            self._tell(turn.source, m.Error(code="busy", message=why, request_id=turn.request_id))
            return False
        return True

    async def _hear(self, turn: Turn, guess: asyncio.Task[str | None] | None, heard: str | None) -> bool:
        """Hear a spoken turn (voiced.turn.ears) and act on the decision. Runs before the turn lock, so a "stop"
        reaches the reply it stops instead of queueing behind it. An unaddressed turn leaves nothing: no reply,
        no transcript published, nothing remembered."""
        try:
            result = await self.ears.hear(turn, guess, heard)
        except ScoringFailed as e:  # unjudged is unaddressed: a turn is never answered on a failed pass
            self._publish(m.Error(code="internal", message=str(e)))
            return False
        a, text = result.addressing, result.text
        if a.heard is Heard.NOTHING:
            log.info("turn %s: no words recognised; not answered", turn.id)
            self._publish(m.Transcript(text="", final=True, source=turn.source))
            self._publish(m.TurnIgnored(source=turn.source, reason="no_speech"))
            return False
        if a.heard is Heard.STOP:
            current = self.turn
            stopping = f": stopping reply {current.id}" if current else ""
            log.info("stop command %s from %s%s", words(text or "", self._log_words), turn.source, stopping)
            self.commands.silence()
            if current is not None:
                self.responder.cancel(current)
            self._publish(m.TurnIgnored(source=turn.source, reason="stop_command"))
            return False
        if a.heard is Heard.NOT_ADDRESSED:
            log.info("turn %s not answered (%s)", turn.id, a.reason)
            self._publish(m.TurnIgnored(source=turn.source, reason="not_addressed"))
            return False
        if text is not None:
            self._publish(m.Transcript(text=text, final=True, source=turn.source))
            turn.query = a.query
        return True

    async def _answer(self, turn: Turn) -> None:
        self.commands.silence()  # a new request once a due timer's announcement was heard: the user is here
        turn.conversation = turn.conversation or self.conversation_of(turn.source)
        spoken = turn.query is None and turn.audio is not None
        # The one place a command runs: the words of a finished turn (never a guess or an early pass's words).
        said = None if spoken else self.commands.handle(turn.query or "")
        draft = await self.drafts.take(turn.source, turn.conversation, None if said is not None else turn.query)
        if draft is not None:
            log.info("turn %s: the reply started at the pause is adopted", turn.id)
        reply = await self.responder.run(turn, said, draft=draft)
        if not reply.interrupted and (lis := self.ears.listeners.get(turn.source)) is not None:
            lis.activation.replied(time.monotonic())
        self._spawn(self._prefill_next_opening())
        self.turns_done.append(reply.done)
        query = SPOKEN if spoken else turn.query or ""
        log.info(
            "turn %s (%s)%s: %s -> %s | %s", turn.id, turn.source, " interrupted" if reply.interrupted else "",
            words(query, self._log_words), words(reply.text.strip(), self._log_words),
            " ".join(f"{k}={v:.0f}" for k, v in (reply.done.timings_ms or {}).items()),
        )  # fmt: skip

    async def announce(self, text: str) -> None:
        """Speak `text` unasked (a due timer), as a reply of its own from source ANNOUNCE, on the local speaker and
        to every listener. It waits for any turn in progress and any speech still open to end, so it never talks
        over the user; the stop word, push-to-talk and `cancel` interrupt it like any reply. Not remembered."""
        while self.turn is not None or self.state != "idle" or self._lock.locked():
            await asyncio.sleep(0.05)
        async with self._lock:
            turn = self.turn = Turn(source=ANNOUNCE)
            try:
                await self.responder.run(turn, said=text, remember=False, think=False)
            finally:
                self.turn = None
                self._set_state("idle", None)

    async def _prefill_next_opening(self) -> None:
        """While nobody speaks: the reply's close and the next user turn's opening into the cache, so the next
        turn prefills only its words (a turn already waiting for the model runs after; it would prefill these)."""
        try:
            await run_in(self._model, self.assistant.prepare_next_turn)
        except Exception as e:  # a guess: the next turn prefills whatever is missing
            log.warning("prefill of the next turn's opening failed: %s", e)

    # -- plumbing -------------------------------------------------------------------------------------------
    def _set_state(self, state: m.StateName, source: str | None) -> None:
        if state != self.state:
            self.state = state
            self._publish(m.State(state=state, source=source))

    def _publish(self, msg: m.ServerMessage) -> None:
        for p in self.publishers:
            p.broadcast(msg)

    def _tell(self, source: str, msg: m.Error) -> None:
        """A message for one source only, where a publisher can address it (the others filter by request_id)."""
        for p in self.publishers:
            if isinstance(p, Addressed):
                p.send(source, msg)
            else:
                p.broadcast(msg)

    @property
    def _log_words(self) -> bool:
        """User words and reply text in log lines only when configured: the journal is usually on disk."""
        privacy = self.settings.privacy
        return privacy.log_transcripts or privacy.save_transcripts

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
