"""What `voiced serve` checks and how it waits before and while the model loads.

Why check the ports first: loading the model takes seconds (minutes on a first preparation), and a busy port
found only after that wastes them and hides the real problem behind a wait. The check binds and releases the
address the way the servers will (SO_REUSEADDR, as asyncio does on Unix); a port taken between the check and the
real bind is still refused there, with the same message.

Why a daemon thread for the load: `asyncio.to_thread` runs on the loop's default executor, which `asyncio.run`
joins on the way out, so a SIGTERM during a load would wait for the load to finish. A daemon thread is left
behind when the process exits; the load holds no state that must be flushed (a preparation writes to a hidden
temporary folder and renames it only when complete). The export child of a preparation is stopped with us by
the terminal (Ctrl-C signals the whole process group) and by systemd (the unit's control group).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import threading
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from voiced.config import Settings
from voiced.errors import VoicedError

log = logging.getLogger("voiced")
T = TypeVar("T")


class PortBusy(VoicedError, OSError):
    """An address `serve` would listen on is taken; the message names what to do."""


def _probe(host: str, port: int) -> OSError | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return e
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as e:
                return e
    return None


def check_listen_ports(settings: Settings) -> None:
    """Raise PortBusy when the WebSocket port or the Wyoming port cannot be bound (port 0 is always free)."""
    srv = settings.server
    if srv.port:
        err = _probe(srv.host, srv.port)
        if err is not None:
            raise PortBusy(
                f"cannot listen on {srv.host}:{srv.port} ({_why(err)}). Fix: stop what holds the port (another voiced? "
                "`systemctl --user stop voiced`) or choose another with --port / server.port"
            )
    if srv.wyoming:
        uri = urlsplit(srv.wyoming)
        if uri.scheme == "tcp" and uri.hostname and uri.port:
            err = _probe(uri.hostname, uri.port)
            if err is not None:
                raise PortBusy(
                    f"cannot serve Wyoming on {srv.wyoming} ({_why(err)}). Fix: stop what holds that port (another "
                    "Wyoming server?) or choose another in --wyoming / server.wyoming"
                )


def _why(err: OSError) -> str:
    if err.errno == errno.EADDRINUSE:
        return "address already in use"
    return err.strerror or str(err)


def in_daemon_thread(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """`fn(*args)` on a daemon thread; the future resolves on the running loop (or is dropped if it has closed)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def resolve(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        try:
            value = fn(*args)
        except BaseException as e:  # handed to the awaiting coroutine, which decides
            settle: Callable[[], object] = functools.partial(fail, e)
        else:
            settle = functools.partial(resolve, value)
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed: `serve` stopped while we worked
            pass

    threading.Thread(target=work, name=f"voiced-load-{getattr(fn, '__name__', 'work')}", daemon=True).start()
    return future


def device_logger(kind: str) -> Callable[[str, str], None]:
    """One log line per device event: "playing"/"idle" are the speaker's ordinary rhythm (debug), a fault warns."""

    def report(state: str, detail: str) -> None:
        if state in ("playing", "idle"):
            log.debug("%s %s", kind, state)
        elif state in ("ok", "open"):
            log.info("%s %s: %s", kind, state, detail)
        else:
            log.warning("%s %s: %s", kind, state, detail)

    return report
