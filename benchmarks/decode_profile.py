"""Where a decode step of our engine spends its time: onnxruntime's own profiler, summed by operator type.

`--max-context N` shrinks the shared KV buffer and `--kv concat` drops it, to see what attention's share
depends on. Prints one JSON object: for the prefill of `--prefill` tokens and for each decode step after it, the mean wall
time of a run, the share of each operator type (MatMulNBits, attention, norms, ...), and the run's time outside
any operator (session overhead: binding, allocation, thread-pool hand-offs). Shares hold up on a loaded machine
better than absolute times do. The profiler adds a little to every node, so compare shares, not speed.

    .venv/bin/python benchmarks/decode_profile.py [--bundle default] [--threads 2] [--prefill 64] [--decode 32]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

from voiced.model import store  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402
from voiced.model.engine import Engine, GenerationConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=64)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--max-context", type=int, default=0, help="rows of the shared KV buffer (0 = the bundle's max_context)")
    ap.add_argument("--kv", choices=["shared", "concat"], default="shared")
    ap.add_argument("--history", type=int, default=0, help="tokens in the cache before the timed prefill (a conversation's worth)")
    args = ap.parse_args()

    prefix = os.path.join(tempfile.mkdtemp(prefix="voiced-prof-"), "ort")
    base = ort.SessionOptions

    class Profiled(base):  # the engine's own session, with onnxruntime's profiler on
        def __init__(self) -> None:
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = prefix

    ort.SessionOptions = Profiled
    bundle = load_bundle(store.ensure_prepared(args.bundle))
    engine = Engine(bundle, threads=args.threads, drafter="off", share_buffer=args.kv == "shared")
    if args.max_context:
        engine.max_context = args.max_context  # the conversation below gets a buffer of this many rows
    ort.SessionOptions = base
    conv = engine.conversation()
    text = "The quick brown fox jumps over the lazy dog while the band plays on. " * 40
    every = bundle.tokenizer.encode(text * 4, add_special_tokens=False).ids
    history, ids = every[: args.history], every[args.history : args.history + args.prefill]
    # the history in its own chunks first, then the timed prefill in its own run(s): one sync of both would feed
    # them together, and the run counted as the prefill would be a mix of history and prompt (or a decode step)
    if history:
        conv.sync(history)
    conv.sync(history + ids)
    n = sum(len(d.token_ids) for d in conv.generate(GenerationConfig(max_new_tokens=args.decode, stop_ids=[])))
    engine.session.end_profiling()
    events = json.loads(Path(glob.glob(prefix + "*.json")[0]).read_text())

    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]

    def summarise(selected: list[dict]) -> dict:
        by_op: dict[str, float] = defaultdict(float)
        inside = 0.0
        for r in selected:
            lo, hi = r["ts"], r["ts"] + r["dur"]
            for e in nodes:
                if lo <= e["ts"] < hi:
                    by_op[e["args"].get("op_name", "?")] += e["dur"]
                    inside += e["dur"]
        total = sum(r["dur"] for r in selected)
        shares = {op: round(us / total, 3) for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])}
        return {
            "runs": len(selected),
            "run_ms_mean": round(total / len(selected) / 1e3, 2),
            "run_ms_median": round(statistics.median(r["dur"] for r in selected) / 1e3, 2),
            "share_by_op": shares,
            "share_outside_ops": round(1 - inside / total, 3),
            "nodes_per_run": round(
                sum(1 for e in nodes if any(r["ts"] <= e["ts"] < r["ts"] + r["dur"] for r in selected)) / len(selected), 1
            ),
        }

    # The prefill is the first run(s) (the engine feeds a prompt in chunks); every later run is one decode step.
    skip = -(-len(history) // engine.prefill_chunk) if history else 0
    chunks = -(-len(ids) // engine.prefill_chunk)
    runs = runs[skip:]
    print(json.dumps({
        "bundle": bundle.dir.name, "threads": args.threads, "kv": args.kv, "kv_rows": engine.max_context,
        "history": len(history), "prefill_tokens": len(ids), "decoded": n,
        "prefill": summarise(runs[:chunks]), "decode": summarise(runs[chunks + 1 :]),  # the first decode step warms up
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
