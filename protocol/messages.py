"""Every message of the voiced WebSocket protocol, as pydantic models: the single source of truth.

The server, the client library and `schema.json` all derive from these classes, so a field added here is
validated, serialised and documented in one place. Models forbid unknown fields: a typo in a client's
message becomes a typed error naming the field instead of a silently ignored setting.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError

PROTOCOL_VERSION = "voiced.v1"
SUBPROTOCOLS = (PROTOCOL_VERSION,)

# The rates a client may ask for its reply audio; the server resamples once per distinct rate in use.
OUTPUT_RATES = (16000, 22050, 24000, 48000)
# The rates a client's microphone stream may arrive at (the server resamples to 16 kHz for the VAD).
INPUT_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
AUDIO_FORMATS = ("s16le",)

OutputRate = Literal[16000, 22050, 24000, 48000]
AudioFormat = Literal["s16le"]
Role = Literal["listener", "microphone"]
StateName = Literal["idle", "listening", "thinking", "speaking"]
ActivationName = Literal["always", "wake", "push"]
EventName = Literal[
    "state",
    "speech_started",
    "speech_ended",
    "transcript",
    "reply_started",
    "reply_delta",
    "reply_audio_start",
    "reply_audio_end",
    "reply_done",
    "welcome",
    "error",
    "pong",
    "turn_ignored",
    "timer_started",
    "timer_updated",
    "timer_cancelled",
    "timer_finished",
]

ErrorCode = Literal[
    # the client's input
    "bad_json",  # a text frame that is not a JSON object
    "unknown_type",  # `type` missing or not a client message type
    "invalid_message",  # right type, wrong/missing/extra fields
    "protocol",  # a valid message at the wrong moment (e.g. a second hello)
    "bad_frame",  # a binary frame whose header cannot be read
    "audio_format",  # audio frame whose rate/format/length disagrees with its audio_start
    "audio_stream",  # audio for a stream that was never started or already ended
    "too_large",  # a message over the limit announced in welcome.limits
    "rate_limited",  # microphone audio pushed faster than welcome.limits allows
    "not_allowed",  # the client lacks the role the message needs (e.g. audio without "microphone")
    # the server's side
    "unauthorized",  # never sent: an unauthenticated connection is closed with 1008 and gets nothing
    "server_full",  # max clients reached; followed by close 1013
    "slow_consumer",  # never sent (the client is not reading): close 4001
    "busy",  # the pipeline cannot take the request now
    "unavailable",  # the pipeline has no model loaded, or the feature is off
    "internal",  # a bug on the server side; the connection carries on
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)


# --------------------------------------------------------------------------------------------- client -> server


def _default_roles() -> list[Role]:
    return ["listener"]


class Hello(_Message):
    """First message of every connection: who the client is and what it wants to receive."""

    type: Literal["hello"] = "hello"
    token: str | None = Field(None, max_length=512, description="required unless sent as `Authorization: Bearer`")
    name: str = Field("client", min_length=1, max_length=128, description="shown in logs")
    roles: list[Role] = Field(
        default_factory=_default_roles, max_length=2, description="listener: gets reply audio; microphone: may send audio"
    )
    audio_rate: OutputRate = Field(24000, description="sample rate of the reply audio this client gets")
    audio_format: AudioFormat = "s16le"
    events: list[EventName] | None = Field(
        None, max_length=64, description="server message types wanted; null = all. welcome, error and pong always come"
    )
    conversation: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="continue this named conversation (shared by sessions naming it); null = one of its own",
    )
    replies: Literal["own", "all"] | None = Field(
        None,
        description="reply audio heard (listeners): own = the replies to "
        "this session; all = every reply; null = own with the microphone role, else all",
    )


class AudioStart(_Message):
    """Opens a microphone stream; binary frames with this `stream` id follow."""

    type: Literal["audio_start"] = "audio_start"
    stream: int = Field(ge=0, le=0xFFFFFFFF)
    rate: int = Field(description="one of INPUT_RATES")
    format: AudioFormat = "s16le"
    channels: Literal[1] = 1


class AudioEnd(_Message):
    """Closes a microphone stream: the server flushes it through the VAD (ends an open utterance)."""

    type: Literal["audio_end"] = "audio_end"
    stream: int = Field(ge=0, le=0xFFFFFFFF)


class TextQuery(_Message):
    type: Literal["text_query"] = "text_query"
    text: str = Field(min_length=1, max_length=8000)
    request_id: str | None = Field(None, max_length=128)


class Cancel(_Message):
    """Stops the current reply (or the one answering `request_id`); without `request_id` it also silences a
    ringing timer, alarm or reminder."""

    type: Literal["cancel"] = "cancel"
    request_id: str | None = Field(None, max_length=128)


class PushToTalk(_Message):
    type: Literal["push_to_talk"] = "push_to_talk"
    pressed: bool


class Forget(_Message):
    """Clears the conversation history."""

    type: Literal["forget"] = "forget"


class ListTimers(_Message):
    """Asks for every timer, alarm and reminder as it stands (answered by `timers`, to this client only)."""

    type: Literal["list_timers"] = "list_timers"


class Ping(_Message):
    type: Literal["ping"] = "ping"
    data: str | None = Field(None, max_length=128, description="echoed in the pong")


ClientMessage = Annotated[
    Union[Hello, AudioStart, AudioEnd, TextQuery, Cancel, PushToTalk, Forget, Ping, ListTimers],
    Field(discriminator="type"),
]

# --------------------------------------------------------------------------------------------- server -> client


class AudioFormatInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: AudioFormat = "s16le"
    output_rates: list[int] = Field(default_factory=lambda: list(OUTPUT_RATES))
    input_rates: list[int] = Field(default_factory=lambda: list(INPUT_RATES))


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_message_bytes: int
    max_audio_speed: float = Field(description="microphone audio may arrive at most this many times faster than real time")
    audio_burst_s: float = Field(description="seconds of audio a client may send at once before the speed limit applies")
    hello_timeout_s: float


class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    protocol: str = PROTOCOL_VERSION
    server_version: str
    session_id: str = Field(description="this connection's id; events caused by its audio carry it as `source`")
    audio_rate: int = Field(description="the rate this client's reply audio will come at")
    audio: AudioFormatInfo = Field(default_factory=AudioFormatInfo)
    limits: Limits
    credential: str | None = Field(
        None,
        max_length=512,
        description="only when the hello carried a one-time pairing code (`voiced open`): a session credential to send "
        "as `token` in later hellos until it expires; the page keeps it instead of the token",
    )
    activation: ActivationName | None = Field(
        None,
        description="how the daemon decides speech is for it: `always`, `wake` (the wake phrase first) or `push` "
        "(only while a client holds push-to-talk); null from a server that does not say",
    )


class State(_Message):
    type: Literal["state"] = "state"
    state: StateName
    source: str | None = None


class SpeechStarted(_Message):
    type: Literal["speech_started"] = "speech_started"
    t: float = Field(description="seconds on the source's own clock (samples / 16000)")
    source: str


class SpeechEnded(_Message):
    type: Literal["speech_ended"] = "speech_ended"
    t_start: float
    t_end: float
    source: str


class Transcript(_Message):
    type: Literal["transcript"] = "transcript"
    text: str
    final: bool
    source: str | None = None


class ReplyStarted(_Message):
    type: Literal["reply_started"] = "reply_started"
    reply_id: str
    request_id: str | None = None
    source: str | None = None


class ReplyDelta(_Message):
    type: Literal["reply_delta"] = "reply_delta"
    reply_id: str
    text: str


class ReplyAudioStart(_Message):
    """Sent by the server to each listener before the first binary frame of a reply, at that listener's rate."""

    type: Literal["reply_audio_start"] = "reply_audio_start"
    reply_id: str
    stream: int = Field(ge=0, le=0xFFFFFFFF)
    rate: int
    format: AudioFormat = "s16le"


