"""A user turn, answered: reply text -> speakable clauses -> speech -> the sinks; pacing, timings, cancellation.

The brain's deltas come off the model thread, the chunker cuts them into clauses (the first a few words long, so
speech starts at once: voiced.speech.chunker), and the TTS thread turns each clause into ~100 ms chunks that go to
every publisher and to the turn's hearer as they are made. The hearer is where the reply is heard, and the turn
lasts until it has been: the local speaker (drained), or, for a reply heard elsewhere, a clock that paces the
turn as long as its audio plays (so `speaking` means what people hear and a satellite's barge-in lands while
they hear it); `voiced ask` has none. Cancellation is one call, `cancel(turn)`: it sets the turn's event, which
the brain and the TTS engine poll between steps, and silences the hearer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from protocol import messages as m
from voiced.assistant import SPOKEN
from voiced.brain import Brain
from voiced.bridge import iterate_in_thread, run_in
from voiced.model.engine import Delta
from voiced.routing import Delivery, plays_locally
from voiced.server.handler import Publisher
from voiced.speech.chunker import ClauseChunker
from voiced.speech.tts import TTSEngine
from voiced.turn.draft import Draft

StateCallback = Callable[[m.StateName, str | None], None]


@dataclass
class Turn:
    """One request to answer: spoken (`audio`, and `query` once heard) or typed (`query`)."""

    source: str
    audio: np.ndarray | None = None
    query: str | None = None
    request_id: str | None = None
    pushed: bool = False  # push-to-talk: addressed by the button, no wake phrase needed
    woken_s: float | None = None  # the wake-word model fired: seconds of the segment after it
    early_tokens: int = 0  # prompt tokens prefilled while the user was still speaking
    silence_ms: float | None = None  # the silence after the last word that ended the turn (the hangover waited)
    conversation: str | None = None  # whose memory answers (voiced.conversations); None: the source's
    delivery: Delivery = Delivery.SPOKEN
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    t0: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, (time.monotonic() - self.t0) * 1e3)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()


class Playback(Protocol):
    """The local speaker (voiced.speech.playback.Playback)."""

    @property
    def playing(self) -> bool: ...

    async def play(self, chunk: np.ndarray, rate: int) -> None: ...

    async def drain(self) -> None: ...

    def interrupt(self) -> None: ...


class Hearer(Protocol):
    """Where a reply is heard; the turn lasts until it has been."""

    async def play(self, pcm: np.ndarray, rate: int) -> None: ...

    async def finish(self, cancel: threading.Event) -> None: ...

    def interrupt(self) -> None: ...


class Speaker:
    def __init__(self, playback: Playback) -> None:
        self.playback = playback

    async def play(self, pcm: np.ndarray, rate: int) -> None:
        await self.playback.play(pcm, rate)

    async def finish(self, cancel: threading.Event) -> None:
        if not cancel.is_set():
            await self.playback.drain()

    def interrupt(self) -> None:
        self.playback.interrupt()


class Paced:
    """A reply heard at the listeners: its turn lasts until its audio has played there, by the clock."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.samples = 0
        self.rate = 1

    async def play(self, pcm: np.ndarray, rate: int) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.samples, self.rate = self.samples + len(pcm), rate

    async def finish(self, cancel: threading.Event) -> None:
        if self.first_at is None:
            return
        heard_at = self.first_at + self.samples / self.rate
        while not cancel.is_set() and (left := heard_at - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.02))

    def interrupt(self) -> None:
        pass  # `finish` polls the turn's cancel


class Unheard:
    """`voiced ask`: nobody waits for the audio to play."""

    async def play(self, pcm: np.ndarray, rate: int) -> None:
        pass

    async def finish(self, cancel: threading.Event) -> None:
        pass

    def interrupt(self) -> None:
        pass


@dataclass(frozen=True)
class Reply:
    text: str
    interrupted: bool
    done: m.ReplyDone


