"""voiced's own engine against llama.cpp's server as voiced's brain, on the same weights, question by question.

The same spoken questions (espeak) go through the whole pipeline (VAD, Whisper, model, chunker, TTS) twice, the
two brains alternating question by question in one run: (a) the embedded engine on a bundle (default: the
default bundle), (b) `brain.kind = "server"` with llama-cpp-python's server on the GGUF that bundle is built
from, with the same threads. Both stay loaded (the idle one uses no CPU; two 1.5B models fit in memory here);
only one computes at a time. Memory is forgotten before each question, so each turn prefills its system prompt
and question like the other brain's.

    .venv/bin/python benchmarks/model_server.py [--bundle qwen2.5-1.5b] [--threads 2] [--n 12] [--rounds 1]

Prints one JSON object: per brain, p50 of first token and first audio (ms after the end of the turn, Whisper
included), decode tok/s (decode tokens / decode ms as reply_done reports them), prefill ms, facts right.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from default_bundle import QUESTIONS, right  # noqa: E402  (the 12 spoken-style questions and their keywords)

from protocol import messages as m  # noqa: E402
from tests.support.llama_server import ALIAS, LlamaServer, gguf  # noqa: E402
from tests.support.speech import compose  # noqa: E402
from voiced.assistant import Assistant  # noqa: E402
from voiced.config import load_settings  # noqa: E402
from voiced.model import store  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402
from voiced.pipeline import Pipeline  # noqa: E402
from voiced.remote.brain import RemoteBrain  # noqa: E402
from voiced.speech.tts import make_tts  # noqa: E402
from voiced.turn_cli import Collector  # noqa: E402


async def turn(pipeline: Pipeline, collector: Collector, pcm) -> m.ReplyDone | m.Error:
    start = len(collector.messages)
    await pipeline.feed("bench", pcm)
    await pipeline.end_of_stream("bench")  # as `voiced ask --wav` ends a file: no wait on the adaptive hangover
    while True:
        for msg in collector.messages[start:]:
            if isinstance(msg, m.ReplyDone | m.Error):
                while pipeline.state != "idle":
                    await asyncio.sleep(0.01)
                return msg
        await asyncio.sleep(0.01)


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]

    def p50(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None]
        return round(statistics.median(vals), 1) if vals else None

    return {
        "turns": len(rows),
        "errors": len(rows) - len(ok),
        "first_token_ms_p50": p50("first_token_ms"),
        "first_audio_ms_p50": p50("first_audio_ms"),
        "prefill_ms_p50": p50("prefill_ms"),
        "prefill_tokens_p50": p50("prefill_tokens"),
        "decode_tok_s_p50": p50("decode_tok_s"),
        "facts_right": f"{sum(r['right'] for r in ok)}/{len(rows)}",
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=60)
    ap.add_argument("--brains", default="voiced_engine,llama_cpp_server", help="which of the two to run (one alone: no neighbour)")
    args = ap.parse_args()

    bundle_dir = store.ensure_prepared(args.bundle)
    bundle = load_bundle(bundle_dir)
    model_file = gguf(bundle_dir.name)  # a cached bundle's folder is its candidate's name (qwen2.5-1.5b)
    base = {
        "model": {"threads": args.threads, "max_new_tokens": args.max_new_tokens},
        "audio": {"input_device": "none", "output_device": "none"},
        "activation": {"prefill_while_speaking_s": 0},
    }
    local_settings, _ = load_settings(None, base)
    remote_settings, _ = load_settings(None, {**base, "brain": {"kind": "server", "model": ALIAS}})
    log = Path(tempfile.mkdtemp(prefix="voiced-bench-llama-")) / "server.log"
    with LlamaServer(model_file, log, threads=args.threads, n_ctx=4096) as server:
        remote_settings.brain.url = server.url
        wanted = args.brains.split(",")
        brains = {}
        if "voiced_engine" in wanted:
            brains["voiced_engine"] = Assistant(bundle, local_settings.model)
        if "llama_cpp_server" in wanted:
            brains["llama_cpp_server"] = RemoteBrain(remote_settings.brain, remote_settings.model, bundle)
        pipelines: dict[str, tuple[Pipeline, Collector]] = {}
        for name, brain in brains.items():
            settings = local_settings if name == "voiced_engine" else remote_settings
            p = Pipeline(settings, brain, make_tts(settings.tts), None, pace=False)
            c = Collector()
            p.add_publisher(c)
            await p.warm_up()
            pipelines[name] = (p, c)
        rows: dict[str, list[dict]] = {name: [] for name in brains}
        questions = QUESTIONS[: args.n]
        speech = [compose([0.4, q, 1.2], seed=i).pcm for i, (q, _) in enumerate(questions)]
        for rnd in range(args.rounds):
            for i, (q, keys) in enumerate(questions):
                order = list(brains) if (i + rnd) % 2 == 0 else list(reversed(list(brains)))
                for name in order:
                    p, c = pipelines[name]
                    brains[name].forget()
                    brains[name].prepare_next_turn()  # the system prompt cached, as between turns in a daemon
                    t0 = time.perf_counter()
                    done = await turn(p, c, speech[i])
                    if isinstance(done, m.Error):
                        rows[name].append({"question": q, "error": done.message, "right": False})
                        continue
                    t = done.timings_ms
                    print(f"{name}: {q!r} -> {done.text[:60]!r} {t}", file=sys.stderr)
                    dec = t.get("decode_tokens", 0.0)
                    rows[name].append({
                        "question": q, "reply": done.text, "right": right(done.text, keys),
                        "first_token_ms": t.get("first_token"), "first_audio_ms": t.get("first_audio"),
                        "prefill_ms": t.get("prefill_ms"), "prefill_tokens": t.get("prefill_tokens"),
                        "decode_tok_s": round((dec - 1) / t["decode_ms"] * 1e3, 1) if dec > 1 and t.get("decode_ms") else None,
                        "wall_ms": round((time.perf_counter() - t0) * 1e3, 1),
                    })  # fmt: skip
        for p, _ in pipelines.values():
            await p.aclose()
    print(json.dumps({
        "bundle": bundle_dir.name, "gguf": model_file.name, "threads": args.threads, "rounds": args.rounds,
        "summary": {name: summary(r) for name, r in rows.items()}, "turns": rows,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
