"""The event translation of one Wyoming connection, with no sockets and no streams (tests/test_wyoming_translate.py).

Two directions, one state (the connection's mode, its open handle requests and replies):
- `incoming(event)`: a peer's event -> the `Step` the connection must take (or None: nothing to do), raising
  ValueError (or the wyoming package's KeyError / TypeError) for an event that cannot be taken;
- `on_message` / `on_audio` / `on_audio_end`: the pipeline's messages for this peer's turns -> the events to send.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming.vad import VoiceStarted, VoiceStopped

from protocol import messages as m
from protocol.messages import ServerMessage
from voiced.conversations import wyoming_key
from voiced.server.wyoming.audio import AudioIn

MAX_TEXT_CHARS = next(x.max_length for x in m.TextQuery.model_fields["text"].metadata if hasattr(x, "max_length"))
PONG_TEXT_CHARS = 256  # a ping's text is echoed, but no more of it than this
_AUDIO_START_STAGES = (PipelineStage.WAKE, PipelineStage.ASR)

# A Wyoming event's context is whatever JSON its peer sent: the wyoming package types it Dict[str, Any], and it is
# only echoed back (in `handled` / `not-handled`), never read here.
Context = dict[str, Any] | None


# -- what the connection must do --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Answer with this event now (a pong, a refusal that needs no work)."""

    event: Event


@dataclass(frozen=True)
class DescribeSelf:
    """Answer `info` (voiced.server.wyoming.info)."""


@dataclass(frozen=True)
class StartTranscription:
    """`transcribe`: the next audio stream is one command to transcribe (drop what was heard so far)."""


@dataclass(frozen=True)
class OpenAudio:
    """`audio-start`, its format already checked."""


@dataclass(frozen=True)
class Audio:
    chunk: AudioChunk


@dataclass(frozen=True)
class CloseAudio:
    """`audio-stop`."""


@dataclass(frozen=True)
class Speak:
    """Synthesize this text as one audio stream (`synthesize`, or run-pipeline from the tts stage)."""

    text: str


@dataclass(frozen=True)
class OpenStream:
    """`synthesize-start`: text follows in pieces (voiced.server.wyoming.tts)."""


@dataclass(frozen=True)
class StreamText:
    text: str


@dataclass(frozen=True)
class CloseStream:
    """`synthesize-stop`: speak the rest, then `synthesize-stopped`."""


@dataclass(frozen=True)
class Ask:
    """A text turn for the pipeline (SpeechBackend.on_handle); its answer comes back as `handled`."""

    text: str
    request_id: str
    conversation: str


Step = Union[Send, DescribeSelf, StartTranscription, OpenAudio, Audio, CloseAudio, Speak, OpenStream, StreamText, CloseStream, Ask]


# -- events out -----------------------------------------------------------------------------------------------
def error(code: str, text: str) -> Event:
    return Error(text=text, code=code).event()


def audio_start(rate: int) -> Event:
    return AudioStart(rate=rate, width=2, channels=1).event()


def audio_chunk(rate: int, pcm: np.ndarray) -> Event:
    return AudioChunk(rate=rate, width=2, channels=1, audio=np.asarray(pcm, "<i2").tobytes()).event()


def audio_stop() -> Event:
    return AudioStop().event()


def transcript(text: str, language: str | None = None) -> Event:
    return Transcript(text=text, language=language).event()


