"""One Wyoming peer: its reader under the input limits, one outbox and one writer, and the Steps its events ask
for (voiced.server.wyoming.translate), carried out through the SpeechBackend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
from wyoming.event import Event
from wyoming.server import AsyncEventHandler

from protocol.messages import ServerMessage
from voiced.server.logsafe import LimitedLog, printable
from voiced.server.wyoming import translate as tr
from voiced.server.wyoming.audio import AudioIn, AudioMeter
from voiced.server.wyoming.framing import InputLimit, read_event
from voiced.server.wyoming.info import describe_info
from voiced.server.wyoming.stt import Transcription
from voiced.server.wyoming.tts import SynthesisStream, TextTooLong

if TYPE_CHECKING:
    from voiced.server.wyoming.server import WyomingServer

log = logging.getLogger(__name__)
limited = LimitedLog(log)

LINGER_S = 1.0  # after refusing a peer: how long its unread input is read away so that closing sends FIN, not RST
OUTBOX_EVENTS = 4096  # events queued for one client (~400 s of reply audio) before it counts as stalled


def event_bytes(event: Event) -> int:
    """An event's size for the outbox bound: its payload, plus its data (small for audio, a ping's text, a reply)."""
    data = event.data
    return len(event.payload or b"") + (sum(len(str(k)) + len(str(v)) for k, v in data.items()) if data else 0)


class Connection(AsyncEventHandler):
    """One Wyoming peer. Requests are answered in order; pipeline events for its turns arrive via the server's
    Publisher at any time, so every outgoing event goes through one outbox and one writer task."""

    def __init__(self, server: WyomingServer, source: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, full: bool = False):
        super().__init__(reader, writer)
        self.server = server
        self.backend = server.backend
        self.limits = server.limits
        self.source = source
        self.full = full  # over the connection cap: told so, then closed
        self.outbox: asyncio.Queue[Event | None] = asyncio.Queue(OUTBOX_EVENTS)
        self.outbox_bytes = 0  # bounded by limits.queue_bytes as well as by OUTBOX_EVENTS
        self.stalled = False  # the peer stopped reading: reported once, disconnected, nothing more queued
        self.events_read = 0
        self.translator = tr.Translator(source)
        self.audio: AudioIn | None = None  # a stream is open
        self.meter = AudioMeter(self.limits, server.budget)
        self.asr = Transcription(self.backend, self.limits.utterance_s, source, self.send)
        self.cancel = threading.Event()
        self.refused = False  # went over an input limit: told so, and being disconnected
        self._writer_task: asyncio.Task[None] | None = None
        self.stream: SynthesisStream | None = None  # synthesize-start .. synthesize-stop (voiced.server.wyoming.tts)

    # -- output -------------------------------------------------------------------------------------------------
    def send(self, event: Event) -> None:
        if self.stalled:
            return
        size = event_bytes(event)
        try:
            if self.outbox_bytes + size > self.limits.queue_bytes and not self.outbox.empty():
                raise asyncio.QueueFull
            self.outbox.put_nowait(event)
            self.outbox_bytes += size
        except asyncio.QueueFull:
            self.stalled = True
            self.cancel.set()  # whatever is being made for this peer (a long synthesize) stops now
            limited.log(
                logging.WARNING,
                "stalled",
                "wyoming client %s is not reading (%d events, %d bytes queued); disconnecting it",
                self.source,
                self.outbox.qsize(),
                self.outbox_bytes,
            )
            asyncio.ensure_future(self.stop())

    def error(self, code: str, text: str) -> None:
        self.send(tr.error(code, text))

    async def _write_loop(self) -> None:
        try:
            while (event := await self.outbox.get()) is not None:
                self.outbox_bytes -= event_bytes(event)
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
            self._refuse(
                InputLimit(
                    "server-full",
                    f"{self.limits.connections} Wyoming connections are open (server.max_clients); close one or "
                    "raise server.max_clients, then connect again. Connection closed.",
                )
            )
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
        limits = self.limits
        while True:
            first = self.events_read == 0
            try:
                return await read_event(self.reader, limits, limits.first_event_s if first else limits.idle_s)
            except asyncio.TimeoutError:
                if not first and self.translator.in_progress:
                    continue  # the peer waits for us, not the other way round
                self._refuse(
                    InputLimit(
                        "timeout",
                        f"no event for {limits.first_event_s if first else limits.idle_s:g} s "
                        f"({'server.hello_timeout_s' if first else 'server.idle_timeout_s'}); connect when there is "
                        "something to send, or raise that setting. Connection closed.",
                    )
                )
                return None
            except InputLimit as e:
                self._refuse(e)
                return None
            except ConnectionError:
                return None

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
        self.asr.close()
        self.server.forget(self)
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._writer_task, 1.0)  # what was already answered still goes out
        await self.backend.on_client_disconnect(self.source)

    # -- input --------------------------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        """Bad input answers an `error` event and the connection goes on; EOF or a limit (see InputLimits) ends it."""
        try:
            step = self.translator.incoming(event)
            if step is None:
                log.debug("wyoming client %s: nothing to do for a %s event", self.source, printable(event.type))
            else:
                await self._take(step)
        except InputLimit as e:
            self._refuse(e)
            return False
        except (KeyError, TypeError, ValueError) as e:
            limited.log(
                logging.INFO, "bad-event", "wyoming client %s: bad %s event: %s", self.source, printable(event.type), printable(e, 200)
            )
            self.error("bad-event", f"{event.type[:64]} event rejected: {str(e)[:512]}; see the Wyoming event definitions")
        except Exception as e:
            if limited.allows("internal"):
                log.exception("wyoming client %s: %s failed", self.source, printable(event.type))
            self.error("internal", f"{event.type[:64]} failed: {str(e)[:512]}")
        return True

    async def _take(self, step: tr.Step) -> None:
        if isinstance(step, tr.Send):
            self.send(step.event)
        elif isinstance(step, tr.DescribeSelf):
            self.send(describe_info(self.backend).event())
        elif isinstance(step, tr.StartTranscription):
            self.asr.reset()
        elif isinstance(step, tr.OpenAudio):
            self.audio = AudioIn()
            self.asr.reset()
            if self.translator.mode == "asr":
                self.asr.start()
        elif isinstance(step, tr.Audio):
            await self._audio_chunk(step)
        elif isinstance(step, tr.CloseAudio):
            await self._audio_stop()
        elif isinstance(step, tr.Speak):
            await self._synthesize(step.text)
        elif isinstance(step, tr.OpenStream):
            self.stream = SynthesisStream(
                lambda text: self.backend.synthesize(text, self.cancel),
                lambda: self.backend.tts_sample_rate,
                self.send,
                self.limits.event_bytes,
            )
        elif isinstance(step, tr.StreamText):
            self._stream_text(step.text)
        elif isinstance(step, tr.CloseStream):
            stream, self.stream = self.stream, None
            if stream is not None:
                await stream.stop()
        else:
            await self.backend.on_handle(self.source, step.text, step.request_id, step.conversation)

    async def _audio_chunk(self, step: tr.Audio) -> None:
        chunk = step.chunk
        if self.audio is None:
            if self.translator.mode != "turn":
                self.error("audio-not-started", "audio-chunk before audio-start; send audio-start (rate, width, channels) first")
                return
            self.audio = AudioIn()  # satellites stream chunks after run-pipeline without audio-start, as HA accepts
        self.meter.charge(chunk.rate, chunk.width, chunk.channels, len(chunk.audio))
        pcm = self.audio.push(chunk.rate, chunk.width, chunk.channels, chunk.audio)
        if self.translator.mode == "turn":
            if pcm.size:
                await self.backend.feed(self.source, pcm)
            return
        await self.asr.push(pcm)

    async def _audio_stop(self) -> None:
        if self.audio is None:
            self.error("audio-not-started", "audio-stop without audio-start; send audio-start, audio-chunk..., audio-stop")
            return
        tail, self.audio = self.audio.flush(), None
        if self.translator.mode == "turn":
            if tail.size:
                await self.backend.feed(self.source, tail)
            await self.backend.end_of_stream(self.source)
            return
        await self.asr.stop(tail)

    async def _synthesize(self, text: str) -> None:
        backend = self.backend
        rate, started = backend.tts_sample_rate, False
        async for chunk in backend.synthesize(text, self.cancel):
            if not started:  # the engine's rate is known for sure once it has made audio (the command backend)
                rate, started = backend.tts_sample_rate, True
                self.send(tr.audio_start(rate))
            self.send(tr.audio_chunk(rate, chunk))
        if not started:
            self.send(tr.audio_start(rate))
        self.send(tr.audio_stop())

    def _stream_text(self, text: str) -> None:
        stream = self.stream
        assert stream is not None, "the translator opened the stream"
        try:
            stream.push(text)
        except TextTooLong as e:
            self.stream = None
            self.translator.stream_closed()
            stream.cancel()
            raise ValueError(str(e)) from None

    # -- pipeline events (via the server's Publisher) -----------------------------------------------------------
    def on_message(self, msg: ServerMessage) -> None:
        for event in self.translator.on_message(msg):
            self.send(event)

    def on_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        for event in self.translator.on_audio(reply_id, pcm, rate):
            self.send(event)

    def on_audio_end(self, reply_id: str) -> None:
        for event in self.translator.on_audio_end(reply_id):
            self.send(event)
