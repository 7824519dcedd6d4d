"""The turn: speech segment (or text query) -> model -> clauses -> speech -> every sink. One owner of state.

Sources push audio in (`feed`); each source has its own VAD segmenter. Work that would block runs on three
single-thread executors so they overlap on two cores: ASR, the model (one KV cache, one thread), and TTS.
Text flows model -> chunker -> TTS clause by clause, so speech starts at the first clause, not the last token.

Latency tricks, in the order the audio meets them:
- while the user speaks, every `activation.prefill_while_speaking_s` of new speech the segment so far is
  transcribed and its words but the last (which may still be cut) are prefilled into the cache, on cores that
  are idle then, so what is left at the end of the turn does not grow with the length of the utterance;
- at the first pause (SpeechPaused) the segment so far is transcribed and its prompt prefilled speculatively,
  during the hangover; if the speaker resumes, the result is dropped (sync() keeps whatever prefix still holds);
- the system prompt and history stay in the KV cache between turns (Assistant.prepare / Conversation.sync),
  and after each turn the reply's close and the next user turn's opening are prefilled while nobody speaks.

Barge-in: speech from the turn's own source that lasts `activation.barge_in_min_ms` cancels generation and TTS
(a threading.Event both threads poll between steps) and interrupts local playback; the partial reply is kept in
memory marked interrupted. Half duplex: the local microphone is muted from the VAD while we speak.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol import messages as m
from voiced.admission import Addressed, Verdict, WaitingTurns
from voiced.assistant import SPOKEN
from voiced.audio import vad
from voiced.audio.activation import Activation, Decision
from voiced.audio.endpoint import TAIL_MS, EndOfTurnPolicy, stalled_wait
from voiced.audio.silero import shared_model
from voiced.audio.smart_turn import SmartTurn
from voiced.audio.wakeword import LEAD_S, WakeWordDetector, WakeWordModel
from voiced.brain import Brain, BrainUnavailable
from voiced.bridge import iterate_in_thread
from voiced.commands import prompt as command_prompt
from voiced.commands.runtime import Commands
from voiced.config import Settings
from voiced.conversations import key_of
from voiced.model.engine import ContextOverflow
from voiced.model.manifest import Manifest
from voiced.routing import ANNOUNCE, Delivery, plays_locally
from voiced.server.handler import Publisher
from voiced.server.logsafe import words
from voiced.speech.chunker import ClauseChunker
from voiced.speech.tts import TTSEngine

log = logging.getLogger(__name__)

LOCAL = "local"
ECHO_TAIL_S = 0.25  # room reverb and output latency after our last sample still reach the mic
SPECULATE_AFTER_S = 0.12  # short unvoiced stretches inside words pause the VAD too; ASR only real pauses
BARE_WAKE_S = 0.3  # wake-word model: less speech than this after the detection means the phrase was said alone


@dataclass
class Turn:
    source: str
    audio: np.ndarray | None = None
    query: str | None = None
    request_id: str | None = None
    pushed: bool = False  # push-to-talk: addressed by the button, no wake phrase needed
    woken_s: float | None = None  # wake-word model fired for this turn: seconds of the segment after it; None: not
    early_tokens: int = 0  # prompt tokens prefilled while the user was still speaking
    silence_ms: float | None = None  # the silence after the last word that ended the turn (the hangover waited)
    speculative: asyncio.Future | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    t0: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    marks: dict[str, float] = field(default_factory=dict)
    reply: str = ""
    interrupted: bool = False
    conversation: str | None = None  # whose memory answers (voiced.conversations); None: the source's, at the model
    delivery: Delivery = Delivery.SPOKEN

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, (time.monotonic() - self.t0) * 1e3)


@dataclass
class _Source:
    segmenter: vad.Segmenter
    activation: Activation
    audio: list[np.ndarray] = field(default_factory=list)
    speculative: asyncio.Future | None = None
    pending: asyncio.TimerHandle | None = None  # a speculation waiting for the pause to last
    barge_samples: int | None = None  # counting speech during a reply to this source; None = not armed
    paused: bool = False  # silence after speech: its frames are not speech, so they do not count for barge-in
    ptt: bool = False
    wake: WakeWordDetector | None = None  # activation.wake_detector = "model" in wake mode
    early: asyncio.Future | None = None  # a transcribe-and-prefill pass while speaking (one at a time)
    early_at: float = 0.0  # stream time the last such pass heard up to (at first: where the segment's audio begins)
    early_tokens: int = 0
    audio_t0: float = 0.0  # stream time where the open segment's audio (its pre-roll first) begins
    last_audio_at: float = 0.0  # wall clock (monotonic) of the last audio fed
    stall: asyncio.TimerHandle | None = None  # ends a turn whose source stopped sending inside it

    def drop_speculation(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
        self.pending = self.speculative = None


class Pipeline:
    """Implements the server's TurnHandler; `feed` takes the local microphone."""

    def __init__(
        self, settings: Settings, assistant: Brain, tts: TTSEngine, playback: Any | None = None, pace: bool = True
    ):
        """`pace`: without a local speaker, a turn still lasts as long as its audio plays at the listeners, so
        `speaking` means what people hear and a satellite's barge-in lands while they hear it. Off for `ask`."""
        self.settings = settings
        self.pace = pace
        self.assistant = assistant
        self.tts = tts
        self.playback = playback
        self.publishers: list[Publisher] = []
        self.state = "idle"
        self.turn: Turn | None = None
        self.turns_done: list[m.ReplyDone] = []
        self._sources: dict[str, _Source] = {}
        self._lock = asyncio.Lock()
        self._waiting: WaitingTurns[Turn] = WaitingTurns(settings.server.max_waiting_turns)
        self._tasks: set[asyncio.Task] = set()
        self._echo_until = 0.0
        self._named: dict[str, str] = {}  # source -> the conversation its client named (voiced.conversations)
        self._endpoint = EndOfTurnPolicy(settings.activation, settings.audio)
        # Loaded now, so that a missing or damaged file stops the start with its fix, not the first turn.
        self._turn_model = SmartTurn() if self._endpoint.wants_model else None
        if settings.audio.vad != "webrtc":
            shared_model()
        act = settings.activation
        # The wake-word model runs on every source's frames in front of the VAD, on this loop (about 25 ms of CPU
        # per second of audio, one 2 ms call per 80 ms: benchmarks/wakeword.py); loaded once, state per source.
        self._wake_model = WakeWordModel(act.wake_model) if act.mode == "wake" and act.wake_detector == "model" else None
        self._model = ThreadPoolExecutor(1, thread_name_prefix="voiced-model")
        self._asr = ThreadPoolExecutor(1, thread_name_prefix="voiced-asr")
        self._tts = ThreadPoolExecutor(1, thread_name_prefix="voiced-tts")
        # Timers, alarms, reminders and the clock run before the model (voiced.commands); the system prompt says
        # what voiced really does, so the model never claims a timer or a switched light it did not set.
        self.commands = Commands(settings, self._publish, self.announce)
        count = lambda text: len(assistant.bundle.tokenizer.encode(text).ids)  # noqa: E731
        runs = self.commands.enabled and assistant.transcribes  # encoder-free bundles have no words to match
        assistant.system_prompt = command_prompt.for_assistant(assistant.system_prompt, count, assistant.budget, runs)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        self.commands.warm_up()
        await self._run(self._model, self.assistant.warm_up)

    async def aclose(self) -> None:
        if self.turn is not None:
            self._interrupt(self.turn)
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
        return await self._run(self._asr, self.assistant.transcribe, pcm)

    def synthesize(self, text: str, cancel: threading.Event) -> AsyncIterator[np.ndarray]:
        return iterate_in_thread(self._tts, lambda: self.tts.synthesize(text, cancel))

    # -- audio in -------------------------------------------------------------------------------------------
    async def feed(self, source: str, pcm: np.ndarray) -> None:
        """16 kHz mono int16 from a source, in order."""
        st = self._source(source)
        if source == LOCAL and self.settings.audio.half_duplex:
            st.segmenter.muted = self._speaking()
        if st.wake is not None:  # first, so a detection is known when the VAD ends the turn it belongs to
            st.wake.feed(pcm)
        for ev in st.segmenter.feed(pcm):
            await self._on_vad(source, st, ev)
        st.last_audio_at = time.monotonic()
        self._watch_stall(source, st, self.settings.audio.stalled_stream_ms / 1000)

    def _watch_stall(self, source: str, st: _Source, delay: float) -> None:
        """(Re)arm the timer that ends the open turn if the source sends nothing more (endpoint.stalled_wait)."""
        if st.stall is not None:
            st.stall.cancel()
        st.stall = asyncio.get_running_loop().call_later(delay, self._stalled, source, st) if st.segmenter.in_speech else None

    def _stalled(self, source: str, st: _Source) -> None:
        st.stall = None
        if self._sources.get(source) is not st or not st.segmenter.in_speech or st.segmenter.held:
            return  # gone, turn already over, or push-to-talk held (the release ends it)
        seg = st.segmenter
        wait = stalled_wait(time.monotonic(), st.last_audio_at, seg.silence_s, seg.hangover_ms, self.settings.audio.stalled_stream_ms)
        if wait > 0:  # the hangover may still shorten (words landing): look again soon
            self._watch_stall(source, st, min(wait, 0.1))
            return
        log.info("no audio from %s for %.1f s inside a turn: ending it", source, time.monotonic() - st.last_audio_at)
        self._spawn(self.end_of_stream(source))

    async def end_of_stream(self, source: str) -> None:
        st = self._sources.get(source)
        if st is not None:
            for ev in st.segmenter.flush():
                await self._on_vad(source, st, ev)

    def _source(self, source: str) -> _Source:
        st = self._sources.get(source)
        if st is None:
            act = self.settings.activation
            wake = WakeWordDetector(self._wake_model, act.wake_model_threshold) if self._wake_model is not None else None
            st = self._sources[source] = _Source(vad.Segmenter(self.settings.audio, source=source), Activation(act), wake=wake)
        return st

    def _speaking(self) -> bool:
        now = time.monotonic()
        turn = self.turn  # a reply heard elsewhere (voiced.routing) is no echo on the local microphone
        local = turn is None or plays_locally(turn.source, self.settings.audio.speaker_plays)
        if (self.state == "speaking" and local) or (self.playback is not None and self.playback.playing):
            self._echo_until = now + ECHO_TAIL_S
        return now < self._echo_until

    async def _on_vad(self, source: str, st: _Source, ev: vad.Event) -> None:
        turn = self.turn
        if isinstance(ev, vad.SpeechStarted):
            st.audio = [ev.pre_roll]
            st.audio_t0 = ev.t - len(ev.pre_roll) / vad.RATE
            st.paused = False
            st.early_at, st.early_tokens = st.audio_t0, 0
            st.drop_speculation()
            st.segmenter.hangover_ms = self._endpoint.at_start().ms
            self._publish(m.SpeechStarted(t=ev.t, source=source))
            if turn is not None and turn.source == source:
                st.barge_samples = 0
            elif self.state == "idle":
                self._set_state("listening", source)
        elif isinstance(ev, vad.SpeechFrames):
            st.audio.append(ev.pcm)
            if not st.paused:
                self._maybe_prefill_early(st, ev.t + len(ev.pcm) / vad.RATE)
            if st.barge_samples is not None and turn is not None and not st.paused:
                st.barge_samples += len(ev.pcm)
                if st.barge_samples * 1000 >= self.settings.activation.barge_in_min_ms * vad.RATE:
                    log.info("barge-in on %s: interrupting reply %s", source, turn.id)
                    st.barge_samples = None
                    self._interrupt(turn)
        elif isinstance(ev, vad.SpeechPaused):
            st.paused = True
            if st.audio:
                audio = np.concatenate(st.audio)
                tail = audio[-vad.RATE * TAIL_MS // 1000 :]
                hears = self.assistant.transcribes or self._turn_model is not None  # words or the turn model will tell
                st.segmenter.hangover_ms = self._endpoint.decide(None, tail, words_pending=hears).ms
                if hears:
                    st.drop_speculation()
                    st.pending = asyncio.get_running_loop().call_later(SPECULATE_AFTER_S, self._speculate, st, tail)
        elif isinstance(ev, vad.SpeechResumed):
            st.paused = False
            st.drop_speculation()
            st.segmenter.hangover_ms = self._endpoint.at_start().ms
        elif isinstance(ev, vad.SpeechDiscarded):
            st.audio, st.barge_samples = [], None
            st.drop_speculation()
            if self.state == "listening" and self.turn is None:
                self._set_state("idle", None)
        elif isinstance(ev, vad.SpeechEnded):
            self._publish(m.SpeechEnded(t_start=ev.t_start, t_end=ev.t_end, source=source))
            spec, st.audio, st.barge_samples = st.speculative, [], None
            if st.pending is not None:  # the turn ended before the pause was worth a guess
                spec = None
            st.drop_speculation()
            if self.settings.activation.mode == "push" and not st.ptt:
                log.info("speech on %s outside push-to-talk: not answered", source)
                self._publish(m.TurnIgnored(source=source, reason="outside_push_to_talk"))
                if self.turn is None:
                    self._set_state("idle", None)
                return
            if not self.assistant.hears_audio:
                self._publish(m.Error(code="unavailable", message="this bundle takes no audio; send a text_query"))
                return
            woken_s = None
            if st.wake is not None and (hits := st.wake.take(ev.t_start - LEAD_S)):
                woken_s = ev.t_end - hits[-1].t
                log.info("wake-word model fired for the turn on %s (score %.2f)", source, hits[-1].score)
            # The segment's audio runs to the last frame fed, so past its last voiced frame lies the silence waited.
            silence_ms = max(0.0, (st.audio_t0 + len(ev.audio) / vad.RATE - ev.t_end) * 1e3)
            self._start(
                Turn(source=source, audio=ev.audio, speculative=spec, pushed=st.ptt, woken_s=woken_s,
                     early_tokens=st.early_tokens, silence_ms=silence_ms)
            )  # fmt: skip

    def _maybe_prefill_early(self, st: _Source, heard_to: float) -> None:
        """Start a transcribe-and-prefill pass over the segment so far when enough new speech has come since the
        last one and none is running. Only while nothing else needs the cores: no turn in progress, no pause
        speculation (which supersedes it)."""
        every = self.settings.activation.prefill_while_speaking_s
        if every <= 0 or not self.assistant.transcribes or self.turn is not None or st.speculative is not None:
            return
        if st.early is not None and not st.early.done():
            return
        if heard_to - st.early_at < every:
            return
        st.early_at = heard_to
        audio = np.concatenate(st.audio)

        async def run() -> None:
            try:
                text = await self._run(self._asr, self.assistant.transcribe, audio)
                words = text.split()[:-1]  # the last word may be cut mid-way: it would only be prefilled twice
                if not words or self.turn is not None or st.paused or st.speculative is not None or not st.audio:
                    return  # the pause's own speculation (more audio) supersedes this pass: leave it the cores
                addressed = st.activation.peek(" ".join(words), time.monotonic())
                if addressed.answer and addressed.query:
                    conversation = self.conversation_of(st.segmenter.source)
                    st.early_tokens += await self._run(self._model, self.assistant.prepare_in, conversation, addressed.query)
            except Exception as e:  # a guess: the end of the turn transcribes and prefills whatever is missing
                log.warning("prefill while speaking failed: %s", e)

        st.early = self._spawn(run())

    def _speculate(self, st: _Source, tail: np.ndarray) -> None:
        """Transcribe the segment so far during the hangover; its words set the hangover (a finished sentence
        ends the turn sooner, "... and" holds it open), and its prompt is prefilled if the model is free.
        The audio is taken now, SPECULATE_AFTER_S into the pause, not at its first frame: a last word's soft end
        (a decaying vowel, a final consonant) falls below the gate before it is over, and Whisper given the
        word cut there guesses another one."""
        st.pending = None
        audio = np.concatenate(st.audio)

        async def run() -> str:
            text = await self._run(self._asr, self.assistant.transcribe, audio) if self.assistant.transcribes else None
            turn_p = None  # the turn model runs only where its answer can change the decision (after the words)
            if self._turn_model is not None and self._endpoint.needs_model(text, tail) and st.speculative is task:
                turn_p = await self._run(self._asr, self._turn_model.probability, audio)
            if st.speculative is task:
                st.segmenter.hangover_ms = self._endpoint.decide(text, tail, turn_p=turn_p).ms
            if text is None:
                return ""
            if text and self.turn is None and st.speculative is task:
                addressed = st.activation.peek(text, time.monotonic())
                if addressed.answer:
                    await self._run(self._model, self.assistant.prepare_in, self.conversation_of(st.segmenter.source), addressed.query)
            return text

        task = st.speculative = self._spawn(run())

    # -- TurnHandler (the server calls these) ---------------------------------------------------------------
    async def on_client_audio(self, client_id: str, pcm16k: np.ndarray) -> None:
        await self.feed(client_id, pcm16k)

    async def on_client_audio_end(self, client_id: str) -> None:
        await self.end_of_stream(client_id)

    async def on_text_query(self, client_id: str, text: str, request_id: str | None) -> None:
        self._start(Turn(source=client_id, query=text.strip(), request_id=request_id, conversation=self.conversation_of(client_id)))

    async def on_handle(self, client_id: str, text: str, request_id: str, conversation: str) -> None:
        """A text turn whose asker speaks the answer itself (Home Assistant's conversation agent): the reply is
        text only, done when its last token is (voiced.routing)."""
        self._start(Turn(source=client_id, query=text.strip(), request_id=request_id, conversation=conversation, delivery=Delivery.TEXT))

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
            self._interrupt(turn)
        for waiting in self._waiting.withdraw(client_id, lambda t: request_id is None or t.request_id == request_id):
            waiting.cancel.set()

    async def on_push_to_talk(self, client_id: str, pressed: bool) -> None:
        st = self._source(client_id)
        st.ptt = pressed
        st.segmenter.held = pressed  # no pause ends the turn while the button is held; the release does
        if pressed:
            self.commands.silence()
            if self.turn is not None:
                self._interrupt(self.turn)
            self._set_state("listening", client_id)
        else:  # release ends the utterance now, without waiting for the hangover
            st.ptt = True
            await self.end_of_stream(client_id)
            st.ptt = False
            if self.turn is None and self.state == "listening" and not self._tasks:
                self._set_state("idle", None)  # released without speaking

    async def on_forget(self, client_id: str) -> None:
        await self._run(self._model, self.assistant.forget, self.conversation_of(client_id))

    async def on_list_timers(self, client_id: str) -> list[m.TimerInfo]:
        return self.commands.snapshot()

    async def on_client_disconnect(self, client_id: str) -> None:
        self._sources.pop(client_id, None)
        for waiting in self._waiting.withdraw(client_id):  # nobody is left to hear them
            waiting.cancel.set()
        if self.turn is not None and self.turn.source == client_id:  # its asker is gone: free the model for others
            log.info("client %s left: interrupting its reply %s", client_id, self.turn.id)
            self._interrupt(self.turn)
        if self._named.pop(client_id, None) is None:  # its own conversation: nobody can reach it again
            try:  # on the model thread, which alone touches conversations while turns run
                await self._run(self._model, self.assistant.drop_conversation, client_id)
            except RuntimeError:  # the pipeline closed first (shutdown): nothing is left to forget
                pass

    # -- the turn -------------------------------------------------------------------------------------------
    def _start(self, turn: Turn) -> asyncio.Task:
        return self._spawn(self._run_turn(turn))

    async def _run_turn(self, turn: Turn) -> None:
        if turn.audio is not None and not await self._hear(turn):
            if self.turn is None and self.state == "listening":
                self._set_state("idle", None)
            return
        if not self._admit(turn):
            return
        async with self._lock:  # one model, one turn at a time; later turns wait their go
            self._waiting.started(turn)
            if turn.cancel.is_set():
                return
            self.turn = turn
            try:
                await self._turn_body(turn)
            except BrainUnavailable as e:  # the model could not answer (its server down): said, and named with the fix
                log.warning("turn %s: %s", turn.id, e)
                self._publish(m.Error(code=e.code, message=str(e), request_id=turn.request_id))
            except ContextOverflow as e:  # the user's words alone are over the model's context: their input, no bug
                log.warning("turn %s: %d tokens do not fit the context of %d", turn.id, e.tokens, e.max_context)
                message = (f"the question is too long for the model ({e.tokens} tokens, the context holds "
                           f"{e.max_context}); ask a shorter question, or use a bundle with a longer context")
                self._publish(m.Error(code="too_large", message=message, request_id=turn.request_id))
            except Exception as e:
                log.exception("turn %s failed", turn.id)
                self._publish(m.Error(code="internal", message=f"turn failed: {e}", request_id=turn.request_id))
            finally:
                self.turn = None
                self._set_state("idle", None)

    def _admit(self, turn: Turn) -> bool:
        """Bound the turns waiting for the model (voiced.admission); the refused and the replaced hear `busy`."""
        offer = self._waiting.offer(turn.source, turn)
        if offer.evicted is not None:
            offer.evicted.cancel.set()
            self._tell(offer.evicted.source, m.Error(code="busy", message="replaced by a newer request from the same client before it was answered", request_id=offer.evicted.request_id))
        if offer.verdict is Verdict.BUSY:
            n = self.settings.server.max_waiting_turns
            self._tell(turn.source, m.Error(code="busy", message=f"{n} requests already wait for the model (server.max_waiting_turns); ask again when a reply is done", request_id=turn.request_id))
            return False
        return True

    async def _hear(self, turn: Turn) -> bool:
        """Transcribe a spoken turn and decide whether it is ours to answer. Runs before the turn lock, so a
        "stop" reaches the reply it stops instead of queueing behind it. An unaddressed turn leaves nothing:
        no reply, no transcript published, nothing remembered."""
        if not self.assistant.transcribes:
            # Encoder-free: no words to match a wake phrase or a stop word against. In wake mode the model itself
            # judges, in a short scoring pass, whether it was addressed; "always" and push-to-talk need no pass,
            # nor does a turn inside the follow-up window, nor one the wake-word model judged (wake_detector =
            # "model"). The audio is the query (turn.query stays None).
            activation = self._source(turn.source).activation
            now = time.monotonic()
            p_yes = None
            if not turn.pushed and self._wake_model is None and activation.wants_score(now):
                phrases = self.settings.activation.wake_phrases
                try:
                    score = self.assistant.addressed_probability
                    p_yes = await self._run(self._model, score, turn.audio, phrases, turn.cancel)
                except Exception as e:  # unjudged is unaddressed: a turn is never answered on a failed pass
                    log.exception("turn %s: addressing pass failed", turn.id)
                    self._publish(m.Error(code="internal", message=f"addressing pass failed: {e}"))
                    return False
                turn.mark("addressed")
                threshold = self.settings.activation.model_threshold
                ms = self.assistant.last_scoring_ms
                log.info("turn %s: p(addressed)=%.3f (threshold %.2f) in %.0f ms", turn.id, p_yes, threshold, ms)
            if turn.pushed:
                decision = Decision(True, "", "push-to-talk")
            elif self._wake_model is not None:  # the wake-word model decided while the audio came in
                decision = self._woken(activation, turn, None, now)
            else:
                decision = activation.decide_addressed(p_yes, now)
            if not decision.answer:
                log.info("turn %s not answered (%s)", turn.id, decision.reason)
                self._publish(m.TurnIgnored(source=turn.source, reason="not_addressed"))
                return False
            return True
        text = None
        if turn.speculative is not None:
            try:
                text = await turn.speculative
            except Exception as e:  # the full pass below decides; a failed guess costs only time
                log.warning("speculative transcription failed: %s", e)
        if not text:  # no pause seen, or the speculative pass heard nothing: transcribe the whole segment
            text = await self._run(self._asr, self.assistant.transcribe, turn.audio)
        turn.mark("transcribed")
        if not text:
            log.info("turn %s: no words recognised; not answered", turn.id)
            self._publish(m.Transcript(text="", final=True, source=turn.source))
            self._publish(m.TurnIgnored(source=turn.source, reason="no_speech"))
            return False
        activation = self._source(turn.source).activation
        if activation.is_stop_command(text):
            current = self.turn
            log.info("stop command %s from %s%s", words(text, self._log_words), turn.source, f": stopping reply {current.id}" if current else "")
            self.commands.silence()
            if current is not None:
                self._interrupt(current)
            self._publish(m.TurnIgnored(source=turn.source, reason="stop_command"))
            return False
        now = time.monotonic()
        decision = self._woken(activation, turn, text, now) if self._wake_model is not None else activation.decide(text, now)
        if turn.pushed and not decision.answer:
            wake = activation.match_wake(text)
            decision = Decision(True, wake.rest if wake and wake.rest else text, "push-to-talk")
        if not decision.answer:
            log.info("turn %s not answered (%s)", turn.id, decision.reason)
            self._publish(m.TurnIgnored(source=turn.source, reason="not_addressed"))
            return False
        self._publish(m.Transcript(text=text, final=True, source=turn.source))
        turn.query = decision.query
        return True

    def _woken(self, activation: Activation, turn: Turn, text: str | None, now: float) -> Decision:
        """Wake mode with the wake-word model: the model, not the transcript, says whether the phrase was said;
        a transcript only gives the query, with the phrase cut off by the transcript matcher when it finds it.
        Activation's own rules then apply unchanged (a bare phrase waits for its query; follow-up window).
        Encoder-free bundles hear the audio, phrase included, as the query (as they do in wake mode anyway)."""
        phrases = self.settings.activation.wake_phrases
        phrase = phrases[0] if phrases else "hey voiced"
        if text is None:
            if turn.woken_s is None:
                return activation.decide_addressed(None, now) if not activation.wants_score(now) else Decision(False, "", "not-addressed")
            if turn.woken_s < BARE_WAKE_S:
                return activation.decide(phrase, now)  # the phrase alone: the next turn is the query
            return Decision(True, "", "wake-model")
        wake = activation.match_wake(text)
        rest = wake.rest if wake is not None else text
        if turn.woken_s is None:  # a phrase in the transcript that the model did not hear does not count
            return activation.decide(rest, now) if rest else Decision(False, "", "not-addressed")
        return activation.decide(f"{phrase}, {rest}" if rest else phrase, now)

    async def _turn_body(self, turn: Turn) -> None:
        self.commands.silence()  # a new request once a due timer's announcement was heard: the user is here
        self._set_state("thinking", turn.source)
        spoken = turn.query is None and turn.audio is not None
        query = SPOKEN if spoken else turn.query or ""
        self._publish(m.ReplyStarted(reply_id=turn.id, request_id=turn.request_id, source=turn.source))
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        clauses: asyncio.Queue[str | None] = asyncio.Queue()

        conversation = turn.conversation = turn.conversation or self.conversation_of(turn.source)

        def generate() -> dict:
            try:
                self.assistant.select(conversation)
                replies = self.assistant.reply_audio(turn.audio, turn.cancel) if spoken else self.assistant.reply(query, turn.cancel)
                for d in replies:
                    loop.call_soon_threadsafe(deltas.put_nowait, d.text)
            finally:
                loop.call_soon_threadsafe(deltas.put_nowait, None)
            return dict(self.assistant.conversation.last_stats)

        # The one place a command runs: the words of a finished turn (never a speculative or early pass's guess).
        command = None if spoken else self.commands.handle(query)
        if command is not None:  # done at once: its reply is the turn's, no model decode
            await self._run(self._model, self.assistant.select, conversation)  # remembered in the asker's conversation
            gen: asyncio.Future = loop.create_future()
            gen.set_result({})
            deltas.put_nowait(command)
            deltas.put_nowait(None)
        else:
            gen = loop.run_in_executor(self._model, generate)
        speaker = asyncio.ensure_future(self._speak(turn, clauses))
        chunker = ClauseChunker()
        while (delta := await deltas.get()) is not None:
            turn.mark("first_token")
            turn.reply += delta
            self._publish(m.ReplyDelta(reply_id=turn.id, text=delta))
            for clause in chunker.push(delta):
                turn.mark("first_clause")
                clauses.put_nowait(clause)
        if not turn.cancel.is_set():
            for clause in chunker.flush():
                turn.mark("first_clause")
                clauses.put_nowait(clause)
        clauses.put_nowait(None)
        try:
            stats = await gen
        finally:
            await speaker  # a brain that failed spoke a line naming the problem: heard before the error event
        turn.mark("done")
        turn.interrupted = turn.interrupted or turn.cancel.is_set()
        if not turn.interrupted and turn.source in self._sources:
            self._sources[turn.source].activation.replied(time.monotonic())
        self.assistant.remember(query, turn.reply, turn.interrupted, conversation)
        self._spawn(self._prefill_next_opening())
        timings = self._timings(turn, stats)
        done = m.ReplyDone(reply_id=turn.id, text=turn.reply.strip(), interrupted=turn.interrupted, timings_ms=timings)
        self.turns_done.append(done)
        self._publish(done)
        log.info(
            "turn %s (%s)%s: %s -> %s | %s", turn.id, turn.source, " interrupted" if turn.interrupted else "",
            words(query, self._log_words), words(turn.reply.strip(), self._log_words), " ".join(f"{k}={v:.0f}" for k, v in timings.items()),
        )

    async def _speak(self, turn: Turn, clauses: asyncio.Queue[str | None]) -> None:
        loop = asyncio.get_running_loop()
        rate = self.tts.sample_rate
        first_audio_at, samples = 0.0, 0
        local = self.playback is not None and plays_locally(turn.source, self.settings.audio.speaker_plays)
        try:
            while (clause := await clauses.get()) is not None:
                if turn.cancel.is_set():
                    break
                if turn.delivery is Delivery.TEXT:  # the asker speaks it (voiced.routing)
                    continue
                chunks: asyncio.Queue[np.ndarray | None] = asyncio.Queue()

                def synth(text: str = clause) -> None:
                    try:
                        for chunk in self.tts.synthesize(text, turn.cancel):
                            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                    finally:
                        loop.call_soon_threadsafe(chunks.put_nowait, None)

                job = loop.run_in_executor(self._tts, synth)
                while (chunk := await chunks.get()) is not None:
                    if turn.cancel.is_set():
                        continue
                    if "first_audio" not in turn.marks:
                        turn.mark("first_audio")
                        first_audio_at = time.monotonic()
                        self._set_state("speaking", turn.source)
                    samples += len(chunk)
                    for p in self.publishers:
                        p.broadcast_audio(turn.id, chunk, rate)
                    if local:
                        await self.playback.play(chunk, rate)
                await job
        finally:
            for p in self.publishers:
                p.end_audio(turn.id)
        if turn.cancel.is_set():
            return
        if local:
            await self.playback.drain()
        elif self.pace and samples:
            heard_at = first_audio_at + samples / rate
            while not turn.cancel.is_set() and (left := heard_at - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 0.02))

    async def announce(self, text: str) -> None:
        """Speak `text` unasked (a due timer), as a reply of its own from source ANNOUNCE, on the local speaker and
        to every listener. It waits for any turn in progress and any speech still open to end, so it never talks
        over the user; the stop word, push-to-talk and `cancel` interrupt it like any reply. Not remembered."""
        while self.turn is not None or self.state != "idle" or self._lock.locked():
            await asyncio.sleep(0.05)
        async with self._lock:
            turn = Turn(source=ANNOUNCE)
            self.turn = turn
            try:
                self._publish(m.ReplyStarted(reply_id=turn.id, source=ANNOUNCE))
                clauses: asyncio.Queue[str | None] = asyncio.Queue()
                chunker = ClauseChunker()
                for clause in [*chunker.push(text), *chunker.flush()]:
                    clauses.put_nowait(clause)
                clauses.put_nowait(None)
                await self._speak(turn, clauses)
                self._publish(m.ReplyDone(reply_id=turn.id, text=text, interrupted=turn.cancel.is_set()))
            finally:
                self.turn = None
                self._set_state("idle", None)

    async def _prefill_next_opening(self) -> None:
        """While nobody speaks: the reply's close and the next user turn's opening into the cache, so the next
        turn prefills only its words (a turn already waiting for the model runs after; it would prefill these)."""
        try:
            await self._run(self._model, self.assistant.prepare_next_turn)
        except Exception as e:  # a guess: the next turn prefills whatever is missing
            log.warning("prefill of the next turn's opening failed: %s", e)

    def _interrupt(self, turn: Turn) -> None:
        turn.interrupted = True
        turn.cancel.set()
        if self.playback is not None:
            self.playback.interrupt()

    def _timings(self, turn: Turn, stats: dict) -> dict[str, float]:
        t = {k: round(v, 1) for k, v in turn.marks.items()}
        out: dict[str, float] = {}
        if "transcribed" in t:
            out["asr"] = t["transcribed"]
        for name in ("first_token", "first_clause", "first_audio", "done"):
            if name in t:
                out[name] = t[name]
        if turn.silence_ms is not None:
            out["end_of_turn_silence"] = round(turn.silence_ms, 1)
        if "first_audio" in t:
            out["end_of_speech_to_first_audio"] = t["first_audio"]
            if turn.silence_ms is not None:
                # the user stopped talking one end-of-turn silence before we could know it (adaptive: not a constant)
                out["last_word_to_first_audio"] = round(t["first_audio"] + turn.silence_ms, 1)
        for key in ("prefill_tokens", "prefill_ms", "decode_tokens", "decode_ms"):
            if isinstance(stats.get(key), (int, float)):
                out[key] = round(float(stats[key]), 1)
        if turn.early_tokens:
            out["prefill_while_speaking_tokens"] = float(turn.early_tokens)
        return out

    # -- plumbing -------------------------------------------------------------------------------------------
    def _set_state(self, state: str, source: str | None) -> None:
        if state != self.state:
            self.state = state
            self._publish(m.State(state=state, source=source))

    def _publish(self, msg: Any) -> None:
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

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _run(executor: ThreadPoolExecutor, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
