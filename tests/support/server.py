"""A real VoicedServer on 127.0.0.1 for tests, driven by the real VAD front end (no fake replies).

`VadHandler` is what the product does before the model issues land: client audio goes through the real
segmenter and speech started/ended events are broadcast. It also records the other calls, so tests can
check that each client message reached the pipeline seam with the right arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol import messages as m
from voiced.audio.vad import Segmenter
from voiced.config import AudioSettings, ServerSettings
from voiced.server.ws import VoicedServer


@dataclass
class VadHandler:
    audio: AudioSettings = field(default_factory=AudioSettings)
    server: VoicedServer | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)
    _segmenters: dict[str, Segmenter] = field(default_factory=dict)

    def _publish(self, events: list[Any]) -> None:
        for ev in events:
            kind = type(ev).__name__
            if kind == "SpeechStarted":
                self.server.broadcast(m.SpeechStarted(t=ev.t, source=ev.source))  # type: ignore[union-attr]
            elif kind == "SpeechEnded":
                self.server.broadcast(m.SpeechEnded(t_start=ev.t_start, t_end=ev.t_end, source=ev.source))  # type: ignore[union-attr]

    async def on_client_audio(self, client_id: str, pcm16k: np.ndarray) -> None:
        assert pcm16k.dtype == np.int16 and pcm16k.ndim == 1
        seg = self._segmenters.get(client_id)
        if seg is None:
            seg = self._segmenters[client_id] = Segmenter(self.audio, source=client_id)
        self.samples[client_id] = self.samples.get(client_id, 0) + len(pcm16k)
        self._publish(seg.feed(pcm16k))

    async def on_client_audio_end(self, client_id: str) -> None:
        self.calls.append(("audio_end", client_id))
        seg = self._segmenters.pop(client_id, None)
        if seg is not None:
            self._publish(seg.flush())

    async def on_text_query(self, client_id: str, text: str, request_id: str | None) -> None:
        self.calls.append(("text_query", client_id, text, request_id))

    async def on_cancel(self, client_id: str, request_id: str | None) -> None:
        self.calls.append(("cancel", client_id, request_id))

    async def on_push_to_talk(self, client_id: str, pressed: bool) -> None:
        self.calls.append(("push_to_talk", client_id, pressed))

    async def on_forget(self, client_id: str) -> None:
        self.calls.append(("forget", client_id))

    async def on_list_timers(self, client_id: str) -> list[m.TimerInfo]:
        self.calls.append(("list_timers", client_id))
        return []

    async def on_client_disconnect(self, client_id: str) -> None:
        self.calls.append(("disconnect", client_id))
        self._segmenters.pop(client_id, None)


def settings(**overrides: Any) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, **overrides)


def new_token() -> str:
    return secrets.token_urlsafe(24)


@contextlib.asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[tuple[VoicedServer, VadHandler, str]]:
    """A served VoicedServer on an ephemeral port with a VadHandler; yields (server, handler, token)."""
    handler = VadHandler()
    token = new_token()
    server = VoicedServer(settings(**overrides), handler, token)
    handler.server = server
    async with server:
        yield server, handler, token


class ServerThread:
    """The server on its own event loop in a thread, for synchronous clients (hypothesis drives sync tests)."""

    def __init__(self, **overrides: Any):
        self.overrides = overrides
        self.loop = asyncio.new_event_loop()
        self.token = new_token()
        self.handler = VadHandler()
        self.server: VoicedServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> "ServerThread":
        self._thread.start()

        async def start() -> VoicedServer:
            server = VoicedServer(settings(**self.overrides), self.handler, self.token)
            self.handler.server = server
            await server.start()
            return server

        self.server = self.call(start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}"


async def wait_for(predicate: Any, timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll a condition on the test's loop (server-side effects land asynchronously)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (RFC 6455) as bytes, for a raw socket that writes what it likes: an attacker the
    real client library would not let us be (huge, malformed, never reading). Serialised by websockets itself."""
    from websockets.frames import Frame, Opcode

    return Frame(Opcode(opcode), payload).serialize(mask=True)
