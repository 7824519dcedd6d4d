"""The real server on 127.0.0.1 with real websockets clients: handshake, version, auth, origin, routing."""

from __future__ import annotations

import asyncio
import contextlib
import http.client

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import messages as m
from protocol.client import ClientError, VoicedClient
from tests.support.server import running_server, wait_for


def _url(server) -> str:
    return f"ws://127.0.0.1:{server.port}"


async def _refused_silently(ws) -> int:
    """The server closes without sending a single message; returns the close code."""
    with pytest.raises(ConnectionClosed) as e:
        await asyncio.wait_for(ws.recv(), 10)
    return e.value.rcvd.code


async def test_welcome_with_bearer_header_and_with_token_in_hello():
    async with running_server() as (server, handler, token):
        async with VoicedClient(_url(server), token, audio_rate=22050) as a, VoicedClient(_url(server), token, token_in_hello=True) as b:
            assert a.welcome.protocol == "voiced.v1" and a.welcome.audio_rate == 22050
            assert b.welcome.audio_rate == 24000
            assert a.session_id != b.session_id
            assert a.connection.subprotocol == "voiced.v1"
            await wait_for(lambda: len(server.clients) == 2)
            assert server.clients[a.session_id].name == "voiced-client"
        await wait_for(lambda: len(server.clients) == 0)
        assert sorted(c[0] for c in handler.calls) == ["disconnect", "disconnect"]


@pytest.mark.parametrize("how", ["no token", "wrong token in hello", "wrong bearer", "garbage first", "binary first"])
async def test_auth_refusal_closes_1008_with_nothing_sent(how):
    async with running_server() as (server, handler, token):
        headers = {"Authorization": "Bearer " + "x" * 30} if how == "wrong bearer" else {}
        async with connect(_url(server), subprotocols=["voiced.v1"], additional_headers=headers) as ws:
            if how == "no token":
                await ws.send(m.Hello().to_json())
            elif how == "wrong token in hello":
                await ws.send(m.Hello(token=token[:-1] + ("A" if token[-1] != "A" else "B")).to_json())
            elif how == "wrong bearer":  # refused at once; a right token in hello would not rescue it
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(m.Hello(token=token).to_json())
            elif how == "garbage first":
                await ws.send("{not json")
            else:
                await ws.send(b"\x01\x01\x01\x01" + bytes(12))
            assert await _refused_silently(ws) == 1008
        assert len(server.clients) == 0 and handler.calls == []


