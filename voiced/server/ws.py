"""The WebSocket server: handshake checks, hello/auth, per-client sessions, and routing to the turn handler.

It owns the client sessions and nothing else: models live behind `TurnHandler`, fan-out queues in `fanout`,
message shapes in `protocol.messages`. Every bad input from a client becomes a typed error to that client;
nothing a client sends can end another client's connection or the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Mapping

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState
from websockets.typing import Subprotocol

from protocol import framing
from protocol.messages import (
    ALWAYS_DELIVERED,
    INPUT_RATES,
    PROTOCOL_VERSION,
    ActivationName,
    AudioEnd,
    AudioStart,
    Cancel,
    ClientMessage,
    Error,
    Forget,
    Hello,
    Limits,
    ListTimers,
    Ping,
    Pong,
    ProtocolError,
    PushToTalk,
    ReplyDone,
    ReplyStarted,
    ServerMessage,
    TextQuery,
    Timers,
    Welcome,
    parse_client,
)
from voiced import __version__
from voiced.audio import RATE as VAD_RATE
from voiced.audio.resample import StreamResampler
from voiced.config import ServerSettings
from voiced.routing import ANNOUNCE
from voiced.server.auth import bearer, origin_allowed
from voiced.server.fanout import AudioFanout, Item, Listener, Outbox
from voiced.server.handler import ConversationNaming, TurnHandler
from voiced.server.limits import AudioBudget, is_loopback, raise_open_files_limit
from voiced.server.logsafe import LimitedLog, printable
from voiced.server.pairing import Gate, Grant, Revocation, revocation_path

log = logging.getLogger(__name__)
limited = LimitedLog(log)

CLOSE_POLICY = 1008  # no or wrong token, no hello in time
CLOSE_TRY_AGAIN = 1013  # max clients reached
CLOSE_SLOW_CONSUMER = 4001  # the client's send queue filled up: it is not reading
HARD_SIZE_FACTOR = 4  # frames up to this many times max_message_bytes get a typed error; above, close 1009
# Before the token is checked a frame may be no longer than a hello needs (token, name, roles, events): a bigger
# one closes the connection (1009) from its header, before its payload is read, let alone parsed.
HELLO_MAX_BYTES = 16 << 10
MAX_ERROR_CHARS = 512  # an error message quotes what the client sent; never more than this of it
# Handshake headers that must appear once: two Origins or Hosts are ambiguous (which one was checked?)
SINGLE_HEADERS = ("Host", "Origin", "Upgrade", "Authorization", "Sec-WebSocket-Key", "Sec-WebSocket-Version")

HttpHandler = Callable[[ServerConnection, Request], Response | None | Awaitable[Response | None]]


@dataclass
class _MicStream:
    stream: int
    rate: int
    resampler: StreamResampler
    next_seq: int = 0


@dataclass
class ClientSession:
    """One authenticated connection; its fields are read by the pipeline for counting and logs."""

    id: str
    name: str
    roles: frozenset[str]
    audio_rate: int
    events: frozenset[str] | None
    conn: ServerConnection = field(repr=False)
    outbox: Outbox = field(repr=False)
    budget: AudioBudget = field(repr=False)
    mic: _MicStream | None = field(default=None, repr=False)
    hears_all: bool = False  # hello replies "all": reply audio of every source, not only its own (voiced.routing)

    def wants(self, kind: str) -> bool:
        return self.events is None or kind in self.events or kind in ALWAYS_DELIVERED

    @property
    def listener(self) -> bool:
        return "listener" in self.roles


class VoicedServer:
    """`async with VoicedServer(settings, handler, token) as server:` serves until the block exits.

    `broadcast`, `send` and `broadcast_audio` never wait for a client and may be called from any thread.
    """

    def __init__(
        self,
        settings: ServerSettings,
        handler: TurnHandler,
        token: str,
        *,
        http_handler: HttpHandler | None = None,
        activation: ActivationName | None = None,
    ):
        if len(token) < 16:
            raise ValueError("token too short; use voiced.server.auth.load_or_create_token")
        self.settings = settings
        self.handler = handler
        # the token itself, or pairing codes / session credentials derived from it (revocable: voiced open --revoke)
        self._gate = Gate(token, revoked_before=Revocation(revocation_path(settings)))
        self._http_handler = http_handler
        self.activation = activation  # told to every client in its welcome, so a page offers the right controls
        self._clients: dict[str, ClientSession] = {}
        self._audio = AudioFanout(settings.audio_frame_ms)
        self._reply_sources: dict[str, str | None] = {}  # reply_id -> the source that asked (from reply_started)
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections still before their hello: capped too (at max_clients), so that a flood of them cannot use up
        # the descriptors the other door (Wyoming) and authenticated clients need; each lasts hello_timeout_s at most.
        self._unauthenticated = 0
        self.port: int = settings.port

    # ------------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> "VoicedServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        raise_open_files_limit()
        if not is_loopback(self.settings.host):
            log.warning(
                "server.host = %s is not a loopback address: every machine that reaches it can try the token, and the "
                "traffic (audio, words) is not encrypted; bind 127.0.0.1 unless you mean it",
                printable(self.settings.host),
            )
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._server = await serve(
            self._serve_connection,
            self.settings.host,
            self.settings.port,
            subprotocols=[Subprotocol(PROTOCOL_VERSION)],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,  # PCM does not compress, and deflate per listener would cost CPU on the hot path
            max_size=self.settings.max_message_bytes * HARD_SIZE_FACTOR,
            max_queue=64,
            close_timeout=2,
            server_header=f"voiced/{__version__}",
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("WebSocket server on ws://%s:%d (protocol %s)", self.settings.host, self.port, PROTOCOL_VERSION)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()  # closes every connection with 1001 (going away)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 5)
        except asyncio.TimeoutError:
            log.warning("some WebSocket connections did not close within 5 s; abandoning them")
        for s in list(self._clients.values()):
            s.outbox.stop()
        for t in list(self._tasks):
            t.cancel()
        self._server = None

    @property
    def http_handler(self) -> HttpHandler | None:
        """Answers plain HTTP requests on the WebSocket's port (the browser page); settable before or while serving."""
        return self._http_handler

    @http_handler.setter
    def http_handler(self, handler: HttpHandler | None) -> None:
        self._http_handler = handler

    @property
    def clients(self) -> Mapping[str, ClientSession]:
        return MappingProxyType(self._clients)

    @property
    def url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}"

    # ------------------------------------------------------------------------------------------- publishing

    def broadcast(self, msg: ServerMessage) -> None:
        """Queue a server message for every client that asked for its type. A ReplyDone first closes the reply's
        audio stream, so listeners get every sample and the totals before the reply is announced done."""
        if (loop := self._foreign_loop()) is not None:
            loop.call_soon_threadsafe(self.broadcast, msg)
            return
        if isinstance(msg, ReplyStarted):
            self._reply_sources[msg.reply_id] = msg.source
            while len(self._reply_sources) > 256:  # a failed turn ends with an error, not reply_done: never kept
                del self._reply_sources[next(iter(self._reply_sources))]
        if isinstance(msg, ReplyDone):
            self._audio.end(msg.reply_id, self._listeners())
            self._reply_sources.pop(msg.reply_id, None)
        text = msg.to_json()
        kind = msg.type
        for s in list(self._clients.values()):
            if s.wants(kind):
                s.outbox.put(text)

    def send(self, client_id: str, msg: ServerMessage) -> bool:
        """Queue a message for one client; False if it is gone (clients come and go, that is not an error)."""
        if (loop := self._foreign_loop()) is not None:
            loop.call_soon_threadsafe(self.send, client_id, msg)
            return True
        s = self._clients.get(client_id)
        return s.outbox.put(msg.to_json()) if s is not None else False

    def broadcast_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        """Reply audio (int16 mono at `rate`) to every listener, each at the rate it asked for."""
        if (loop := self._foreign_loop()) is not None:
            loop.call_soon_threadsafe(self.broadcast_audio, reply_id, np.array(pcm, copy=True), rate)
            return
        self._audio.push(reply_id, pcm, rate, self._listeners_for(reply_id))

    def end_audio(self, reply_id: str) -> None:
        """Close a reply's audio stream without a ReplyDone (broadcasting ReplyDone does this itself)."""
        if (loop := self._foreign_loop()) is not None:
            loop.call_soon_threadsafe(self.end_audio, reply_id)
            return
        self._audio.end(reply_id, self._listeners())

    def _listeners(self) -> list[Listener]:
        return [Listener(s.id, s.audio_rate, s.outbox) for s in self._clients.values() if s.listener]

    def _listeners_for(self, reply_id: str) -> list[Listener]:
        """A reply is heard where it was asked (voiced.routing): by the session that asked, if it listens, and by
        listeners that asked for every reply. Audio of a reply never announced (no reply_started) goes to all."""
        if reply_id not in self._reply_sources:
            return self._listeners()
        source = self._reply_sources[reply_id]
        if source == ANNOUNCE:
            return self._listeners()
        return [Listener(s.id, s.audio_rate, s.outbox) for s in self._clients.values() if s.listener and (s.hears_all or s.id == source)]

    def _foreign_loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's loop when called from another thread (the call is then handed to it), else None."""
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            return self._loop
        return None

    # ------------------------------------------------------------------------------------------- handshake

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None | Awaitable[Response | None]:
        repeated = [name for name in SINGLE_HEADERS if len(request.headers.get_all(name)) > 1]
        if repeated:
            limited.log(logging.WARNING, "headers", "refused a request with repeated %s headers", ", ".join(repeated))
            return conn.respond(HTTPStatus.BAD_REQUEST, f"header {repeated[0]} appears more than once; send it once\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if self._http_handler is not None:
                return self._http_handler(conn, request)
            return conn.respond(HTTPStatus.UPGRADE_REQUIRED, f"voiced WebSocket endpoint: connect with subprotocol {PROTOCOL_VERSION}\n")
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, self.port, self.settings.allowed_origins):
            limited.log(logging.WARNING, "origin", "refused a WebSocket handshake from origin %s", printable(origin))
            return conn.respond(
                HTTPStatus.FORBIDDEN,
                f"origin {printable(origin)} is not allowed; add it to server.allowed_origins in the voiced config if you trust it\n",
            )
        return None

    async def _authenticate(self, conn: ServerConnection) -> tuple[Hello, Grant] | None:
        """Wait for the hello; None means close 1008 without sending anything (the client may be anyone)."""
        header_grant = self._gate.check(bearer(conn.request.headers.get("Authorization") if conn.request else None))
        header_ok = header_grant is not None
        if conn.request and conn.request.headers.get("Authorization") and not header_ok:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hello_timeout_s
        while True:
            try:
                raw = await asyncio.wait_for(conn.recv(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return None
            problem: Error | None = None
            if isinstance(raw, bytes):
                problem = Error(code="protocol", message="the first message must be a hello (JSON text frame)")
            else:
                try:
                    msg = parse_client(raw)
                except ProtocolError as e:
                    msg, problem = None, e.error
                except RecursionError:  # JSON nested deeper than the parser goes: not a hello either
                    msg, problem = None, _too_deep()
                if msg is not None and not isinstance(msg, Hello):
                    problem = Error(code="protocol", message=f"the first message must be a hello, not {msg.type}")
                if isinstance(msg, Hello):
                    grant = header_grant or self._gate.check(msg.token)
                    return (msg, grant) if grant is not None else None
            if not header_ok:  # an unauthenticated peer learns nothing, not even what it did wrong
                return None
            await conn.send(_bounded(problem))  # type: ignore[arg-type]

    async def _serve_connection(self, conn: ServerConnection) -> None:
        proto = getattr(conn, "protocol", None)  # websockets' sans-I/O protocol reads max_size at every frame
        full_size = getattr(proto, "max_size", None)
        if full_size is not None:
            proto.max_size = HELLO_MAX_BYTES  # type: ignore[union-attr]
        if self._unauthenticated >= self.settings.max_clients:
            limited.log(logging.WARNING, "pending", "refused a connection: %d others have not sent their hello yet", self._unauthenticated)
            await conn.close(CLOSE_TRY_AGAIN, "too many connections waiting to authenticate; try again")
            return
        self._unauthenticated += 1
        try:
            authed = await self._authenticate(conn)
        except ConnectionClosed:
            return
        finally:
            self._unauthenticated -= 1
        if full_size is not None:
            proto.max_size = full_size  # type: ignore[union-attr]
        if authed is None:
            await conn.close(CLOSE_POLICY, "missing or wrong token, or no hello in time")
            return
        hello, grant = authed
        if len(self._clients) >= self.settings.max_clients:
            await conn.send(
                Error(
                    code="server_full", message=f"{self.settings.max_clients} clients connected (server.max_clients); try again later"
                ).to_json()
            )
            await conn.close(CLOSE_TRY_AGAIN, "server full")
            return
        session = self._register(conn, hello, grant)
        log.info(
            "client %s (%s) connected: roles %s, audio %d Hz",
            session.id,
            printable(session.name),
            sorted(session.roles),
            session.audio_rate,
        )
        try:
            async for raw in conn:
                await self._on_frame(session, raw)
        except ConnectionClosed:
            pass
        finally:
            await self._unregister(session)

    def _register(self, conn: ServerConnection, hello: Hello, grant: Grant) -> ClientSession:
        sid = secrets.token_hex(6)
        outbox = Outbox(
            conn.send,
            self.settings.client_queue,
            lambda: self._spawn(self._drop_slow(sid)),
            _direct_writer(conn),
            max_bytes=self.settings.client_queue_bytes,
        )
        s = ClientSession(
            id=sid,
            name=hello.name,
            roles=frozenset(hello.roles),
            audio_rate=hello.audio_rate,
            events=frozenset(hello.events) if hello.events is not None else None,
            conn=conn,
            outbox=outbox,
            budget=AudioBudget(self.settings.max_audio_speed, self.settings.audio_burst_s),
            # A client without a microphone is a speaker (`voiced listen`, a room's player): it hears every reply.
            hears_all=hello.replies == "all" or (hello.replies is None and "microphone" not in hello.roles),
        )
        if hello.conversation and isinstance(self.handler, ConversationNaming):
            self.handler.name_conversation(sid, f"ws:{hello.conversation}")
        outbox.start()
        outbox.put(
            Welcome(
                server_version=__version__,
                session_id=sid,
                audio_rate=hello.audio_rate,
                limits=Limits(
                    max_message_bytes=self.settings.max_message_bytes,
                    max_audio_speed=self.settings.max_audio_speed,
                    audio_burst_s=self.settings.audio_burst_s,
                    hello_timeout_s=self.settings.hello_timeout_s,
                ),
                credential=self._gate.issue_session() if grant.kind == "pairing" else None,
                activation=self.activation,
            ).to_json()
        )
        self._clients[sid] = s
        return s

    async def _unregister(self, s: ClientSession) -> None:
        self._clients.pop(s.id, None)
        self._audio.forget_client(s.id)
        s.outbox.stop()
        s.mic = None
        try:
            await self.handler.on_client_disconnect(s.id)
        except Exception:
            log.exception("turn handler failed on disconnect of %s", s.id)
        log.info("client %s (%s) disconnected (code %s)", s.id, printable(s.name), s.conn.close_code)

    async def _drop_slow(self, sid: str) -> None:
        s = self._clients.pop(sid, None)
        if s is None:
            return
        limited.log(
            logging.WARNING,
            "slow",
            "client %s (%s) dropped: its send queue is full (server.client_queue messages or "
            "server.client_queue_bytes) and it is not reading",
            sid,
            printable(s.name),
        )
        s.outbox.stop()
        try:
            await asyncio.wait_for(s.conn.close(CLOSE_SLOW_CONSUMER, "too slow: send queue full"), 1.0)
        except (asyncio.TimeoutError, ConnectionClosed):
            pass
        finally:
            if s.conn.transport is not None:
                s.conn.transport.abort()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------- client input

    def _error(self, s: ClientSession, code: str, message: str, request_id: str | None = None) -> None:
        s.outbox.put(_bounded(Error(code=code, message=message, request_id=request_id)))  # type: ignore[arg-type]

    async def _on_frame(self, s: ClientSession, raw: str | bytes) -> None:
        if len(raw) > self.settings.max_message_bytes:
            self._error(
                s,
                "too_large",
                f"message of {len(raw)} bytes exceeds the {self.settings.max_message_bytes}-byte limit; split audio into smaller frames",
            )
            return
        try:
            if isinstance(raw, bytes):
                await self._on_audio(s, raw)
            else:
                await self._on_message(s, parse_client(raw))
        except ProtocolError as e:
            s.outbox.put(_bounded(e.error))
        except RecursionError:
            s.outbox.put(_bounded(_too_deep()))
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("error handling a message from client %s", s.id)
            self._error(s, "internal", "the server failed on this message (see the daemon log); the connection carries on")

    async def _on_message(self, s: ClientSession, msg: ClientMessage) -> None:
        h = self.handler
        if isinstance(msg, Ping):
            s.outbox.put(Pong(data=msg.data).to_json())
        elif isinstance(msg, TextQuery):
            await h.on_text_query(s.id, msg.text, msg.request_id)
        elif isinstance(msg, Cancel):
            await h.on_cancel(s.id, msg.request_id)
        elif isinstance(msg, PushToTalk):
            await h.on_push_to_talk(s.id, msg.pressed)
        elif isinstance(msg, Forget):
            await h.on_forget(s.id)
        elif isinstance(msg, ListTimers):
            s.outbox.put(Timers(items=await h.on_list_timers(s.id)).to_json())
        elif isinstance(msg, AudioStart):
            self._start_mic(s, msg)
        elif isinstance(msg, AudioEnd):
            await self._end_mic(s, msg)
        elif isinstance(msg, Hello):
            raise ProtocolError("protocol", "hello was already received; reconnect to change name, roles or audio rate")
        else:  # a message type added to the protocol but not routed here
            raise ProtocolError("unknown_type", f"{msg.type} is not handled by this server version")

    def _start_mic(self, s: ClientSession, msg: AudioStart) -> None:
        if "microphone" not in s.roles:
            raise ProtocolError("not_allowed", 'audio needs the "microphone" role; say roles: ["microphone"] in hello')
        if msg.rate not in INPUT_RATES:
            raise ProtocolError("audio_format", f"microphone rate {msg.rate} Hz unsupported; use one of {list(INPUT_RATES)}")
        if s.mic is not None:
            raise ProtocolError("audio_stream", f"stream {s.mic.stream} is still open; send audio_end before starting another")
        s.mic = _MicStream(msg.stream, msg.rate, StreamResampler(msg.rate, VAD_RATE))

    async def _end_mic(self, s: ClientSession, msg: AudioEnd) -> None:
        if s.mic is None or s.mic.stream != msg.stream:
            raise ProtocolError("audio_stream", f"audio_end for stream {msg.stream}, which is not open")
        tail = s.mic.resampler.flush()
        s.mic = None
        if len(tail):
            await self.handler.on_client_audio(s.id, tail)
        await self.handler.on_client_audio_end(s.id)

    async def _on_audio(self, s: ClientSession, raw: bytes) -> None:
        try:
            frame = framing.unpack(raw)
        except framing.FrameError as e:
            raise ProtocolError("bad_frame", str(e)) from None
        if frame.kind != framing.FrameKind.MIC_AUDIO:
            raise ProtocolError("bad_frame", f"frame kind {int(frame.kind)} is server-to-client; microphone audio is kind 1")
        mic = s.mic
        if mic is None or mic.stream != frame.stream:
            raise ProtocolError("audio_stream", f"audio for stream {frame.stream}, which is not open; send audio_start first")
        if frame.rate != mic.rate:
            raise ProtocolError(
                "audio_format", f"frame at {frame.rate} Hz in stream {mic.stream} opened at {mic.rate} Hz; keep one rate per stream"
            )
        gap = frame.seq != mic.next_seq
        expected = mic.next_seq
        mic.next_seq = (frame.seq + 1) & 0xFFFFFFFF
        pcm = frame.pcm()
        if not s.budget.take(len(pcm) / mic.rate):
            raise ProtocolError(
                "rate_limited",
                f"audio arrives faster than {self.settings.max_audio_speed}x real time; frame {frame.seq} dropped, pace the stream",
            )
        if len(pcm):
            out = mic.resampler.process(pcm)
            if len(out):
                await self.handler.on_client_audio(s.id, out)
        if gap:  # the audio is used anyway (a lost frame is a click, not a reason to stop listening); the client is told
            raise ProtocolError("audio_stream", f"frame seq {frame.seq} where {expected} was expected: frames lost or reordered")


def _bounded(error: Error) -> str:
    """The error as JSON, its message cut to MAX_ERROR_CHARS: it may quote the client (a 1 MiB `type`)."""
    if len(error.message) > MAX_ERROR_CHARS:
        error = error.model_copy(update={"message": error.message[:MAX_ERROR_CHARS] + "... (cut)"})
    return error.to_json()


def _too_deep() -> Error:
    return Error(code="bad_json", message="JSON nested too deeply to parse; send one flat JSON object per text frame")


def _direct_writer(conn: ServerConnection) -> Callable[[Item], bool] | None:
    """Synchronous write through websockets' sans-I/O protocol when the socket takes data without waiting.

    Uses the connection's documented-internal pieces (protocol, send_data, paused); if a websockets release
    changes them, fall back to the task path (None) rather than break.
    """
    proto = getattr(conn, "protocol", None)
    if proto is None or not all(
        hasattr(x, a) for x, a in ((conn, "send_data"), (conn, "paused"), (proto, "send_binary"), (proto, "send_text"))
    ):
        return None
    open_ = WsState.OPEN

    def write(item: Item) -> bool:
        if conn.paused or proto.state is not open_ or getattr(conn, "send_in_progress", None) is not None:
            return False
        if isinstance(item, str):
            proto.send_text(item.encode())
        elif isinstance(item, bytes):
            proto.send_binary(item)
        else:
            for frame in item:
                proto.send_binary(frame)
        conn.send_data()
        return True

    return write


def _select_subprotocol(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    if PROTOCOL_VERSION in offered:
        return Subprotocol(PROTOCOL_VERSION)
    raise NegotiationError(f"offer Sec-WebSocket-Protocol: {PROTOCOL_VERSION} (offered: {', '.join(offered) or 'none'})")
