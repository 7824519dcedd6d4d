"""voiced's own end of a spoken command on a plain Wyoming speech-to-text stream.

Home Assistant (2026.5 and later) runs its own voice-command segmenter in front of a Wyoming STT only when the
STT says `requires_external_vad: true`: a fixed 0.7 s of silence (its default sensitivity) ends the command,
however it was said. With `server.wyoming_requires_external_vad = false` (the default) voiced says false and
ends the command itself, as it does for its own microphone: the real VAD (voiced.audio.vad) with the adaptive
end-of-turn policy (voiced.audio.endpoint), where at each pause the words so far are transcribed and decide how
long to wait ("turn on the, um ..." holds, "What time is it?" ends early). The `transcript` then goes back while
Home Assistant is still streaming (its stt.py reads and uploads at once, and stops uploading when it arrives),
and the pause's transcription is reused when the speaker did not resume, so the end costs no ASR pass.

A Home Assistant that predates the flag keeps its own segmenter and sends `audio-stop` as before: the command
ends at whichever comes first. With no speech within `audio.max_segment_s` of audio (the longest command voiced
transcribes), what was heard is transcribed rather than refused: without an external VAD nobody else ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from wyoming.event import Event

from voiced.audio import RATE, vad
from voiced.audio.endpoint import TAIL_MS, EndOfTurnPolicy
from voiced.config import Settings
from voiced.server.handler import SpeechBackend
from voiced.server.wyoming.framing import InputLimit
from voiced.server.wyoming.translate import error, transcript

Transcriber = Callable[[np.ndarray], Awaitable[str]]
SPECULATE_AFTER_S = 0.12  # as the pipeline: ASR only pauses that last, the tails of words pause the VAD too


@dataclass(frozen=True)
class Command:
    """A command whose end voiced heard: its audio, and the pause's transcription of it if one was running."""

    audio: np.ndarray
    words: asyncio.Task[str] | None  # heard everything: no speech came after that pause