async def test_no_hello_in_time_closes_1008():
    async with running_server(hello_timeout_s=0.3) as (server, _, token):
        async with connect(_url(server), subprotocols=["voiced.v1"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert await _refused_silently(ws) == 1008


async def test_header_authenticated_client_gets_told_to_say_hello():
    async with running_server() as (server, _, token):
        async with connect(_url(server), subprotocols=["voiced.v1"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(m.Ping().to_json())
            err = m.parse_server(await ws.recv())
            assert err.type == "error" and err.code == "protocol" and "hello" in err.message
            await ws.send(m.Hello().to_json())
            assert m.parse_server(await ws.recv()).type == "welcome"


@pytest.mark.parametrize("offered", [None, ["voiced.v0"], ["chat", "voiced.v2"]])
async def test_version_negotiation_refuses_unknown_versions(offered):
    async with running_server() as (server, _, token):
        with pytest.raises(InvalidStatus) as e:
            await connect(_url(server), subprotocols=offered, additional_headers={"Authorization": f"Bearer {token}"})
        assert e.value.response.status_code == 400
        assert b"voiced.v1" in e.value.response.body


async def test_version_negotiation_picks_v1_among_several():
    async with running_server() as (server, _, token):
        async with connect(
            _url(server), subprotocols=["voiced.v2", "voiced.v1"], additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            assert ws.subprotocol == "voiced.v1"


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://evil.example", False),
        ("http://localhost:1", False),
        ("http://127.0.0.1:{port}", True),
        ("http://localhost:{port}", True),
        ("https://home.example", True),
    ],
)
async def test_origin_check(origin, allowed):
    async with running_server(allowed_origins=["https://home.example"]) as (server, _, token):
        origin = origin.format(port=server.port)
        client = VoicedClient(_url(server), token, origin=origin)
        if allowed:
            async with client:
                assert client.welcome is not None
        else:
            with pytest.raises(ClientError, match="HTTP 403.*allowed_origins"):
                await client.connect()


def _http_get(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    r = conn.getresponse()
    return r.status, r.read()


async def test_plain_http_goes_to_the_page_hook_or_gets_426():
    async with running_server() as (server, _, _t):
        status, body = await asyncio.to_thread(_http_get, server.port)
        assert status == 426 and b"voiced.v1" in body

    def page(conn, request):
        return conn.respond(200, f"page for {request.path}\n")

    async with running_server() as (server, _, _t):
        server._http_handler = page  # the browser-page issue passes http_handler= to the constructor
        status, body = await asyncio.to_thread(_http_get, server.port)
        assert status == 200 and body == b"page for /\n"


async def test_max_clients_gets_typed_error_and_1013():
    async with running_server(max_clients=2) as (server, _, token):
        async with VoicedClient(_url(server), token), VoicedClient(_url(server), token):
            async with connect(_url(server), subprotocols=["voiced.v1"]) as ws:
                await ws.send(m.Hello(token=token).to_json())
                err = m.parse_server(await ws.recv())
                assert err.code == "server_full" and "max_clients" in err.message
                with pytest.raises(ConnectionClosed) as e:
                    await ws.recv()
                assert e.value.rcvd.code == 1013
            assert len(server.clients) == 2


async def test_every_client_message_reaches_the_handler():
    async with running_server() as (server, handler, token):
        async with VoicedClient(_url(server), token) as c:
            sid = c.session_id
            await c.send(m.TextQuery(text="what time is it", request_id="q1"))
            await c.send(m.Cancel(request_id="q1"))
            await c.send(m.PushToTalk(pressed=True))
            await c.send(m.PushToTalk(pressed=False))
            await c.send(m.Forget())
            await c.send(m.Ping(data="p1"))
            assert await c.recv() == m.Pong(data="p1")
            assert handler.calls == [
                ("text_query", sid, "what time is it", "q1"),
                ("cancel", sid, "q1"),
                ("push_to_talk", sid, True),
                ("push_to_talk", sid, False),
                ("forget", sid),
            ]
            await c.send(m.Hello())
            err = await c.recv()
            assert err.code == "protocol"
        await wait_for(lambda: handler.calls[-1] == ("disconnect", sid))


async def test_broadcast_respects_event_filters_and_send_targets_one():
    async with running_server() as (server, _, token):
        async with VoicedClient(_url(server), token) as all_, VoicedClient(_url(server), token, events=["state", "reply_done"]) as some:
            sent = [
                m.State(state="listening", source="local"),
                m.SpeechStarted(t=0.5, source="local"),
                m.Transcript(text="hi", final=True, source="local"),
                m.ReplyStarted(reply_id="r1", source="local"),
                m.ReplyDelta(reply_id="r1", text="Hello"),
                m.ReplyDone(reply_id="r1", text="Hello", timings_ms={"total": 12.0}),
                m.State(state="idle"),
            ]
            for msg in sent:
                server.broadcast(msg)
            assert server.send(some.session_id, m.Error(code="busy", message="only you"))
            assert not server.send("nobody", m.State(state="idle"))
            got_all = [await all_.recv() for _ in sent]
            assert got_all == sent
            got_some = [await some.recv() for _ in range(4)]
            assert got_some == [sent[0], sent[5], sent[6], m.Error(code="busy", message="only you")]
            await all_.send(m.Ping(data="end"))
            assert await all_.recv() == m.Pong(data="end")  # nothing else was queued for it


async def test_broadcast_from_another_thread():
    async with running_server() as (server, _, token):
        async with VoicedClient(_url(server), token) as c:
            await asyncio.to_thread(server.broadcast, m.State(state="thinking"))
            assert await asyncio.wait_for(c.recv(), 5) == m.State(state="thinking")


async def test_client_library_reports_a_wrong_token():
    async with running_server() as (server, _, token):
        with pytest.raises(ClientError, match="refused the token"):
            await VoicedClient(_url(server), "w" * 40).connect()