def check_text(text: str, what: str) -> None:
    """Text from a peer is capped like a WebSocket text_query: a 14,000-character event kept the model busy minutes."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{what} of {len(text)} characters is over the {MAX_TEXT_CHARS}-character limit; send shorter text")


class Translator:
    """One connection's events both ways. `source` is the connection's id: its turns' source, its requests' prefix."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.mode: Literal["asr", "turn"] = "asr"  # "turn" after run-pipeline from asr or wake
        self.speak = True  # turn mode: reply audio wanted (end_stage tts)
        self.streaming = False  # between synthesize-start and synthesize-stop
        # An utterance of ours ended and its reply has not started: "heard" until its transcript is published (only
        # addressed words are), then "answering" until ReplyStarted, when it may still wait for another turn.
        self.pending: Literal["heard", "answering"] | None = None
        self.replies: dict[str, str | None] = {}  # reply_id -> request_id of a handle request, None for a spoken turn
        self.audio_open: set[str] = set()
        self.handle_context: dict[str, Context] = {}  # request_id -> context to echo in handled
        self._requests = itertools.count(1)

    @property
    def in_progress(self) -> bool:
        """The peer waits for an answer of ours: its silence is no idleness."""
        return bool(self.replies or self.handle_context) or self.pending is not None

    # -- a peer's events ----------------------------------------------------------------------------------------
    def incoming(self, event: Event) -> Step | None:
        t = event.type
        if Describe.is_type(t):
            return DescribeSelf()
        if Ping.is_type(t):
            text = Ping.from_event(event).text
            return Send(Pong(text=text[:PONG_TEXT_CHARS] if isinstance(text, str) else None).event())
        if Transcribe.is_type(t):
            self.mode = "asr"
            return StartTranscription()
        if RunPipeline.is_type(t):
            return self._run_pipeline(RunPipeline.from_event(event))
        if AudioStart.is_type(t):
            start = AudioStart.from_event(event)
            AudioIn.check(start.rate, start.width, start.channels)
            return OpenAudio()
        if AudioChunk.is_type(t):
            return Audio(AudioChunk.from_event(event))
        if AudioStop.is_type(t):
            return CloseAudio()
        if Synthesize.is_type(t):
            if self.streaming:  # inside a stream it repeats the streamed text, for servers that do not stream
                return None
            text = Synthesize.from_event(event).text
            check_text(text, "synthesize text")
            return Speak(text)
        if SynthesizeStart.is_type(t) or SynthesizeChunk.is_type(t) or SynthesizeStop.is_type(t):
            return self._stream(event)
        if Transcript.is_type(t):
            return self._handle(Transcript.from_event(event))
        return None  # Wyoming peers drop events they do not know (select-program, newer event types): so do we

    def stream_closed(self) -> None:
        """The connection ended the stream itself (its text went over the bound)."""
        self.streaming = False

    def _run_pipeline(self, run: RunPipeline) -> Step | None:
        if run.start_stage == PipelineStage.TTS:
            if not run.announce_text:
                raise ValueError("run-pipeline from the tts stage needs announce_text")
            check_text(run.announce_text, "announce_text")
            return Speak(run.announce_text)
        if run.start_stage not in _AUDIO_START_STAGES:
            raise ValueError(
                f"start_stage {run.start_stage.value} takes text; send a transcript event for a text turn, or "
                "run-pipeline from asr (or wake) with audio"
            )
        self.mode, self.speak = "turn", run.end_stage == PipelineStage.TTS
        return None

    def _stream(self, event: Event) -> Step:
        if SynthesizeStart.is_type(event.type):
            if self.streaming:
                raise ValueError("synthesize-start while a stream is open; send synthesize-stop first")
            self.streaming = True
            return OpenStream()
        if not self.streaming:
            raise ValueError(f"{event.type} without synthesize-start; send synthesize-start, synthesize-chunk..., synthesize-stop")
        if SynthesizeChunk.is_type(event.type):
            return StreamText(SynthesizeChunk.from_event(event).text)
        self.streaming = False
        return CloseStream()

    def _handle(self, said: Transcript) -> Step:
        text = said.text.strip()
        check_text(text, "transcript text")
        if not text:
            return Send(NotHandled(text="nothing to answer: the transcript was empty", context=said.context).event())
        request_id = f"{self.source}-{next(self._requests)}"
        self.handle_context[request_id] = said.context
        return Ask(text, request_id, wyoming_key(said.context, self.source))  # voiced.conversations

    # -- the pipeline's messages for this peer ------------------------------------------------------------------
    def on_message(self, msg: ServerMessage) -> list[Event]:
        if isinstance(msg, m.SpeechStarted):
            return [VoiceStarted(timestamp=int(msg.t * 1000)).event()]
        if isinstance(msg, m.SpeechEnded):
            self.pending = "heard"
            return [VoiceStopped(timestamp=int(msg.t_end * 1000)).event()]
        if isinstance(msg, m.Transcript):
            if self.pending is not None and msg.text:
                self.pending = "answering"
            return [transcript(msg.text)]
        if isinstance(msg, m.ReplyStarted):
            handle = msg.request_id is not None and msg.request_id in self.handle_context
            self.replies[msg.reply_id] = msg.request_id if handle else None
            if not handle:
                self.pending = None
            return []
        if isinstance(msg, m.ReplyDone):
            if msg.reply_id not in self.replies:
                return []
            request_id = self.replies.pop(msg.reply_id)
            context = self.handle_context.pop(request_id, None) if request_id is not None else None
            info = {"reply_id": msg.reply_id, "interrupted": msg.interrupted, "timings_ms": msg.timings_ms}
            return [Handled(text=msg.text, context={**(context or {}), "voiced": info}).event()]
        if isinstance(msg, m.Error):
            return self._error(msg)
        if isinstance(msg, m.TurnIgnored) and self.pending == "heard":
            self.pending = None  # the pipeline says so explicitly: this utterance gets no reply
            return [NotHandled(text=f"not answered: {msg.reason.replace('_', ' ')}").event()]
        return []

    def _error(self, msg: m.Error) -> list[Event]:
        if msg.request_id is not None and msg.request_id in self.handle_context:
            context = self.handle_context.pop(msg.request_id)
            self.replies = {k: r for k, r in self.replies.items() if r != msg.request_id}
            return [NotHandled(text=msg.message, context=context).event()]
        if self.pending is not None or any(r is None for r in self.replies.values()):
            self.pending = None  # a failed turn ends with this error: it has no reply to wait for
            self.replies = {k: r for k, r in self.replies.items() if r is not None}
            return [error(msg.code, msg.message)]
        return []

    def on_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> list[Event]:
        if reply_id not in self.replies or self.replies[reply_id] is not None or not self.speak:
            return []
        out = []
        if reply_id not in self.audio_open:
            self.audio_open.add(reply_id)
            out.append(audio_start(rate))
        out.append(audio_chunk(rate, pcm))
        return out

    def on_audio_end(self, reply_id: str) -> list[Event]:
        if reply_id not in self.audio_open:
            return []
        self.audio_open.discard(reply_id)
        return [audio_stop()]
