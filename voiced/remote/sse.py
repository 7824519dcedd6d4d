"""Server-sent events of a streamed chat completion, decoded without I/O: text in, typed chunks out.

Why our own and bounded: a stream is a peer's bytes, so a line that never ends or a reply that never stops is
refused at a byte bound instead of growing memory; and a chunk that is not what OpenAI's API documents is a
`MalformedStream` naming what was wrong, not a KeyError in a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from voiced.errors import VoicedError

MAX_LINE_BYTES = 1 << 20  # one event's data; a chunk of a streamed completion is a few hundred bytes
DONE = "[DONE]"


class MalformedStream(VoicedError, ValueError):
    """The server's stream is not a chat-completions SSE stream."""


class ServerReported(VoicedError, RuntimeError):
    """An error object the server sent inside the stream (OpenAI servers do so once streaming has begun)."""


@dataclass(frozen=True)
class Chunk:
    text: str = ""  # the content delta ("" for role-only, usage-only or final chunks)
    finish: str | None = None  # "stop", "length", ... on the last choice chunk
    prompt_tokens: int | None = None  # from the usage chunk (stream_options.include_usage)
    completion_tokens: int | None = None
    done: bool = False  # the [DONE] sentinel


class EventDecoder:
    """Feeds text as it arrives; returns the data of each complete event (the lines of one event joined)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._pending = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        self._pending += text
        lines = self._pending.splitlines(keepends=True)
        self._pending = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        if len(self._pending) > self.max_line_bytes:
            raise MalformedStream(f"an event line longer than {self.max_line_bytes} bytes; is brain.url a chat-completions server?")
        out: list[str] = []
        for raw in lines:
            line = raw.rstrip("\r\n")
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue  # a comment: servers send them as keep-alives
            field, _, value = line.partition(":")
            if field == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
                if sum(len(d) for d in self._data) > self.max_line_bytes:
                    raise MalformedStream(f"an event longer than {self.max_line_bytes} bytes")
            # event/id/retry fields carry nothing a chat completion needs
        return out

    def close(self) -> list[str]:
        """The end of the stream: an event without its blank line still counts."""
        out = self.feed("\n\n") if self._pending or self._data else []
        return out


def parse(data: str) -> Chunk:
    """One event's data -> a Chunk; the server's own error object -> ServerReported with its message."""
    if data.strip() == DONE:
        return Chunk(done=True)
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as e:
        raise MalformedStream(f"a stream event is not JSON ({e.msg} at {e.pos}): {data[:80]!r}") from None
    if not isinstance(obj, dict):
        raise MalformedStream(f"a stream event is not a JSON object: {data[:80]!r}")
    if "error" in obj:
        raise ServerReported(error_message(obj))
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    choices = obj.get("choices")
    if not isinstance(choices, list):
        raise MalformedStream(f"a stream event without a 'choices' list: {data[:80]!r}")
    text, finish = "", None
    if choices:
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise MalformedStream(f"a choice without a 'delta' object: {data[:80]!r}")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise MalformedStream(f"a delta whose content is not text: {data[:80]!r}")
        text = content or ""
        finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
    return Chunk(
        text=text,
        finish=finish,
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        completion_tokens=completion if isinstance(completion, int) else None,
    )


def error_message(obj: object) -> str:
    """The human part of an OpenAI-style error body ({"error": {"message": ...}}, {"error": "..."},
    {"detail": ...} from FastAPI servers), or the body itself, shortened."""
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail"))
        if isinstance(err, dict) and isinstance(message := err.get("message"), str):
            return message
        if isinstance(err, str):
            return err
        if err is not None:
            return json.dumps(err)[:300]
    return json.dumps(obj)[:300]
