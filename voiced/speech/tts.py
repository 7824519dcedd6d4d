"""The TTS contract the pipeline codes against, and the factory that picks an engine from settings.

Engines yield int16 mono chunks of about 100 ms *while* they synthesise, so the first audio of a clause reaches
the speaker and the network clients before the clause is finished, and a barge-in (``cancel``) stops the work
instead of waiting for it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from voiced.config import TTSSettings
from voiced.errors import VoicedError

CHUNK_MS = 100


@runtime_checkable
class TTSEngine(Protocol):
    sample_rate: int

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        """int16 mono chunks of ~100 ms at ``sample_rate``, yielded as they are made; stops promptly on cancel."""
        ...


class TTSUnavailable(VoicedError, RuntimeError):
    """The configured engine cannot run here; the message says what to install or change."""


def make_tts(settings: TTSSettings) -> TTSEngine:
    if settings.engine == "espeak":
        from voiced.speech.espeak import EspeakEngine

        return EspeakEngine(voice=settings.voice, rate_wpm=settings.rate_wpm)
    if settings.engine == "piper":
        from voiced.speech.piper import PiperEngine

        return PiperEngine(voice=settings.voice, rate_wpm=settings.rate_wpm)
    raise TTSUnavailable(f"unknown tts.engine {settings.engine!r}; use 'espeak' or 'piper'")


def split_chunks(pcm: np.ndarray, rate: int, chunk_ms: int = CHUNK_MS) -> Iterator[np.ndarray]:
    """Cut a finished buffer into ~chunk_ms pieces, for engines that synthesise a clause at once."""
    step = max(1, rate * chunk_ms // 1000)
    for i in range(0, len(pcm), step):
        yield pcm[i : i + step]


class _Done:
    pass


_DONE = _Done()
_POLL_S = 0.02  # how often a waiting consumer looks at its cancel event: well inside one audio block

Producer = Callable[[Callable[[np.ndarray], None], Callable[[], bool]], None]


def stream_from_thread(produce: Producer, cancel: threading.Event | None, name: str) -> Iterator[np.ndarray]:
    """Run `produce(put, stopped)` in a worker thread and yield what it puts, as it puts it.

    The consumer stops at once on `cancel`; `stopped()` turns True then (or when the consumer closes the
    generator), so the producer can abort its own loop at its next block instead of finishing the clause.
    """
    chunks: queue.SimpleQueue[np.ndarray | BaseException | _Done] = queue.SimpleQueue()
    stop = threading.Event()

    def stopped() -> bool:
        return stop.is_set() or (cancel is not None and cancel.is_set())

    def work() -> None:
        try:
            produce(chunks.put, stopped)
        except BaseException as e:  # handed to the consumer, who re-raises it in its own thread
            chunks.put(e)
        finally:
            chunks.put(_DONE)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while not stopped():
            try:
                item = chunks.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _Done):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
