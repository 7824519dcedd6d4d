"""What the server asks of the turn pipeline. The server knows nothing about models; this is the whole seam."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from protocol.messages import TimerInfo


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
