"""The model step of a turn: speech segment -> query -> streamed reply text, with memory.

Owns the engine conversation (and so the KV cache) and the conversation memory. Every method that touches
the engine runs on the pipeline's single model thread; `transcribe` runs on the ASR thread. The prompt is
always re-rendered from memory with the model's own chat template and handed to `Conversation.sync`, which
keeps the longest cached prefix: the system prompt and history are prefilled once, not every turn, and a
speculative `prepare` during the end-of-turn silence leaves only the generation for after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np

from voiced.config import ModelSettings
from voiced.memory import Memory
from voiced.model.bundle import Bundle
from voiced.model.engine import Delta, Engine, GenerationConfig
from voiced.model.manifest import AsrAudio, ProjectorAudio
from voiced.model.prompt import ChatPrompt

log = logging.getLogger(__name__)

FALLBACK_SYSTEM_PROMPT = (
    "You are a voice assistant. Answer in one or two short spoken sentences, no markdown, no lists, no emoji. "
    "Write numbers as a person would say them."
)


class Assistant:
    def __init__(self, bundle: Bundle, settings: ModelSettings, threads: int | None = None, hotwords: str | None = None):
        """`hotwords` (the wake phrases in wake mode) bias the recogniser toward words it would otherwise miss."""
        self.bundle = bundle
        self.settings = settings
        threads = settings.threads if threads is None else threads
        self.engine = Engine(bundle, threads=threads)
        self.conversation = self.engine.conversation()
        self.prompt = ChatPrompt(bundle)
        system = settings.system_prompt or bundle.manifest.system_prompt or FALLBACK_SYSTEM_PROMPT
        self.memory = Memory(system_prompt=system, max_turns=settings.history_turns)
        self.budget = min(settings.history_tokens, self.engine.max_context - settings.max_new_tokens)
        self.recognizer = None
        audio = bundle.manifest.audio
        if isinstance(audio, AsrAudio):
            from voiced.model.asr import recognizer_for

            self.recognizer = recognizer_for(bundle.dir, audio, threads=threads, hotwords=hotwords)
        elif isinstance(audio, ProjectorAudio):
            raise NotImplementedError(
                f"bundle {bundle.dir} feeds audio through a projector; the turn pipeline does not splice projected "
                "audio yet. Use an ASR bundle (voiced model prepare default) for spoken turns."
            )

    @property
    def hears_audio(self) -> bool:
        return self.recognizer is not None

    # -- ASR thread ------------------------------------------------------------------------------------------
    def transcribe(self, pcm: np.ndarray) -> str:
        if self.recognizer is None:
            raise RuntimeError(f"bundle {self.bundle.dir} has no audio input; send text queries instead")
        return self.recognizer.transcribe(pcm).text.strip()

    # -- model thread ----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Prefill the system prompt and run the recogniser once, so the first turn pays for neither."""
        if self.recognizer is not None:
            self.recognizer.warm_up()
        self.prepare(None)
        self.conversation.reset_stats()  # warming up is no turn's prefill

    def _prompt_ids(self, user: str | None) -> list[int]:
        messages = self.memory.messages(user)
        if user is None:
            return self.prompt.render(messages, add_generation_prompt=False) if messages else []
        fitted = self.prompt.fit(messages, self.budget)
        kept = sum(1 for m in fitted if m["role"] == "assistant")
        self.memory.drop_oldest(kept)
        return self.prompt.render(fitted, add_generation_prompt=True)

    def prepare(self, user: str | None, cancel: threading.Event | None = None) -> int:
        """Prefill the prompt for `user` (or only system + history) ahead of need; returns tokens prefilled."""
        try:
            ids = self._prompt_ids(user)
        except Exception as e:  # a template that needs a user turn cannot render the bare prefix: not an error
            log.debug("prefix prefill skipped: %s", e)
            return 0
        return self.conversation.sync(ids, cancel) if ids else 0

    def reply(self, user: str, cancel: threading.Event | None = None) -> Iterator[Delta]:
        self.conversation.sync(self._prompt_ids(user), cancel)
        cfg = GenerationConfig(
            max_new_tokens=self.settings.max_new_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
        )
        yield from self.conversation.generate(cfg, cancel)

    def remember(self, user: str, reply: str, interrupted: bool) -> None:
        self.memory.add(user, reply, interrupted)

    def forget(self) -> None:
        self.memory.forget()
