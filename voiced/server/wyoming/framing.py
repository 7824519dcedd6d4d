"""Reading one Wyoming event under input limits.

Input limits, from the settings the WebSocket side uses (so one config bounds both): an event's data and payload
are each at most `server.max_message_bytes`, its header line at most the smaller of that and 64 KiB, checked before
they are read (the wyoming package's own reader allocates whatever length a peer declares); one transcription holds
at most `audio.max_segment_s` of audio, the longest utterance the pipeline ever hands its recogniser; and audio may
arrive at most `server.max_audio_speed` x real time after a `server.audio_burst_s` burst (limits.AudioBudget, as
on the WebSocket side). A peer over a limit gets an `error` event naming it and the fix, and its connection is
closed; other connections are not affected. A spoken turn's audio has no length limit: the pipeline's VAD splits
it at `audio.max_segment_s`, and a satellite waiting for its wake phrase streams for as long as it runs.

The checks on bytes (`parse_header`, `declared_length`, `merge_data`) are pure; `read_event` is the StreamReader
around them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from wyoming.event import Event

from voiced.config import Settings
from voiced.errors import VoicedError
from voiced.server.limits import AudioBudget

MAX_HEADER_BYTES = 1 << 16  # asyncio's stream buffer limit, which the wyoming servers keep: no longer line is read


class InputLimit(VoicedError):
    """A peer went over an input limit: it gets an `error` event with this code and text, then is disconnected."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


@dataclass(frozen=True)
class InputLimits:
    """What one Wyoming peer may send; every value comes from a setting the WebSocket side uses too."""

    event_bytes: int  # server.max_message_bytes: an event's data, and its payload, each
    utterance_s: float  # audio.max_segment_s: the audio of one transcription
    audio_speed: float  # server.max_audio_speed
    audio_burst_s: float  # server.audio_burst_s
    first_event_s: float = 5.0  # server.hello_timeout_s: a connection says something by then or is closed
    idle_s: float = 300.0  # server.idle_timeout_s: silence allowed while nothing is in progress for the peer
    connections: int = 64  # server.max_clients: Wyoming connections at once (counted apart from WebSocket clients)
    queue_bytes: int = 8 << 20  # server.client_queue_bytes: queued toward one peer before it counts as stalled

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        server = settings.server
        return cls(
            server.max_message_bytes,
            settings.audio.max_segment_s,
            server.max_audio_speed,
            server.audio_burst_s,
            server.hello_timeout_s,
            server.idle_timeout_s,
            server.max_clients,
            server.client_queue_bytes,
        )

    @property
    def header_bytes(self) -> int:
        return min(MAX_HEADER_BYTES, self.event_bytes)

    def budget(self) -> AudioBudget:
        return AudioBudget(self.audio_speed, self.audio_burst_s)


@dataclass(frozen=True)
class Header:
    """An event's header line, checked: its type, its inline data, and the lengths of what follows it."""

    type: str
    data: dict[str, object]
    data_length: int
    payload_length: int


def header_too_long(limits: InputLimits) -> InputLimit:
    return InputLimit(
        "too-large",
        f"event header line over {limits.header_bytes} bytes (the smaller of 64 KiB and server.max_message_bytes); "
        "a header is one short JSON line: send the event's data as data_length bytes after it and audio as its "
        "payload, as the wyoming package's writer does. Connection closed.",
    )


def declared_length(header: dict[str, object], key: str, limit: int) -> int | None:
    """`data_length` / `payload_length` of a header: 0 when absent, None when not a length at all (broken framing)."""
    n = header.get(key)
    if n is None:
        return 0
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return None
    if n > limit:
        kind = header.get("type")
        raise InputLimit(
            "too-large",
            f"{str(kind)[:64]} event declares {key} {n}, over the {limit}-byte limit "
            "(server.max_message_bytes); send smaller events (audio in chunks of about 100 ms), or raise "
            "server.max_message_bytes. Connection closed.",
        )
    return n


def parse_header(line: bytes, limits: InputLimits) -> Header | None:
    """The header line of an event (its newline included), or None on broken framing; InputLimit over a limit."""
    if len(line) > limits.header_bytes:
        raise header_too_long(limits)
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or not isinstance(kind := header.get("type"), str):
        return None
    data = header.get("data") or {}
    if not isinstance(data, dict):
        return None
    data_length = declared_length(header, "data_length", limits.event_bytes)
    payload_length = declared_length(header, "payload_length", limits.event_bytes)
    if data_length is None or payload_length is None:
        return None
    return Header(kind, dict(data), data_length, payload_length)


def merge_data(header: Header, raw: bytes) -> dict[str, object] | None:
    """The header's data with the `data_length` bytes after it merged in; None when those are not a JSON object."""
    try:
        more = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return {**header.data, **more} if isinstance(more, dict) else None


async def read_event(reader: asyncio.StreamReader, limits: InputLimits, wait_s: float | None = None) -> Event | None:
    """The next event, with every declared size checked against `limits` before a byte of it is read.

    Same framing as wyoming.event.async_read_event (a JSON header line, then data_length bytes of JSON merged into
    its data, then payload_length bytes), which trusts the lengths a peer declares. None at the end of the stream
    and on broken framing, as there: the connection ends without an answer, since nothing more can be parsed.
    `wait_s`: how long to wait for the header line (asyncio.TimeoutError then, with nothing consumed: readuntil
    takes bytes only once the line is whole) and for the rest of the event once it began (InputLimit then).
    """
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), wait_s)
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise header_too_long(limits) from None
    header = parse_header(line, limits)
    if header is None:
        return None
    data: dict[str, object] | None = header.data
    try:
        if header.data_length:
            data = merge_data(header, await asyncio.wait_for(reader.readexactly(header.data_length), wait_s))
            if data is None:
                return None
        payload = await asyncio.wait_for(reader.readexactly(header.payload_length), wait_s) if header.payload_length else None
    except asyncio.IncompleteReadError:
        return None
    except asyncio.TimeoutError:
        raise InputLimit(
            "timeout", f"an event stalled mid-way for {wait_s:g} s (server.idle_timeout_s); send each event whole. Connection closed."
        ) from None
    return Event(type=header.type, data=dict(data or {}), payload=payload)
