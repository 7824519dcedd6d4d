"""The chat-completions request of a turn, as a pure function of memory, the turn and the options.

Layouts (pinned in tests/test_remote_request.py):
- transcript turn: system prompt, the remembered exchanges as text, the user's words. History is trimmed from
  the oldest exchange, so between turns the request grows at its end only and a server's prefix cache (vLLM's
  automatic prefix caching, llama.cpp's `cache_prompt`) keeps everything before the new words.
- audio turn: system prompt, then as much history as fits `audio_prefix_tokens`, then one user message whose
  first content part is the clip (`input_audio`, base64 16 kHz mono s16 WAV, `"format": "wav"`). Why the bound:
  Gemma 4 12B stops understanding audio placed past ~450-500 tokens of absolute position (a community report,
  deterministic), and a voice turn puts its audio right after the system prompt and history; bounding the text
  before the clip keeps it early however long the conversation grew. Token counts are estimated here (we do not
  hold the server's tokenizer) at one token per three UTF-8 bytes plus a fixed cost per message, which
  over-counts English for the tokenizers of these families, so the bound errs on the early side.

One clip per request and at most `max_audio_s` of it: vLLM fails on several clips of different lengths (its PR
#47652), and Gemma's audio encoder takes 30 s.
"""

from __future__ import annotations

import base64
import enum
import io
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

from voiced.audio import RATE
from voiced.memory import Exchange

MESSAGE_TOKENS = 8  # a chat template's frame around one message (role, start and end markers), over-counted


class TextMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class InputAudio(TypedDict):
    data: str  # base64 of a WAV file
    format: Literal["wav"]


class AudioPart(TypedDict):
    """OpenAI's input_audio content part."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioMessage(TypedDict):
    role: Literal["user"]
    content: list[AudioPart]


Message = TextMessage | AudioMessage


class Dialect(enum.Enum):
    """Which fields beyond OpenAI's own the server understands (for thinking and prefix caching)."""

    OPENAI = "openai"  # nothing extra: a strict server refuses unknown fields
    VLLM = "vllm"
    LLAMA_CPP = "llama.cpp"
    OLLAMA = "ollama"

    @classmethod
    def from_owner(cls, owned_by: str) -> Dialect:
        """The dialect a /v1/models entry's `owned_by` betrays (vLLM: "vllm", llama-server: "llamacpp", Ollama:
        "library" or the model's namespace); anything else gets plain OpenAI."""
        owner = owned_by.lower()
        if owner == "vllm":
            return cls.VLLM
        if owner in ("llamacpp", "llama.cpp"):
            return cls.LLAMA_CPP
        if owner in ("library", "ollama"):
            return cls.OLLAMA
        return cls.OPENAI


@dataclass(frozen=True)
class Options:
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    dialect: Dialect = Dialect.OPENAI
    thinking: bool = False


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode()) // 3)


def _message_tokens(message: TextMessage) -> int:
    return MESSAGE_TOKENS + estimate_tokens(message["content"])


def history(exchanges: Sequence[Exchange]) -> list[TextMessage]:
    out: list[TextMessage] = []
    for ex in exchanges:
        out.append({"role": "user", "content": ex.user})
        # An interrupted reply stays as far as it was heard, marked so the model sees it was cut off.
        out.append({"role": "assistant", "content": ex.assistant + (" ..." if ex.interrupted else "")})
    return out


def fit_history(system: str, exchanges: Sequence[Exchange], budget_tokens: int, extra_tokens: int = 0) -> list[Exchange]:
    """The newest exchanges whose estimated tokens, with the system prompt's and `extra_tokens`, fit the budget."""
    used = (_message_tokens({"role": "system", "content": system}) if system else 0) + extra_tokens
    kept: list[Exchange] = []
    for ex in reversed(exchanges):
        cost = sum(_message_tokens(m) for m in history([ex]))
        if used + cost > budget_tokens:
            break
        used += cost
        kept.append(ex)
    return kept[::-1]


def _system(system: str) -> list[TextMessage]:
    return [{"role": "system", "content": system}] if system else []


def text_messages(system: str, exchanges: Sequence[Exchange], user: str, budget_tokens: int) -> list[Message]:
    user_msg: TextMessage = {"role": "user", "content": user}
    kept = fit_history(system, exchanges, budget_tokens, _message_tokens(user_msg))
    return [*_system(system), *history(kept), user_msg]


def wav_bytes(pcm: np.ndarray, rate: int = RATE) -> bytes:
    """A RIFF WAV of 16-bit mono samples (the servers refuse raw PCM: llama.cpp checks the format, Ollama
    sniffs RIFF)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


def audio_part(pcm: np.ndarray, max_s: float, rate: int = RATE) -> AudioPart:
    """OpenAI's input_audio content part for the first `max_s` seconds of `pcm`."""
    clip = np.asarray(pcm, dtype=np.int16)[: int(max_s * rate)]
    data = base64.b64encode(wav_bytes(clip, rate)).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def audio_messages(system: str, exchanges: Sequence[Exchange], pcm: np.ndarray, prefix_tokens: int, max_s: float) -> list[Message]:
    """System prompt, the history that fits `prefix_tokens` (the user message's own frame counted), then the
    clip first in the user's message: the audio starts within `prefix_tokens` of the prompt's beginning."""
    kept = fit_history(system, exchanges, prefix_tokens, MESSAGE_TOKENS)
    user_msg: AudioMessage = {"role": "user", "content": [audio_part(pcm, max_s)]}
    return [*_system(system), *history(kept), user_msg]


def tokens_before_audio(messages: Sequence[Message]) -> int:
    """The estimated position of the clip: every message before it and the user message's frame."""
    n = 0
    for msg in messages:
        content = msg["content"]
        if isinstance(content, list):
            return n + MESSAGE_TOKENS
        n += MESSAGE_TOKENS + estimate_tokens(str(content))
    raise ValueError("no audio part in these messages")


def body(messages: Sequence[Message], options: Options) -> dict[str, object]:
    """The JSON body of a streamed chat completion."""
    out: dict[str, object] = {
        "model": options.model,
        "messages": list(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
    }
    if options.dialect in (Dialect.VLLM, Dialect.LLAMA_CPP):
        out["chat_template_kwargs"] = {"enable_thinking": options.thinking}
    if options.dialect is Dialect.LLAMA_CPP:
        out["cache_prompt"] = True
    if options.dialect is Dialect.OLLAMA:
        out["think"] = options.thinking
    return out
