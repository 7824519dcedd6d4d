"""The model step of a turn: speech segment -> query -> streamed reply text, with memory.

Owns the engine conversation (and so the KV cache) and the conversation memory. Every method that touches
the engine runs on the pipeline's single model thread; `transcribe` runs on the ASR thread. The prompt is
always re-rendered from memory with the model's own chat template and handed to `Conversation.sync`, which
keeps the longest cached prefix: the system prompt and history are prefilled once, not every turn, and a
speculative `prepare` during the end-of-turn silence leaves only the generation for after it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from voiced.config import ModelSettings
from voiced.conversations import HasConversations, Memories
from voiced.model.bundle import Bundle
from voiced.model.engine import Conversation, Delta, Engine, GenerationConfig
from voiced.model.manifest import AsrAudio, ProjectorAudio
from voiced.model.prompt import ChatPrompt

if TYPE_CHECKING:
    from voiced.model.audio_in import AudioProjector

log = logging.getLogger(__name__)

SPOKEN = "(spoken)"  # what memory keeps of a user turn that reached the model as audio, not words
_AUDIO_MARK = "\ue000"  # a private-use character: where the projected audio goes in the rendered prompt

# The addressing pass (wake mode without an ASR): a short yes/no question the model answers about the audio.
ADDRESS_SYSTEM_PROMPT = "You decide whether speech is addressed to a voice assistant called {names}. Answer yes or no."
ADDRESS_QUESTION = "Was this said to {name}, starting with or containing its name?"
_YES_WORDS = ("yes", "Yes", "YES")
_NO_WORDS = ("no", "No", "NO")
# Words before the name in a wake phrase ("hey voiced"): the model is asked about the name, not the greeting.
_GREETINGS = frozenset({"hey", "hi", "hello", "ok", "okay", "yo", "oi", "hay"})

FALLBACK_SYSTEM_PROMPT = (
    "You are a voice assistant. Answer in one or two short spoken sentences, no markdown, no lists, no emoji. "
    "Write numbers as a person would say them."
)


class Assistant(HasConversations):
    def __init__(self, bundle: Bundle, settings: ModelSettings, threads: int | None = None, hotwords: str | None = None):
        """`hotwords` (the wake phrases in wake mode) bias the recogniser toward words it would otherwise miss."""
        self.bundle = bundle
        self.settings = settings
        threads = settings.threads if threads is None else threads
        self.engine = Engine(bundle, threads=threads, drafter=settings.drafter, draft_tokens=settings.draft_tokens)
        self.conversation = self.engine.conversation()
        self.prompt = ChatPrompt(bundle)
        system = settings.system_prompt or bundle.manifest.system_prompt or FALLBACK_SYSTEM_PROMPT
        # One memory per conversation (voiced.conversations); `memory` is the one the engine's cache holds now.
        self.memories = Memories(system, settings.history_turns, settings.conversations, settings.conversation_idle_s, time.monotonic())
        self.budget = min(settings.history_tokens, self.engine.max_context - settings.max_new_tokens)
        self.recognizer = None
        self.projector = None
        audio = bundle.manifest.audio
        if isinstance(audio, AsrAudio):
            from voiced.model.asr import recognizer_for

            self.recognizer = recognizer_for(
                bundle.dir, audio, threads=settings.recognizer_threads(threads), hotwords=hotwords, window_s=settings.asr_window_s
            )
        elif isinstance(audio, ProjectorAudio):
            from voiced.model.audio_in import AudioProjector

            self.projector = AudioProjector(bundle.dir, audio, threads=threads or 2)
            self.audio_spec = audio
        # The addressing pass's own KV cache, made on first use: its prompt would evict the main one's history.
        self._scoring: Conversation | None = None
        self._answer_ids: tuple[list[int], list[int]] | None = None
        self.scoring_passes = 0  # how many addressing passes ran (tests check that a window skips them)
        self.last_scoring_ms = 0.0
        self.last_scoring_prefill = 0  # tokens the last pass ran: its cached prefix is not among them
        self._projected: tuple[bytes, np.ndarray, int] | None = None  # the last segment's frames, by its digest

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
        self.prepare_next_turn()  # warming up is no turn's prefill

    def _fitted(self, user: str) -> list[dict[str, str]]:
        fitted = self.prompt.fit(self.memory.messages(user), self.budget)
        self.memory.drop_oldest(sum(1 for m in fitted if m["role"] == "assistant"))
        return fitted

    def _prompt_ids(self, user: str | None) -> list[int]:
        if user is None:
            messages = self.memory.messages(None)
            return self._next_turn_opening(messages) if messages else []
        return self.prompt.render(self._fitted(user), add_generation_prompt=True)

    def _next_turn_opening(self, messages: list[dict[str, str]]) -> list[int]:
        """System + history + the opening of the next user turn ("<|im_start|>user\n", Gemma's "<|turn>user\n"):
        the tokens that two unlike questions share, so whatever the user says next keeps them. Prefilled while
        idle, they are ~5 tokens (the last reply's close and the next turn's opening, ~80 ms on the 1.5B) fewer
        to prefill once the words are known."""
        try:
            done: list[int] | None = self.prompt.render(messages, add_generation_prompt=False)
        except Exception:  # a template that folds the system prompt into the first user turn renders no bare prefix
            done = None
        try:
            a, b = (self.prompt.render([*messages, {"role": "user", "content": words}]) for words in ("a", "Zq 9?"))
        except Exception:
            if done is None:
                raise
            return done
        n = self._common(a, b)
        if done is not None and (n < len(done) or a[: len(done)] != done):
            return done  # the template rewrites the history once a user turn follows: keep only what surely stays
        return a[:n]

    def prepare(self, user: str | None, cancel: threading.Event | None = None) -> int:
        """Prefill the prompt for `user` (or system + history + the next user turn's opening) ahead of need;
        returns tokens prefilled."""
        try:
            ids = self._prompt_ids(user)
        except Exception as e:  # a template that needs a user turn cannot render the bare prefix: not an error
            log.debug("prefix prefill skipped: %s", e)
            return 0
        return self.conversation.sync(ids, cancel) if ids else 0

    def prepare_in(self, conversation: str, user: str | None) -> int:
        """prepare() in `conversation`'s history: what a speaker's pause prefills belongs to their conversation."""
        self.select(conversation)
        return self.prepare(user)

    def prepare_next_turn(self) -> int:
        """Between turns: prefill the last reply's close and the next user turn's opening, uncounted (no turn's
        prefill: reply_done's prefill_tokens stays what the turn itself had to do)."""
        n = self.prepare(None)
        self.conversation.reset_stats()
        return n

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
        text = self.prompt.render_text(self._fitted(_AUDIO_MARK), add_generation_prompt=True)
        self._feed_audio(self.conversation, text, pcm, cancel)
        yield from self.conversation.generate(self._generation(), cancel)

    def _feed_audio(self, conv: Conversation, text: str, pcm: np.ndarray, cancel: threading.Event | None) -> int:
        """Make `conv` hold `text` (a rendered prompt with one _AUDIO_MARK) with the mark replaced by boa, the
        projected frames of `pcm`, eoa. What precedes the audio stays cached when it did not change; returns the
        tokens prefilled."""
        if self.projector is None:
            raise RuntimeError(f"bundle {self.bundle.dir} has no audio projector; use a Gemma 4 (projector) bundle")
        spec = self.audio_spec
        embeds, n = self._project(self.projector, pcm)
        before, sep, after = text.partition(_AUDIO_MARK)
        if not sep:
            raise RuntimeError(f"the chat template of {self.bundle.dir} dropped the user's turn; rebuild the bundle")
        encode = self.bundle.tokenizer.encode
        head = encode(before, add_special_tokens=False).ids + [spec.boa_id]
        audio_ids = [spec.audio_token_id] * n
        tail = [spec.eoa_id] + encode(after, add_special_tokens=False).ids
        # Placeholder ids are all alike, so cached audio of an earlier turn must never pass for this one's.
        conv.truncate(min(self._common(conv.tokens, head), len(head)))
        done = conv.sync(head, cancel)
        done += conv.append_embeds(embeds, audio_ids, cancel)
        return done + conv.sync(head + audio_ids + tail, cancel)

    def _project(self, projector: AudioProjector, pcm: np.ndarray) -> tuple[np.ndarray, int]:
        """The projector's frames for `pcm`, reused when the same segment comes again: the addressing pass and
        the reply that follows it hear the same audio, and the encoder would otherwise run twice."""
        key = hashlib.blake2b(np.ascontiguousarray(pcm).tobytes(), digest_size=16).digest()
        if self._projected is not None and self._projected[0] == key:
            return self._projected[1], self._projected[2]
        embeds, n = projector.project(pcm)
        self._projected = (key, embeds, n)
        return embeds, n

    def addressed_probability(self, pcm: np.ndarray, wake_phrases: Sequence[str], cancel: threading.Event | None = None) -> float:
        """p(yes) that the speech in `pcm` was said to the assistant named in `wake_phrases`.

        Why: an encoder-free bundle has no transcript to match a wake phrase against, and a separate ASR would
        cost a second model; the model that hears the audio anyway judges it in one forward pass. The pass has
        its own conversation, so the main cache keeps its history, and its own prefix (system prompt and all
        before the audio) stays cached between turns. p(yes) is the softmax over the logits of the tokenizer's
        yes-words against its no-words, renormalised over those two sets only."""
        names = _assistant_names(wake_phrases)
        if not names:
            raise ValueError("addressing needs at least one wake phrase (activation.wake_phrases)")
        t0 = time.perf_counter()
        if self._scoring is None:
            self._scoring = self.engine.conversation()
        if self._answer_ids is None:
            self._answer_ids = answer_token_ids(self.bundle.tokenizer)
        messages = [
            {"role": "system", "content": ADDRESS_SYSTEM_PROMPT.format(names=" or ".join(names))},
            {"role": "user", "content": _AUDIO_MARK + "\n" + ADDRESS_QUESTION.format(name=names[0])},
        ]
        text = self.prompt.render_text(messages, add_generation_prompt=True)
        self.last_scoring_prefill = self._feed_audio(self._scoring, text, pcm, cancel)
        logits = self._scoring.logits
        if logits is None:
            raise RuntimeError("the addressing pass was cancelled before its last token; the turn is not judged")
        yes, no = self._answer_ids
        p = _p_yes(logits, yes, no)
        self.scoring_passes += 1
        self.last_scoring_ms = (time.perf_counter() - t0) * 1e3
        log.debug("addressing pass: p(yes)=%.3f, %d tokens in %.0f ms", p, self.last_scoring_prefill, self.last_scoring_ms)
        return p

    @staticmethod
    def _common(a: list[int], b: list[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n


def _assistant_names(wake_phrases: Sequence[str]) -> list[str]:
    """The names in the wake phrases ("hey voiced" -> "voiced"), in order, each once; a phrase that is all
    greeting is kept whole."""
    names: list[str] = []
    for phrase in wake_phrases:
        words = phrase.split()
        while len(words) > 1 and re.sub(r"\W", "", words[0].lower()) in _GREETINGS:
            words = words[1:]
        name = " ".join(words).strip(" ,.!?")
        if name and name not in names:
            names.append(name)
    return names


def answer_token_ids(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Token ids that start a "yes" and a "no" answer in this tokenizer, computed once per bundle.

    The words that are single tokens (with or without a leading space) are used when both answers have some;
    a tokenizer that splits them (the tiny test one) falls back to each word's first token. Ids that could
    start either answer (a bare space) are dropped, since they say nothing about which it is."""

    def ids(words: Sequence[str], single: bool) -> set[int]:
        out: set[int] = set()
        for w in words:
            for variant in (w, " " + w):
                enc = tokenizer.encode(variant, add_special_tokens=False).ids
                if enc and (len(enc) == 1 or not single):
                    out.add(enc[0])
        return out

    yes, no = ids(_YES_WORDS, True), ids(_NO_WORDS, True)
    if not yes or not no:
        yes, no = ids(_YES_WORDS, False), ids(_NO_WORDS, False)
    both = yes & no
    yes, no = yes - both, no - both
    if not yes or not no:
        raise ValueError("the bundle's tokenizer cannot tell a yes from a no; addressing needs a real tokenizer")
    return sorted(yes), sorted(no)


def _p_yes(logits: np.ndarray, yes: list[int], no: list[int]) -> float:
    """Softmax over the yes- and no-ids' logits only; the yes share of it."""
    z = np.asarray(logits, dtype=np.float64)[yes + no]
    e = np.exp(z - z.max())
    return float(e[: len(yes)].sum() / e.sum())
