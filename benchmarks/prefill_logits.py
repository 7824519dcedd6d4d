"""Prefill with the LM head on the last position only (`logits_to_keep`) against every position, one process.

What a turn waits for after its words are known is a short prefill: the words the early passes could not
prefill and the chat template's tail, into a cache that already holds the system prompt and the conversation.
This times exactly that, both ways, on the same engine and graph, the arms alternating prompt length by prompt
length and round by round so that a slow stretch of the machine hits both. "Every position" is what graphs
exported before model_export 7 computed (their head had no `logits_to_keep`).

Prints one JSON object: per prompt length, the median ms of each arm, the median of the within-round ratios
(keep / every), and whether both arms chose the same next token every time.

    .venv/bin/python benchmarks/prefill_logits.py [--bundle default] [--threads 2] [--history 300]
        [--lengths 8,16,26,64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.results import cpu  # noqa: E402
from voiced.model import store  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402
from voiced.model.engine import Engine  # noqa: E402

TEXT = (
    "You are a voice assistant. Answer in one or two short spoken sentences. What is the capital of France, "
    "and how many people live there? Set a timer for ten minutes and then tell me a fun fact about octopuses. "
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--history", type=int, default=300, help="tokens in the cache first (system prompt, earlier turns)")
    ap.add_argument("--lengths", default="8,16,26,64", help="prompt lengths whose prefill is timed")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]

    bundle = load_bundle(store.ensure_prepared(args.bundle))
    engine = Engine(bundle, threads=args.threads, drafter="off")
    if not engine.has_logits_to_keep:
        sys.exit(f"{bundle.dir} has no logits_to_keep input: re-prepare it (`voiced model prepare {args.bundle} --force`)")
    every = bundle.tokenizer.encode(TEXT * 40, add_special_tokens=False).ids
    history = every[: args.history]
    conv = engine.conversation()
    conv.sync(history)

    ms: dict[tuple[int, bool], list[float]] = {(n, p): [] for n in lengths for p in (True, False)}
    ratio: dict[int, list[float]] = {n: [] for n in lengths}
    same = True
    for r in range(args.rounds + 1):  # round 0 warms both arms up and is not counted
        for n in lengths:
            ids = every[args.history : args.history + n]
            got: dict[bool, float] = {}
            tops: dict[bool, int] = {}
            for prune in (True, False) if (r + n) % 2 else (False, True):
                engine.prune_logits = prune
                conv.sync(history)
                t0 = time.perf_counter()
                conv.sync(history + ids)
                got[prune] = (time.perf_counter() - t0) * 1e3
                tops[prune] = int(np.argmax(conv.logits))
            same &= tops[True] == tops[False]
            if r:
                for p in (True, False):
                    ms[(n, p)].append(got[p])
                ratio[n].append(got[True] / got[False])

    out = {
        "bundle": bundle.manifest.name,
        "cpu": cpu(),
        "threads": args.threads,
        "history": args.history,
        "rounds": args.rounds,
        "same_next_token": same,
        "prefill": {
            str(n): {
                "keep_last_ms_p50": round(statistics.median(ms[(n, True)]), 1),
                "every_position_ms_p50": round(statistics.median(ms[(n, False)]), 1),
                "keep_over_every_p50": round(statistics.median(ratio[n]), 3),
            }
            for n in lengths
        },
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
