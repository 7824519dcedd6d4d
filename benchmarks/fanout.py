"""Fan-out latency: reply audio produced (broadcast_audio called) -> frame received by each local listener.

Prints one JSON object: p50/p99/max added latency in ms for 1, 10 and 100 listeners (goal: p99 < 5 ms at 100);
the server's own share (broadcast_audio called -> the frame written to every listener's socket), which separates
what the server adds from the listeners' processes competing for the same cores; and the server-side CPU cost
of one broadcast_audio call, at one rate and at four rates (resampling included).

Listeners run in separate processes (each one asyncio loop, up to 25 connections) so the server's loop is not
also the clients' loop; CLOCK_MONOTONIC is shared by processes, so timestamps compare directly.

    python benchmarks/fanout.py [--chunks 100] [--interval-ms 20] [--counts 1,10,100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import framing  # noqa: E402
from protocol import messages as m  # noqa: E402

RATE = 22050  # espeak-ng's rate: with listeners at the same rate, one 100 ms chunk = one frame, seq = chunk index
CHUNK = RATE // 10
PER_PROCESS = 25


# ---------------------------------------------------------------------------------------------------- listener side


async def _listener_main(url: str, token: str, n: int, rate: int) -> None:
    from websockets.asyncio.client import connect

    conns = []
    for i in range(n):
        ws = await connect(
            url, subprotocols=["voiced.v1"], additional_headers={"Authorization": f"Bearer {token}"}, compression=None, max_queue=1024
        )
        await ws.send(m.Hello(name=f"bench{i}", audio_rate=rate, events=["reply_done"]).to_json())  # type: ignore[arg-type]
        await ws.recv()
        conns.append(ws)
    print("ready", flush=True)

    async def drain(ws) -> list[tuple[int, float]]:
        got = []
        while True:
            raw = await ws.recv()
            t = time.monotonic()
            if isinstance(raw, bytes):
                got.append((framing.HEADER.unpack_from(raw)[5], t))
            elif '"reply_done"' in raw:
                return got

    results = await asyncio.gather(*(drain(ws) for ws in conns))
    print(json.dumps(results), flush=True)
    for ws in conns:
        await ws.close()


# ---------------------------------------------------------------------------------------------------- server side


class _NoTurns:
    async def on_client_audio(self, *a): ...
    async def on_client_audio_end(self, *a): ...
    async def on_text_query(self, *a): ...
    async def on_cancel(self, *a): ...
    async def on_push_to_talk(self, *a): ...
    async def on_forget(self, *a): ...
    async def on_client_disconnect(self, *a): ...


def _audio(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 6000).astype(np.int16)


async def _run(count: int, chunks: int, interval_s: float) -> dict:
    from voiced.config import ServerSettings
    from voiced.server.ws import VoicedServer

    token = "bench-" + os.urandom(12).hex()
    server = VoicedServer(ServerSettings(host="127.0.0.1", port=0, max_clients=max(64, count + 8)), _NoTurns(), token)
    async with server:
        url = f"ws://127.0.0.1:{server.port}"
        procs = []
        for start in range(0, count, PER_PROCESS):
            n = min(PER_PROCESS, count - start)
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--listener", url, token, str(n), str(RATE), stdout=subprocess.PIPE, cwd=str(ROOT)
                )
            )
        for p in procs:
            assert (await p.stdout.readline()).strip() == b"ready"
        while len(server.clients) < count:
            await asyncio.sleep(0.01)
        audio = _audio(chunks * 0.1)
        produced: list[float] = []
        cost: list[float] = []
        drained: list[float] = []
        for k in range(chunks):
            t0 = time.monotonic()
            server.broadcast_audio("bench", audio[k * CHUNK : (k + 1) * CHUNK], RATE)
            produced.append(t0)
            cost.append(time.monotonic() - t0)
            boxes = [c.outbox for c in server.clients.values()]
            while any(b.qsize() for b in boxes):  # the server's own share: until every writer has taken the frame
                await asyncio.sleep(0)
            await asyncio.sleep(0)  # ... and finished writing it to its socket
            drained.append(time.monotonic() - t0)
            await asyncio.sleep(max(0.0, interval_s - drained[-1]))
        server.broadcast(m.ReplyDone(reply_id="bench", text=""))
        lat = []
        frames = 0
        for p in procs:
            out, _ = await p.communicate()
            for conn in json.loads(out.decode().strip().splitlines()[-1]):
                assert [s for s, _ in conn] == list(range(chunks)), "frames lost or out of order"
                frames += len(conn)
                lat.extend(t - produced[s] for s, t in conn)
    ms = np.array(lat) * 1000
    return {
        "listeners": count,
        "frames_received": frames,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "broadcast_call_us_p50": round(float(np.percentile(cost, 50)) * 1e6, 1),
        "server_written_ms_p50": round(float(np.percentile(drained, 50)) * 1000, 3),
        "server_written_ms_p99": round(float(np.percentile(drained, 99)) * 1000, 3),
    }


def _call_cost(listeners: int, rates: list[int], chunks: int = 200) -> float:
    """Server CPU per broadcast_audio call (µs) with in-memory outboxes: resampling + framing + queueing."""
    from voiced.server.fanout import AudioFanout, Listener

    class _Box:
        overflowed = False

        def put(self, item):
            return True

    fan = AudioFanout(100)
    ls = [Listener(f"c{i}", rates[i % len(rates)], _Box()) for i in range(listeners)]  # type: ignore[arg-type]
    audio = _audio(chunks * 0.1)
    t0 = time.perf_counter()
    for k in range(chunks):
        fan.push("r", audio[k * CHUNK : (k + 1) * CHUNK], RATE, ls)
    fan.end("r", ls)
    return (time.perf_counter() - t0) / chunks * 1e6


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--listener":
        url, token, n, rate = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        asyncio.run(_listener_main(url, token, n, rate))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100, help="100 ms chunks of reply audio per run")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="time between chunks (TTS faster than real time)")
    ap.add_argument("--counts", default="1,10,100")
    args = ap.parse_args()
    runs = [asyncio.run(_run(int(c), args.chunks, args.interval_ms / 1000)) for c in args.counts.split(",")]
    result = {
        "benchmark": "fanout",
        "what": "added latency, reply audio produced (broadcast_audio) -> frame received, local listeners in other processes",
        "chunk_ms": 100,
        "interval_ms": args.interval_ms,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "goal_p99_ms_at_100": 5.0,
        "goal_met": next((r["p99_ms"] < 5.0 for r in runs if r["listeners"] == 100), None),
        "broadcast_cost_us_100_listeners": {
            "one_rate": round(_call_cost(100, [RATE]), 1),
            "four_rates": round(_call_cost(100, [16000, 22050, 24000, 48000]), 1),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
