"""The Wyoming endpoint: binding it (`server.wyoming`), counting its connections, and the Publisher that routes
each turn's events to the connection it belongs to. What a peer may ask, and how voiced answers: voiced.server.wyoming.

Wyoming has no authentication: anyone who can reach the port can use the assistant, so bind it to loopback (the
default in the docs) or to a network you trust; a non-loopback bind is logged as a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from urllib.parse import urlparse

import numpy as np
from wyoming.server import AsyncServer, AsyncTcpServer

from protocol import messages as m
from protocol.messages import ServerMessage
from voiced.commands.wyoming import timer_event
from voiced.config import ConfigError
from voiced.server.handler import SpeechBackend
from voiced.server.limits import is_loopback, raise_open_files_limit
from voiced.server.logsafe import LimitedLog, printable
from voiced.server.wyoming.audio import door_budget
from voiced.server.wyoming.connection import Connection
from voiced.server.wyoming.framing import InputLimits
from voiced.server.wyoming.zeroconf import Announcer, announce

log = logging.getLogger(__name__)
limited = LimitedLog(log)


class WyomingError(ConfigError):
    """The Wyoming endpoint cannot start; the message names the setting to change (the CLI prints it, exit 2)."""


def _check_uri(uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("tcp", "unix"):
        raise WyomingError(f"server.wyoming = {uri!r}: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:10700) or unix://PATH")
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise WyomingError(f"server.wyoming = {uri!r} needs a host and a port, e.g. tcp://127.0.0.1:10700")
        if not is_loopback(parsed.hostname):
            log.warning("Wyoming on %s has no authentication: anyone who reaches it can use the assistant", printable(uri))


class WyomingServer:
    """The Wyoming endpoint, and the Publisher that routes each turn's events to the connection it belongs to.

    One Publisher for all connections (registered once with the pipeline) rather than one per connection: the
    pipeline keeps its publishers for its lifetime, and connections come and go.
    """

    def __init__(self, uri: str, backend: SpeechBackend) -> None:
        _check_uri(uri)
        self.uri = uri
        self.backend = backend
        self.limits = InputLimits.from_settings(backend.settings)
        self.budget = door_budget(self.limits)
        self._server: AsyncServer | None = None
        self._conns: dict[str, Connection] = {}
        self._replies: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._registered = False
        self._announcer: Announcer | None = None  # zeroconf (voiced.server.wyoming.zeroconf)

    @property
    def port(self) -> int | None:
        """The bound TCP port (the real one when the URI asked for port 0)."""
        inner = getattr(self._server, "_server", None)
        return inner.sockets[0].getsockname()[1] if inner is not None and inner.sockets else None

    @property
    def url(self) -> str:
        if isinstance(self._server, AsyncTcpServer) and self.port is not None:
            return f"tcp://{self._server.host}:{self.port}"
        return self.uri

    async def start(self) -> None:
        raise_open_files_limit()
        server = AsyncServer.from_uri(self.uri)
        try:
            await server.start(self._connection)
        except OSError as e:
            raise WyomingError(
                f"cannot serve Wyoming on {self.uri}: {e.strerror or e}; pick a free port in server.wyoming (--wyoming)"
            ) from None
        self._server = server
        if not self._registered:  # only once bound: a server that failed to start must not linger as a sink
            self.backend.add_publisher(self)
            self._registered = True
        log.info("serving Wyoming on %s", self.url)
        self._announcer = await announce(self.uri, self.port, self.backend.settings.server.wyoming_zeroconf)

    async def stop(self) -> None:
        if self._announcer is not None:
            await self._announcer.stop()
            self._announcer = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> WyomingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Connection:
        full = len(self._conns) >= self.limits.connections
        conn = Connection(self, f"wyoming-{next(self._ids)}", reader, writer, full=full)
        if not full:
            self._conns[conn.source] = conn
        limited.log(
            logging.INFO,
            "connect",
            "wyoming client %s connected from %s%s",
            conn.source,
            writer.get_extra_info("peername"),
            " (over the cap: refused)" if full else "",
        )
        return conn

    def forget(self, conn: Connection) -> None:
        self._conns.pop(conn.source, None)
        for reply_id in [r for r, c in self._replies.items() if c is conn]:
            del self._replies[reply_id]

    # -- Publisher ------------------------------------------------------------------------------------------------
    def send(self, client_id: str, msg: m.Error) -> bool:
        """A message for one connection only (a `busy` for its request); False if it is not one of ours."""
        conn = self._conns.get(client_id)
        if conn is not None:
            conn.on_message(msg)
        return conn is not None

    def broadcast(self, msg: ServerMessage) -> None:
        if isinstance(msg, m.ReplyStarted):
            conn = self._conns.get(msg.source or "")
            if conn is not None:
                self._replies[msg.reply_id] = conn
        elif isinstance(msg, m.ReplyDelta | m.ReplyDone):
            conn = self._replies.get(msg.reply_id)
            if isinstance(msg, m.ReplyDone):
                self._replies.pop(msg.reply_id, None)
        elif (timer := timer_event(msg)) is not None:  # timers are the household's: every peer hears of them
            for conn in list(self._conns.values()):
                conn.send(timer)
            return
        elif isinstance(msg, m.State | m.Error):  # no source: each connection decides whether it concerns it
            for conn in list(self._conns.values()):
                conn.on_message(msg)
            return
        else:
            conn = self._conns.get(getattr(msg, "source", None) or "")
        if conn is not None:
            conn.on_message(msg)

    def broadcast_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        conn = self._replies.get(reply_id)
        if conn is not None:
            conn.on_audio(reply_id, pcm, rate)

    def end_audio(self, reply_id: str) -> None:
        conn = self._replies.get(reply_id)
        if conn is not None:
            conn.on_audio_end(reply_id)


def wyoming_endpoint(uri: str | None, backend: SpeechBackend) -> contextlib.AbstractAsyncContextManager[WyomingServer | None]:
    """`async with` this around the daemon's life; nothing at all when server.wyoming is not set."""
    return WyomingServer(uri, backend) if uri else contextlib.nullcontext()


async def serve_wyoming(uri: str, backend: SpeechBackend, stop_event: asyncio.Event) -> None:
    """Serve Wyoming until `stop_event` is set. A bind failure raises WyomingError at once (naming the fix)."""
    async with WyomingServer(uri, backend):
        await stop_event.wait()
