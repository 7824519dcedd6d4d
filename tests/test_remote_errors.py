"""A model server that misbehaves: down, refusing, stalling, garbling its stream, serving another model, or
echoing the API key it refused. Each turn gets a short spoken line and a typed error naming the fix; the key
never reaches an error, a log line or `voiced config`.

The misbehaving peer is a real HTTP server on 127.0.0.1 (the standard library's), answering each path the way a
broken server would: llama.cpp's server, the well-behaved peer, is in tests/test_remote_llama.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from protocol import messages as m
from tests.support.bundles import tiny_bundle
from tests.support.llama_server import free_port
from tests.support.speech import compose, read_wav
from tests.support.turn import asr_tiny_bundle, daemon, shared_assistant, turn_settings
from voiced.brain import Brain, BrainUnavailable
from voiced.cli import main as cli_main
from voiced.config import load_settings
from voiced.model.bundle import load_bundle
from voiced.remote.brain import RemoteBrain
from voiced.remote.client import Failure, ServerFailure

KEY = "sk-test-0123456789-do-not-print"
MODELS = {"data": [{"id": "served-model", "object": "model", "owned_by": "vllm"}], "object": "list"}


def _chunk(text: str, finish: str | None = None) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}).encode() + b"\n\n"


class _Peer(BaseHTTPRequestHandler):
    mode = "ok"
    bodies: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, obj: object) -> None:
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.mode == "auth" and self.headers.get("Authorization") != f"Bearer {KEY}x":
            return self._json(401, {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization', '')[7:]}"}})
        self._json(200, MODELS)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.mode == "auth":
            return self._json(401, {"error": {"message": f"Incorrect API key provided: {self.headers['Authorization'][7:]}"}})
        if self.mode == "http400":
            return self._json(400, {"error": {"message": "the request exceeds the available context size (2048 tokens)", "code": 400}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if self.mode == "malformed":
            self.wfile.write(_chunk("Hello") + b"data: {this is not json\n\n")
        elif self.mode == "stall":  # alive (keep-alive comments) but generating nothing
            self.wfile.write(_chunk("Hello"))
            for _ in range(30):
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.wfile.write(_chunk("Paris is the capital.") + _chunk("", "stop") + b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def peer() -> Iterator[tuple[type[_Peer], str]]:
    handler = type("Peer", (_Peer,), {"mode": "ok", "bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _brain(url: str, **brain: object) -> RemoteBrain:
    settings, _ = load_settings(
        None, {"brain": {"kind": "server", "url": url, "send": "audio", "stall_timeout_s": 0.5, "retry_initial_s": 0.2, **brain}}
    )
    return RemoteBrain(settings.brain, settings.model, load_bundle(tiny_bundle("int4")))


def _turn(brain: RemoteBrain) -> tuple[str, BaseException | None]:
    said, err = [], None
    try:
        for d in brain.reply("What is the capital of France?"):
            said.append(d.text)
    except BrainUnavailable as e:
        err = e
    return "".join(said), err


def test_server_down_at_start_then_back(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    brain = _brain(f"http://127.0.0.1:{port}/v1")
    brain.warm_up()  # no exception: the daemon starts and serves
    said, err = _turn(brain)
    assert isinstance(err, ServerFailure) and err.failure is Failure.UNREACHABLE and err.code == "unavailable"
    assert "can't reach my model server" in said
    assert f"127.0.0.1:{port}" in str(err) and "Fix:" in str(err)
    assert brain.memory.exchanges == [], "a turn that got no answer leaves nothing to remember"
    handler = type("Peer", (_Peer,), {"mode": "ok", "bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.INFO):
            deadline = time.monotonic() + 10
            while brain.link.state.value != "up" and time.monotonic() < deadline:  # the back-off probe notices
                time.sleep(0.05)
        assert brain.link.state.value == "up" and brain.model_name == "served-model"
        said, err = _turn(brain)
        assert err is None and said == "Paris is the capital."
        assert any("served-model" in r.getMessage() for r in caplog.records)
    finally:
        server.shutdown()
        server.server_close()
        brain.close()


def test_http_error_passes_on_the_servers_message(peer: tuple[type[_Peer], str]) -> None:
    handler, url = peer
    handler.mode = "http400"
    brain = _brain(url)
    said, err = _turn(brain)
    assert isinstance(err, ServerFailure) and err.failure is Failure.HTTP_STATUS and err.status == 400
    assert "exceeds the available context size" in str(err) and "HTTP 400" in str(err)
    assert said == "Sorry, my model server refused the request."
    brain.close()


def test_malformed_stream_keeps_what_was_said(peer: tuple[type[_Peer], str]) -> None:
    handler, url = peer
    handler.mode = "malformed"
    brain = _brain(url)
    said, err = _turn(brain)
    assert isinstance(err, ServerFailure) and err.failure is Failure.MALFORMED and "not JSON" in str(err)
    assert said.startswith("Hello") and "something I can't read" in said
    ex = brain.memory.exchanges[-1]
    assert (ex.assistant, ex.interrupted) == ("Hello", True), "the reply heard so far is kept, marked cut off"
    brain.close()


def test_stalled_stream_times_out(peer: tuple[type[_Peer], str]) -> None:
    handler, url = peer
    handler.mode = "stall"
    brain = _brain(url)
    said, err = _turn(brain)
    assert isinstance(err, ServerFailure) and err.failure is Failure.STALLED and "stall_timeout_s" in str(err)
    assert "stopped answering" in said
    brain.close()


def test_wrong_model_name_lists_what_is_served(peer: tuple[type[_Peer], str]) -> None:
    handler, url = peer
    brain = _brain(url, model="gemma-4-12b-it")
    brain.warm_up()
    said, err = _turn(brain)
    assert isinstance(err, ServerFailure) and err.failure is Failure.WRONG_MODEL
    assert "served-model" in str(err) and "brain.model" in str(err)
    assert handler.bodies == [], "no request is sent for a model the server does not have"
    brain.close()


def test_dialect_from_the_server_and_thinking_off(peer: tuple[type[_Peer], str]) -> None:
    handler, url = peer
    brain = _brain(url)
    brain.warm_up()
    list(brain.reply_audio(np.zeros(16000, np.int16)))
    body = handler.bodies[-1]
    assert body["model"] == "served-model" and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["messages"][-1]["content"][0]["type"] == "input_audio"
    brain.close()


def test_api_key_never_in_errors_logs_or_config(
    peer: tuple[type[_Peer], str], tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    handler, url = peer
    handler.mode = "auth"
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    with caplog.at_level(logging.DEBUG):
        brain = _brain(url, api_key_file=str(key_file))
        brain.warm_up()
        said, err = _turn(brain)
    assert isinstance(err, ServerFailure) and err.status == 401 and "API key" in str(err)
    assert "Incorrect API key provided: ***" in str(err), "the server's message passes on, its echo of the key does not"
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 401" in logs and KEY not in logs and KEY not in str(err) and KEY not in said
    config = tmp_path / "config.toml"
    config.write_text(f'[brain]\nkind = "server"\nurl = "{url}"\napi_key_file = "{key_file}"\n')
    assert cli_main(["--config", str(config), "config"]) == 0
    out = capsys.readouterr().out
    assert "brain.api_key_file" in out and str(key_file) in out and KEY not in out
    brain.close()


def test_both_brains_offer_what_the_pipeline_needs(peer: tuple[type[_Peer], str]) -> None:
    remote = _brain(peer[1])
    assert isinstance(remote, Brain) and isinstance(shared_assistant(turn_settings()), Brain)
    remote.close()


async def test_daemon_with_its_server_down_serves_and_says_why() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = turn_settings(brain={"kind": "server", "url": url, "send": "audio", "retry_initial_s": 0.2})
    brain = RemoteBrain(settings.brain, settings.model, load_bundle(tiny_bundle("int4")))
    async with daemon(settings, assistant=brain) as (pipeline, server, collector):
        await pipeline.warm_up()  # the server is down: the daemon still starts
        await pipeline.on_text_query("cli", "What is the capital of France?", "q-1")
        while not any(isinstance(x, m.Error) for x in collector.messages) or pipeline.state != "idle":
            await asyncio.sleep(0.02)
    brain.close()
    err = next(x for x in collector.messages if isinstance(x, m.Error))
    assert (err.code, err.request_id) == ("unavailable", "q-1") and url in err.message and "Fix:" in err.message
    said = "".join(x.text for x in collector.messages if isinstance(x, m.ReplyDelta))
    assert said == "Sorry, I can't reach my model server."
    assert sum(len(a) for a in collector.audio) > collector.rate * 0.5, "the line is spoken"
    kinds = [(type(x).__name__, getattr(x, "state", None)) for x in collector.messages]
    assert kinds.index(("State", "speaking")) < kinds.index(("Error", None)), "and heard before the error event"
    assert not any(isinstance(x, m.ReplyDone) for x in collector.messages)


def test_audio_brain_in_wake_mode_needs_the_wake_word_model() -> None:
    from voiced.brain import make_brain
    from voiced.config import ConfigError

    settings, _ = load_settings(None, {"brain": {"kind": "server", "send": "audio"}, "activation": {"mode": "wake"}})
    with pytest.raises(ConfigError, match="wake_detector = 'model'"):
        make_brain(settings, load_bundle(tiny_bundle("int4")))


async def test_spoken_turn_in_audio_mode_sends_the_segment(peer: tuple[type[_Peer], str]) -> None:
    """brain.send = audio: the VAD segment itself goes as the request's one input_audio clip (no local ASR runs
    for the turn), and the streamed reply is spoken."""
    handler, url = peer
    settings = turn_settings(brain={"kind": "server", "url": url, "send": "audio"})
    brain = RemoteBrain(settings.brain, settings.model, load_bundle(asr_tiny_bundle()))
    assert not brain.transcribes and brain.recognizer is None
    speech = compose([0.5, "What is the capital of France?", 1.5])
    async with daemon(settings, assistant=brain) as (pipeline, server, collector):
        await pipeline.warm_up()
        await pipeline.feed("mic", speech.pcm)
        await pipeline.end_of_stream("mic")
        while not any(isinstance(x, m.ReplyDone) for x in collector.messages) or pipeline.state != "idle":
            await asyncio.sleep(0.02)
    done = next(x for x in collector.messages if isinstance(x, m.ReplyDone))
    assert done.text == "Paris is the capital." and collector.audio
    assert not any(isinstance(x, m.Transcript) for x in collector.messages), "no local words in audio mode"
    (body,) = handler.bodies
    (part,) = body["messages"][-1]["content"]
    clip, rate = read_wav(base64.b64decode(part["input_audio"]["data"]))
    start, end = speech.segments[0]
    assert rate == 16000 and end - start < len(clip) / rate < end - start + 2.0, "the segment, pre-roll and tail"
    assert brain.memory.exchanges[-1].user == "(spoken)"
    words = brain.transcribe(clip)  # Wyoming's speech-to-text still works: the recogniser is made on demand
    assert "capital" in words.lower() and not brain.transcribes
    brain.close()
