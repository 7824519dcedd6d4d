"""`voiced ask --url ... --json` and `voiced listen --out` against the real server.

There is no model yet, so the test plays the pipeline's part through the real seam: on a text query or the end
of a client's audio it publishes a reply (text, espeak audio, timings) with `broadcast`/`broadcast_audio`.
What is under test is the client side: the one-JSON-object contract, the WAV files, the errors.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np
import pytest

from protocol import messages as m
from tests.support.server import ServerThread, VadHandler
from tests.support.speech import compose, espeak, read_wav, write_wav
from voiced.client_cli import ask_command, listen_command
from voiced.config import ServerSettings, Settings
from voiced.server.auth import load_or_create_token

REPLY_RATE = 22050


class ReplyingHandler(VadHandler):
    """The VAD front end plus a stand-in for the model: answers every query with a fixed spoken sentence."""

    answer = "It is sunny."

    async def _reply(self, client_id: str, request_id: str | None, heard: str) -> None:
        s = self.server
        rid = f"r-{len(self.calls)}"
        s.broadcast(m.Transcript(text=heard, final=True, source=client_id))
        s.broadcast(m.ReplyStarted(reply_id=rid, request_id=request_id, source=client_id))
        s.broadcast(m.ReplyDelta(reply_id=rid, text=self.answer))
        pcm = espeak(self.answer, rate=REPLY_RATE)
        for i in range(0, len(pcm), 4000):
            s.broadcast_audio(rid, pcm[i : i + 4000], REPLY_RATE)
        s.broadcast(m.ReplyDone(reply_id=rid, text=self.answer, timings_ms={"first_audio": 1.5, "total": 9.0}))

    async def on_text_query(self, client_id, text, request_id):
        await super().on_text_query(client_id, text, request_id)
        await self._reply(client_id, request_id, text)

    async def on_client_audio_end(self, client_id):
        await super().on_client_audio_end(client_id)
        await self._reply(client_id, None, f"{self.samples.get(client_id, 0)} samples")


@pytest.fixture
def daemon(tmp_path):
    token_path = tmp_path / "voiced" / "token"
    srv = ServerThread()
    srv.token = load_or_create_token(token_path)
    srv.handler = ReplyingHandler()
    with srv:
        settings = Settings(server=ServerSettings(port=srv.server.port, token_file=token_path))
        yield srv, settings


def _ask(**kw) -> argparse.Namespace:
    base = dict(text=None, wav=None, url=None, out=None, json=True)
    return argparse.Namespace(**{**base, **kw})


def test_ask_text_json_contract(daemon, tmp_path, capsys):
    srv, settings = daemon
    out = tmp_path / "reply.wav"
    assert ask_command(_ask(text="what is the weather", out=out), settings) == 0
    stdout = capsys.readouterr().out
    result = json.loads(stdout)  # exactly one JSON object, nothing else
    assert result["transcript"] == "what is the weather"
    assert result["reply_text"] == "It is sunny."
    assert result["timings_ms"] == {"first_audio": 1.5, "total": 9.0}
    assert result["interrupted"] is False
    pcm, rate = read_wav(out)
    assert rate == 24000 and len(pcm) / rate == pytest.approx(result["audio_s"], abs=0.01)
    assert abs(len(pcm) - len(espeak("It is sunny.", rate=REPLY_RATE)) * 24000 / REPLY_RATE) <= 2
    assert srv.handler.calls[0][0] == "text_query" and srv.handler.calls[0][2] == "what is the weather"


def test_ask_wav_sends_microphone_audio(daemon, tmp_path, capsys):
    srv, settings = daemon
    rec = compose([0.3, "Turn on the lights please.", 0.8], rate=44100)
    wav = write_wav(tmp_path / "q.wav", rec.pcm, 44100)
    assert ask_command(_ask(wav=wav), settings) == 0
    result = json.loads(capsys.readouterr().out)
    expected = round(len(rec.pcm) * 16000 / 44100)
    assert result["transcript"] == f"{expected} samples" or abs(int(result["transcript"].split()[0]) - expected) <= 2
    assert result["reply_text"] == "It is sunny." and set(result) >= {"transcript", "reply_text", "timings_ms"}


def test_ask_without_token_names_voiced_serve(tmp_path, capsys):
    settings = Settings(server=ServerSettings(token_file=tmp_path / "none" / "token"))
    assert ask_command(_ask(text="hi"), settings) == 1
    err = capsys.readouterr()
    assert err.out == "" and "voiced serve" in err.err


def test_ask_with_no_daemon_says_so(tmp_path, capsys):
    token_path = tmp_path / "token"
    load_or_create_token(token_path)
    settings = Settings(server=ServerSettings(port=1, token_file=token_path))
    assert ask_command(_ask(text="hi"), settings) == 1
    assert "voiced serve" in capsys.readouterr().err


def test_listen_prints_events_and_saves_audio(daemon, tmp_path, capsys):
    srv, settings = daemon
    out = tmp_path / "heard.wav"
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(listen_command(argparse.Namespace(url=None, play=False, out=out), settings)))
    t.start()
    deadline = time.monotonic() + 10
    while len(srv.server.clients) < 1:
        assert time.monotonic() < deadline, "listen never connected"
        time.sleep(0.02)
    tone = (np.sin(np.arange(REPLY_RATE) * 2 * np.pi * 300 / REPLY_RATE) * 5000).astype(np.int16)

    async def publish():
        srv.server.broadcast(m.State(state="speaking"))
        srv.server.broadcast_audio("r9", tone, REPLY_RATE)
        srv.server.broadcast(m.ReplyDone(reply_id="r9", text="hum"))

    srv.call(publish())
    printed = ""
    while '"reply_done"' not in printed:  # listen prints events in order, after writing the audio before them
        assert time.monotonic() < deadline + 10, printed
        printed += capsys.readouterr().out
        time.sleep(0.02)
    srv.call(srv.server.stop())  # the daemon going away ends `listen`
    t.join(10)
    assert rc == [0]
    lines = [json.loads(line) for line in (printed + capsys.readouterr().out).splitlines()]
    assert [line["type"] for line in lines] == ["connected", "state", "reply_audio_start", "reply_audio_end", "reply_done"]
    pcm, rate = read_wav(out)
    assert rate == 24000 and abs(len(pcm) - 24000) <= 2
