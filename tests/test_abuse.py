"""Abuse on the WebSocket door, with the real server and real clients on 127.0.0.1: each attack gets its typed
error or close code, no traceback reaches the log, and a legitimate client is still answered.

The turn-queue attacks run the whole daemon (tiny real model, espeak, the real Pipeline); the transport attacks
need only the server with the VAD front end (tests/support/server.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import socket
import struct
import weakref
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol import messages as m
from tests.support.server import client_frame, running_server, wait_for
from tests.support.turn import daemon, turn_settings
from voiced.config import describe, load_settings
from voiced.server.logsafe import RateLimit, printable
from voiced.server.pairing import Gate, mint_pairing_code

TIMEOUT = 60.0
TOKEN = "test-token-0123456789abcdef"


def _url(server) -> str:
    return f"ws://127.0.0.1:{server.port}"


@contextlib.asynccontextmanager
async def client(server, token: str = TOKEN, **hello) -> AsyncIterator[ClientConnection]:
    async with connect(_url(server), subprotocols=["voiced.v1"], additional_headers={"Authorization": f"Bearer {token}"},
                       max_size=None) as ws:  # fmt: skip
        await ws.send(m.Hello(**hello).to_json())
        assert isinstance(m.parse_server(await asyncio.wait_for(ws.recv(), 10)), m.Welcome)
        yield ws


async def until(ws: ClientConnection, done, timeout: float = TIMEOUT) -> list:
    got = []

    async def run() -> None:
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            msg = m.parse_server(raw)
            got.append(msg)
            if done(msg):
                return

    await asyncio.wait_for(run(), timeout)
    return got


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog
    no_tracebacks(caplog)


# -- the turn queue -----------------------------------------------------------------------------------------------
async def test_waiting_turns_are_bounded_replaced_and_dropped_with_their_client(logs) -> None:
    """20 queries then a disconnect: one runs, one waits (the others get `busy` as it replaces them), the waiting
    one is dropped with its client and the running one cut off; another client over the overall bound gets `busy`;
    a legitimate one is answered. f0's reply is long (400 tokens, paced: far longer than the flood's part of the
    test takes on any machine), so the order does not depend on the machine's speed."""
    settings = turn_settings(server={"max_waiting_turns": 2}, model={"max_new_tokens": 400})
    async with daemon(settings, TOKEN, pace=True) as (pipeline, server, collector):
        async with client(server, name="legit") as legit:
            # flood and late only ask (no listener role): their close is not held up behind reply audio they
            # never read, so "left" means left now
            async with client(server, name="flood", roles=[]) as flood, client(server, name="late", roles=[]) as late:
                for i in range(20):
                    await flood.send(m.TextQuery(text=f"Question number {i}?", request_id=f"f{i}").to_json())
                busy = await until(flood, lambda x: isinstance(x, m.Error) and x.request_id == "f18")
                assert sorted(x.request_id for x in busy if isinstance(x, m.Error) and x.code == "busy") == sorted(
                    f"f{i}" for i in range(1, 19)
                )
                await legit.send(m.TextQuery(text="What is two plus two?", request_id="legit").to_json())
                await wait_for(lambda: len(pipeline._waiting) == 2, TIMEOUT)
                await late.send(m.TextQuery(text="And me?", request_id="late").to_json())
                (refused,) = [x for x in await until(late, lambda x: isinstance(x, m.Error)) if isinstance(x, m.Error)]
                assert refused.code == "busy" and refused.request_id == "late" and "server.max_waiting_turns" in refused.message
                assert pipeline.turn is not None and pipeline.turn.request_id == "f0", "f0 must still be speaking here"
            # the flood's client left: its running f0 is cut off and its waiting f19 must never run
            mine = await until(legit, lambda x: isinstance(x, m.ReplyStarted) and x.request_id == "legit")
            await legit.send(m.Cancel(request_id="legit").to_json())  # answered; no need to hear 400 tokens of it
            await until(legit, lambda x: isinstance(x, m.ReplyDone) and x.reply_id == mine[-1].reply_id)
        started = [x.request_id for x in collector.messages if isinstance(x, m.ReplyStarted)]
    done = {x.reply_id: x for x in collector.messages if isinstance(x, m.ReplyDone)}
    by_request = {x.request_id: done.get(x.reply_id) for x in collector.messages if isinstance(x, m.ReplyStarted)}
    assert started == ["f0", "legit"], started
    assert by_request["f0"].interrupted, "f0's client left: its reply must stop"


