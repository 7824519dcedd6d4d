"""What the server asks of the turn pipeline. The server knows nothing about models; this is the whole seam."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from protocol.messages import ServerMessage, TimerInfo

if TYPE_CHECKING:
    from voiced.config import Settings
    from voiced.model.manifest import Manifest


class Publisher(Protocol):
    """A sink of turn events: the WebSocket server, the Wyoming server, a collector in `voiced ask`."""

    def broadcast(self, msg: ServerMessage) -> None: ...

    def broadcast_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None: ...

    def end_audio(self, reply_id: str) -> None: ...


@runtime_checkable
class TurnHandler(Protocol):
    """Implemented by the pipeline. Calls for one client arrive in order, awaited one at a time on the event loop;
    a slow call delays only that client's input, so keep them short (queue work, do not run a model inline)."""

    async def on_client_audio(self, client_id: str, pcm16k: np.ndarray) -> None:
        """Microphone audio of a client, int16 mono 16 kHz (already resampled), in arrival order."""

    async def on_client_audio_end(self, client_id: str) -> None:
        """The client closed its stream (audio_end) — flush the segmenter: an open utterance ends now."""

    async def on_text_query(self, client_id: str, text: str, request_id: str | None) -> None: ...

    async def on_cancel(self, client_id: str, request_id: str | None) -> None: ...

    async def on_push_to_talk(self, client_id: str, pressed: bool) -> None: ...

    async def on_forget(self, client_id: str) -> None: ...

    async def on_list_timers(self, client_id: str) -> list[TimerInfo]:
        """Every timer, alarm and reminder as it stands, for this client's `timers` answer."""

    async def on_client_disconnect(self, client_id: str) -> None:
        """Also called when an open microphone stream is cut by the disconnect (no audio_end comes)."""


@runtime_checkable
class ConversationNaming(Protocol):
    """Optional beside TurnHandler (the pipeline has it): a client's hello may name the conversation its turns
    continue (voiced.conversations); a handler without it keeps one conversation per client or none at all."""

    def name_conversation(self, client_id: str, conversation: str | None) -> None: ...


@runtime_checkable
class SpeechBackend(Protocol):
    """What the Wyoming server asks of the daemon (the pipeline has it): a peer's audio and text turns, plus the
    recogniser and the voice as services of their own (Home Assistant's stt and tts). Work runs on the pipeline's
    own ASR and TTS threads, so a Wyoming request and a turn never run one engine twice at once."""

    @property
    def settings(self) -> Settings: ...

    @property
    def hears_audio(self) -> bool:
        """A spoken turn can be answered (and `transcribe` gives words) with this bundle."""
        ...

    @property
    def language(self) -> str | None:
        """The recogniser's language as a BCP 47 tag, where the bundle names one."""
        ...

    @property
    def manifest(self) -> Manifest:
        """The bundle the daemon describes itself by (its name, its recogniser): Wyoming's `info`."""
        ...

    @property
    def voice_language(self) -> str | None:
        """The TTS voice's language as its engine knows it (espeak-ng's voice record, a Piper voice's config)."""
        ...

    @property
    def tts_sample_rate(self) -> int: ...

    def add_publisher(self, publisher: Publisher) -> None: ...

    async def feed(self, source: str, pcm: np.ndarray) -> None:
        """Microphone audio of `source`, int16 mono 16 kHz, in order (a turn of its own, like a WebSocket mic)."""

    async def end_of_stream(self, source: str) -> None: ...

    async def on_handle(self, client_id: str, text: str, request_id: str, conversation: str) -> None:
        """A text turn whose asker speaks the answer itself: the reply comes back as text only."""

    async def on_client_disconnect(self, client_id: str) -> None: ...

    async def transcribe(self, pcm: np.ndarray) -> str:
        """Words of a clip, on the ASR thread."""
        ...

    def synthesize(self, text: str, cancel: threading.Event) -> AsyncIterator[np.ndarray]:
        """int16 mono chunks at `tts_sample_rate`, made on the TTS thread as they are yielded."""
        ...
