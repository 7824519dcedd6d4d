"""The request a turn sends to a model server, and the SSE and back-off policies: pure, no peer needed.

No server that runs here takes `input_audio` (llama-cpp-python's server has no audio projector; vLLM and
llama-server with Gemma 4 need the 12B on a GPU), so the audio request body is pinned against the shape OpenAI's
chat-completions reference documents: a user content part {"type": "input_audio", "input_audio": {"data":
<base64 WAV>, "format": "wav"}}.
"""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from voiced.memory import Exchange
from voiced.remote import request
from voiced.remote.link import Link, LinkState
from voiced.remote.request import Dialect, Options
from voiced.remote.sse import Chunk, EventDecoder, MalformedStream, ServerReported, parse

SYSTEM = "You are a voice assistant. Answer in one short sentence."


def _exchanges(n: int) -> list[Exchange]:
    return [Exchange(f"question number {i} about something long enough", f"answer number {i}, also a sentence") for i in range(n)]


def test_audio_body_is_openai_input_audio_shape() -> None:
    pcm = (np.sin(np.arange(16000) / 5) * 8000).astype(np.int16)  # 1 s
    opts = Options("gemma-4-12b-it", 96, 0.0, 1.0, Dialect.VLLM, thinking=False)
    body = request.body(request.audio_messages(SYSTEM, [], pcm, 384, 30.0), opts)
    data = body["messages"][1]["content"][0]["input_audio"]["data"]
    assert body == {
        "model": "gemma-4-12b-it",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 96,
        "temperature": 0.0,
        "top_p": 1.0,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    raw = base64.b64decode(data, validate=True)
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    with wave.open(io.BytesIO(raw)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), pcm)


def test_audio_clip_is_cut_at_max_audio_s() -> None:
    pcm = np.ones(16000 * 40, np.int16)
    part = request.audio_part(pcm, 30.0)
    with wave.open(io.BytesIO(base64.b64decode(part["input_audio"]["data"]))) as w:
        assert w.getnframes() == 16000 * 30


def test_audio_sits_early_however_long_the_history() -> None:
    """The layout for Gemma 4 12B's ~450-token audio limit: system prompt, the newest history that fits the
    bound, then the clip first in the user's message; older history is dropped, never the clip moved later."""
    pcm = np.zeros(1600, np.int16)
    long_history = _exchanges(40)
    msgs = request.audio_messages(SYSTEM, long_history, pcm, 384, 30.0)
    assert request.tokens_before_audio(msgs) <= 384
    assert msgs[0] == {"role": "system", "content": SYSTEM}
    kept = msgs[1:-1]
    assert 2 <= len(kept) < 80 and len(kept) % 2 == 0, "some history, the newest, in pairs"
    assert kept[-1]["content"] == long_history[-1].assistant and kept[-2]["content"] == long_history[-1].user
    user = msgs[-1]
    assert user["role"] == "user" and user["content"][0]["type"] == "input_audio" and len(user["content"]) == 1
    # The estimate over-counts: a third of the text's bytes (English runs ~4 bytes a token in these tokenizers).
    text_bytes = sum(len(str(m["content"]).encode()) for m in msgs[:-1])
    assert request.tokens_before_audio(msgs) >= text_bytes / 3 + request.MESSAGE_TOKENS * len(msgs)
    # A short history is sent whole.
    short = request.audio_messages(SYSTEM, _exchanges(2), pcm, 384, 30.0)
    assert len(short) == 1 + 4 + 1


def test_text_turn_keeps_the_newest_history_within_budget_and_a_stable_prefix() -> None:
    ex = _exchanges(6)
    a = request.text_messages(SYSTEM, ex, "What time is it?", 10_000)
    assert [m["role"] for m in a] == ["system"] + ["user", "assistant"] * 6 + ["user"]
    b = request.text_messages(SYSTEM, [*ex, Exchange("What time is it?", "Noon.")], "And the date?", 10_000)
    assert b[: len(a)] == [*a[:-1], a[-1]], "the next turn's request extends this one's: a server's prefix cache holds"
    tight = request.text_messages(SYSTEM, ex, "What time is it?", 80)
    assert tight[0]["role"] == "system" and tight[-1]["content"] == "What time is it?"
    assert len(tight) < len(a) and (len(tight) - 2) % 2 == 0