async def test_a_running_reply_stops_when_its_client_leaves(logs) -> None:
    """A client asks and leaves: its reply (paced, seconds of audio) is interrupted at once, and the next client's
    question does not wait for audio nobody hears."""
    async with daemon(turn_settings(model={"max_new_tokens": 96}), TOKEN, pace=True) as (pipeline, server, collector):
        async with client(server) as ws:
            await ws.send(m.TextQuery(text="Tell me a long story.", request_id="gone").to_json())
            await until(ws, lambda x: isinstance(x, m.ReplyStarted))
        await wait_for(lambda: pipeline.turn is None, TIMEOUT)
        gone = [x for x in collector.messages if isinstance(x, m.ReplyDone)]
        assert len(gone) == 1 and gone[0].interrupted, gone
        async with client(server) as ws:
            await ws.send(m.TextQuery(text="And now?", request_id="next").to_json())
            done = await until(ws, lambda x: isinstance(x, m.ReplyDone))
        assert not done[-1].interrupted


async def test_cancel_withdraws_a_waiting_turn(logs) -> None:
    async with daemon(turn_settings(), TOKEN, pace=True) as (pipeline, server, collector):
        async with client(server) as ws:
            await ws.send(m.TextQuery(text="First question?", request_id="a").to_json())
            await ws.send(m.TextQuery(text="Second question?", request_id="b").to_json())
            await wait_for(lambda: len(pipeline._waiting) == 1, TIMEOUT)
            await ws.send(m.Cancel(request_id="b").to_json())
            await wait_for(lambda: len(pipeline._waiting) == 0, TIMEOUT)
            await until(ws, lambda x: isinstance(x, m.ReplyDone))
            await ws.send(m.TextQuery(text="Third question?", request_id="c").to_json())
            await until(ws, lambda x: isinstance(x, m.ReplyDone))
        started = [x.request_id for x in collector.messages if isinstance(x, m.ReplyStarted)]
    assert started == ["a", "c"], started


async def test_a_question_over_the_models_context_gets_a_typed_error_and_the_next_is_answered(logs) -> None:
    """8,000 characters are over the tiny model's context: a typed `too_large` naming the fix, no traceback, and
    the same client's next question is answered."""
    async with daemon(turn_settings(), TOKEN, pace=False) as (_, server, _collector):
        async with client(server) as ws:
            await ws.send(m.TextQuery(text="word " * 1599 + "word?", request_id="long").to_json())
            (err,) = [x for x in await until(ws, lambda x: isinstance(x, m.Error)) if isinstance(x, m.Error)]
            assert err.code == "too_large" and err.request_id == "long" and "shorter question" in err.message, err
            await ws.send(m.TextQuery(text="And a short one?", request_id="short").to_json())
            done = await until(ws, lambda x: isinstance(x, m.ReplyDone))
            assert done[-1].text


