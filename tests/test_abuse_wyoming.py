"""Abuse on the Wyoming door (no token there), with the `wyoming` package's own client and raw sockets on 127.0.0.1,
over the whole daemon (tiny real model, Whisper tiny.en, espeak-ng, the real Pipeline). Each attack gets its
error event or close, no traceback reaches the log, and a legitimate peer is still answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import async_read_event, async_write_event
from wyoming.handle import Handled, NotHandled
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize

from protocol import messages as m
from tests.support.turn import daemon, turn_settings
from tests.test_wyoming import read_until, refused, still_served
from voiced.server.wyoming import MAX_TEXT_CHARS, PONG_TEXT_CHARS, WyomingServer

TIMEOUT = 60.0
TOKEN = "test-token-0123456789abcdef"


@asynccontextmanager
async def wyoming_daemon(pace: bool = False, **sections: dict[str, Any]) -> AsyncIterator[tuple[WyomingServer, Any, Any]]:
    settings = turn_settings(**sections)
    async with daemon(settings, TOKEN, pace=pace) as (pipeline, ws, collector):
        async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy:
            yield wy, ws, collector


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    yield
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


async def answered(client: AsyncTcpClient, text: str = "Hello, who are you?") -> Handled:
    from wyoming.asr import Transcript

    await client.write_event(Transcript(text=text).event())
    events = await read_until(client, lambda e: Handled.is_type(e.type) or NotHandled.is_type(e.type))
    assert Handled.is_type(events[-1].type), events[-1]
    return Handled.from_event(events[-1])


async def test_transcripts_then_a_disconnect_leave_one_turn_running_and_drop_the_rest() -> None:
    from wyoming.asr import Transcript

    async with wyoming_daemon(pace=True) as (wy, _, collector):
        async with AsyncTcpClient("127.0.0.1", wy.port) as legit:
            # A spoken reply, paced at real time, holds the model while the flood arrives (a Home Assistant
            # transcript turn is text only and would be done before the next event is read).
            await wy.backend.on_text_query("ws-holder", "Tell me about the sea.", "hold")
            async with asyncio.timeout(TIMEOUT):
                while wy.backend.turn is None:
                    await asyncio.sleep(0.01)
            async with AsyncTcpClient("127.0.0.1", wy.port) as flood:
                for i in range(5):
                    await flood.write_event(Transcript(text=f"Flood question {i}?").event())
                replaced = await read_until(flood, lambda e: NotHandled.is_type(e.type) and len(wy.backend._waiting) == 1, TIMEOUT)
                assert all("replaced by a newer request" in (NotHandled.from_event(e).text or "") for e in replaced)
                await asyncio.sleep(0.2)  # the rest of the flood is in
            await answered(legit)
        started = [x.request_id for x in collector.messages if isinstance(x, m.ReplyStarted)]
    # the holder runs; flood questions 1-4 are each replaced by the next (each told so), the 5th waits and is
    # dropped with its peer; the legitimate question is answered
    assert started == ["hold", "wyoming-1-1"], started


async def test_text_is_capped_like_the_websocket_side() -> None:
    from wyoming.asr import Transcript

    async with wyoming_daemon() as (wy, _, collector), AsyncTcpClient("127.0.0.1", wy.port) as client:
        for event in (Transcript(text="x" * (MAX_TEXT_CHARS + 1)).event(), Synthesize(text="word " * 2000).event()):
            await client.write_event(event)
            err = Error.from_event((await read_until(client, lambda e: Error.is_type(e.type)))[-1])
            assert err.code == "bad-event" and f"{MAX_TEXT_CHARS}-character limit" in (err.text or "")
        assert not any(isinstance(x, m.ReplyStarted) for x in collector.messages)
        await answered(client)


async def test_connection_cap_and_timeouts_keep_both_doors_open() -> None:
    server = {"max_clients": 4, "hello_timeout_s": 1.0, "idle_timeout_s": 1.0}
    async with wyoming_daemon(server=server) as (wy, ws, _):
        idle = [await asyncio.open_connection("127.0.0.1", wy.port) for _ in range(4)]
        over = await asyncio.open_connection("127.0.0.1", wy.port)
        err = await refused(lambda: async_read_event(over[0]))
        assert err.code == "server-full" and "server.max_clients" in (err.text or "")
        async with connect(
            f"ws://127.0.0.1:{ws.port}", subprotocols=["voiced.v1"], additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:
            await c.send(m.Hello().to_json())
            assert isinstance(m.parse_server(await asyncio.wait_for(c.recv(), 10)), m.Welcome), "the other door is open"
        for reader, _ in idle:  # silent connections are closed after hello_timeout_s, each told why
            err = await refused(lambda r=reader: async_read_event(r))
            assert err.code == "timeout" and "server.hello_timeout_s" in (err.text or "")
        async with AsyncTcpClient("127.0.0.1", wy.port) as client:  # room again
            await still_served(client)
            err = await refused(client.read_event)  # then idle with nothing in progress
            assert err.code == "timeout" and "server.idle_timeout_s" in (err.text or "")
        for _, w in [*idle, over]:
            w.close()


async def test_ping_text_is_not_echoed_unbounded() -> None:
    async with wyoming_daemon() as (wy, _, _c), AsyncTcpClient("127.0.0.1", wy.port) as client:
        for _ in range(20):
            await client.write_event(Ping(text="p" * (512 << 10)).event())
        seen: list[int] = []
        await read_until(
            client, lambda e: Pong.is_type(e.type) and seen.append(len(Pong.from_event(e).text or "")) is None and len(seen) == 20
        )
        assert seen == [PONG_TEXT_CHARS] * 20
        await still_served(client)


async def test_costly_audio_formats_spend_the_budget_by_bytes() -> None:
    """384 kHz x 32 channels x int32 is 0.02 s a megabyte by its duration; charged by bytes, it is refused."""
    async with wyoming_daemon(server={"audio_burst_s": 5.0}) as (wy, _, _c), AsyncTcpClient("127.0.0.1", wy.port) as other:
        async with AsyncTcpClient("127.0.0.1", wy.port) as client:
            await client.write_event(AudioStart(rate=384000, width=4, channels=32).event())
            chunk = AudioChunk(rate=384000, width=4, channels=32, audio=bytes(960 << 10)).event()
            err = None
            for _ in range(10):
                try:
                    await client.write_event(chunk)
                except ConnectionError:
                    break
            err = await refused(client.read_event)
        assert err.code == "rate-limited" and "server.max_audio_speed" in (err.text or "")
        await still_served(other)


async def test_synthesize_for_a_peer_that_never_reads_stops_and_warns_once(caplog) -> None:
    async with wyoming_daemon(server={"client_queue_bytes": 1 << 16}) as (wy, _, _c), AsyncTcpClient("127.0.0.1", wy.port) as other:
        reader, writer = await asyncio.open_connection("127.0.0.1", wy.port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await async_write_event(Synthesize(text="All work and no play makes a dull voice. " * 180).event(), writer)
        # the connection ends (stalled: cancelled and closed) long before the 7,000 characters could be spoken
        await asyncio.wait_for(_until_closed(wy), TIMEOUT)
        await still_served(other)
        writer.close()
    stalled = [r for r in caplog.records if "is not reading" in r.getMessage()]
    assert len(stalled) == 1, [r.getMessage() for r in stalled]


async def _until_closed(wy: WyomingServer) -> None:
    handlers = wy._server._handlers  # type: ignore[union-attr]
    while len(handlers) > 1:  # the other peer's stays
        await asyncio.sleep(0.05)


async def test_reconnecting_does_not_refill_the_audio_budget() -> None:
    """Each connection has its own budget, and the door one for all of them: a fresh connection is no fresh burst."""
    server = {"max_audio_speed": 1.0, "audio_burst_s": 2.0}
    async with wyoming_daemon(server=server) as (wy, _, _c), AsyncTcpClient("127.0.0.1", wy.port) as other:
        errors = []
        for _ in range(8):  # each connection sends 1.5 s at once, within its own 2 s burst; the door's is 8 s
            async with AsyncTcpClient("127.0.0.1", wy.port) as client:
                await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                with contextlib.suppress(ConnectionError):
                    for _ in range(15):
                        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event())
                    await client.write_event(Ping(text="done?").event())
                ev = await asyncio.wait_for(client.read_event(), TIMEOUT)
                if ev is not None and Error.is_type(ev.type):
                    errors.append(Error.from_event(ev))
        assert errors and errors[0].code == "rate-limited" and "all Wyoming peers together" in (errors[0].text or "")
        await still_served(other)


async def test_event_types_cannot_forge_log_lines(caplog) -> None:
    async with wyoming_daemon(server={"max_message_bytes": 4096}) as (wy, _, _c):
        reader, writer = await asyncio.open_connection("127.0.0.1", wy.port)
        writer.write(b'{"type": "x\\nWARNING forged line", "payload_length": 99999}\n')
        err = await refused(lambda: async_read_event(reader))
        writer.close()
        assert err.code == "too-large"
    lines = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert lines and all("\n" not in x for x in lines), lines
