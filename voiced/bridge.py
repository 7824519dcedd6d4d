"""The one bridge from a blocking iterator (a model's deltas, a TTS engine's chunks) into asyncio.

The producer runs on the executor it is given (the pipeline's model, ASR or TTS thread: one thread each, so the
engines never run twice at once); what it yields reaches the event loop as it is made. A consumer that stops
early (barge-in, a peer that left) sets the producer's own cancel event; the bridge then drops what is still
made and waits for the producer to return, so no thread outlives the turn that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar, Union

T = TypeVar("T")


class _Done:
    pass


_DONE = _Done()


async def run_in(executor: Executor, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on `executor` (one of the pipeline's threads), awaited without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


async def iterate_in_thread(executor: Executor | None, produce: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Yield what `produce()` yields, run on `executor` (None: asyncio's default), without blocking the loop.
    An exception in the producer is raised here, in the consumer's task."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Union[T, BaseException, _Done]] = asyncio.Queue()

    def put(item: Union[T, BaseException, _Done]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a late producer: nobody is listening
            loop.call_soon_threadsafe(q.put_nowait, item)

    def work() -> None:
        try:
            for item in produce():
                put(item)
        except BaseException as e:  # re-raised in the consumer's task
            put(e)
        finally:
            put(_DONE)

    job = loop.run_in_executor(executor, work)
    try:
        while not isinstance(item := await q.get(), _Done):
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Early exit too: the producer was told to stop by its cancel event; wait for it so that its thread is
        # free for the next job (one thread per engine) before this turn is over.
        with contextlib.suppress(Exception):
            await asyncio.shield(job)