@pytest.mark.parametrize("log_transcripts", [False, True])
async def test_no_user_words_or_reply_text_in_the_log_unless_configured(caplog, log_transcripts: bool) -> None:
    caplog.set_level(logging.DEBUG)
    question = "Zanzibar quokka question?"
    settings = turn_settings(privacy={"log_transcripts": log_transcripts})
    async with daemon(settings, TOKEN, pace=False) as (_, server, collector):
        async with client(server) as ws:
            await ws.send(m.TextQuery(text=question, request_id="q").to_json())
            await until(ws, lambda x: isinstance(x, m.ReplyDone))
    reply = next(x for x in collector.messages if isinstance(x, m.ReplyDone)).text
    lines = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    turn_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn ")]
    assert turn_lines, "the turn is still logged (ids, lengths, timings)"
    if log_transcripts:
        assert "Zanzibar quokka" in lines
    else:
        assert "Zanzibar" not in lines and "quokka" not in lines, turn_lines
        if len(reply) >= 12:  # a random-weight model's reply: long enough to be recognisable
            assert reply[:12] not in lines, turn_lines
        assert f"<{len(question)} chars>" in turn_lines[0]


# -- transport attacks (the server with the VAD front end) ---------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _handshake(port: int, token: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: voiced.v1\r\n{auth}\r\n".encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101"), status
    return reader, writer


