"""A preemptive reply: started at a pause on the guess's words, held until the turn is confirmed.

When a pause's guess is addressed to us (and asks for no command), the model starts answering it while the
hangover runs, on a model thread that would otherwise wait. Nothing of it is published or remembered: its text
is held here. When the turn ends on the same words, the Responder adopts it (what was made so far, then the
rest as it comes), so the end-of-turn silence already paid for prefill and the first tokens. When the user goes
on, or the words differ, it is dropped: its cancel stops the decode between two steps, and the next prompt's
sync() rolls the KV cache back to the prefix it shares (voiced.model.engine). Measured on and off by
benchmarks/voice_to_voice.py (--levers).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor

from voiced.brain import Brain
from voiced.bridge import iterate_in_thread
from voiced.model.engine import Delta


class Draft:
    def __init__(self, source: str, conversation: str, query: str) -> None:
        self.source, self.conversation, self.query = source, conversation, query
        self.cancel = threading.Event()
        self.text: list[str] = []
        self.stats: dict[str, object] = {}
        self.error: BaseException | None = None
        self.done = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, brain: Brain, model: Executor) -> None:
        def produce() -> Iterator[Delta]:
            brain.select(self.conversation)
            yield from brain.reply(self.query, self.cancel)
            self.stats.update(brain.conversation.last_stats)  # on the model thread, right after its reply

        async def run() -> None:
            try:
                async for d in iterate_in_thread(model, produce):
                    self.text.append(d.text)
                    self._changed.set()
            except BaseException as e:  # handed to the adopting turn, which reports it as its own
                self.error = e
            finally:
                self.done = True
                self._changed.set()

        self._task = asyncio.ensure_future(run())

    def matches(self, source: str, conversation: str, query: str) -> bool:
        return not self.cancel.is_set() and (source, conversation, query) == (self.source, self.conversation, self.query)

    async def drop(self) -> None:
        """The user went on (or said something else): stop it; nothing of it was heard or remembered."""
        self.cancel.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def deltas(self) -> AsyncIterator[str]:
        """Adopted by the turn: what was made so far, then the rest as it comes (the Responder's cancel of the
        turn sets this draft's cancel too)."""
        i = 0
        while True:
            while i < len(self.text):
                yield self.text[i]
                i += 1
            if self.done:
                break
            self._changed.clear()
            await self._changed.wait()
        if self.error is not None:
            raise self.error


class Drafts:
    """The one draft that may be held (one model, one KV cache), and how many were started, adopted, dropped."""

    def __init__(self, brain: Brain, model: Executor) -> None:
        self.brain, self._model = brain, model
        self.held: Draft | None = None
        self.counts = {"started": 0, "adopted": 0, "dropped": 0}

    def start(self, source: str, conversation: str, query: str) -> None:
        self.discard()
        self.held = Draft(source, conversation, query)
        self.held.start(self.brain, self._model)
        self.counts["started"] += 1

    def discard(self, source: str | None = None) -> Draft | None:
        """Drop the held draft (of `source` only, when given) without waiting: its decode stops by itself."""
        draft = self.held
        if draft is None or (source is not None and draft.source != source):
            return None
        self.held = None
        self.counts["dropped"] += 1
        draft.cancel.set()
        return draft

    async def drop(self, source: str | None = None) -> None:
        """discard, and wait until its decode has stopped (the model thread is then free)."""
        if (draft := self.discard(source)) is not None:
            await draft.drop()

    async def take(self, source: str, conversation: str, query: str | None) -> Draft | None:
        """The held draft if it was started on this turn's very words (adopted), else None (any other is dropped:
        the model is this turn's). `query` None: no words to match (a command's turn, a spoken-audio turn)."""
        draft = self.held
        if draft is not None and query is not None and draft.matches(source, conversation, query):
            self.held = None
            self.counts["adopted"] += 1
            return draft
        await self.drop()
        return None
