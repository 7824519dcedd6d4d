"""Commands before the model: what matching costs, and what it saves a spoken turn.

Prints one JSON object:
- `matcher`: ms per utterance of voiced.commands' hassil matcher (Home Assistant's templates + ours), after its
  warm-up, over commands and over questions that must fall through to the model (p50 / p90 / max), and its
  build and warm-up time;
- `spoken` (unless --no-spoken): last word -> first reply audio at a real WebSocket client, a timer command and a
  question to the model side by side, asked alternately (one daemon in-process on the configured bundle, the
  default 1.5B unless --bundle; real VAD, Whisper, espeak, server; the client streams paced like a microphone).

    .venv/bin/python benchmarks/commands.py [--n 4] [--bundle default] [--no-spoken] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import messages as m  # noqa: E402
from protocol.client import AudioChunk, VoicedClient  # noqa: E402
from tests.support.speech import compose  # noqa: E402
from voiced.commands.match import Matcher  # noqa: E402

COMMANDS = [
    "Set a timer for ten minutes.", "Set a pasta timer for 8 minutes.", "How much time is left?", "Cancel the timer.",
    "Pause the timer.", "Add 5 minutes to the timer.", "What time is it?", "What's the date?",
    "What day is it tomorrow?", "Wake me up at 7:30.", "Remind me to call my mother tomorrow at 9.",
    "What are my reminders?",
]  # fmt: skip
QUESTIONS = [
    "What is the capital of France?", "Turn on the kitchen light.", "Tell me a fun fact about octopuses.",
    "How many legs does a spider have?", "What time is it in Tokyo?", "Could you please tell me, in one short "
    "sentence, what the capital city of France is?",
]  # fmt: skip
SPOKEN = [("command", "Set a timer for ten minutes."), ("model", "What is the capital of France?"),
          ("command", "What time is it?"), ("model", "How many legs does a spider have?")]  # fmt: skip
TOKEN = "bench-token-0123456789abcdef"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3) if xs else float("nan")


def stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": pct(xs, 0.5), "p90": pct(xs, 0.9), "max": round(max(xs), 3), "mean": round(statistics.fmean(xs), 3)}


def bench_matcher(repeat: int) -> dict:
    t0 = time.perf_counter()
    matcher = Matcher()
    built = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    matcher.warm_up()
    warm = (time.perf_counter() - t0) * 1e3
    out: dict = {"build_ms": round(built, 1), "warm_up_ms": round(warm, 1)}
    for name, texts, want in (("commands", COMMANDS, True), ("questions", QUESTIONS, False)):
        times = []
        for _ in range(repeat):
            for text in texts:
                t = time.perf_counter()
                got = matcher.match(text)
                times.append((time.perf_counter() - t) * 1e3)
                assert (got is not None) == want, (text, got)
        out[f"{name}_ms"] = stats(times)
    return out


async def one(url: str, text: str, seed: int) -> dict:
    rec = compose([0.5, text, 2.5], seed=seed)
    speech_end_s = rec.segments[-1][1]
    async with VoicedClient(url, TOKEN, roles=["microphone", "listener"], audio_rate=16000) as c:
        t0 = time.monotonic()
        first_audio: float | None = None
        done: m.ReplyDone | None = None

        async def listen() -> None:
            nonlocal first_audio, done
            async for msg in c.events():
                if isinstance(msg, AudioChunk) and first_audio is None:
                    first_audio = time.monotonic()
                if isinstance(msg, m.ReplyDone) and msg.text != "Your timer is done.":
                    done = msg
                    return

        listener = asyncio.create_task(listen())
        await c.send_audio(rec.pcm, 16000, frame_ms=30, realtime=True, end=False)
        await asyncio.wait_for(listener, 120)
    assert first_audio is not None and done is not None
    return {"text": text, "reply": done.text, "last_word_to_first_audio_ms": round((first_audio - (t0 + speech_end_s)) * 1e3, 1),
            "detected_to_first_audio_ms": done.timings_ms.get("end_of_speech_to_first_audio"),
            "decode_tokens": done.timings_ms.get("decode_tokens", 0.0)}  # fmt: skip


async def bench_spoken(bundle: str, n: int, threads: int) -> dict:
    from voiced.assistant import Assistant
    from voiced.config import load_settings
    from voiced.model import store
    from voiced.model.bundle import load_bundle
    from voiced.pipeline import Pipeline
    from voiced.server.ws import VoicedServer
    from voiced.speech.tts import make_tts

    settings, _ = load_settings(None, {
        "server": {"port": 0}, "model": {"threads": threads, "bundle": bundle},
        "audio": {"input_device": "none", "output_device": "none"}, "commands": {"ring_for_s": 0},
    })  # fmt: skip
    assistant = Assistant(load_bundle(store.ensure_prepared(bundle, progress=False)), settings.model)
    pipeline = Pipeline(settings, assistant, make_tts(settings.tts), None, pace=False)
    await pipeline.warm_up()
    server = VoicedServer(settings.server, pipeline, TOKEN)
    pipeline.add_publisher(server)
    rows: dict[str, list[dict]] = {"command": [], "model": []}
    async with server:
        for i in range(n):
            for kind, text in SPOKEN:
                await pipeline.on_forget("bench")
                rows[kind].append(await one(server.url, text, seed=i))
    await pipeline.aclose()
    out = {}
    for kind, rs in rows.items():
        out[kind] = {
            "last_word_to_first_audio_ms": stats([r["last_word_to_first_audio_ms"] for r in rs]),
            "detected_to_first_audio_ms": stats(
                [r["detected_to_first_audio_ms"] for r in rs if r["detected_to_first_audio_ms"] is not None]
            ),
            "decode_tokens_mean": round(statistics.fmean(r["decode_tokens"] for r in rs), 1),
            "replies": sorted({r["reply"] for r in rs}),
        }
    out["bundle"] = bundle
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--n", type=int, default=3, help="rounds of the spoken pairs (each round: 2 commands, 2 questions)")
    ap.add_argument("--repeat", type=int, default=50, help="passes over the utterances for the matcher timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-spoken", action="store_true")
    args = ap.parse_args()
    result = {"matcher": bench_matcher(args.repeat)}
    if not args.no_spoken:
        result["spoken"] = await bench_spoken(args.bundle, args.n, args.threads)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