class CommandEnd:
    """Feeds one transcription's audio through the VAD and the end-of-turn policy; `feed` returns the Command
    once it ended. The speculative pass is a task on the caller's loop (its ASR runs in `transcribe`)."""

    def __init__(self, settings: Settings, transcribe: Transcriber, source: str) -> None:
        self._segmenter = vad.Segmenter(settings.audio, source=source)
        self._policy = EndOfTurnPolicy(settings.activation, settings.audio)
        self._transcribe = transcribe
        self._heard: list[np.ndarray] = []
        self._spec: asyncio.Task[str] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self.ended: Command | None = None

    def feed(self, pcm: np.ndarray) -> Command | None:
        if self.ended is not None:
            return None  # the rest of the upload, until the client notices the transcript
        for ev in self._segmenter.feed(pcm):
            if isinstance(ev, vad.SpeechStarted):
                self._heard = [ev.pre_roll]
                self._drop()
                self._segmenter.hangover_ms = self._policy.at_start().ms
            elif isinstance(ev, vad.SpeechFrames):
                self._heard.append(ev.pcm)
            elif isinstance(ev, vad.SpeechPaused) and self._heard:
                audio = np.concatenate(self._heard)
                tail = audio[-RATE * TAIL_MS // 1000 :]
                self._segmenter.hangover_ms = self._policy.decide(None, tail, words_pending=True).ms
                self._drop()
                self._pending = asyncio.get_running_loop().call_later(SPECULATE_AFTER_S, self._speculate, tail)
            elif isinstance(ev, vad.SpeechResumed):
                self._drop()
                self._segmenter.hangover_ms = self._policy.at_start().ms
            elif isinstance(ev, vad.SpeechDiscarded):
                self._heard = []
                self._drop()
            elif isinstance(ev, vad.SpeechEnded):
                return self._end(ev.audio, ev.reason == "silence")
        return None

    def give_up(self) -> Command:
        """No end of speech within the limit (or the client stopped first): whatever was heard is the command."""
        ended = next((ev for ev in self._segmenter.flush() if isinstance(ev, vad.SpeechEnded)), None)
        return self._end(ended.audio if ended is not None else np.zeros(0, np.int16), False)

    def close(self) -> None:
        self._drop()

    def _end(self, audio: np.ndarray, after_pause: bool) -> Command:
        words = self._spec if after_pause and self._pending is None else None  # a pause too short to guess: none
        if words is None:
            self._drop()
        self._spec, self._pending = None, None
        self.ended = Command(audio, words)
        return self.ended

    def _speculate(self, tail: np.ndarray) -> None:
        self._pending = None
        audio = np.concatenate(self._heard)

        async def run() -> str:
            try:
                text = await self._transcribe(audio)
            except Exception:  # a guess: the end transcribes the whole command
                return ""
            if self._spec is task:
                self._segmenter.hangover_ms = self._policy.decide(text, tail).ms
            return text

        task = self._spec = asyncio.ensure_future(run())

    def _drop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._spec is not None:
            self._spec.cancel()
        self._pending = self._spec = None


class Transcription:
    """A connection's speech to text: the audio of each `audio-start` .. `audio-stop`, ended by voiced (CommandEnd)
    or by the client, and its one `transcript`, made on the backend's ASR thread. `send` queues an event."""

    def __init__(self, backend: SpeechBackend, utterance_s: float, source: str, send: Callable[[Event], None]) -> None:
        self._backend = backend
        self._limit_s = utterance_s  # audio.max_segment_s
        self._source = source
        self._send = send
        self._pcm: list[np.ndarray] = []
        self._samples = 0
        self._command: CommandEnd | None = None

    def reset(self) -> None:
        """`transcribe` or `audio-start`: what was heard before is no part of the next command."""
        self._pcm, self._samples = [], 0

    def start(self) -> None:
        """An audio stream to transcribe opens: voiced ends the command unless the client's VAD does."""
        backend = self._backend
        if backend.settings.server.wyoming_requires_external_vad or not backend.hears_audio:
            return
        if self._command is not None:
            self._command.close()
        self._command = CommandEnd(backend.settings, backend.transcribe, self._source)

    async def push(self, pcm: np.ndarray) -> None:
        self._samples += pcm.size
        over = self._samples > self._limit_s * RATE
        command = self._command
        if command is not None:  # voiced decides where the command ends, and at the limit ends it
            if command.ended is None:
                ended = command.feed(pcm) or (command.give_up() if over else None)
                if ended is not None:
                    await self._ended(ended)
                else:
                    self._pcm.append(pcm)
            return
        if over:
            raise InputLimit(
                "too-long",
                f"more than {self._limit_s:g} s of audio in one transcription (audio.max_segment_s, the longest "
                "utterance voiced transcribes); send audio-stop at the end of each command, or raise "
                "audio.max_segment_s. Connection closed.",
            )
        self._pcm.append(pcm)

    async def stop(self, tail: np.ndarray) -> None:
        """`audio-stop`: the transcript, unless voiced already sent it when it heard the command end."""
        command, self._command = self._command, None
        if command is not None:
            command.close()
            if command.ended is not None:
                self.reset()
                return
        pcm = np.concatenate([*self._pcm, tail]) if self._pcm or tail.size else np.zeros(0, np.int16)
        self.reset()
        if not self._backend.hears_audio:
            self._send(error("unavailable", "this model bundle has no speech recogniser; use an ASR bundle (voiced model prepare default)"))
            return
        text = await self._backend.transcribe(pcm)
        self._send(transcript(text, self._backend.language))

    def close(self) -> None:
        if self._command is not None:
            self._command.close()

    async def _ended(self, command: Command) -> None:
        text = ""
        if command.words is not None:
            with contextlib.suppress(asyncio.CancelledError):
                text = await command.words
        if not text and command.audio.size:
            text = await self._backend.transcribe(command.audio)
        self._pcm = []
        self._send(transcript(text, self._backend.language))