class ReplyAudioEnd(_Message):
    """After the last binary frame of a reply: totals let a client check it got every frame."""

    type: Literal["reply_audio_end"] = "reply_audio_end"
    reply_id: str
    stream: int = Field(ge=0, le=0xFFFFFFFF)
    frames: int
    samples: int


class ReplyDone(_Message):
    type: Literal["reply_done"] = "reply_done"
    reply_id: str
    text: str
    interrupted: bool = False
    timings_ms: dict[str, float] = Field(default_factory=dict, description="the turn's latency breakdown; keys in PROTOCOL.md (reply_done)")


class Error(_Message):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    request_id: str | None = None


class Pong(_Message):
    type: Literal["pong"] = "pong"
    data: str | None = None


class TurnIgnored(_Message):
    """An utterance that gets no reply. Carries no words: unaddressed speech is not shared with anyone."""

    type: Literal["turn_ignored"] = "turn_ignored"
    source: str
    reason: Literal["no_speech", "not_addressed", "stop_command", "outside_push_to_talk"]


TimerKind = Literal["timer", "alarm", "reminder"]


class _TimerState(_Message):
    id: str = Field(description="the item's id, stable for its life (and across restarts when persisted)")
    kind: TimerKind = "timer"
    name: str | None = Field(None, description="a timer's name, as said: 'pasta' in 'a pasta timer'")
    text: str | None = Field(None, description="a reminder's words ('call my mother')")
    total_s: float = Field(description="the span it was set for, with any time added")
    remaining_s: float = Field(description="seconds left when this was sent (a paused timer keeps it)")
    active: bool = Field(True, description="false while a timer is paused")
    due_at: str = Field(description="when it rings (ISO 8601 with the zone offset); for a paused timer, as if resumed now")


