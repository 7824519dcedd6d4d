"""Home Assistant (and any Wyoming peer) talks to voiced over the Wyoming protocol.

The `wyoming` package owns the framing and the TCP/Unix servers; this module only maps its events onto voiced.
What `describe` advertises, and why it is the honest mapping of what voiced is:

- **asr**: the bundle's recogniser (Whisper in the default bundle). Plain Wyoming speech to text, as Home
  Assistant's STT provider drives it: `transcribe` (optional), `audio-start`, `audio-chunk`*, `audio-stop`
  -> one `transcript`. Any rate / width / channels is converted to 16 kHz mono with voiced.audio.resample.
  It needs an external VAD (the client decides when the command ended), so `requires_external_vad` is true.
- **tts**: the configured engine and voice. `synthesize` -> `audio-start` / `audio-chunk`* / `audio-stop` at the
  engine's own rate, streamed as the engine makes it; streamed text (`synthesize-start` / `-chunk` / `-stop`) is
  spoken clause by clause, then `synthesize-stopped` (voiced.server.wyoming_tts). `info`: voiced.server.wyoming_info.
- **handle**: the assistant. Wyoming models "a thing that answers what was said" as an intent *handler*: Home
  Assistant's conversation agent sends the user's words as a `transcript` event and waits for `handled` (or
  `not-handled`) with the text to speak. That is exactly voiced's model step, so the assistant is advertised as a
  handle program (not as an `intent` recogniser: voiced returns an answer, not a structured intent, and it does
  not control the home, so `supports_home_control` is false). The text goes through the same Pipeline as a
  WebSocket `text_query` (the single model thread), in the conversation Home Assistant names in the
  transcript's context (voiced.conversations), as text only: `handled` goes back when the text is complete, and
  nothing is spoken by voiced, since Home Assistant speaks the answer where it was asked (voiced.routing).
- **the spoken turn** (audio in -> spoken reply out) has no program type in `info`: in Wyoming a *satellite*
  streams its microphone to whoever runs the pipeline and gets events back. voiced plays the role Home Assistant
  plays for a satellite: the client sends `run-pipeline` (start_stage asr or wake, end_stage tts), then its
  microphone as `audio-chunk`s (an `audio-start` is welcome but, as with Home Assistant, not required), and
  gets back what Home Assistant would send a satellite: `voice-started` / `voice-stopped` from voiced's VAD,
  `transcript`, the reply audio as `audio-start` / `audio-chunk`* / `audio-stop`, and then `handled` with the
  reply text (`not-handled` when nothing was recognised or the utterance was not addressed to us). The audio
  is fed to the same Pipeline as a WebSocket microphone (`pipeline.feed` under a per-connection source id), so
  VAD, wake phrase, barge-in and memory behave the same; an end_stage other than tts gets the same events
  without the audio.

Wyoming has no authentication: anyone who can reach the port can use the assistant, so bind it to loopback (the
default in the docs) or to a network you trust; a non-loopback bind is logged as a warning.

Input limits, from the settings the WebSocket side uses (so one config bounds both): an event's data and payload
are each at most `server.max_message_bytes`, its header line at most the smaller of that and 64 KiB, checked before
they are read (the wyoming package's own reader allocates whatever length a peer declares); one transcription holds at most
`audio.max_segment_s` of audio, the longest utterance the pipeline ever hands its recogniser; and audio may
arrive at most `server.max_audio_speed` x real time after a `server.audio_burst_s` burst (limits.AudioBudget, as
on the WebSocket side). A peer over a limit gets an `error` event naming it and the fix, and its connection is
closed; other connections are not affected. A spoken turn's audio has no length limit: the pipeline's VAD splits
it at `audio.max_segment_s`, and a satellite waiting for its wake phrase streams for as long as it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.server import AsyncEventHandler, AsyncServer, AsyncTcpServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming.vad import VoiceStarted, VoiceStopped

from protocol import messages as m
from voiced.audio import RATE
from voiced.audio.resample import StreamResampler
from voiced.commands.wyoming import timer_event
from voiced.config import ConfigError, Settings
from voiced.conversations import wyoming_key
from voiced.errors import VoicedError
from voiced.server.limits import AudioBudget, audio_cost_s, is_loopback, raise_open_files_limit
from voiced.server.logsafe import LimitedLog, printable
from voiced.server.wyoming_info import describe_info
from voiced.server.wyoming_stt import Command, CommandEnd
from voiced.server.wyoming_tts import SynthesisStream, TextTooLong
from voiced.server.wyoming_zeroconf import Announcer, announce

log = logging.getLogger(__name__)
limited = LimitedLog(log)

MAX_HEADER_BYTES = 1 << 16  # asyncio's stream buffer limit, which the wyoming servers keep: no longer line is read
LINGER_S = 1.0  # after refusing a peer: how long its unread input is read away so that closing sends FIN, not RST
OUTBOX_EVENTS = 4096  # events queued for one client (~400 s of reply audio) before it counts as stalled
MAX_TEXT_CHARS = next(x.max_length for x in m.TextQuery.model_fields["text"].metadata if hasattr(x, "max_length"))
PONG_TEXT_CHARS = 256  # a ping's text is echoed, but no more of it than this
# The whole door's audio budget, in peers streaming at full speed: a budget per connection alone resets with every
# reconnect, so a peer that reconnects would get a fresh burst each time.
DOOR_STREAMS = 4
_AUDIO_START_STAGES = (PipelineStage.WAKE, PipelineStage.ASR)


class WyomingError(ConfigError):
    """The Wyoming endpoint cannot start; the message names the setting to change (the CLI prints it, exit 2)."""


# -- input limits ---------------------------------------------------------------------------------------------
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
            server.max_message_bytes, settings.audio.max_segment_s, server.max_audio_speed, server.audio_burst_s,
            server.hello_timeout_s, server.idle_timeout_s, server.max_clients, server.client_queue_bytes,
        )

    @property
    def header_bytes(self) -> int:
        return min(MAX_HEADER_BYTES, self.event_bytes)

    def budget(self) -> AudioBudget:
        return AudioBudget(self.audio_speed, self.audio_burst_s)


def _declared_length(header: dict[str, Any], key: str, limit: int) -> int | None:
    """`data_length` / `payload_length` of a header: 0 when absent, None when not a length at all (broken framing)."""
    n = header.get(key)
    if n is None:
        return 0
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return None
    if n > limit:
        raise InputLimit(
            "too-large",
            f"{header['type'][:64]} event declares {key} {n}, over the {limit}-byte limit "
            "(server.max_message_bytes); send smaller events (audio in chunks of about 100 ms), or raise "
            "server.max_message_bytes. Connection closed.",
        )
    return n


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
        line = None
    if line is None or len(line) > limits.header_bytes:
        raise InputLimit(
            "too-large",
            f"event header line over {limits.header_bytes} bytes (the smaller of 64 KiB and server.max_message_bytes); "
            "a header is one short JSON line: send the event's data as data_length bytes after it and audio as its "
            "payload, as the wyoming package's writer does. Connection closed.",
        )
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str) or not isinstance(header.get("data") or {}, dict):
        return None
    data_length = _declared_length(header, "data_length", limits.event_bytes)
    payload_length = _declared_length(header, "payload_length", limits.event_bytes)
    if data_length is None or payload_length is None:
        return None
    data = dict(header.get("data") or {})
    try:
        if data_length:
            more = json.loads(await asyncio.wait_for(reader.readexactly(data_length), wait_s))
            if not isinstance(more, dict):
                return None
            data.update(more)
        payload = await asyncio.wait_for(reader.readexactly(payload_length), wait_s) if payload_length else None
    except (asyncio.IncompleteReadError, ValueError, RecursionError):
        return None
    except asyncio.TimeoutError:
        raise InputLimit(
            "timeout", f"an event stalled mid-way for {wait_s:g} s (server.idle_timeout_s); send each event whole. Connection closed."
        ) from None
    return Event(type=header["type"], data=data, payload=payload)


# -- audio in -------------------------------------------------------------------------------------------------
def _samples(data: bytes, width: int) -> np.ndarray:
    """Little-endian PCM bytes of `width` bytes per sample -> int16 or int32 (what to_mono_int16 takes)."""
    if width == 2:
        return np.frombuffer(data, "<i2")
    if width == 4:
        return np.frombuffer(data, "<i4")
    if width == 1:  # 8-bit PCM is unsigned (WAV convention)
        return ((np.frombuffer(data, np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)  # 24-bit -> the top of an int32
    return (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)


class AudioIn:
    """Wyoming audio chunks of any format -> 16 kHz mono int16, without clicks between chunks.

    Every chunk carries its own format; a change mid-stream (rare, but legal) drains the old resampler and
    starts a new one. Bytes that do not make a whole frame wait for the next chunk.
    """

    def __init__(self) -> None:
        self._fmt: tuple[int, int, int] | None = None
        self._rs: StreamResampler | None = None
        self._rest = b""

    @staticmethod
    def check(rate: int, width: int, channels: int) -> None:
        if not (1000 <= rate <= 384000 and width in (1, 2, 3, 4) and 1 <= channels <= 32):
            raise ValueError(
                f"audio format rate={rate} width={width} channels={channels} is not supported; send PCM at "
                "1000..384000 Hz, width 1-4 bytes, 1-32 channels (16000/2/1 needs no conversion)"
            )

    def push(self, rate: int, width: int, channels: int, data: bytes) -> np.ndarray:
        fmt = (int(rate), int(width), int(channels))
        out = []
        if fmt != self._fmt:
            self.check(*fmt)
            out.append(self.flush())
            self._fmt, self._rs = fmt, StreamResampler(fmt[0], RATE, fmt[2])
        frame = fmt[1] * fmt[2]
        data = self._rest + data
        whole = len(data) - len(data) % frame
        self._rest = data[whole:]
        assert self._rs is not None
        if whole:
            out.append(self._rs.process(_samples(data[:whole], fmt[1])))
        return np.concatenate(out) if len(out) > 1 else (out[0] if out else np.zeros(0, np.int16))

    def flush(self) -> np.ndarray:
        tail = self._rs.flush() if self._rs is not None else np.zeros(0, np.int16)
        self._fmt, self._rs, self._rest = None, None, b""
        return tail


# -- info: voiced.server.wyoming_info ------------------------------------------------------------------------


_DONE = object()


async def _iterate_in_thread(produce: Callable[[], Iterator[np.ndarray]]) -> AsyncIterator[np.ndarray]:
    """Yield what a blocking generator makes, as it makes it, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a late producer: nobody is listening
            loop.call_soon_threadsafe(q.put_nowait, item)

    def work() -> None:
        try:
            for item in produce():
                put(item)
        except BaseException as e:  # re-raised in the consumer's task
            put(e)
        finally:
            put(_DONE)

    job = loop.run_in_executor(None, work)
    while (item := await q.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item
    await job


# -- one connection ---------------------------------------------------------------------------------------------
class _Connection(AsyncEventHandler):
    """One Wyoming peer. Requests are answered in order; pipeline events for its turns arrive via the server's
    Publisher at any time, so every outgoing event goes through one outbox and one writer task."""

    def __init__(
        self, server: WyomingServer, source: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, full: bool = False
    ):
        super().__init__(reader, writer)
        self.server = server
        self.source = source
        self.full = full  # over the connection cap: told so, then closed
        self.outbox: asyncio.Queue[Event | None] = asyncio.Queue(OUTBOX_EVENTS)
        self.outbox_bytes = 0  # bounded by limits.queue_bytes as well as by OUTBOX_EVENTS
        self.stalled = False  # the peer stopped reading: reported once, disconnected, nothing more queued
        self.events_read = 0
        self.mode = "asr"  # or "turn" after run-pipeline
        self.speak = True  # turn mode: reply audio wanted (end_stage tts)
        self.audio: AudioIn | None = None  # a stream is open
        self.asr_pcm: list[np.ndarray] = []
        self.asr_samples = 0
        # An utterance of ours ended and its reply has not started: "heard" until its transcript is published (only
        # addressed words are), then "answering" until ReplyStarted, when it may still wait for another turn.
        self.pending: str | None = None
        self.replies: dict[str, str | None] = {}  # reply_id -> request_id of a handle request, None for a spoken turn
        self.audio_open: set[str] = set()
        self.handle_context: dict[str, dict | None] = {}  # request_id -> context to echo in handled
        self.cancel = threading.Event()
        self.budget = server.limits.budget()
        self.refused = False  # went over an input limit: told so, and being disconnected
        self._requests = itertools.count(1)
        self._writer_task: asyncio.Task | None = None
        self.stream: SynthesisStream | None = None  # synthesize-start .. synthesize-stop (voiced.server.wyoming_tts)
        self.command: CommandEnd | None = None  # voiced ends the transcription's command (voiced.server.wyoming_stt)

    # -- output -------------------------------------------------------------------------------------------------
    def send(self, event: Event) -> None:
        if self.stalled:
            return
        size = _event_bytes(event)
        try:
            if self.outbox_bytes + size > self.server.limits.queue_bytes and not self.outbox.empty():
                raise asyncio.QueueFull
            self.outbox.put_nowait(event)
            self.outbox_bytes += size
        except asyncio.QueueFull:
            self.stalled = True
            self.cancel.set()  # whatever is being made for this peer (a long synthesize) stops now
            limited.log(
                logging.WARNING, "stalled", "wyoming client %s is not reading (%d events, %d bytes queued); disconnecting it",
                self.source, self.outbox.qsize(), self.outbox_bytes,
            )
            asyncio.ensure_future(self.stop())

    def error(self, code: str, text: str) -> None:
        self.send(Error(text=text, code=code).event())

    async def _write_loop(self) -> None:
        try:
            while (event := await self.outbox.get()) is not None:
                self.outbox_bytes -= _event_bytes(event)
                await self.write_event(event)
        except (ConnectionError, RuntimeError) as e:
            self.cancel.set()  # the peer is gone: stop making what nobody will read
            log.debug("wyoming client %s: write failed (%s)", self.source, e)

    async def run(self) -> None:
        """AsyncEventHandler.run with our reader (input limits) and a close that lets the last `error` arrive.

        Ends at EOF, which stop() also makes (it feeds the reader EOF), rather than on the base class's private
        running flag.
        """
        self._writer_task = asyncio.ensure_future(self._write_loop())
        if self.full:
            self._refuse(InputLimit(
                "server-full",
                f"{self.server.limits.connections} Wyoming connections are open (server.max_clients); close one or "
                "raise server.max_clients, then connect again. Connection closed.",
            ))
        try:
            while not self.full and (event := await self._read()) is not None:
                self.events_read += 1
                if not await self.handle_event(event):
                    break
        finally:
            await self.disconnect()
            if self.refused:
                await self._linger()
            self.writer.close()

    async def _read(self) -> Event | None:
        limits = self.server.limits
        while True:
            first = self.events_read == 0
            try:
                return await read_event(self.reader, limits, limits.first_event_s if first else limits.idle_s)
            except asyncio.TimeoutError:
                if not first and self._in_progress():
                    continue  # the peer waits for us, not the other way round
                self._refuse(InputLimit(
                    "timeout",
                    f"no event for {limits.first_event_s if first else limits.idle_s:g} s "
                    f"({'server.hello_timeout_s' if first else 'server.idle_timeout_s'}); connect when there is "
                    "something to send, or raise that setting. Connection closed.",
                ))
                return None
            except InputLimit as e:
                self._refuse(e)
                return None
            except ConnectionError:
                return None

    def _in_progress(self) -> bool:
        return bool(self.replies or self.handle_context) or self.pending is not None

    def _refuse(self, e: InputLimit) -> None:
        limited.log(logging.WARNING, e.code, "wyoming client %s: %s", self.source, printable(e.text, 600))
        self.refused = True
        self.error(e.code, e.text)

    async def _linger(self) -> None:
        """Half-close, then read the peer's unsent rest away for up to LINGER_S before closing.

        Why: closing a socket with unread input makes the kernel answer with RST, and a peer that gets an RST may
        drop the `error` event still in its receive buffer, so it would never learn which limit it hit.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_S
        with contextlib.suppress(OSError, RuntimeError, asyncio.TimeoutError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            while (left := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(self.reader.read(1 << 16), left):
                    break

    async def disconnect(self) -> None:
        self.cancel.set()
        if self.stream is not None:
            self.stream.cancel()
        if self.command is not None:
            self.command.close()
        self.server._forget(self)
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._writer_task, 1.0)  # what was already answered still goes out
        await self.server.pipeline.on_client_disconnect(self.source)

    # -- input --------------------------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        """Bad input answers an `error` event and the connection goes on; EOF or a limit (see InputLimits) ends it."""
        try:
            await self._dispatch(event)
        except InputLimit as e:
            self._refuse(e)
            return False
        except (KeyError, TypeError, ValueError) as e:
            limited.log(logging.INFO, "bad-event", "wyoming client %s: bad %s event: %s", self.source, printable(event.type), printable(e, 200))
            self.error("bad-event", f"{event.type[:64]} event rejected: {str(e)[:512]}; see the Wyoming event definitions")
        except Exception as e:
            if limited.allows("internal"):
                log.exception("wyoming client %s: %s failed", self.source, printable(event.type))
            self.error("internal", f"{event.type[:64]} failed: {str(e)[:512]}")
        return True

    async def _dispatch(self, event: Event) -> None:
        t = event.type
        if Describe.is_type(t):
            self.send(describe_info(self.server.pipeline, self.server.assistant, self.server.tts).event())
        elif Ping.is_type(t):
            text = Ping.from_event(event).text
            self.send(Pong(text=text[:PONG_TEXT_CHARS] if isinstance(text, str) else None).event())
        elif Transcribe.is_type(t):
            self.mode, self.asr_pcm, self.asr_samples = "asr", [], 0
        elif RunPipeline.is_type(t):
            await self._run_pipeline(RunPipeline.from_event(event))
        elif AudioStart.is_type(t):
            start = AudioStart.from_event(event)
            AudioIn.check(start.rate, start.width, start.channels)
            self.audio, self.asr_pcm, self.asr_samples = AudioIn(), [], 0
            self._start_command()
        elif AudioChunk.is_type(t):
            await self._audio_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(t):
            await self._audio_stop()
        elif Synthesize.is_type(t):
            if self.stream is None:  # inside a stream it repeats the streamed text, for servers that do not stream
                await self._synthesize(Synthesize.from_event(event).text)
        elif SynthesizeStart.is_type(t) or SynthesizeChunk.is_type(t) or SynthesizeStop.is_type(t):
            await self._synthesis_stream(event)
        elif Transcript.is_type(t):
            await self._handle(Transcript.from_event(event))
        else:  # Wyoming peers drop events they do not know (select-program, newer event types): so do we
            log.debug("wyoming client %s: ignoring %s event", self.source, printable(t))

    async def _run_pipeline(self, run: RunPipeline) -> None:
        if run.start_stage == PipelineStage.TTS:
            if not run.announce_text:
                raise ValueError("run-pipeline from the tts stage needs announce_text")
            _check_text(run.announce_text, "announce_text")
            await self._synthesize(run.announce_text)
            return
        if run.start_stage not in _AUDIO_START_STAGES:
            raise ValueError(
                f"start_stage {run.start_stage.value} takes text; send a transcript event for a text turn, or "
                "run-pipeline from asr (or wake) with audio"
            )
        self.mode, self.speak = "turn", run.end_stage == PipelineStage.TTS

    async def _audio_chunk(self, chunk: AudioChunk) -> None:
        if self.audio is None:
            if self.mode != "turn":
                self.error("audio-not-started", "audio-chunk before audio-start; send audio-start (rate, width, channels) first")
                return
            self.audio = AudioIn()  # satellites stream chunks after run-pipeline without audio-start, as HA accepts
        self._spend(chunk)
        pcm = self.audio.push(chunk.rate, chunk.width, chunk.channels, chunk.audio)
        if self.mode == "turn":
            if pcm.size:
                await self.server.pipeline.feed(self.source, pcm)
            return
        self.asr_samples += pcm.size
        limit_s = self.server.limits.utterance_s
        if self.command is not None:  # voiced decides where the command ends, and at the limit ends it
            if self.command.ended is None:
                ended = self.command.feed(pcm) or (self.command.give_up() if self.asr_samples > limit_s * RATE else None)
                if ended is not None:
                    await self._command_transcript(ended)
                else:
                    self.asr_pcm.append(pcm)
            return
        if self.asr_samples > limit_s * RATE:
            raise InputLimit(
                "too-long",
                f"more than {limit_s:g} s of audio in one transcription (audio.max_segment_s, the longest utterance "
                "voiced transcribes); send audio-stop at the end of each command, or raise audio.max_segment_s. "
                "Connection closed.",
            )
        self.asr_pcm.append(pcm)

    def _spend(self, chunk: AudioChunk) -> None:
        """Charge the chunk to this peer's audio budget (its duration, or its bytes for costly formats: limits.
        audio_cost_s), before any resampling work is done for it."""
        AudioIn.check(chunk.rate, chunk.width, chunk.channels)
        seconds = audio_cost_s(len(chunk.audio), chunk.rate, chunk.width, chunk.channels)
        if not self.server.budget.take(seconds):
            limits = self.server.limits
            raise InputLimit(
                "rate-limited",
                f"audio from all Wyoming peers together arrives faster than {limits.audio_speed * DOOR_STREAMS:g}x real "
                f"time ({DOOR_STREAMS} x server.max_audio_speed); stream audio as it is recorded, or raise "
                "server.max_audio_speed. Connection closed.",
            )
        if not self.budget.take(seconds):
            limits = self.server.limits
            raise InputLimit(
                "rate-limited",
                f"audio arrives faster than {limits.audio_speed:g}x real time after a {limits.audio_burst_s:g} s burst "
                "(server.max_audio_speed, server.audio_burst_s); stream audio as it is recorded, or raise those "
                "settings. Connection closed.",
            )

    async def _audio_stop(self) -> None:
        if self.audio is None:
            self.error("audio-not-started", "audio-stop without audio-start; send audio-start, audio-chunk..., audio-stop")
            return
        tail, self.audio = self.audio.flush(), None
        if self.mode == "turn":
            if tail.size:
                await self.server.pipeline.feed(self.source, tail)
            await self.server.pipeline.end_of_stream(self.source)
            return
        command, self.command = self.command, None
        if command is not None:
            command.close()
            if command.ended is not None:  # its transcript went back when voiced heard the command end
                self.asr_pcm, self.asr_samples = [], 0
                return
        pcm = np.concatenate([*self.asr_pcm, tail]) if self.asr_pcm or tail.size else np.zeros(0, np.int16)
        self.asr_pcm, self.asr_samples = [], 0
        assistant = self.server.assistant
        if not assistant.hears_audio:
            self.error("unavailable", "this model bundle has no speech recogniser; use an ASR bundle (voiced model prepare default)")
            return
        text = await asyncio.get_running_loop().run_in_executor(None, assistant.transcribe, pcm)
        language = getattr(assistant.bundle.manifest.audio, "language", None)
        self.send(Transcript(text=text, language=language).event())

    async def _synthesize(self, text: str) -> None:
        _check_text(text, "synthesize text")
        tts = self.server.tts
        rate, started = tts.sample_rate, False
        async for chunk in _iterate_in_thread(lambda: tts.synthesize(text, self.cancel)):
            if not started:  # the engine's rate is known for sure once it has made audio (the command backend)
                rate, started = tts.sample_rate, True
                self.send(AudioStart(rate=rate, width=2, channels=1).event())
            self.send(AudioChunk(rate=rate, width=2, channels=1, audio=np.asarray(chunk, "<i2").tobytes()).event())
        if not started:
            self.send(AudioStart(rate=rate, width=2, channels=1).event())
        self.send(AudioStop().event())

    def _start_command(self) -> None:
        assistant = self.server.assistant
        if self.mode != "asr" or self.server.pipeline.settings.server.wyoming_requires_external_vad or not assistant.hears_audio:
            return
        if self.command is not None:
            self.command.close()
        loop = asyncio.get_running_loop()
        self.command = CommandEnd(self.server.pipeline.settings, lambda pcm: loop.run_in_executor(None, assistant.transcribe, pcm), self.source)

    async def _command_transcript(self, command: Command) -> None:
        text = ""
        if command.words is not None:
            with contextlib.suppress(asyncio.CancelledError):
                text = await command.words
        assistant = self.server.assistant
        if not text and command.audio.size:
            text = await asyncio.get_running_loop().run_in_executor(None, assistant.transcribe, command.audio)
        self.asr_pcm = []
        self.send(Transcript(text=text, language=getattr(assistant.bundle.manifest.audio, "language", None)).event())

    async def _synthesis_stream(self, event: Event) -> None:
        if SynthesizeStart.is_type(event.type):
            if self.stream is not None:
                raise ValueError("synthesize-start while a stream is open; send synthesize-stop first")
            tts = self.server.tts
            self.stream = SynthesisStream(
                lambda text: _iterate_in_thread(lambda: tts.synthesize(text, self.cancel)),
                lambda: tts.sample_rate, self.send, self.server.limits.event_bytes,
            )
            return
        if self.stream is None:
            raise ValueError(f"{event.type} without synthesize-start; send synthesize-start, synthesize-chunk..., synthesize-stop")
        if SynthesizeChunk.is_type(event.type):
            try:
                self.stream.push(SynthesizeChunk.from_event(event).text)
            except TextTooLong as e:
                self.stream, stream = None, self.stream
                stream.cancel()
                raise ValueError(str(e)) from None
            return
        stream, self.stream = self.stream, None
        await stream.stop()

    async def _handle(self, transcript: Transcript) -> None:
        text = transcript.text.strip()
        _check_text(text, "transcript text")
        if not text:
            self.send(NotHandled(text="nothing to answer: the transcript was empty", context=transcript.context).event())
            return
        request_id = f"{self.source}-{next(self._requests)}"
        self.handle_context[request_id] = transcript.context
        conversation = wyoming_key(transcript.context, self.source)  # voiced.conversations
        await self.server.pipeline.on_handle(self.source, text, request_id, conversation)

    # -- pipeline events (via the server's Publisher) -----------------------------------------------------------
    def on_message(self, msg: Any) -> None:
        if isinstance(msg, m.SpeechStarted):
            self.send(VoiceStarted(timestamp=int(msg.t * 1000)).event())
        elif isinstance(msg, m.SpeechEnded):
            self.pending = "heard"
            self.send(VoiceStopped(timestamp=int(msg.t_end * 1000)).event())
        elif isinstance(msg, m.Transcript):
            self.send(Transcript(text=msg.text).event())
            if self.pending is not None and msg.text:
                self.pending = "answering"
        elif isinstance(msg, m.ReplyStarted):
            handle = msg.request_id is not None and msg.request_id in self.handle_context
            self.replies[msg.reply_id] = msg.request_id if handle else None
            if not handle:
                self.pending = None
        elif isinstance(msg, m.ReplyDone):
            if msg.reply_id not in self.replies:
                return
            request_id = self.replies.pop(msg.reply_id)
            context = self.handle_context.pop(request_id, None) if request_id is not None else None
            info = {"reply_id": msg.reply_id, "interrupted": msg.interrupted, "timings_ms": msg.timings_ms}
            self.send(Handled(text=msg.text, context={**(context or {}), "voiced": info}).event())
        elif isinstance(msg, m.Error):
            if msg.request_id is not None and msg.request_id in self.handle_context:
                context = self.handle_context.pop(msg.request_id)
                self.replies = {k: r for k, r in self.replies.items() if r != msg.request_id}
                self.send(NotHandled(text=msg.message, context=context).event())
            elif self.pending is not None or any(r is None for r in self.replies.values()):
                self.pending = None  # a failed turn ends with this error: it has no reply to wait for
                self.replies = {k: r for k, r in self.replies.items() if r is not None}
                self.error(msg.code, msg.message)
        elif isinstance(msg, m.TurnIgnored) and self.pending == "heard":
            self.pending = None  # the pipeline says so explicitly: this utterance gets no reply
            self.send(NotHandled(text=f"not answered: {msg.reason.replace('_', ' ')}").event())

    def on_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        if reply_id not in self.replies or self.replies[reply_id] is not None or not self.speak:
            return
        if reply_id not in self.audio_open:
            self.audio_open.add(reply_id)
            self.send(AudioStart(rate=rate, width=2, channels=1).event())
        self.send(AudioChunk(rate=rate, width=2, channels=1, audio=np.asarray(pcm, "<i2").tobytes()).event())

    def on_audio_end(self, reply_id: str) -> None:
        if reply_id in self.audio_open:
            self.audio_open.discard(reply_id)
            self.send(AudioStop().event())


def _check_text(text: str, what: str) -> None:
    """Text from a peer is capped like a WebSocket text_query: a 14,000-character event kept the model busy minutes."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{what} of {len(text)} characters is over the {MAX_TEXT_CHARS}-character limit; send shorter text")