class Responder:
    """Runs one turn at a time (the router holds the lock); `cancel` may come from any task."""

    def __init__(
        self,
        brain: Brain,
        tts: TTSEngine,
        model: Executor,
        tts_thread: Executor,
        publishers: list[Publisher],
        on_state: StateCallback,
        speaker_plays: str,
        playback: Playback | None = None,
        pace: bool = True,
    ) -> None:
        self.brain, self.tts = brain, tts
        self._model, self._tts = model, tts_thread
        self.publishers = publishers
        self.on_state = on_state
        self.speaker_plays = speaker_plays
        self.playback = playback
        self.pace = pace
        self.turn: Turn | None = None  # the one running
        self._hearer: Hearer | None = None
        self._draft: Draft | None = None  # the preemptive reply the running turn adopted

    def cancel(self, turn: Turn) -> None:
        """Stop `turn`: before it runs (it never will) or while it runs (generation, speech and the speaker)."""
        turn.cancel.set()
        if turn is self.turn:
            if self._draft is not None:
                self._draft.cancel.set()
            if self._hearer is not None:
                self._hearer.interrupt()

    def audible(self) -> bool:
        """Our own voice is on the local speaker now (half duplex mutes the local microphone meanwhile)."""
        turn = self.turn
        speaking = turn is not None and "first_audio" in turn.marks and plays_locally(turn.source, self.speaker_plays)
        return speaking or (self.playback is not None and self.playback.playing)

    def _hearer_for(self, turn: Turn) -> Hearer:
        if self.playback is not None and plays_locally(turn.source, self.speaker_plays):
            return Speaker(self.playback)
        return Paced() if self.pace else Unheard()

    async def run(
        self, turn: Turn, said: str | None = None, remember: bool = True, think: bool = True, draft: Draft | None = None
    ) -> Reply:
        """Answer `turn` (its `query`, or its audio when the query is None); `said`: the reply is this text, no
        model (a command's answer, an announcement). Publishes reply_started .. reply_done; `remember` keeps the
        exchange in the asker's conversation; `think`: the state goes `thinking` first (not for announcements);
        `draft`: the reply was started preemptively on these very words (voiced.turn.draft): it is adopted."""
        self.turn, self._hearer, self._draft = turn, self._hearer_for(turn), draft
        try:
            return await self._run(turn, said, remember, think)
        finally:
            self.turn = self._hearer = self._draft = None

    async def _run(self, turn: Turn, said: str | None, remember: bool, think: bool) -> Reply:
        if think:
            self.on_state("thinking", turn.source)
        spoken = said is None and turn.query is None and turn.audio is not None
        query = SPOKEN if spoken else turn.query or ""
        self._publish(m.ReplyStarted(reply_id=turn.id, request_id=turn.request_id, source=turn.source))
        conversation = turn.conversation or turn.source
        draft = self._draft
        stats: dict[str, object] = draft.stats if draft is not None else {}
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.ensure_future(self._speak(turn, clauses))
        chunker, reply = ClauseChunker(), ""
        try:
            if draft is not None:  # it selected the conversation and runs on the model thread already
                deltas = draft.deltas()
            else:
                if remember:  # on the model thread, which alone touches conversations while turns run
                    await run_in(self._model, self.brain.select, conversation)
                deltas = self._fixed(said) if said is not None else self._generate(turn, query, spoken, stats)
            async for delta in deltas:
                turn.mark("first_token")
                reply += delta
                self._publish(m.ReplyDelta(reply_id=turn.id, text=delta))
                for clause in chunker.push(delta):
                    turn.mark("first_clause")
                    clauses.put_nowait(clause)
        finally:  # a brain that fails may have spoken a line naming the problem first: it is still said
            if not turn.cancelled:
                for clause in chunker.flush():
                    turn.mark("first_clause")
                    clauses.put_nowait(clause)
            clauses.put_nowait(None)
            await speaker
        turn.mark("done")
        interrupted = turn.cancelled
        if remember:
            self.brain.remember(query, reply, interrupted, conversation)
        done = m.ReplyDone(reply_id=turn.id, text=reply.strip(), interrupted=interrupted, timings_ms=timings(turn, stats))
        self._publish(done)
        return Reply(reply, interrupted, done)

    @staticmethod
    async def _fixed(text: str) -> AsyncIterator[str]:
        yield text

    async def _generate(self, turn: Turn, query: str, spoken: bool, stats: dict[str, object]) -> AsyncIterator[str]:
        def deltas() -> Iterator[Delta]:
            if spoken and turn.audio is not None:
                yield from self.brain.reply_audio(turn.audio, turn.cancel)
            else:
                yield from self.brain.reply(query, turn.cancel)
            stats.update(self.brain.conversation.last_stats)  # on the model thread, right after its reply

        async for d in iterate_in_thread(self._model, deltas):
            yield d.text

    def synthesize(self, text: str, cancel: threading.Event) -> AsyncIterator[np.ndarray]:
        """int16 chunks of `text` at the engine's rate, made on the TTS thread as they are yielded."""
        return iterate_in_thread(self._tts, lambda: self.tts.synthesize(text, cancel))

    async def _speak(self, turn: Turn, clauses: asyncio.Queue[str | None]) -> None:
        hearer = self._hearer
        assert hearer is not None
        rate = self.tts.sample_rate
        try:
            while (clause := await clauses.get()) is not None:
                if turn.cancelled or turn.delivery is Delivery.TEXT:  # TEXT: the asker speaks it (voiced.routing)
                    continue
                async for chunk in self.synthesize(clause, turn.cancel):
                    if turn.cancelled:
                        continue
                    if "first_audio" not in turn.marks:
                        turn.mark("first_audio")
                        self.on_state("speaking", turn.source)
                    for p in self.publishers:
                        p.broadcast_audio(turn.id, chunk, rate)
                    await hearer.play(chunk, rate)
        finally:
            for p in self.publishers:
                p.end_audio(turn.id)
        await hearer.finish(turn.cancel)

    def _publish(self, msg: m.ServerMessage) -> None:
        for p in self.publishers:
            p.broadcast(msg)


def timings(turn: Turn, stats: Mapping[str, object]) -> dict[str, float]:
    """reply_done's timings_ms from the turn's marks and the brain's numbers (docs/architecture.md names them)."""
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
        value = stats.get(key)
        if isinstance(value, (int, float)):
            out[key] = round(float(value), 1)
    if turn.early_tokens:
        out["prefill_while_speaking_tokens"] = float(turn.early_tokens)
    return out
