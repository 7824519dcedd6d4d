"""Abuse: each attack of issue 22 against a running daemon, with a legitimate client measuring meanwhile.

The daemon runs in a child process (the tiny real model of the tests, Whisper tiny.en, espeak-ng, the real
Pipeline, WebSocket and Wyoming on 127.0.0.1), so its RSS is its own. Prints one JSON object per attack:
the legitimate client's ping round trip p50/p99 (ms) during the attack, its text query's time to reply_done
after it (s), the daemon's RSS before / peak / after (MiB), and the attack's outcome as the attacker saw it.

    python benchmarks/abuse.py [--only NAME[,NAME]]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import messages as m  # noqa: E402
from tests.support.server import client_frame  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


# ------------------------------------------------------------------------------------------------------ the daemon
async def _serve() -> None:
    from tests.support.turn import daemon, turn_settings
    from voiced.server.wyoming import WyomingServer

    settings = turn_settings(server={"port": 0})
    async with daemon(settings, TOKEN, pace=True) as (pipeline, ws, _):
        async with WyomingServer("tcp://127.0.0.1:0", pipeline) as wy:
            print(json.dumps({"ws": ws.port, "wy": wy.port}), flush=True)
            await asyncio.Event().wait()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------------------------------------ clients
async def _ws(port: int, **hello: object):
    from websockets.asyncio.client import connect

    c = await connect(f"ws://127.0.0.1:{port}", subprotocols=["voiced.v1"], additional_headers={"Authorization": f"Bearer {TOKEN}"},
                      max_size=None, open_timeout=30)  # fmt: skip
    await c.send(m.Hello(**hello).to_json())  # type: ignore[arg-type]
    await c.recv()
    return c


async def _until(c, done: Callable[[m.ServerMessage], bool], timeout: float = 120) -> None:
    async def run() -> None:
        while True:
            raw = await c.recv()
            if isinstance(raw, str) and (msg := m.parse_server(raw)) is not None and done(msg):
                return

    await asyncio.wait_for(run(), timeout)


class Legit:
    """A well-behaved client: pings every 20 ms during an attack; one text query after it."""

    def __init__(self, port: int):
        self.port = port
        self.rtts: list[float] = []

    async def ping_while(self, stop: asyncio.Event) -> None:
        c = await _ws(self.port, name="legit", events=["pong"])
        try:
            while not stop.is_set():
                t = time.monotonic()
                await c.send(m.Ping(data="x").to_json())
                try:
                    await _until(c, lambda x: isinstance(x, m.Pong), 30)
                except TimeoutError:
                    self.rtts.append(30.0)
                    continue
                self.rtts.append(time.monotonic() - t)
                await asyncio.sleep(0.02)
        finally:
            await c.close()

    async def query_s(self) -> float:
        c = await _ws(self.port, name="legit-q")
        try:
            t = time.monotonic()
            await c.send(m.TextQuery(text="What is two plus two?", request_id="legit").to_json())
            rid: list[str] = []
            await _until(c, lambda x: isinstance(x, m.ReplyStarted) and x.request_id == "legit" and not rid.append(x.reply_id))
            await _until(c, lambda x: isinstance(x, m.ReplyDone) and x.reply_id == rid[0])
            return time.monotonic() - t
        finally:
            await c.close()


async def _raw_ws(port: int, token: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: voiced.v1\r\n{auth}\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> int | None:
    try:
        head = await asyncio.wait_for(reader.readexactly(4), 10)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        return None
    return struct.unpack("!H", head[2:4])[0] if head[0] & 0x0F == 8 else None


# ------------------------------------------------------------------------------------------------------ attacks
async def turn_flood(ports: dict[str, int]) -> dict:
    c = await _ws(ports["ws"], name="flood")
    for i in range(2000):
        await c.send(m.TextQuery(text="x" * 7999 + "?", request_id=f"f{i}").to_json())
    busy = 0

    async def count() -> None:
        nonlocal busy
        while busy < 1998:  # f0 runs, f1..f1998 are each replaced by the next, f1999 waits
            raw = await c.recv()
            if isinstance(raw, str) and '"busy"' in raw:
                busy += 1

    await asyncio.wait_for(count(), 60)
    await c.close()
    return {"queries": 2000, "busy_errors": busy}


async def non_reader_errors(ports: dict[str, int]) -> dict:
    """20 clients that never read, each sending 50 messages whose 128 Ki-character `type` the error quotes."""
    conns = [await _raw_ws(ports["ws"], TOKEN) for _ in range(20)]
    bad = client_frame(json.dumps({"type": "\x7f" * (128 << 10)}).encode())
    for _, w in conns:
        w.write(client_frame(m.Hello().to_json().encode()))
    for _ in range(50):
        for _, w in conns:
            w.write(bad)
        await asyncio.gather(*(w.drain() for _, w in conns), return_exceptions=True)
    await asyncio.sleep(1.0)
    for _, w in conns:
        w.close()
    return {"clients": 20, "messages_each": 50, "message_bytes": len(bad)}


async def unauth_big_hello(ports: dict[str, int]) -> dict:
    codes = []
    big = client_frame(b'{"type": "hello", "pad": "' + b"z" * (4 << 20) + b'"}')
    for _ in range(20):
        r, w = await _raw_ws(ports["ws"], None)
        w.write(big[: 64 << 10])
        codes.append(await _close_code(r))
        w.close()
    return {"attempts": 20, "close_codes": sorted(set(map(str, codes)))}


async def nested_json(ports: dict[str, int]) -> dict:
    codes = []
    for _ in range(300):
        r, w = await _raw_ws(ports["ws"], None)
        w.write(client_frame(("[" * 5000 + "]" * 5000).encode()))
        codes.append(await _close_code(r))
        w.close()
    return {"attempts": 300, "close_codes": sorted(set(map(str, codes)))}


async def wyoming_connections(ports: dict[str, int]) -> dict:
    conns = []
    for _ in range(1030):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", ports["wy"]))
        except OSError:
            break
    await asyncio.sleep(0.5)
    c = await _ws(ports["ws"], name="other-door")  # the WebSocket door must stay open
    await c.close()
    refused = 0
    for r, w in conns[64:]:
        try:
            line = await asyncio.wait_for(r.readline(), 5)
            refused += b"server-full" in line or b'"error"' in line
        except (TimeoutError, ConnectionError):
            pass
    for _, w in conns:
        w.close()
    return {"opened": len(conns), "refused_with_error": refused, "websocket_welcomed": True}


async def wyoming_ping_flood(ports: dict[str, int]) -> dict:
    from wyoming.event import async_write_event
    from wyoming.ping import Ping

    # (no small SO_RCVBUF here: a full receive buffer drops the segments that carry the daemon's ACKs of our own
    # data, and the attacker's sends stall, which would measure the kernel, not the daemon)
    r, w = await asyncio.open_connection("127.0.0.1", ports["wy"])
    sent, stopped = 0, "all sent"
    try:
        for _ in range(1000):
            await asyncio.wait_for(async_write_event(Ping(text="p" * ((1 << 20) - 64)).event(), w), 10)
            sent += 1
    except (ConnectionError, TimeoutError) as e:
        stopped = type(e).__name__
    w.close()
    return {"pings_of_1MiB_sent": sent, "attacker_stopped_by": stopped}


async def wyoming_synthesize_non_reader(ports: dict[str, int]) -> dict:
    from wyoming.event import async_write_event
    from wyoming.tts import Synthesize

    r, w = await asyncio.open_connection("127.0.0.1", ports["wy"])
    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await async_write_event(Synthesize(text="All work and no play makes a dull voice. " * 190).event(), w)
    await asyncio.sleep(3.0)  # never reading: the daemon should stop synthesizing once this peer's queue is full
    cpu0 = _cpu_s(ports["pid"])
    await asyncio.sleep(7.0)
    cpu = _cpu_s(ports["pid"]) - cpu0
    w.close()
    return {"chars": 7790, "daemon_cpu_s_in_7s_after_stall": round(cpu, 2)}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wyoming_transcripts_then_leave(ports: dict[str, int]) -> dict:
    from wyoming.asr import Transcript
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", ports["wy"]) as c:
        for i in range(5):
            await c.write_event(Transcript(text=f"Flood question {i}?").event())
        await asyncio.sleep(0.3)
    return {"transcripts": 5, "then": "disconnect"}


ATTACKS: dict[str, Callable[[dict[str, int]], Awaitable[dict]]] = {
    f.__name__: f
    for f in (
        turn_flood,
        non_reader_errors,
        unauth_big_hello,
        nested_json,
        wyoming_connections,
        wyoming_ping_flood,
        wyoming_synthesize_non_reader,
        wyoming_transcripts_then_leave,
    )
}


async def _run(only: list[str]) -> None:
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        ports["pid"] = child.pid
        legit = Legit(ports["ws"])
        await legit.query_s()  # warm
        for name in only:
            before = _rss_mib(child.pid)
            peak = [before]
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _rss_mib(child.pid))
                    await asyncio.sleep(0.05)

            legit.rtts = []
            bg = [asyncio.ensure_future(legit.ping_while(stop)), asyncio.ensure_future(sample())]
            await asyncio.sleep(0.3)
            try:
                outcome = await ATTACKS[name](ports)
            except Exception as e:  # the attack itself failing is an outcome too
                outcome = {"attack_error": f"{type(e).__name__}: {e}"}
            stop.set()
            await asyncio.gather(*bg, return_exceptions=True)
            query_s = await legit.query_s()
            await asyncio.sleep(1.0)
            rtt = np.array(legit.rtts or [float("nan")]) * 1e3
            print(json.dumps({
                "attack": name, "legit_ping_ms": {"p50": round(float(np.percentile(rtt, 50)), 2), "p99": round(float(np.percentile(rtt, 99)), 2), "n": len(legit.rtts)},
                "legit_query_after_s": round(query_s, 2),
                "daemon_rss_mib": {"before": round(before, 1), "peak": round(peak[0], 1), "after": round(_rss_mib(child.pid), 1)},
                "outcome": outcome,
                "daemon_alive": child.poll() is None,
            }), flush=True)  # fmt: skip
    finally:
        child.terminate()
        child.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ["turn_flood", *["non_reader_errors"] * 3, *[a for a in ATTACKS if a not in ("turn_flood", "non_reader_errors")]]
    ap.add_argument("--only", default=",".join(default), help="comma-separated attacks: " + ", ".join(ATTACKS))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    asyncio.run(_run([a for a in args.only.split(",") if a]))


if __name__ == "__main__":
    main()