def _event_bytes(event: Event) -> int:
    """An event's size for the outbox bound: its payload, plus its data (small for audio, a ping's text, a reply)."""
    data = event.data
    return len(event.payload or b"") + (sum(len(str(k)) + len(str(v)) for k, v in data.items()) if data else 0)


# -- the server -------------------------------------------------------------------------------------------------
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

    def __init__(self, uri: str, pipeline: Any, assistant: Any, tts: Any) -> None:
        _check_uri(uri)
        self.uri = uri
        self.pipeline, self.assistant, self.tts = pipeline, assistant, tts
        self.limits = InputLimits.from_settings(pipeline.settings)
        self.budget = AudioBudget(self.limits.audio_speed * DOOR_STREAMS, self.limits.audio_burst_s * DOOR_STREAMS)
        self._server: AsyncServer | None = None
        self._conns: dict[str, _Connection] = {}
        self._replies: dict[str, _Connection] = {}
        self._ids = itertools.count(1)
        self._registered = False
        self._announcer: Announcer | None = None  # zeroconf (voiced.server.wyoming_zeroconf)

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
            raise WyomingError(f"cannot serve Wyoming on {self.uri}: {e.strerror or e}; pick a free port in server.wyoming (--wyoming)") from None
        self._server = server
        if not self._registered:  # only once bound: a server that failed to start must not linger as a sink
            self.pipeline.add_publisher(self)
            self._registered = True
        log.info("serving Wyoming on %s", self.url)
        self._announcer = await announce(self.uri, self.port, self.pipeline.settings.server.wyoming_zeroconf)

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

    def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Connection:
        full = len(self._conns) >= self.limits.connections
        conn = _Connection(self, f"wyoming-{next(self._ids)}", reader, writer, full=full)
        if not full:
            self._conns[conn.source] = conn
        limited.log(logging.INFO, "connect", "wyoming client %s connected from %s%s", conn.source, writer.get_extra_info("peername"), " (over the cap: refused)" if full else "")
        return conn

    def _forget(self, conn: _Connection) -> None:
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

    def broadcast(self, msg: Any) -> None:
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


def wyoming_endpoint(uri: str | None, pipeline: Any, assistant: Any, tts: Any) -> contextlib.AbstractAsyncContextManager:
    """`async with` this around the daemon's life; nothing at all when server.wyoming is not set."""
    return WyomingServer(uri, pipeline, assistant, tts) if uri else contextlib.nullcontext()


async def serve_wyoming(uri: str, pipeline: Any, assistant: Any, tts: Any, stop_event: asyncio.Event) -> None:
    """Serve Wyoming until `stop_event` is set. A bind failure raises WyomingError at once (naming the fix)."""
    async with WyomingServer(uri, pipeline, assistant, tts):
        await stop_event.wait()