async def _raw_client(port: int, token: str, hello: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that authenticates, then never reads: its receive window fills and stays full."""
    reader, writer = await _handshake(port, token)
    writer.write(client_frame((hello or m.Hello(roles=["listener"], audio_rate=48000).to_json()).encode()))
    await writer.drain()
    return reader, writer


async def test_non_reading_listeners_are_dropped_and_their_memory_returns(logs) -> None:
    """A long reply to 24 listeners that never read: each is dropped (4001) once its queue holds
    server.client_queue_bytes; its outbox and buffers are freed by reference counting alone (no cycle through the
    writer task's CancelledError), so RSS returns near its start; a reading listener gets the whole reply."""
    gc.collect()
    gc.disable()
    try:
        async with running_server(client_queue_bytes=1 << 20, client_queue=100_000) as (server, _, token):
            async with client(server, token, name="legit", roles=["listener"], audio_rate=48000) as legit:
                chunk = (3000 * np.sin(np.arange(24000) / 7)).astype(np.int16)  # 1 s at 24 kHz -> 48 kHz listeners
                server.broadcast_audio("warm", chunk, 24000)
                server.end_audio("warm")
                await until(legit, lambda x: isinstance(x, m.ReplyAudioEnd))
                before = _rss()
                raws = [await _raw_client(server.port, token) for _ in range(24)]
                await wait_for(lambda: len(server.clients) == 25)
                outboxes = [weakref.ref(s.outbox) for s in server.clients.values() if s.name != "legit"]
                peak, queued = before, 0
                for i in range(400):  # up to 400 s of audio: well past the bound for every listener that never reads
                    server.broadcast_audio("long", chunk, 24000)
                    queued = max([queued] + [s.outbox.queued_bytes for s in server.clients.values()])
                    if i % 10 == 0:
                        peak = max(peak, _rss())
                        await asyncio.sleep(0)  # the legitimate listener reads meanwhile
                    if len(server.clients) == 1:
                        break
                server.end_audio("long")
                await wait_for(lambda: len(server.clients) == 1, TIMEOUT)
                end = await until(legit, lambda x: isinstance(x, m.ReplyAudioEnd) and x.reply_id == "long")
                assert end[-1].frames >= 10 * (i + 1), "the reading listener got the whole reply"
                await legit.send(m.Ping(data="still here").to_json())
                assert (await until(legit, lambda x: isinstance(x, m.Pong)))[-1].data == "still here"
                for _, w in raws:
                    w.close()
                with contextlib.suppress(AssertionError):  # the connections' handlers end a moment after the drop
                    await wait_for(lambda: all(ref() is None for ref in outboxes), 10)
                alive = sum(ref() is not None for ref in outboxes)
                after = _rss()
    finally:
        gc.enable()
    assert len(outboxes) == 24 and queued > (1 << 20) - 200_000, "the listeners that never read filled their queue"
    assert alive == 0, f"{alive} dropped clients' outboxes are still alive without a GC pass (a reference cycle)"
    assert after - before < 32 << 20, f"RSS {before >> 20} -> peak {peak >> 20} -> after {after >> 20} MiB"
    dropped = [r for r in logs.records if "dropped" in r.getMessage()]
    assert 1 <= len(dropped) <= 24, "one warning per dropped client at most"


def test_repeated_warnings_are_rate_limited_and_say_how_many_were_held() -> None:
    now = [0.0]
    limit = RateLimit(per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limit.allow("k")[0] for _ in range(10)] == [True] * 3 + [False] * 7
    assert limit.allow("other") == (True, 0), "each kind of line has its own budget"
    now[0] += 0.5
    assert limit.allow("k") == (True, 7)
    assert printable("a\nb\x1b[2J\u202e'") == "'a\\x0ab\\x1b[2J\\u202e\\''"
    assert printable("x" * 100, 10) == "'xxxxxxxxxx'... (100 chars)"


async def test_error_messages_never_echo_unbounded_input(logs) -> None:
    async with running_server() as (server, _, token), client(server, token) as ws:
        await ws.send(json.dumps({"type": "\x7f" * (128 << 10)}))
        (err,) = await until(ws, lambda x: isinstance(x, m.Error))
        assert err.code == "unknown_type" and len(err.to_json()) < 1024, len(err.to_json())
        await ws.send(json.dumps({"type": "ping", "x" * 100_000: 1}))
        (err,) = await until(ws, lambda x: isinstance(x, m.Error))
        assert err.code == "invalid_message" and len(err.to_json()) < 1024


async def test_nested_json_gets_a_typed_error_before_and_after_auth(logs) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    async with running_server() as (server, _, token):
        async with connect(_url(server), subprotocols=["voiced.v1"]) as ws:
            await ws.send('{"type": "hello", "x": ' + "[" * 5000 + "]" * 5000 + "}")
            with pytest.raises(ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
            assert e.value.rcvd.code == 1008
        async with client(server, token) as ws:
            await ws.send(deep[:8000] + deep[-8000:])
            await ws.send('{"type": "ping", "data": ' + "[" * 5000 + "]" * 5000 + "}")
            errors = [
                x
                for x in await until(ws, lambda x: isinstance(x, m.Error) and x.message.startswith("JSON nested"))
                if isinstance(x, m.Error)
            ]
            assert [x.code for x in errors] == ["bad_json"] * len(errors) and errors
            await ws.send(m.Ping(data="ok").to_json())
            assert (await until(ws, lambda x: isinstance(x, m.Pong)))[-1].data == "ok"


async def test_big_first_message_is_refused_before_it_is_read(logs) -> None:
    async with running_server() as (server, handler, token):
        reader, writer = await _handshake(server.port, None)
        big = (m.Hello(name="x" * 100, token="y" * 400).to_json()[:-1] + ', "pad": "' + "z" * (4 << 20) + '"}').encode()
        frame = client_frame(big)
        writer.write(frame[: 64 << 10])  # the header and a little: the server must not wait for the rest
        head = await asyncio.wait_for(reader.readexactly(4), 10)
        writer.close()
        assert head[0] & 0x0F == 8 and struct.unpack("!H", head[2:4])[0] == 1009, head  # a close frame: message too big
        async with client(server, token) as ws:  # the full limit applies once authenticated
            await ws.send(json.dumps({"type": "ping", "data": "p" * (256 << 10)}))
            (err,) = await until(ws, lambda x: isinstance(x, m.Error))
            assert err.code == "invalid_message"
        assert handler.calls == [] or all(c[0] != "text_query" for c in handler.calls)


@pytest.mark.parametrize("header", ["Origin", "Host", "Upgrade", "Authorization"])
async def test_repeated_handshake_headers_get_400(logs, header: str) -> None:
    async with running_server() as (server, _, token):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        fields = {"Host": f"127.0.0.1:{server.port}", "Upgrade": "websocket", "Origin": f"http://127.0.0.1:{server.port}",
                  "Authorization": f"Bearer {token}"}  # fmt: skip
        lines = [f"{k}: {v}" for k, v in fields.items()] + [f"{header}: {fields[header]}"]
        lines += ["Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                  "Sec-WebSocket-Protocol: voiced.v1"]  # fmt: skip
        writer.write(("GET / HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode())
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 400"), status
        async with client(server, token):
            pass


async def test_client_values_cannot_forge_log_lines(logs) -> None:
    async with running_server() as (server, _, token), client(server, token, name="evil\nINFO forged line\x1b[2J"):
        await wait_for(lambda: len(server.clients) == 1)
    lines = [r.getMessage() for r in logs.records if "evil" in r.getMessage()]
    assert lines and all("\n" not in x and "\x1b" not in x for x in lines), lines


# -- credentials and configuration ----------------------------------------------------------------------------------
def test_pairing_codes_die_with_a_restart() -> None:
    now = [1_000_000.0]
    first = Gate(TOKEN, clock=lambda: now[0])
    code = mint_pairing_code(TOKEN, now=now[0])
    assert first.check(code).kind == "pairing"
    now[0] += 5  # the daemon restarts: the ledger of spent codes is gone, and so is every code minted before
    second = Gate(TOKEN, clock=lambda: now[0])
    assert second.check(code) is None
    unused = mint_pairing_code(TOKEN, now=now[0] - 2)
    assert second.check(unused) is None, "a code minted before the start is refused even if never used"
    assert second.check(mint_pairing_code(TOKEN, now=now[0])).kind == "pairing"


def test_config_redacts_secrets_by_exact_name_only() -> None:
    settings, origin = load_settings(None, {})
    rows = {r["key"]: r["value"] for r in describe(settings, origin)}
    assert rows["model.max_new_tokens"] == settings.model.max_new_tokens
    assert rows["model.history_tokens"] == settings.model.history_tokens
    assert rows["model.draft_tokens"] == settings.model.draft_tokens
    assert "***" not in rows.values()


async def test_revoke_refuses_every_session_and_pairing_code_issued_so_far(tmp_path, logs) -> None:
    from voiced.server.pairing import revocation_path, revoke

    async with running_server(token_file=tmp_path / "token") as (server, _, token):
        async with connect(_url(server), subprotocols=["voiced.v1"]) as ws:
            await ws.send(m.Hello(token=mint_pairing_code(token)).to_json())
            session = m.parse_server(await ws.recv()).credential
        unused = mint_pairing_code(token)
        revoke(revocation_path(server.settings))
        for secret in (session, unused):
            async with connect(_url(server), subprotocols=["voiced.v1"]) as ws:
                await ws.send(m.Hello(token=secret).to_json())
                with pytest.raises(ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), 10)
                assert e.value.rcvd.code == 1008
        await asyncio.sleep(1.1)  # a code minted after the revocation (expiries are whole seconds)
        async with connect(_url(server), subprotocols=["voiced.v1"]) as ws:
            await ws.send(m.Hello(token=mint_pairing_code(token)).to_json())
            assert isinstance(m.parse_server(await ws.recv()), m.Welcome)
        async with client(server, token):  # the token itself still works
            pass


async def test_connections_before_their_hello_are_capped_too(logs) -> None:
    async with running_server(max_clients=3, hello_timeout_s=1.0) as (server, _, token):
        silent = [await _handshake(server.port, None) for _ in range(3)]
        reader, writer = await _handshake(server.port, None)
        head = await asyncio.wait_for(reader.readexactly(4), 10)
        assert head[0] & 0x0F == 8 and struct.unpack("!H", head[2:4])[0] == 1013, head
        writer.close()
        for r, w in silent:  # each is closed at its hello deadline (1008), freeing its place
            head = await asyncio.wait_for(r.readexactly(4), 10)
            assert struct.unpack("!H", head[2:4])[0] == 1008
            w.close()
        async with client(server, token):
            pass
