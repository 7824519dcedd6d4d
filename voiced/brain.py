"""What the pipeline needs of a model: the seam between the turn and whatever answers it.

Two brains fill it: `voiced.assistant.Assistant` (the embedded engine, its KV cache and memory in this process)
and `voiced.remote.brain.RemoteBrain` (a model served elsewhere over OpenAI's chat completions: vLLM,
llama.cpp's server, Ollama). The pipeline is typed against this Protocol, so neither is duck-typed and a third
brain knows exactly what it must offer. Which one a daemon runs is configuration (`brain.kind`), chosen by
`make_brain`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from protocol.messages import ErrorCode
from voiced.errors import VoicedError
from voiced.model.engine import Delta

if TYPE_CHECKING:
    from voiced.config import Settings
    from voiced.model.bundle import Bundle


class TurnStats(Protocol):
    """Where the last reply's numbers are read from (prefill/decode tokens and ms; reply_done's keys)."""

    @property
    def last_stats(self) -> Mapping[str, object]: ...


@runtime_checkable
class Brain(Protocol):
    """Speech or words in, streamed reply text out, with the conversation remembered between turns.

    Threads: `transcribe` runs on the pipeline's ASR thread; every other method on its single model thread.
    `cancel` (barge-in, the stop word) must end the work promptly between two steps."""

    bundle: Bundle  # the local bundle whose manifest (and recogniser, for cascades) the daemon describes itself by

    @property
    def transcribes(self) -> bool:
        """Words exist before the model runs (a local recogniser): end of turn and wake matching can use them."""
        ...

    @property
    def hears_audio(self) -> bool:
        """A spoken turn can be answered at all (by its transcript or by the audio itself)."""
        ...

    @property
    def conversation(self) -> TurnStats: ...

    @property
    def last_scoring_ms(self) -> float: ...

    def transcribe(self, pcm: np.ndarray) -> str: ...

    def warm_up(self) -> None: ...

    def prepare(self, user: str | None, cancel: threading.Event | None = None) -> int:
        """Work ahead of need for the prompt of `user` (None: the next turn's opening); returns tokens done."""
        ...

    def prepare_next_turn(self) -> int: ...

    def reply(self, user: str, cancel: threading.Event | None = None) -> Iterator[Delta]: ...

    def reply_audio(self, pcm: np.ndarray, cancel: threading.Event | None = None) -> Iterator[Delta]: ...

    def addressed_probability(self, pcm: np.ndarray, wake_phrases: Sequence[str], cancel: threading.Event | None = None) -> float: ...

    # -- conversations (voiced.conversations.HasConversations gives both brains these) ------------------------
    system_prompt: str
    budget: int  # tokens the whole prompt may take: the system prompt and its additions must fit well inside

    def prepare_in(self, conversation: str, user: str | None) -> int:
        """prepare() in `conversation`'s history (selecting it)."""
        ...

    def select(self, key: str, now: float | None = None) -> None: ...

    def remember(self, user: str, reply: str, interrupted: bool, conversation: str | None = None) -> None: ...

    def forget(self, conversation: str | None = None) -> None: ...

    def drop_conversation(self, conversation: str) -> None: ...

    def forget_all(self) -> None: ...


class BrainUnavailable(VoicedError, RuntimeError):
    """The model cannot answer this turn (its server is down, refused the request, or stalled). The reply so far
    is a short spoken line naming the problem; `code` is the protocol error code the turn's error event carries,
    and the message names the fix."""

    code: ErrorCode = "unavailable"


def make_brain(settings: Settings, bundle: Bundle, threads: int | None = None, hotwords: str | None = None) -> Brain:
    """The brain `settings.brain.kind` names: the embedded engine on `bundle`, or a model server (which uses
    `bundle` only for its recogniser in transcript mode and to describe itself)."""
    if settings.brain.kind == "server":
        from voiced.config import ConfigError
        from voiced.remote.brain import RemoteBrain

        act = settings.activation
        if settings.brain.send == "audio" and act.mode == "wake" and act.wake_detector == "transcript":
            raise ConfigError(
                "wake mode with brain.send = 'audio' has no transcript to find the wake phrase in, and a model "
                "server cannot score it; set activation.wake_detector = 'model' or brain.send = 'transcript'"
            )

        return RemoteBrain(settings.brain, settings.model, bundle, threads=threads, hotwords=hotwords)
    from voiced.assistant import Assistant

    return Assistant(bundle, settings.model, threads, hotwords)