def test_interrupted_reply_is_marked_in_history() -> None:
    msgs = request.text_messages(SYSTEM, [Exchange("Count to ten", "One, two", interrupted=True)], "Go on", 1000)
    assert msgs[2] == {"role": "assistant", "content": "One, two ..."}


@pytest.mark.parametrize(
    ("dialect", "thinking", "extra"),
    [
        (Dialect.OPENAI, False, {}),
        (Dialect.VLLM, False, {"chat_template_kwargs": {"enable_thinking": False}}),
        (Dialect.VLLM, True, {"chat_template_kwargs": {"enable_thinking": True}}),
        (Dialect.LLAMA_CPP, False, {"chat_template_kwargs": {"enable_thinking": False}, "cache_prompt": True}),
        (Dialect.OLLAMA, False, {"think": False}),
    ],
)
def test_thinking_is_off_in_each_servers_own_words(dialect: Dialect, thinking: bool, extra: dict) -> None:
    body = request.body([{"role": "user", "content": "hi"}], Options("m", 10, 0.0, 1.0, dialect, thinking))
    base = {"model", "messages", "stream", "stream_options", "max_tokens", "temperature", "top_p"}
    assert {k: v for k, v in body.items() if k not in base} == extra


def test_dialect_from_owned_by() -> None:
    assert Dialect.from_owner("vllm") is Dialect.VLLM
    assert Dialect.from_owner("llamacpp") is Dialect.LLAMA_CPP
    assert Dialect.from_owner("library") is Dialect.OLLAMA
    assert Dialect.from_owner("me") is Dialect.OPENAI  # llama-cpp-python's server


def test_sse_events_split_anywhere() -> None:
    stream = (
        'data: {"choices":[{"delta":{"role":"assistant"},"index":0}]}\n\n'
        ": keep-alive\n\n"
        'data: {"choices":[{"delta":{"content":"Par"},"index":0}]}\r\n\r\n'
        'data: {"choices":[{"delta":{"content":"is."},"index":0,"finish_reason":"stop"}]}\n\n'
        'data: {"choices":[],"usage":{"prompt_tokens":31,"completion_tokens":3}}\n\n'
        "data: [DONE]\n\n"
    )
    for step in (1, 7, len(stream)):
        dec = EventDecoder()
        events = [e for i in range(0, len(stream), step) for e in dec.feed(stream[i : i + step])]
        chunks = [parse(e) for e in events]
        assert "".join(c.text for c in chunks) == "Paris."
        assert chunks[2].finish == "stop" and chunks[3].prompt_tokens == 31 and chunks[3].completion_tokens == 3
        assert chunks[-1] == Chunk(done=True)


@pytest.mark.parametrize(
    "data",
    ["{not json", "[1, 2]", '{"id": "x"}', '{"choices": [{"index": 0}]}', '{"choices": [{"delta": {"content": 5}}]}'],
)
def test_malformed_events_are_refused_by_name(data: str) -> None:
    with pytest.raises(MalformedStream):
        parse(data)


def test_server_error_inside_the_stream_is_passed_on() -> None:
    with pytest.raises(ServerReported, match="KV cache is full"):
        parse('{"error": {"message": "KV cache is full", "type": "server_error"}}')


def test_endless_line_is_refused_at_its_bound() -> None:
    dec = EventDecoder(max_line_bytes=1000)
    with pytest.raises(MalformedStream):
        for _ in range(20):
            dec.feed("data: " + "x" * 100)


def test_back_off_doubles_to_its_cap_and_resets() -> None:
    link = Link(initial_s=1.0, max_s=8.0)
    assert link.probe_due(0.0) and link.state is LinkState.UNKNOWN
    delays = [link.failed(100.0 + i, "refused") for i in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] and link.state is LinkState.DOWN
    assert not link.probe_due(105.0 + 7.9) and link.probe_due(105.0 + 8.0)
    assert link.succeeded() is True and link.state is LinkState.UP and not link.probe_due(1e9)
    assert link.succeeded() is False  # no outage ended: no log line
    assert link.failed(0.0, "x") == 1.0
