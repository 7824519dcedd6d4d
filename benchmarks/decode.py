"""Decode benchmark: our engine (both KV modes) and onnxruntime-genai's generator on the same bundle, one run.

Prints one JSON object: prefill ms for 64 and 512 tokens, decode tok/s, peak RSS per engine, bundle bytes per
parameter. Each engine runs in its own subprocess so that peak RSS is its own. Without --bundle it uses the tiny
int4 test bundle (built once and cached), which measures overheads, not a real model.

    .venv/bin/python benchmarks/decode.py --bundle DIR [--threads 2] [--decode 64] [--repeat 3] [--rounds 3]
        [--engines concat,shared,genai] [--prefill 64,512 | --prefill ''] [--history 64]

`--history N`: tokens in the cache before the decode is timed. The daemon decodes after a system prompt and a
conversation, and the KV modes part ways with its length (concat copies the whole cache every step; the shared
buffer, which the engine uses for builder graphs as genai does, does not), so 1024 is the figure that counts.

The engines alternate round by round; `ours_vs_genai` gives the ratio of medians, the ratio of means and the
ratio within each round (ours over genai in the same round, so a slow stretch of the machine hits both).

With `--drafter on|off|both` it measures speculative decoding instead (one process, same prompts, greedy):
tok/s without and with the bundle's drafter, their ratio, tokens per decoder call, mean accepted drafts per
round, per-position acceptance, and `identical` (the greedy texts match token for token). `--draft-tokens K`
fixes k (0 = adaptive). Prompts: spoken-assistant questions (short answers) and requests for explanations.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PREFILL = (64, 512)


def prompt(vocab: int, n: int, seed: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).integers(10, vocab - 10, size=n).tolist()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(
    bundle_dir: Path,
    threads: int,
    decode: int,
    repeat: int,
    share: bool,
    context: int,
    prefill: tuple[int, ...] = PREFILL,
    history: int = 64,
) -> dict:
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine, GenerationConfig

    b = load_bundle(bundle_dir)
    eng = Engine(b, threads=threads, share_buffer=share)
    eng.max_context = context  # the KV capacity each conversation preallocates
    vocab = b.manifest.decoder.vocab_size
    out: dict = {"engine": f"voiced ({'shared' if share else 'concat'} KV)", "share_buffer": share}
    for n in prefill:
        times = []
        for r in range(repeat + 1):
            conv = eng.conversation()
            t = time.perf_counter()
            conv.sync(prompt(vocab, n, r))
            times.append((time.perf_counter() - t) * 1e3)
        out[f"prefill_{n}_ms"] = round(statistics.median(times[1:]), 2)  # the first run warms the arena
    rates = []
    for r in range(repeat + 1):
        conv = eng.conversation()
        conv.sync(prompt(vocab, history, r))
        for _ in conv.generate(GenerationConfig(max_new_tokens=decode + 1, stop_ids=[])):
            pass
        s = conv.last_stats
        rates.append((s["decode_tokens"] - 1) / (s["decode_ms"] / 1e3))
    out["decode_tok_s"] = round(statistics.median(rates[1:]), 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def run_genai(
    bundle_dir: Path, threads: int, decode: int, repeat: int, context: int, prefill: tuple[int, ...] = PREFILL, history: int = 64
) -> dict:
    import tempfile

    from model_export.logits_keep import genai_view

    # the generator does not feed the decoder's `logits_to_keep`: it loads a view whose default keeps them all
    with tempfile.TemporaryDirectory(prefix=".genai-view-", dir=bundle_dir.parent) as tmp:
        return _run_genai(genai_view(bundle_dir, Path(tmp) / "view"), threads, decode, repeat, context, prefill, history)


def _run_genai(bundle_dir: Path, threads: int, decode: int, repeat: int, context: int, prefill: tuple[int, ...], history: int) -> dict:
    import onnxruntime_genai as og

    cfg = og.Config(str(bundle_dir))
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(cfg)
    vocab = json.loads((bundle_dir / "manifest.json").read_text())["decoder"]["vocab_size"]
    out: dict = {"engine": "onnxruntime-genai"}

    def generator(max_length: int):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max_length, do_sample=False)
        return og.Generator(model, params)

    for n in prefill:
        times = []
        for r in range(repeat + 1):
            g = generator(context)
            t = time.perf_counter()
            g.append_tokens(prompt(vocab, n, r))
            times.append((time.perf_counter() - t) * 1e3)
        out[f"prefill_{n}_ms"] = round(statistics.median(times[1:]), 2)
    rates = []
    for r in range(repeat + 1):
        g = generator(context)
        g.append_tokens(prompt(vocab, history, r))
        # The first call may only pick a token from the prompt's logits (no model run); ours leaves that token out of
        # its rate too (decode_tokens - 1), so it stays outside the timed loop here: `decode` calls, `decode` runs.
        g.generate_next_token()
        t = time.perf_counter()
        for _ in range(decode):
            g.generate_next_token()
        rates.append(decode / (time.perf_counter() - t))
    out["decode_tok_s"] = round(statistics.median(rates[1:]), 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


SPOKEN = [
    "What's the weather usually like in Lisbon in May?",
    "Set a timer for ten minutes.",
    "How many ounces are in a pound?",
    "Who wrote Pride and Prejudice?",
    "What's a good name for a grey cat?",
]
EXPLAIN = [
    "Explain how a refrigerator keeps food cold.",
    "Explain why the sky is blue, step by step.",
    "Explain how compound interest works with an example.",
]


def run_drafter(bundle_dir: Path, threads: int, decode: int, mode: str, draft_tokens: int) -> dict:
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine, GenerationConfig
    from voiced.model.prompt import ChatPrompt

    b = load_bundle(bundle_dir)
    if b.manifest.drafter is None and mode != "off":
        raise SystemExit(f"{bundle_dir} has no drafter. Fix: add one (`python -m model_export train-drafter {bundle_dir}`)")
    chat = ChatPrompt(b)
    system = b.manifest.system_prompt or "You are a helpful voice assistant."
    sides = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[mode]
    engines = {side: Engine(b, threads=threads, drafter=side, draft_tokens=draft_tokens) for side in sides}
    cfg = GenerationConfig(max_new_tokens=decode)
    out: dict = {"bundle": str(bundle_dir), "threads": threads, "draft_tokens": draft_tokens or "adaptive", "sets": {}}
    for name, prompts in (("spoken", SPOKEN), ("explain", EXPLAIN)):
        fig: dict = {}
        texts: dict[str, list[list[int]]] = {}
        for side, eng in engines.items():
            conv = eng.conversation()  # one conversation per side: k adapts across its turns, as in use
            toks = ms = rounds = drafted = accepted = 0
            texts[side] = []
            for n, q in enumerate([prompts[0]] + prompts):  # the first one warms the arena and is not counted
                conv.reset()
                conv.sync(chat.render([{"role": "system", "content": system}, {"role": "user", "content": q}]))
                reply = [t for d in conv.generate(cfg) for t in d.token_ids]
                s = conv.last_stats
                if n == 0:
                    continue
                texts[side].append(reply)
                toks += s["decode_tokens"] - 1  # the first token comes from the prefill
                ms += s["decode_ms"]
                rounds += s["rounds"]
                drafted += s["drafted"]
                accepted += s["accepted"]
            pol = conv._policy
            fig[f"tok_s_{side}"] = round(toks / (ms / 1e3), 2) if ms else None
            if side == "on" and pol is not None:
                fig["tokens_per_decoder_call"] = round(toks / rounds, 3) if rounds else None
                fig["mean_accepted_per_round"] = round(accepted / rounds, 3) if rounds else None
                fig["drafted"] = drafted
                fig["accepted"] = accepted
                fig["per_position_acceptance"] = pol.per_position()
        if "off" in texts and "on" in texts:
            fig["ratio"] = round(fig["tok_s_on"] / fig["tok_s_off"], 3)
            fig["identical"] = texts["off"] == texts["on"]
        fig["reply_tokens"] = [len(t) for t in next(iter(texts.values()))]
        out["sets"][name] = fig
    return out


def bundle_figures(bundle_dir: Path) -> dict:
    """Parameters counted from the graph (MatMulNBits weights by their K x N), bytes from the files on disk."""
    import onnx

    m = json.loads((bundle_dir / "manifest.json").read_text())
    model = onnx.load(str(bundle_dir / m["decoder"]["file"]), load_external_data=False)
    packed: set[str] = set()
    params = 0
    for node in model.graph.node:
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            if node.op_type == "MatMulNBits":
                params += int(a["K"]) * int(a["N"])
            packed.update(node.input[1:])
    for init in model.graph.initializer:
        if init.name not in packed and init.name not in ("cos_cache", "sin_cache"):
            n = 1
            for d in init.dims:
                n *= d
            params += n
    files = [m["decoder"]["file"], m["decoder"]["file"] + ".data"]
    if m.get("embeddings"):
        files.append(m["embeddings"]["file"])
    size = sum((bundle_dir / f).stat().st_size for f in files if (bundle_dir / f).is_file())
    return {"parameters": params, "weight_bytes": size, "bytes_per_parameter": round(size / params, 3),
            "quantization": m["decoder"]["quantization"], "name": m["name"]}  # fmt: skip


def median_run(runs: list[dict]) -> dict:
    """One engine's figures over rounds: the median of each number, every round's decode rate kept."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    out = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, float):
            out[key] = round(statistics.median(r[key] for r in ok), 2)
    out["decode_tok_s_rounds"] = [r["decode_tok_s"] for r in ok]
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", type=Path, help="bundle directory (default: the tiny int4 test bundle)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--history", type=int, default=64, help="tokens in the cache before decoding (a conversation's length)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--context",
        type=int,
        help="KV capacity for both engines (genai's max_length); default: the bundle's max_context, as in a conversation",
    )
    p.add_argument("--rounds", type=int, default=3, help="engine subprocesses alternate this many times; medians are reported")
    p.add_argument("--only", choices=["concat", "shared", "genai"], help=argparse.SUPPRESS)
    p.add_argument("--engines", default="concat,shared,genai", help="which engines alternate (concat, shared, genai)")
    p.add_argument("--prefill", default="64,512", help="prompt lengths whose prefill is timed ('' = decode only, faster rounds)")
    p.add_argument("--drafter", choices=["on", "off", "both"], help="measure speculative decoding instead")
    p.add_argument("--draft-tokens", type=int, default=0, help="with --drafter: fixed k (0 = adaptive)")
    a = p.parse_args()
    prefill = tuple(int(n) for n in a.prefill.split(",") if n.strip())
    if a.bundle is None:
        from tests.support.bundles import tiny_bundle

        a.bundle = tiny_bundle("int4")
    if a.context is None:
        a.context = json.loads((a.bundle / "manifest.json").read_text())["decoder"]["max_context"]
    if a.drafter:
        print(json.dumps(run_drafter(a.bundle, a.threads, a.decode, a.drafter, a.draft_tokens), indent=2))
        return 0
    if a.only:
        fig = (run_genai(a.bundle, a.threads, a.decode, a.repeat, a.context, prefill, a.history) if a.only == "genai"
               else run_ours(a.bundle, a.threads, a.decode, a.repeat, a.only == "shared", a.context, prefill, a.history))  # fmt: skip
        print(json.dumps(fig))
        return 0
    runs: dict[str, list[dict]] = {}
    for _ in range(a.rounds):  # engines alternate round by round: a noisy stretch of the machine hits all of them
        for only in a.engines.split(","):
            cmd = [sys.executable, __file__, "--bundle", str(a.bundle), "--threads", str(a.threads), "--decode", str(a.decode),
                   "--repeat", str(a.repeat), "--context", str(a.context), "--only", only, "--prefill", a.prefill,
                   "--history", str(a.history)]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                runs.setdefault(only, []).append({"engine": only, "error": r.stderr.strip().splitlines()[-1:]})
            else:
                runs.setdefault(only, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
    results = [median_run(rs) for rs in runs.values()]
    ok = {r["engine"]: r for r in results if "error" not in r}
    best = max((r for r in ok.values() if r["engine"].startswith("voiced")), key=lambda r: r["decode_tok_s"], default=None)
    genai = ok.get("onnxruntime-genai")
    out = {
        "bundle": str(a.bundle),
        "threads": a.threads,
        "context": a.context,
        "history": a.history,
        **bundle_figures(a.bundle),
        "engines": results,
    }
    if best and genai:
        mode = "shared" if "shared" in best["engine"] else "concat"
        # Round by round, ours against genai in the same round: the machine's slow stretches cancel out.
        paired = [o["decode_tok_s"] / g["decode_tok_s"] for o, g in zip(runs[mode], runs["genai"]) if "error" not in o and "error" not in g]
        out["ours_vs_genai"] = {
            "best_kv_mode": best["engine"],
            "decode_ratio": round(best["decode_tok_s"] / genai["decode_tok_s"], 3),
            "decode_ratio_paired_rounds": [round(r, 3) for r in paired],
            "decode_ratio_paired_median": round(statistics.median(paired), 3),
            "decode_ratio_paired_mean_sd": [
                round(statistics.mean(paired), 3),
                round(statistics.stdev(paired), 3) if len(paired) > 1 else None,
            ],
            "decode_ratio_of_means": round(statistics.mean(best["decode_tok_s_rounds"]) / statistics.mean(genai["decode_tok_s_rounds"]), 3),
            **{f"prefill_{n}_ratio": round(genai[f"prefill_{n}_ms"] / best[f"prefill_{n}_ms"], 3) for n in prefill},
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
