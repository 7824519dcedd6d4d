"""Fan-out: one bounded outbox per client, and reply audio resampled once per rate and shared by every listener.

The pipeline must never wait for a client. So publishing only appends to per-client queues (`put_nowait`),
each client has its own writer task, and a client whose queue is full is dropped rather than waited for.
Frames are packed once per distinct rate and the same bytes object is queued to every listener at that rate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from protocol import framing
from protocol.messages import ReplyAudioEnd, ReplyAudioStart
from voiced.audio.resample import StreamResampler

log = logging.getLogger(__name__)

# An outbox item: a JSON text frame, one binary frame, or several binary frames queued as one unit (one audio
# chunk), so the queue bound counts publications, not frames, and a long chunk cannot overflow a healthy client.
Item = str | bytes | tuple[bytes, ...]


class OutboxState(Enum):
    OPEN = "open"
    OVERFLOWED = "overflowed"  # the client stopped reading: reported once, everything after is dropped
    STOPPED = "stopped"  # the client is gone or dropped: nothing is queued any more


def item_bytes(item: Item) -> int:
    """What an item holds, for the byte bound (JSON text counts its characters: nearly all of it is ASCII)."""
    if isinstance(item, tuple):
        return sum(len(f) for f in item)
    return len(item)


class Outbox:
    """A client's send queue, bounded in messages and in bytes, and the task that drains it into the socket."""

    def __init__(
        self,
        send: Callable[[str | bytes], Awaitable[None]],
        maxsize: int,
        on_overflow: Callable[[], None],
        write_now: Callable[[Item], bool] | None = None,
        max_bytes: int | None = None,
    ):
        self._send = send
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize)
        # Counting messages alone let a non-reader hold hundreds of megabytes (256 one-megabyte errors).
        self._max_bytes = max_bytes
        self._bytes = 0
        self._on_overflow = on_overflow
        # Fast path: with nothing queued and the socket accepting data, write at once instead of waking this
        # client's task. With 100 listeners the task switches alone cost milliseconds per chunk.
        self._write_now = write_now
        self._busy = False  # the task holds an item: a direct write now would overtake it
        self.state = OutboxState.OPEN
        self._task: asyncio.Task[None] | None = None

    @property
    def overflowed(self) -> bool:
        return self.state is not OutboxState.OPEN

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, item: Item) -> bool:
        """Queue without waiting; a full queue means the client stopped reading: report it once and drop the item."""
        if self.state is not OutboxState.OPEN:
            return False
        if self._write_now is not None and not self._busy and self._queue.empty() and self._write_now(item):
            return True
        size = item_bytes(item)
        if self._max_bytes is not None and self._bytes + size > self._max_bytes and not self._queue.empty():
            return self._overflow()  # one item larger than the bound still goes out alone: the bound is on waiting
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            return self._overflow()
        self._bytes += size
        return True

    def _overflow(self) -> bool:
        self.state = OutboxState.OVERFLOWED
        self._on_overflow()
        return False

    def qsize(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                self._bytes -= item_bytes(item)
                self._busy = True
                if isinstance(item, tuple):
                    for frame in item:
                        await self._send(frame)
                else:
                    await self._send(item)
                self._busy = False
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the connection closed under us; the server's reader sees it and cleans up
            log.debug("outbox writer stopped: %s", e)

    def stop(self) -> None:
        """Stop the writer and let go of everything queued now, not when a garbage-collector pass finds it.

        The cancelled task's CancelledError holds a traceback whose frame holds this outbox: while the outbox
        also held the task, that was a reference cycle keeping every queued buffer of a dropped client alive.
        """
        self.state = OutboxState.STOPPED
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._bytes = 0


@dataclass
class _RateStream:
    resampler: StreamResampler
    seq: int = 0
    frames: int = 0
    samples: int = 0


@dataclass
class _Reply:
    stream: int
    in_rate: int
    members: dict[str, int]  # client id -> its output rate
    rates: dict[int, _RateStream] = field(default_factory=dict)


@dataclass(frozen=True)
class Listener:
    client_id: str
    rate: int
    outbox: Outbox


class AudioFanout:
    """Reply audio streams: which listeners get each reply, at which rate, with which sequence numbers.

    A listener joins a reply at its first chunk or not at all, so every stream it sees is whole (seq from 0,
    every sample); one that connects mid-reply hears the next reply.
    """

    def __init__(self, frame_ms: int):
        self._frame_ms = frame_ms
        self._replies: dict[str, _Reply] = {}
        self._ids = itertools.count(1)

    def active(self) -> list[str]:
        return list(self._replies)

    def push(self, reply_id: str, pcm: np.ndarray, rate: int, listeners: Iterable[Listener]) -> None:
        """Send one chunk of reply audio; `listeners` is consulted only at a reply's first chunk."""
        by_id = {l.client_id: l for l in listeners}
        reply = self._replies.get(reply_id)
        if reply is None:
            reply = _Reply(next(self._ids) & 0xFFFFFFFF, rate, {cid: l.rate for cid, l in by_id.items()})
            self._replies[reply_id] = reply
            for cid, l in by_id.items():
                l.outbox.put(ReplyAudioStart(reply_id=reply_id, stream=reply.stream, rate=l.rate).to_json())
        elif rate != reply.in_rate:
            raise ValueError(f"reply {reply_id}: audio at {rate} Hz after {reply.in_rate} Hz; keep one rate per reply")
        pcm = np.asarray(pcm, dtype=np.int16)
        self._deliver(reply, by_id, lambda rs: rs.resampler.process(pcm))

    def end(self, reply_id: str, listeners: Iterable[Listener]) -> None:
        """Flush the resamplers' tails and close the stream with its totals; a no-op for a reply without audio."""
        reply = self._replies.pop(reply_id, None)
        if reply is None:
            return
        by_id = {l.client_id: l for l in listeners}
        self._deliver(reply, by_id, lambda rs: rs.resampler.flush())
        for cid, rate in reply.members.items():
            l = by_id.get(cid)
            rs = reply.rates.get(rate)
            if l is not None and rs is not None:
                l.outbox.put(ReplyAudioEnd(reply_id=reply_id, stream=reply.stream, frames=rs.frames, samples=rs.samples).to_json())

    def forget_client(self, client_id: str) -> None:
        for reply in self._replies.values():
            reply.members.pop(client_id, None)

    def _deliver(self, reply: _Reply, by_id: dict[str, Listener], make: Callable[[_RateStream], np.ndarray]) -> None:
        groups: dict[int, list[Listener]] = {}
        for cid, rate in list(reply.members.items()):
            l = by_id.get(cid)
            if l is None or l.outbox.overflowed:
                del reply.members[cid]
                continue
            groups.setdefault(rate, []).append(l)
        for rate, members in groups.items():
            rs = reply.rates.get(rate)
            if rs is None:
                rs = reply.rates[rate] = _RateStream(StreamResampler(reply.in_rate, rate))
            out = np.asarray(make(rs), dtype=np.int16)
            if out.size == 0:
                continue
            frames = []
            for part in framing.split(out, max(1, rate * self._frame_ms // 1000)):
                frames.append(framing.pack(framing.FrameKind.REPLY_AUDIO, reply.stream, rs.seq, rate, part))
                rs.seq += 1
            rs.frames += len(frames)
            rs.samples += int(out.size)
            item = frames[0] if len(frames) == 1 else tuple(frames)
            for l in members:
                l.outbox.put(item)
