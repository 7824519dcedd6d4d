"""What the idle prefill of the next turn's opening saves: the prefill left when a question's words are known,
with and without `Assistant.prepare_next_turn()` after the previous reply, in alternating rounds on one
assistant (the default bundle unless --bundle). Prints one JSON object.

    .venv/bin/python benchmarks/next_turn_prefill.py [--bundle default] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voiced.assistant import Assistant  # noqa: E402
from voiced.config import load_settings  # noqa: E402
from voiced.model import store  # noqa: E402
from voiced.model.bundle import load_bundle  # noqa: E402

EXCHANGES = [
    ("What is the capital of France?", "How many legs does a spider have?"),
    ("What is the largest ocean on Earth?", "Which planet is called the red planet?"),
    ("What is 15 plus 27?", "What color do you get when you mix blue and yellow?"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    settings, _ = load_settings(
        None, {"model": {"threads": 2, "max_new_tokens": 32}, "audio": {"input_device": "none", "output_device": "none"}}
    )
    assistant = Assistant(load_bundle(store.ensure_prepared(args.bundle, progress=True)), settings.model)
    assistant.warm_up()
    out: dict[str, dict[str, list[float]]] = {"idle_prefill": {"tokens": [], "ms": []}, "none": {"tokens": [], "ms": []}}
    for _ in range(args.rounds):
        for first, second in EXCHANGES:
            for mode in ("idle_prefill", "none"):  # alternating: a noisy stretch hits both alike
                assistant.forget()
                assistant.prepare_next_turn()
                reply = "".join(d.text for d in assistant.reply(first))
                assistant.remember(first, reply, interrupted=False)
                if mode == "idle_prefill":
                    assistant.prepare_next_turn()
                t0 = time.perf_counter()
                tokens = assistant.prepare(second)  # what the pause's speculation does once the words are known
                out[mode]["ms"].append((time.perf_counter() - t0) * 1e3)
                out[mode]["tokens"].append(tokens)
    summary = {
        mode: {"median_tokens": statistics.median(v["tokens"]), "median_ms": round(statistics.median(v["ms"]), 1)}
        for mode, v in out.items()
    }
    pairs = [a / b for a, b in zip(out["idle_prefill"]["ms"], out["none"]["ms"])]
    print(
        json.dumps(
            {"bundle": assistant.bundle.manifest.name, **summary, "ms_ratio_paired_median": round(statistics.median(pairs), 3)}, indent=1
        )
    )


if __name__ == "__main__":
    main()
