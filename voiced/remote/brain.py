"""The brain served elsewhere: a model server (vLLM, llama.cpp's server, Ollama) answers over chat completions.

Everything else stays voiced's own: VAD, end of turn, activation, memory (kept here, sent as text every turn),
the clause chunker and TTS, barge-in, fan-out. Two ways to send a spoken turn (`brain.send`):
- transcript: the local recogniser of model.bundle (the default bundle's Whisper) gives words, so the adaptive
  end of turn, wake phrases and stop words work as with the embedded engine;
- audio: the VAD segment itself goes as OpenAI's input_audio (the encoder-free path of a model that hears, such
  as Gemma 4 12B); see voiced.remote.request for where the clip sits in the prompt and why.

A server that is down does not stop the daemon: the turn gets a short spoken line and an `unavailable` error
event naming the fix, and probes (GET /v1/models) on a back-off schedule log when it is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from voiced.assistant import FALLBACK_SYSTEM_PROMPT, SPOKEN
from voiced.audio import RATE
from voiced.brain import BrainUnavailable
from voiced.config import BrainSettings, ConfigError, ModelSettings
from voiced.conversations import HasConversations, Memories
from voiced.model.bundle import Bundle
from voiced.model.engine import Delta
from voiced.model.manifest import AsrAudio
from voiced.remote import request
from voiced.remote.client import ChatClient, Failure, ServerFailure
from voiced.remote.link import Link, LinkState

if TYPE_CHECKING:
    from voiced.model.asr import Recognizer

log = logging.getLogger(__name__)


def read_api_key(settings: BrainSettings) -> str | None:
    """The key from brain.api_key_file, else from the variable brain.api_key_env names; None: the server needs
    none. Never logged; an unreadable file is refused at start with its path, not its content."""
    if settings.api_key_file is not None:
        try:
            key = settings.api_key_file.read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"brain.api_key_file {settings.api_key_file} cannot be read ({e.strerror}); fix the path or its permissions"
            ) from None
        if not key:
            raise ConfigError(f"brain.api_key_file {settings.api_key_file} is empty; put the server's API key in it")
        return key
    return os.environ.get(settings.api_key_env) or None


class RemoteStats:
    """reply_done's model numbers for the last reply: prefill is the server's time to the first token (its
    prefill plus the network), decode the rest; token counts are the server's own `usage` when it sends it."""

    def __init__(self) -> None:
        self.last_stats: dict[str, object] = {}


