"""Async client library for the voiced protocol: connect with the token, send audio or text, iterate events,
collect a reply (text, audio, timings).

It imports the same message models as the server, so a client built on it cannot drift from the protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import framing
from protocol.messages import (
    PROTOCOL_VERSION,
    AudioEnd,
    AudioStart,
    Error,
    Hello,
    ReplyAudioEnd,
    ReplyAudioStart,
    ReplyDelta,
    ReplyDone,
    ReplyStarted,
    TextQuery,
    Transcript,
    TurnIgnored,
    Welcome,
    parse_server,
)


class ClientError(Exception):
    """Connecting or talking to the daemon failed; the message says what to do."""


class ReplyError(ClientError):
    def __init__(self, error: Error):
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


@dataclass(frozen=True)
class AudioChunk:
    """One binary frame of reply audio, at the rate this client asked for in its hello."""

    reply_id: str | None
    stream: int
    seq: int
    rate: int
    pcm: np.ndarray


@dataclass
class Reply:
    reply_id: str
    request_id: str | None = None
    source: str | None = None
    transcript: str | None = None
    text: str = ""
    interrupted: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    rate: int = 0
    chunks: list[AudioChunk] = field(default_factory=list)
    expected_samples: int | None = None

    def audio(self) -> np.ndarray:
        return np.concatenate([c.pcm for c in self.chunks]) if self.chunks else np.zeros(0, np.int16)


class VoicedClient:
    """`async with VoicedClient(url, token) as c:` — `c.welcome` holds the server's welcome."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        name: str = "voiced-client",
        roles: Iterable[str] = ("listener",),
        audio_rate: int = 24000,
        events: list[str] | None = None,
        conversation: str | None = None,
        replies: str | None = None,
        token_in_hello: bool = False,
        origin: str | None = None,
        max_size: int = 1 << 22,
        open_timeout: float = 10,
    ):
        self.url = url
        self._token = token
        self._hello = Hello(
            token=token if token_in_hello else None,
            name=name,
            roles=list(roles),  # type: ignore[arg-type]
            audio_rate=audio_rate,  # type: ignore[arg-type]
            events=events,  # type: ignore[arg-type]
            conversation=conversation,
            replies=replies,  # type: ignore[arg-type]
        )
        self._headers = {} if token_in_hello else {"Authorization": f"Bearer {token}"}
        self._origin = origin
        self._max_size = max_size
        self._open_timeout = open_timeout
        self._conn: ClientConnection | None = None
        self._streams: dict[int, str] = {}
        self._mic_ids = itertools.count(1)
        self.welcome: Welcome | None = None

    @property
    def session_id(self) -> str:
        assert self.welcome is not None, "connect() first"
        return self.welcome.session_id

    @property
    def connection(self) -> ClientConnection:
        if self._conn is None:
            raise ClientError("not connected; use `async with VoicedClient(...)` or await connect()")
        return self._conn

    async def connect(self) -> Welcome:
        try:
            self._conn = await connect(
                self.url,
                subprotocols=[PROTOCOL_VERSION],  # type: ignore[list-item]
                additional_headers=self._headers,
                origin=self._origin,  # type: ignore[arg-type]
                compression=None,
                max_size=self._max_size,
                max_queue=256,  # frames read ahead; a client that stops reading holds this much, then TCP pushes back
                open_timeout=self._open_timeout,
                close_timeout=2,
            )
        except InvalidStatus as e:
            raise ClientError(
                f"{self.url} refused the handshake: HTTP {e.response.status_code} {e.response.body.decode(errors='replace').strip()}"
            ) from None
        except OSError as e:
            raise ClientError(f"cannot reach {self.url} ({e}); is `voiced serve` running on that port?") from None
        try:
            await self._conn.send(self._hello.to_json())
            first = await self.recv()
        except ConnectionClosed as e:
            if e.rcvd is not None and e.rcvd.code == 1008:
                raise ClientError("the daemon refused the token (close 1008); the token file does not match the running daemon's") from None
            raise ClientError(f"the daemon closed the connection during the handshake ({e})") from None
        if isinstance(first, Error):
            await self.close()
            raise ReplyError(first)
        if not isinstance(first, Welcome):
            raise ClientError(f"expected welcome, got {first!r}")
        self.welcome = first
        return first

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> "VoicedClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------- sending

    async def send(self, msg: Any) -> None:
        await self.connection.send(msg.to_json())

    async def text_query(self, text: str, request_id: str | None = None) -> str:
        request_id = request_id or uuid.uuid4().hex[:12]
        await self.send(TextQuery(text=text, request_id=request_id))
        return request_id

    async def send_audio(self, pcm: np.ndarray, rate: int, *, frame_ms: int = 100, realtime: bool = False, end: bool = True) -> int:
        """Stream int16 mono audio as one microphone stream; returns the stream id.

        `realtime` paces frames like a live microphone; otherwise they go as fast as the server's limits allow
        (welcome.limits: a burst of audio_burst_s, then max_audio_speed x real time) — longer files are paced.
        """
        stream = next(self._mic_ids)
        await self.send(AudioStart(stream=stream, rate=rate))
        step = max(1, rate * frame_ms // 1000)
        pcm = np.asarray(pcm, dtype=np.int16)
        limits = self.welcome.limits if self.welcome else None
        sent_s, loop = 0.0, asyncio.get_running_loop()
        t0 = loop.time()
        for seq, i in enumerate(range(0, len(pcm), step)):
            part = pcm[i : i + step]
            if realtime:
                ahead = sent_s - (loop.time() - t0)
            elif limits is not None:
                ahead = (sent_s - limits.audio_burst_s * 0.9) / limits.max_audio_speed - (loop.time() - t0)
            else:
                ahead = 0.0
            if ahead > 0:
                await asyncio.sleep(ahead)
            await self.connection.send(framing.pack(framing.FrameKind.MIC_AUDIO, stream, seq, rate, part))
            sent_s += len(part) / rate
        if end:
            await self.send(AudioEnd(stream=stream))
        return stream

    # ------------------------------------------------------------------------------------------- receiving

    async def recv(self) -> Any:
        """The next server message (typed), AudioChunk, or None for an unknown message type; raises
        ConnectionClosed when the connection ends."""
        raw = await self.connection.recv()
        if isinstance(raw, bytes):
            f = framing.unpack(raw)
            return AudioChunk(self._streams.get(f.stream), f.stream, f.seq, f.rate, f.pcm())
        msg = parse_server(raw)
        if isinstance(msg, ReplyAudioStart):
            self._streams[msg.stream] = msg.reply_id
        return msg

    async def events(self) -> AsyncIterator[Any]:
        """Every message until the connection closes (message types this library does not know are skipped)."""
        while True:
            try:
                msg = await self.recv()
            except ConnectionClosed:
                return
            if msg is not None:
                yield msg

    async def collect_reply(self, *, request_id: str | None = None, source: str | None = None, transcript: str | None = None) -> Reply:
        """Wait for the reply to `request_id` (a text query) or to audio from `source` (default: this client),
        and gather its text, audio and timings until reply_done. An error naming the request (or none) raises."""
        source = source or (self.session_id if request_id is None else None)
        reply: Reply | None = None
        async for msg in self.events():
            if isinstance(msg, Error):
                if msg.request_id in (None, request_id) and msg.code not in ("rate_limited",):
                    raise ReplyError(msg)
            elif isinstance(msg, TurnIgnored) and reply is None and source is not None and msg.source == source:
                raise ClientError(f"the daemon heard the audio but does not answer it ({msg.reason.replace('_', ' ')})")
            elif isinstance(msg, Transcript) and msg.final and reply is None and source is not None and msg.source == source:
                transcript = msg.text
            elif isinstance(msg, ReplyStarted) and reply is None:
                if (request_id is not None and msg.request_id == request_id) or (request_id is None and msg.source == source):
                    reply = Reply(msg.reply_id, msg.request_id, msg.source, transcript)
            elif reply is None:
                continue
            elif isinstance(msg, Transcript) and msg.final and msg.source == source:
                reply.transcript = msg.text
            elif isinstance(msg, ReplyDelta) and msg.reply_id == reply.reply_id:
                reply.text += msg.text
            elif isinstance(msg, AudioChunk) and msg.reply_id == reply.reply_id:
                reply.chunks.append(msg)
                reply.rate = msg.rate
            elif isinstance(msg, ReplyAudioEnd) and msg.reply_id == reply.reply_id:
                reply.expected_samples = msg.samples
            elif isinstance(msg, ReplyDone) and msg.reply_id == reply.reply_id:
                reply.text = msg.text or reply.text
                reply.interrupted = msg.interrupted
                reply.timings_ms = dict(msg.timings_ms)
                return reply
        raise ClientError("the daemon closed the connection before the reply was done")
