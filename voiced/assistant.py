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

SPOKEN = "(spoken)"  # what memory keeps of a user turn that reached the model as audio, not words
_AUDIO_MARK = "\ue000"  # a private-use character: where the projected audio goes in the rendered prompt

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
        self.engine = Engine(bundle, threads=threads, drafter=settings.drafter, draft_tokens=settings.draft_tokens)
        self.conversation = self.engine.conversation()
        self.prompt = ChatPrompt(bundle)
        system = settings.system_prompt or bundle.manifest.system_prompt or FALLBACK_SYSTEM_PROMPT
        self.memory = Memory(system_prompt=system, max_turns=settings.history_turns)
        self.budget = min(settings.history_tokens, self.engine.max_context - settings.max_new_tokens)
        self.recognizer = None
        self.projector = None
        audio = bundle.manifest.audio
        if isinstance(audio, AsrAudio):
            from voiced.model.asr import recognizer_for

            self.recognizer = recognizer_for(bundle.dir, audio, threads=threads, hotwords=hotwords)
        elif isinstance(audio, ProjectorAudio):
            from voiced.model.audio_in import AudioProjector

            self.projector = AudioProjector(bundle.dir, audio, threads=threads or 2)
            self.audio_spec = audio

    @property
    def hears_audio(self) -> bool:
        return self.recognizer is not None or self.projector is not None

    @property
    def transcribes(self) -> bool:
        """Cascade bundles have words before the model runs; encoder-free bundles hear the audio itself."""
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

    def _fitted(self, user: str) -> list[dict[str, str]]:
        fitted = self.prompt.fit(self.memory.messages(user), self.budget)
        self.memory.drop_oldest(sum(1 for m in fitted if m["role"] == "assistant"))
        return fitted

    def _prompt_ids(self, user: str | None) -> list[int]:
        if user is None:
            messages = self.memory.messages(None)
            return self.prompt.render(messages, add_generation_prompt=False) if messages else []
        return self.prompt.render(self._fitted(user), add_generation_prompt=True)

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
        yield from self.conversation.generate(self._generation(), cancel)

    def _generation(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.settings.max_new_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
        )

    def reply_audio(self, pcm: np.ndarray, cancel: threading.Event | None = None) -> Iterator[Delta]:
        """Encoder-free turn: the segment's projected frames spliced between boa and eoa in the user's turn.

        The projector's budget (max_frames, 30 s for Gemma 4) also bounds the prompt the audio adds."""
        spec = self.audio_spec
        embeds, n = self.projector.project(pcm)
        text = self.prompt.render_text(self._fitted(_AUDIO_MARK), add_generation_prompt=True)
        before, sep, after = text.partition(_AUDIO_MARK)
        if not sep:
            raise RuntimeError(f"the chat template of {self.bundle.dir} dropped the user's turn; rebuild the bundle")
        encode = self.bundle.tokenizer.encode
        head = encode(before, add_special_tokens=False).ids + [spec.boa_id]
        audio_ids = [spec.audio_token_id] * n
        tail = [spec.eoa_id] + encode(after, add_special_tokens=False).ids
        conv = self.conversation
        # Placeholder ids are all alike, so cached audio of an earlier turn must never pass for this one's.
        conv.truncate(min(self._common(conv.tokens, head), len(head)))
        conv.sync(head, cancel)
        conv.append_embeds(embeds, audio_ids, cancel)
        conv.sync(head + audio_ids + tail, cancel)
        yield from conv.generate(self._generation(), cancel)

    @staticmethod
    def _common(a: list[int], b: list[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    def remember(self, user: str, reply: str, interrupted: bool) -> None:
        self.memory.add(user, reply, interrupted)

    def forget(self) -> None:
        self.memory.forget()
