"""An OpenAI chat-completions client for the model thread: streamed chunks out, cancellable between any two.

Why httpx's async client on a thread of its own, under a synchronous iterator: the pipeline's model thread
consumes a plain iterator and cancels with a threading.Event, but a blocking read cannot be interrupted from
another thread (closing a socket another thread is reading does not even send the FIN). An asyncio task can be
cancelled at any await, and httpx then closes the connection, which is how the server learns to stop generating
(vLLM aborts the request, llama.cpp frees the slot) within one poll of the event.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import queue
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from voiced.brain import BrainUnavailable
from voiced.remote.sse import Chunk, EventDecoder, MalformedStream, ServerReported, error_message, parse

log = logging.getLogger(__name__)
# httpx logs every request at INFO; a turn already logs its own line, and a URL per turn is noise.
logging.getLogger("httpx").setLevel(logging.WARNING)

T = TypeVar("T")
POLL_S = 0.02  # how often the consumer looks at the cancel event while waiting for a chunk
MAX_ERROR_BODY = 64 * 1024  # of an HTTP error's body, enough for any server's message
CLOSE_WAIT_S = 2.0  # a cancelled stream gets this long to close its connection before the iterator returns


class Failure(enum.Enum):
    UNREACHABLE = "unreachable"  # no connection, or it broke mid-stream
    HTTP_STATUS = "http_status"  # the server answered 4xx/5xx
    STALLED = "stalled"  # nothing for too long
    MALFORMED = "malformed"  # not a chat-completions stream
    REPORTED = "reported"  # the server sent an error object inside the stream
    WRONG_MODEL = "wrong_model"  # the server does not serve brain.model


# What the user hears: short, no URL, no figures; the error event carries the details and the fix.
SPOKEN = {
    Failure.UNREACHABLE: "Sorry, I can't reach my model server.",
    Failure.HTTP_STATUS: "Sorry, my model server refused the request.",
    Failure.STALLED: "Sorry, my model server stopped answering.",
    Failure.MALFORMED: "Sorry, my model server sent something I can't read.",
    Failure.REPORTED: "Sorry, my model server reported an error.",
    Failure.WRONG_MODEL: "Sorry, my model server does not have the model I am set to use.",
}


class ServerFailure(BrainUnavailable):
    """A turn the model server could not answer; the message names the server, the problem and the fix."""

    def __init__(self, failure: Failure, message: str, status: int | None = None):
        self.failure, self.status = failure, status
        self.spoken = SPOKEN[failure]
        super().__init__(message)


@dataclass(frozen=True)
class ServedModel:
    id: str
    owned_by: str


class ChatClient:
    def __init__(self, base_url: str, api_key: str | None, connect_s: float, first_token_s: float, stall_s: float):
        self.base_url = base_url
        self.first_token_s, self.stall_s = first_token_s, stall_s
        self._secret = api_key or ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="voiced-brain-http", daemon=True)
        self._thread.start()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Reads are timed per chunk below (the first may wait out a long prefill); connect and write are not.
        timeout = httpx.Timeout(connect=connect_s, read=None, write=30.0, pool=connect_s)

        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

        self._http = self._run(make())

    def _run(self, coro: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def redact(self, text: str) -> str:
        """A server may echo the key it refused in its message: it never reaches an error or a log."""
        return text.replace(self._secret, "***") if self._secret else text

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._http.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- GET /models --------------------------------------------------------------------------------------------
    def models(self, timeout_s: float = 10.0) -> list[ServedModel]:
        return self._run(asyncio.wait_for(self._models(), timeout_s))

    async def _models(self) -> list[ServedModel]:
        try:
            r = await self._http.get("/models")
        except httpx.HTTPError as e:
            raise self._transport(e) from None
        if r.status_code >= 400:
            raise self._status(r.status_code, r.content[:MAX_ERROR_BODY])
        try:
            data = r.json()["data"]
            return [ServedModel(str(d["id"]), str(d.get("owned_by", ""))) for d in data]
        except (ValueError, KeyError, TypeError):
            raise ServerFailure(Failure.MALFORMED, self._fix_url(f"GET {self.base_url}/models is not an OpenAI model list")) from None

    # -- POST /chat/completions, streamed -----------------------------------------------------------------------
    def stream(self, body: dict[str, object], cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """The chunks of one streamed completion, until [DONE]. Setting `cancel` (or closing the iterator) ends
        the request: the connection is closed, so the server stops generating."""
        q: queue.Queue[Chunk | ServerFailure | None] = queue.Queue()
        closed = threading.Event()
        fut = asyncio.run_coroutine_threadsafe(self._pump(body, q, closed), self._loop)
        try:
            while not (cancel is not None and cancel.is_set()):
                try:
                    item = q.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if isinstance(item, ServerFailure):
                    raise item
                yield item
        finally:
            if not fut.done():
                fut.cancel()
                closed.wait(CLOSE_WAIT_S)

    async def _pump(self, body: dict[str, object], q: queue.Queue[Chunk | ServerFailure | None], closed: threading.Event) -> None:
        try:
            async with self._http.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    raise self._status(r.status_code, await _bounded_body(r))
                await self._chunks(r, q)
        except ServerFailure as e:
            q.put(e)
        except httpx.HTTPError as e:
            q.put(self._transport(e))
        finally:
            q.put(None)
            closed.set()

    async def _chunks(self, r: httpx.Response, q: queue.Queue[Chunk | ServerFailure | None]) -> None:
        decoder = EventDecoder()
        text_iter = r.aiter_text()
        loop = asyncio.get_running_loop()
        # Only events reset the clock: keep-alive comments (sse-starlette pings every 15 s) say the server is up,
        # not that it is generating.
        window, finished = self.first_token_s, False
        deadline = loop.time() + window
        while True:
            try:
                text = await asyncio.wait_for(anext(text_iter), max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise ServerFailure(
                    Failure.STALLED,
                    f"model server {self.base_url} sent nothing for {window:g} s. Fix: check the server's load and "
                    "log, or raise brain.first_token_timeout_s / brain.stall_timeout_s",
                ) from None
            events = decoder.feed(text)
            if events:
                window = self.stall_s
                deadline = loop.time() + window
            for data in events:
                chunk = self._parse(data)
                if chunk.done:
                    return
                finished = finished or chunk.finish is not None
                q.put(chunk)
        for data in decoder.close():
            chunk = self._parse(data)
            finished = finished or chunk.done or chunk.finish is not None
            if not chunk.done:
                q.put(chunk)
        if not finished:
            raise ServerFailure(
                Failure.UNREACHABLE,
                f"model server {self.base_url} closed the stream before the reply was finished. Fix: see the "
                "server's log (did it crash or restart?)",
            )

    def _parse(self, data: str) -> Chunk:
        try:
            return parse(data)
        except MalformedStream as e:
            raise ServerFailure(
                Failure.MALFORMED, self._fix_url(f"model server {self.base_url} sent a malformed stream: {self.redact(str(e))}")
            ) from None
        except ServerReported as e:
            raise ServerFailure(
                Failure.REPORTED, f"model server {self.base_url} reported: {self.redact(str(e))}. Fix: see the server's log"
            ) from None

    # -- errors -------------------------------------------------------------------------------------------------
    def _fix_url(self, message: str) -> str:
        return f"{message}. Fix: brain.url must be the server's OpenAI base URL, ending in /v1"

    def _transport(self, e: httpx.HTTPError) -> ServerFailure:
        what = "cannot be reached" if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout) else "lost the connection"
        detail = self.redact(str(e) or type(e).__name__)
        return ServerFailure(
            Failure.UNREACHABLE,
            f"model server {self.base_url} {what} ({detail}). Fix: start it (vllm serve, llama-server, ollama serve) "
            "or correct brain.url; voiced keeps retrying in the background",
        )

    def _status(self, status: int, raw: bytes) -> ServerFailure:
        try:
            said = error_message(json.loads(raw))
        except ValueError:
            said = raw.decode("utf-8", "replace").strip()[:300] or "(no message)"
        if status in (401, 403):
            fix = "check the API key (brain.api_key_file, or the variable brain.api_key_env names)"
        elif status == 404:
            fix = f"check brain.url (it ends in /v1) and brain.model against GET {self.base_url}/models"
        elif status < 500:
            fix = "the server refused the request; its message says which part"
        else:
            fix = "see the server's log"
        return ServerFailure(
            Failure.HTTP_STATUS, f"model server {self.base_url} answered HTTP {status}: {self.redact(said)}. Fix: {fix}", status
        )


async def _bounded_body(r: httpx.Response) -> bytes:
    out = b""
    async for part in r.aiter_bytes():
        out += part
        if len(out) >= MAX_ERROR_BODY:
            break
    return out[:MAX_ERROR_BODY]
