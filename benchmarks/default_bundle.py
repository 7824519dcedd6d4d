"""Default bundle figures: preparation (cold/warm), ASR ms per utterance, LLM prefill / first clause / decode,
answers to spoken-style questions for each candidate side by side, and RSS with the bundle loaded.

Usage: python benchmarks/default_bundle.py [--threads 2] [--candidates qwen2.5-0.5b,qwen2.5-1.5b] [--cold]
Prints one JSON object. Candidates not prepared yet are prepared (their cold time is then measured here);
otherwise the cold figure is the one recorded at preparation (models/.NAME.stats.json).
Questions are asked in turn to each model (interleaved), so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voiced.model import store  # noqa: E402

QUESTIONS: list[tuple[str, list[str]]] = [
    ("What is the capital of France?", ["paris"]),
    (
        "How many days are there in a leap year?",
        ["366", "three hundred sixty-six", "three hundred and sixty-six", "three hundred sixty six"],
    ),
    ("What is twelve times eleven?", ["132", "one hundred thirty-two", "one hundred and thirty-two", "one hundred thirty two"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("At what temperature does water boil in Celsius?", ["100", "one hundred", "hundred"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("Which planet is called the red planet?", ["mars"]),
    ("What is fifteen plus twenty seven?", ["42", "forty-two", "forty two"]),
    ("How do I boil an egg?", ["boil", "water"]),
    ("Hi there, how are you doing today?", [""]),
    ("Set a timer for ten minutes.", ["timer", "10", "ten"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
]
_CLAUSE_END = re.compile(r"[.!?;:,](\s|$)")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ask(engine, prompt, system: str, question: str, max_new: int = 60) -> dict:
    from voiced.model.engine import GenerationConfig

    conv = engine.conversation()
    ids = prompt.render([{"role": "system", "content": system}, {"role": "user", "content": question}])
    t0 = time.perf_counter()
    conv.sync(ids)
    t_prefill = time.perf_counter()
    text, first_clause, first_token, n = "", None, None, 0
    for d in conv.generate(GenerationConfig(max_new_tokens=max_new)):
        now = time.perf_counter()
        first_token = first_token or now
        text += d.text
        n += len(d.token_ids)
        if first_clause is None and _CLAUSE_END.search(text):
            first_clause = now
    t_end = time.perf_counter()
    decode_s = t_end - (first_token or t_end)
    return {
        "question": question,
        "reply": text.strip(),
        "prompt_tokens": len(ids),
        "prefill_ms": round((t_prefill - t0) * 1e3, 1),
        "first_clause_ms": round(((first_clause or t_end) - t0) * 1e3, 1),
        "reply_tokens": n,
        "reply_words": len(text.split()),
        "decode_tok_s": round((n - 1) / decode_s, 1) if n > 1 and decode_s > 0 else None,
    }


def right(reply: str, keys: list[str]) -> bool:
    r = reply.lower()
    if keys == [""]:  # small talk: any short, non-empty answer
        return 0 < len(r.split()) <= 40
    return any(k in r for k in keys)


def prefill_fixed(engine, n_tokens: int, reps: int = 2) -> float:
    """ms to prefill exactly n tokens into an empty cache (best of reps)."""
    best = float("inf")
    ids = [(i * 7919) % 5000 + 100 for i in range(n_tokens)]
    for _ in range(reps):
        conv = engine.conversation()
        t0 = time.perf_counter()
        conv.sync(ids)
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return round(best, 1)


def asr_ms(asr_dir: Path, threads: int) -> dict:
    """The daemon's own recogniser (voiced.model.asr, its default encoder window) on espeak questions."""
    from tests.support.speech import espeak
    from voiced.model.asr import Recognizer

    model = Recognizer(asr_dir, threads=threads)
    model.warm_up()
    times, texts = [], []
    for q, _ in QUESTIONS[:4]:
        t = model.transcribe(espeak(q))
        texts.append(t.text)
        times.append(t.ms)
    return {"asr_ms_per_utterance": round(sum(times) / len(times), 1), "asr_transcripts": texts, "_model": model}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", default="qwen2.5-0.5b,qwen2.5-1.5b")
    ap.add_argument("--max-new", type=int, default=60)
    args = ap.parse_args()
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine
    from voiced.model.prompt import ChatPrompt

    names = args.candidates.split(",")
    out: dict = {"threads": args.threads, "default": store.canonical("default"), "prepare": {}, "models": {}}
    for name in names:
        rec = store.stats(name)
        t0 = time.perf_counter()
        path = store.ensure_prepared(name, progress=False)
        warm = (time.perf_counter() - t0) * 1e3
        if rec is None:  # it was prepared just now: what we timed is the cold run
            rec, warm = store.stats(name), None
        if warm is None:
            t0 = time.perf_counter()
            store.ensure_prepared(name, progress=False)
            warm = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        full = store.verify_bundle(path, full=True)
        out["prepare"][name] = {
            "cold_s": rec.get("seconds") if rec else None,
            "warm_ms": round(warm, 1),
            "full_verify_ms": round((time.perf_counter() - t0) * 1e3, 1),
            "full_verify_ok": full == [],
            "bundle_mb": round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1),
        }

    rss0 = rss_mb()
    engines = {}
    for name in names:
        bundle = load_bundle(store.bundle_dir(name))
        before = rss_mb()
        engines[name] = (Engine(bundle, threads=args.threads), ChatPrompt(bundle), bundle)
        out["models"][name] = {"rss_engine_mb": round(rss_mb() - before, 1), "answers": []}
    asr_dir = store.bundle_dir(names[0]) / "asr"
    a = asr_ms(asr_dir, args.threads)
    a.pop("_model")
    out["asr"] = a
    out["rss_all_loaded_mb"] = round(rss_mb(), 1)
    out["rss_before_models_mb"] = round(rss0, 1)

    for name, (eng, prompt, bundle) in engines.items():
        m = out["models"][name]
        m["prefill_60_ms"] = prefill_fixed(eng, 60)
        ask(eng, prompt, bundle.manifest.system_prompt, "Hello.", 4)  # warm-up
    for q, keys in QUESTIONS:
        for name, (eng, prompt, bundle) in engines.items():
            r = ask(eng, prompt, bundle.manifest.system_prompt, q, args.max_new)
            r["right"] = right(r["reply"], keys)
            out["models"][name]["answers"].append(r)
    for name, m in out["models"].items():
        ans = m["answers"]
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        m["facts_right"] = f"{sum(a['right'] for a in ans)}/{len(ans)}"
        m["median_first_clause_ms"] = med([a["first_clause_ms"] for a in ans])
        m["median_prefill_ms"] = med([a["prefill_ms"] for a in ans])
        m["median_decode_tok_s"] = med([a["decode_tok_s"] for a in ans if a["decode_tok_s"]])
        m["median_reply_words"] = med([a["reply_words"] for a in ans])
    if len(names) == 2:
        a, b = (out["models"][n] for n in names)
        out["ratios"] = {
            f"first_clause {names[1]}/{names[0]}": round(b["median_first_clause_ms"] / a["median_first_clause_ms"], 2),
            f"prefill_60 {names[1]}/{names[0]}": round(b["prefill_60_ms"] / a["prefill_60_ms"], 2),
            f"decode_tok_s {names[1]}/{names[0]}": round(b["median_decode_tok_s"] / a["median_decode_tok_s"], 2),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
