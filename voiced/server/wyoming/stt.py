"""voiced's own end of a spoken command on a plain Wyoming speech-to-text stream.

Home Assistant (2026.5 and later) runs its own voice-command segmenter in front of a Wyoming STT only when the
STT says `requires_external_vad: true`: a fixed 0.7 s of silence (its default sensitivity) ends the command,
however it was said. With `server.wyoming_requires_external_vad = false` (the default) voiced says false and
ends the command itself, as it does for its own microphone: the daemon's Listener (voiced.turn.listener: the
real VAD with the adaptive end-of-turn policy), where at each pause the words so far are transcribed and decide how
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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from wyoming.event import Event

from voiced.audio import RATE
from voiced.audio.endpoint import EndOfTurnPolicy
from voiced.config import Settings
from voiced.server.handler import SpeechBackend
from voiced.server.wyoming.framing import InputLimit
from voiced.server.wyoming.translate import error, transcript
from voiced.turn.listener import Event as Event_
from voiced.turn.listener import Hearing, Listener, Transcribe, UserTurn

Transcriber = Callable[[np.ndarray], Awaitable[str]]


@dataclass(frozen=True)
class Command:
    """A command whose end voiced heard: its audio, and the pause's transcription of it if one was made."""

    audio: np.ndarray
    words: asyncio.Future[str] | None  # heard everything: no speech came after that pause


class CommandEnd:
    """One transcription's audio through the daemon's own Listener (voiced.turn.listener: the VAD, the adaptive
    end-of-turn policy and the guess at a pause, as for any microphone); `feed` returns the Command once it
    ended. The guesses the Listener asks for are tasks on the caller's loop (their ASR runs in `transcribe`)."""

    def __init__(self, settings: Settings, transcribe: Transcriber, source: str) -> None:
        # Every command is addressed (Home Assistant decided that), and nothing is prefilled here.
        act = settings.activation.model_copy(update={"mode": "always", "prefill_while_speaking_s": 0.0})
        policy = EndOfTurnPolicy(act, settings.audio)
        self._listener = Listener(source, settings.audio, act, policy, Hearing(transcribes=True, turn_model=False))
        self._transcribe = transcribe
        self._guesses: dict[int, asyncio.Task[str]] = {}
        self.ended: Command | None = None

    def feed(self, pcm: np.ndarray) -> Command | None:
        if self.ended is not None:
            return None  # the rest of the upload, until the client notices the transcript
        return self._on(self._listener.feed(pcm, time.monotonic()))

    def give_up(self) -> Command:
        """No end of speech within the limit (or the client stopped first): whatever was heard is the command."""
        return self._on(self._listener.flush()) or self._end(np.zeros(0, np.int16), None)

    def close(self) -> None:
        for task in self._guesses.values():
            task.cancel()
        self._guesses.clear()

    def _on(self, events: list[Event_]) -> Command | None:
        for ev in events:
            if isinstance(ev, Transcribe) and ev.guess:
                self._guesses[ev.job] = asyncio.ensure_future(self._guess(ev.job, ev.audio))
            elif isinstance(ev, UserTurn):
                words: asyncio.Future[str] | None = None
                if ev.guess:  # the guess's words had landed: they are the command's
                    words = asyncio.get_running_loop().create_future()
                    words.set_result(ev.guess)
                elif ev.guess_job is not None:
                    words = self._guesses.pop(ev.guess_job, None)
                return self._end(ev.audio, words)
        return None

    async def _guess(self, job: int, audio: np.ndarray) -> str:
        try:
            text = await self._transcribe(audio)
        except Exception:  # a guess: the end transcribes the whole command
            return ""
        self._listener.on_guess(job, text, None, time.monotonic())
        return text

    def _end(self, audio: np.ndarray, words: asyncio.Future[str] | None) -> Command:
        for job, task in list(self._guesses.items()):
            if task is not words:
                task.cancel()
        self._guesses.clear()
        self.ended = Command(audio, words)
        return self.ended


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
