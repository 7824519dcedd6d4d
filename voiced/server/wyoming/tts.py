"""Streaming synthesis for Wyoming: text arrives in pieces, speech leaves clause by clause.

Home Assistant streams a language model's reply into a TTS that says `supports_synthesize_streaming`
(homeassistant/components/wyoming/tts.py): `synthesize-start`, `synthesize-chunk`* as the text is written, the
whole text once more as a plain `synthesize` (for servers that do not stream; ignored inside a stream, as the
Wyoming spec says), then `synthesize-stop`. The pieces go through the same ClauseChunker as voiced's own replies,
so speech starts at the first speakable clause instead of the last word, and each clause is synthesized as soon
as it is complete. The answer is one audio stream: `audio-start`, `audio-chunk`* across every clause,
`audio-stop`, then `synthesize-stopped` once the last clause is spoken.

Bounded: one stream holds at most `max_chars` of text (server.max_message_bytes, the bound of a whole
`synthesize` too); clauses wait for the synthesis thread in order, so a peer that writes faster than speech is
made only queues text, never audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import SynthesizeStopped

from voiced.errors import VoicedError
from voiced.speech.chunker import ClauseChunker

Synthesizer = Callable[[str], AsyncIterator[np.ndarray]]


class TextTooLong(VoicedError, ValueError):
    """The stream's text went over its bound; the connection answers an error naming the setting."""


class SynthesisStream:
    """One synthesize-start .. synthesize-stop of a connection; `send` queues an event to the peer."""

    def __init__(self, synthesize: Synthesizer, rate: Callable[[], int], send: Callable[[Event], None], max_chars: int) -> None:
        self._synthesize = synthesize
        self._rate = rate  # the engine's rate: read when its first audio exists (the command backend learns it then)
        self._send = send
        self._max_chars = max_chars
        self._chars = 0
        self._chunker = ClauseChunker()
        self._clauses: asyncio.Queue[str | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._speak())
        self.clauses_spoken = 0

    def push(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > self._max_chars:
            raise TextTooLong(
                f"streamed text over {self._max_chars} characters in one synthesize-start .. synthesize-stop "
                "(server.max_message_bytes); end the stream with synthesize-stop sooner, or raise that setting"
            )
        for clause in self._chunker.push(text):
            self._clauses.put_nowait(clause)

    async def stop(self) -> None:
        """The text is complete: speak what is left, close the audio, then say `synthesize-stopped`."""
        for clause in self._chunker.flush():
            self._clauses.put_nowait(clause)
        self._clauses.put_nowait(None)
        try:
            await self._task
        finally:
            self._send(SynthesizeStopped().event())

    def cancel(self) -> None:
        self._task.cancel()

    async def _speak(self) -> None:
        rate, started = self._rate(), False
        try:
            while (clause := await self._clauses.get()) is not None:
                async for chunk in self._synthesize(clause):
                    if not started:
                        rate, started = self._rate(), True
                        self._send(AudioStart(rate=rate, width=2, channels=1).event())
                    self._send(AudioChunk(rate=rate, width=2, channels=1, audio=np.asarray(chunk, "<i2").tobytes()).event())
                self.clauses_spoken += 1
        finally:
            if not started:  # nothing speakable: an empty stream still opens and closes, as for `synthesize`
                self._send(AudioStart(rate=rate, width=2, channels=1).event())
            self._send(AudioStop().event())