class TimerStarted(_TimerState):
    """A timer, alarm or reminder was set by a command (spoken or a text_query)."""

    type: Literal["timer_started"] = "timer_started"


class TimerUpdated(_TimerState):
    """A timer was paused, resumed, or had time added or taken off."""

    type: Literal["timer_updated"] = "timer_updated"


class TimerInfo(_TimerState):
    """One item as it stands, in a `timers` answer."""


class Timers(_Message):
    """The answer to `list_timers`: every timer, alarm and reminder, soonest first."""

    type: Literal["timers"] = "timers"
    items: list[TimerInfo] = Field(default_factory=list, max_length=10000)


class TimerCancelled(_Message):
    type: Literal["timer_cancelled"] = "timer_cancelled"
    id: str
    kind: TimerKind = "timer"
    name: str | None = None
    text: str | None = None


class TimerFinished(_Message):
    """Its time came. The announcement follows as a reply (reply_started ... reply_done, `source` "timers"),
    repeated until stopped: the stop word, push-to-talk, or a `cancel` message silence it."""

    type: Literal["timer_finished"] = "timer_finished"
    id: str
    kind: TimerKind = "timer"
    name: str | None = None
    text: str | None = None


ServerMessage = Annotated[
    Union[
        Welcome,
        State,
        SpeechStarted,
        SpeechEnded,
        Transcript,
        ReplyStarted,
        ReplyDelta,
        ReplyAudioStart,
        ReplyAudioEnd,
        ReplyDone,
        Error,
        Pong,
        TurnIgnored,
        TimerStarted,
        TimerUpdated,
        TimerCancelled,
        TimerFinished,
        Timers,
    ],
    Field(discriminator="type"),
]

# name -> class, read off the unions above so that a new message is listed once
CLIENT_TYPES: dict[str, type[_Message]] = {m.model_fields["type"].default: m for m in get_args(get_args(ClientMessage)[0])}
SERVER_TYPES: dict[str, type[_Message]] = {m.model_fields["type"].default: m for m in get_args(get_args(ServerMessage)[0])}
# Types a client cannot filter out: it needs them to work at all.
ALWAYS_DELIVERED = frozenset({"welcome", "error", "pong"})


class ClientMessageRoot(RootModel[ClientMessage]):
    """Any message a client sends (the schema's `ClientMessage`)."""


class ServerMessageRoot(RootModel[ServerMessage]):
    """Any message the server sends (the schema's `ServerMessage`)."""


client_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessage)
server_adapter: TypeAdapter[Any] = TypeAdapter(ServerMessage)


class ProtocolError(Exception):
    """A message that cannot be accepted; carries the typed error to send back."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(message)
        self.error = Error(code=code, message=message, request_id=request_id)  # type: ignore[arg-type]


def _summarise(e: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    more = len(e.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _parse(text: str | bytes, types: dict[str, type[_Message]], direction: str) -> Any:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError("bad_json", f"not JSON ({e}); send one JSON object per text frame") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", f"expected a JSON object, got {type(data).__name__}; wrap the message in {{...}}")
    rid = data.get("request_id")
    rid = rid if isinstance(rid, str) and len(rid) <= 128 else None
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in types:
        raise ProtocolError("unknown_type", f"unknown {direction} message type {kind!r}; expected one of {sorted(types)}", rid)
    try:
        return types[kind].model_validate(data)
    except ValidationError as e:
        raise ProtocolError("invalid_message", f"{kind}: {_summarise(e)}", rid) from None


def parse_client(text: str | bytes) -> Any:
    """A client text frame -> its typed message, or ProtocolError with the typed error to send back."""
    return _parse(text, CLIENT_TYPES, "client")


def parse_server(text: str | bytes) -> Any:
    """A server text frame -> its typed message, or None for a type this library does not know.

    Lenient on purpose (PROTOCOL.md, versioning): a newer server may add message types and optional fields
    within the same version, and an older client must carry on, ignoring them.
    """
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError("bad_json", f"server sent non-JSON text ({e})") from None
    if not isinstance(data, dict) or data.get("type") not in SERVER_TYPES:
        return None
    model = SERVER_TYPES[data["type"]]
    known = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        return model.model_validate(known)
    except ValidationError as e:
        raise ProtocolError("invalid_message", f"server sent a bad {data['type']}: {_summarise(e)}") from None