class RemoteBrain(HasConversations):
    def __init__(
        self, settings: BrainSettings, model: ModelSettings, bundle: Bundle, threads: int | None = None, hotwords: str | None = None
    ):
        self.settings, self.model_settings, self.bundle = settings, model, bundle
        self.recognizer: Recognizer | None = None
        if settings.send == "transcript":
            audio = bundle.manifest.audio
            if not isinstance(audio, AsrAudio):
                raise ConfigError(
                    f"brain.send = 'transcript' needs a recogniser, and model.bundle {bundle.dir.name!r} has none; "
                    "set model.bundle to an ASR bundle (default) or brain.send = 'audio'"
                )
            from voiced.model.asr import recognizer_for

            threads = model.threads if threads is None else threads
            self.recognizer = recognizer_for(
                bundle.dir, audio, threads=model.recognizer_threads(threads), hotwords=hotwords, window_s=model.asr_window_s
            )
        system = model.system_prompt or bundle.manifest.system_prompt or FALLBACK_SYSTEM_PROMPT
        # A conversation per source, as with the embedded engine (voiced.conversations); each request carries the
        # selected one's history, so a switch costs the server a prefill of it, not a lost prefix cache for all.
        self.memories = Memories(system, model.history_turns, model.conversations, model.conversation_idle_s, time.monotonic())
        self.budget = model.history_tokens  # what the system prompt (and its additions) must fit in
        self.client = ChatClient(
            settings.url, read_api_key(settings), settings.connect_timeout_s, settings.first_token_timeout_s, settings.stall_timeout_s
        )
        self.link = Link(settings.retry_initial_s, settings.retry_max_s)
        self.model_name = settings.model  # resolved from /v1/models when empty
        self.dialect = request.Dialect.OPENAI if settings.dialect == "auto" else request.Dialect(settings.dialect)
        self.stats = RemoteStats()
        self.last_scoring_ms = 0.0
        self._lock = threading.Lock()  # probes run on a timer thread, turns on the model thread
        self._timer: threading.Timer | None = None
        self._probe_failure: ServerFailure | None = None  # why the last probe failed (None: it did not)
        self._stt: Recognizer | None = None  # audio mode: a recogniser for Wyoming's speech-to-text, made on demand
        self._stt_lock = threading.Lock()

    # -- what the pipeline asks ---------------------------------------------------------------------------------
    @property
    def transcribes(self) -> bool:
        return self.recognizer is not None

    @property
    def hears_audio(self) -> bool:
        return True  # by the recogniser's words, or the server's model hears the clip itself

    @property
    def conversation(self) -> RemoteStats:
        return self.stats

    def describe(self) -> str:
        name = self.model_name or "(the only model it serves)"
        return f"model server {self.settings.url}, model {name}, sends {self.settings.send}"

    def transcribe(self, pcm: np.ndarray) -> str:
        return self._recogniser().transcribe(pcm).text.strip()

    def _recogniser(self) -> Recognizer:
        """Turns never transcribe in audio mode, but Wyoming's speech-to-text may: the bundle's recogniser is
        then loaded on first use (and `transcribes` stays False: the turns still send the audio)."""
        if self.recognizer is not None:
            return self.recognizer
        with self._stt_lock:
            if self._stt is None:
                audio = self.bundle.manifest.audio
                if not isinstance(audio, AsrAudio):
                    raise RuntimeError(
                        f"model.bundle {self.bundle.dir.name!r} has no recogniser to transcribe with; set model.bundle "
                        "to an ASR bundle (the server's model hears the turns themselves)"
                    )
                from voiced.model.asr import recognizer_for

                m = self.model_settings
                self._stt = recognizer_for(self.bundle.dir, audio, threads=m.recognizer_threads(), window_s=m.asr_window_s)
            return self._stt

    def warm_up(self) -> None:
        """Load the recogniser and look at the server once; a server that is down is logged, not fatal."""
        if self.recognizer is not None:
            self.recognizer.warm_up()
        self.probe()

    def prepare(self, user: str | None, cancel: threading.Event | None = None) -> int:
        return 0  # the server's prefix cache fills on the request itself: nothing to do ahead of it here

    def prepare_in(self, conversation: str, user: str | None) -> int:
        self.select(conversation)
        return 0

    def prepare_next_turn(self) -> int:
        return 0

    def reply(self, user: str, cancel: threading.Event | None = None) -> Iterator[Delta]:
        messages = request.text_messages(self.memory.system_prompt, self.memory.exchanges, user, self.model_settings.history_tokens)
        yield from self._stream(messages, user, cancel)

    def reply_audio(self, pcm: np.ndarray, cancel: threading.Event | None = None) -> Iterator[Delta]:
        s = self.settings
        if len(pcm) > s.max_audio_s * RATE:
            log.warning("turn of %.1f s: only its first %.0f s are sent (one clip per request)", len(pcm) / RATE, s.max_audio_s)
        messages = request.audio_messages(self.memory.system_prompt, self.memory.exchanges, pcm, s.audio_prefix_tokens, s.max_audio_s)
        yield from self._stream(messages, SPOKEN, cancel)

    def addressed_probability(self, pcm: np.ndarray, wake_phrases: Sequence[str], cancel: threading.Event | None = None) -> float:
        raise BrainUnavailable(
            "a model server cannot judge whether speech was addressed to it; in wake mode with brain.send = 'audio' "
            "set activation.wake_detector = 'model' (or brain.send = 'transcript')"
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.client.close()

    # -- the stream ---------------------------------------------------------------------------------------------
    def _options(self) -> request.Options:
        m = self.model_settings
        return request.Options(self.model_name, m.max_new_tokens, m.temperature, m.top_p, self.dialect, self.settings.thinking)

    def _stream(self, messages: list[request.Message], user: str, cancel: threading.Event | None) -> Iterator[Delta]:
        t0 = time.perf_counter()
        first = last = t0
        parts: list[str] = []
        stats: dict[str, object] = {"prefill_tokens": None, "prefill_ms": 0.0, "decode_tokens": 0, "decode_ms": 0.0, "finish": ""}
        self.stats.last_stats = stats
        usage: tuple[int | None, int | None] = (None, None)
        try:
            if self.link.state is not LinkState.UP or not self.model_name:
                self.probe()  # a server that came back, or a model name to learn, before the request
                if self._probe_failure is not None and (self.link.state is LinkState.WRONG_MODEL or not self.model_name):
                    raise self._probe_failure
            for chunk in self.client.stream(request.body(messages, self._options()), cancel):
                if chunk.prompt_tokens is not None or chunk.completion_tokens is not None:
                    usage = (chunk.prompt_tokens, chunk.completion_tokens)
                if chunk.finish:
                    stats["finish"] = chunk.finish
                if chunk.text:
                    last = time.perf_counter()
                    if not parts:
                        first = last
                    parts.append(chunk.text)
                    yield Delta(chunk.text, [])
        except ServerFailure as e:
            self._failed(e)
            partial = "".join(parts).strip()
            if partial:  # what was heard of the reply stays, cut off, so the next turn knows it
                self.memory.add(user, partial, interrupted=True)
            yield Delta((" ... " if partial else "") + e.spoken, [])
            raise
        finally:
            stats["prefill_ms"] = round((first - t0) * 1e3, 1) if parts else 0.0
            stats["first_token_ms"] = stats["prefill_ms"]
            stats["decode_ms"] = round((last - first) * 1e3, 1)
            # Without the server's usage (llama-cpp-python sends none) the prompt's tokens are unknown and left
            # out, not guessed; streamed servers send one token per content chunk, so chunks count the reply.
            stats["prefill_tokens"] = usage[0]
            stats["decode_tokens"] = usage[1] if usage[1] is not None else len(parts)
        if cancel is not None and cancel.is_set():
            stats["finish"] = "cancelled"
        if self.link.succeeded():
            log.info("model server %s answers again", self.settings.url)

    # -- the link -----------------------------------------------------------------------------------------------
    def probe(self) -> LinkState:
        """GET /v1/models: reachable? serving our model (learning its name when unset, and its dialect)?"""
        with self._lock:
            self._probe_failure = None
            try:
                served = self.client.models(self.settings.connect_timeout_s + 5.0)
            except ServerFailure as e:
                return self._probe_failed(e)
            except TimeoutError:
                return self._probe_failed(
                    ServerFailure(
                        Failure.STALLED, f"model server {self.settings.url} did not list its models in time. Fix: check its load and log"
                    )
                )
            ids = [m.id for m in served]
            want = self.settings.model
            match = next((m for m in served if m.id == want), None) if want else (served[0] if len(served) == 1 else None)
            if match is None:
                why = (
                    f"model server {self.settings.url} serves {ids}, not {want!r}. Fix: set brain.model to one of them"
                    if want
                    else f"model server {self.settings.url} serves {len(ids)} models {ids}. Fix: set brain.model to one of them"
                )
                return self._probe_failed(ServerFailure(Failure.WRONG_MODEL, why))
            self.model_name = match.id
            if self.settings.dialect == "auto":
                self.dialect = request.Dialect.from_owner(match.owned_by)
            was = self.link.state
            self.link.succeeded()
            if was is not LinkState.UP:
                log.info("brain: %s (dialect %s)", self.describe(), self.dialect.value)
            return self.link.state

    def _probe_failed(self, e: ServerFailure) -> LinkState:
        self._probe_failure = e
        self._failed(e)
        return self.link.state

    def _failed(self, e: ServerFailure) -> None:
        first = self.link.state not in (LinkState.DOWN, LinkState.WRONG_MODEL)
        state = LinkState.WRONG_MODEL if e.failure is Failure.WRONG_MODEL else LinkState.DOWN
        delay = self.link.failed(time.monotonic(), str(e), state)
        (log.warning if first else log.debug)("%s (next look in %.0f s)", e, delay)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(delay, self._probe_due)
        self._timer.daemon = True
        self._timer.start()

    def _probe_due(self) -> None:
        if self.link.probe_due(time.monotonic()):
            self.probe()
