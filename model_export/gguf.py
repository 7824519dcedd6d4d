"""GGUF file -> Hugging Face folder (full-precision weights, tokenizer, chat template), tokenizer verified.

Why verify: transformers rebuilds the tokenizer from GGUF metadata, and for some families it is silently wrong
(Gemma's BPE merges read as Unigram scores: "capital" -> `c ap it al`). So the rebuilt tokenizer's ids are
checked against a BPE applied here directly to the GGUF's own vocabulary and merges; a mismatch refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str], None]

SENTENCES = [
    "What is the capital of France?",
    "How many days are there in a leap year? Three hundred and sixty-six.",
    "Set a timer for 10 minutes, please.",
    "What's twelve times eleven? It's 132.",
    "  Hello there!  How are you doing today?\n",
    "Remind me to call Mom at 5:30 pm tomorrow.",
    "The quick brown fox jumps over the lazy dog's back; naïve café résumé.",
    "def add(a, b):\n    return a + b  # 1234567",
    "<|im_start|>user\nWhat time is it?<|im_end|>\n<|im_start|>assistant\n",
    "日本語のテキストも大丈夫ですか？ Ünïcödé — emoji 🙂 ok",
]


class TokenizerMismatch(RuntimeError):
    pass


def _gguf_vocab(reader) -> tuple[str, list[str], dict[tuple[str, str], int], str]:
    """(tokenizer model, tokens, merge ranks, pre-tokenizer name) as the GGUF file itself stores them."""
    f = reader.fields
    model = f["tokenizer.ggml.model"].contents()
    tokens = list(f["tokenizer.ggml.tokens"].contents())
    merges = f["tokenizer.ggml.merges"].contents() if "tokenizer.ggml.merges" in f else []
    ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(merges)}
    pre = f["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in f else ""
    return model, tokens, ranks, pre


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain rank-ordered BPE over one pre-token (already in byte-level alphabet)."""
    parts = list(word)
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get((parts[i], parts[i + 1]), 1 << 60))
        if (parts[best], parts[best + 1]) not in ranks:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def verify_tokenizer(tokenizer, gguf_path: Path, sentences: list[str] = SENTENCES) -> int:
    """Raise TokenizerMismatch unless the HF tokenizer gives the GGUF's ids on every sentence; returns tokens checked."""
    from gguf import GGUFReader

    model, tokens, ranks, pre = _gguf_vocab(GGUFReader(str(gguf_path)))
    if model != "gpt2":
        raise TokenizerMismatch(
            f"GGUF tokenizer model {model!r} is not byte-level BPE ('gpt2'); only BPE families are verified here. "
            "Fix: add a verifier for this family in model_export/gguf.py before exporting it."
        )
    ids = {t: i for i, t in enumerate(tokens)}
    backend = tokenizer.backend_tokenizer
    hf_vocab = backend.get_vocab(with_added_tokens=True)
    bad = [t for t, i in hf_vocab.items() if i < len(tokens) and tokens[i] != t]
    if bad:
        raise TokenizerMismatch(f"{len(bad)} HF tokens have ids other than the GGUF's (e.g. {bad[:5]}); refusing.")
    special = {t for t in hf_vocab if t.startswith("<|") and t.endswith("|>")}
    checked = 0
    for s in sentences:
        got = tokenizer.encode(s, add_special_tokens=False)
        want: list[int] = []
        for piece in _split_special(s, special):
            if piece in special:
                want.append(ids[piece])
                continue
            for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(piece) if backend.normalizer else piece):
                want.extend(ids[p] for p in _bpe(word, ranks))
        if got != want:
            raise TokenizerMismatch(
                f"tokenizer rebuilt by transformers disagrees with the GGUF's own merges (pre={pre!r}) on {s!r}:\n"
                f"  transformers: {got[:24]}\n  GGUF BPE:     {want[:24]}\n"
                "Fix: the exported bundle would mis-tokenise; build the tokenizer from the GGUF vocab/merges instead."
            )
        if tokenizer.decode(got) != s:
            raise TokenizerMismatch(f"tokenizer does not round-trip {s!r} (got {tokenizer.decode(got)!r})")
        checked += len(got)
    return checked


def _split_special(text: str, special: set[str]) -> list[str]:
    out, i = [], 0
    while i < len(text):
        hit = next((t for t in special if text.startswith(t, i)), None)
        if hit:
            out.append(hit)
            i += len(hit)
            continue
        j = i
        while j < len(text) and not any(text.startswith(t, j) for t in special):
            j += 1
        out.append(text[i:j])
        i = j
    return out


def gguf_to_hf(gguf_path: Path, out_dir: Path, progress: Progress | None = None, dtype: str = "float16") -> Path:
    """Dequantise a GGUF into an HF folder at `out_dir` with a verified tokenizer and chat template.

    float16 by default: Q4_K/Q5_0 values (a 4-5 bit integer times an fp16 scale) keep ~11 significant bits, far
    below the int4 re-quantisation error, and it halves the peak memory of dequantising and of the builder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = progress or (lambda _m: None)
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    say(f"tokenizer: rebuild from {gguf_path.name} and verify against its own vocab/merges")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    n = verify_tokenizer(tok, gguf_path)
    say(f"tokenizer: {len(SENTENCES)} sentences, {n} tokens, ids identical to the GGUF's")
    say(f"dequantise: GGUF -> {dtype} weights (transformers)")
    dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=dtype)
    model.hf_quantizer = None  # else save_pretrained refuses a "quantized" model that is plain floats now
    tied = _tied(model)
    if tied:
        say("tie: the output head is the token embedding (to quantisation noise): one int4 matrix serves both")
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    _plain_config(out_dir, tok, tied)
    del model
    return out_dir


def _tied(model, tolerance: float = 0.25) -> bool:
    """Whether the head is the embedding. Why it matters: a GGUF of a tied model may carry the matrix twice
    (token_embd and output, quantised differently, e.g. Q4_K and Q6_K) and its config may say untied; saying tied
    lets the builder keep one int4 matrix (GatherBlockQuantized + MatMulNBits) instead of an fp32 table beside an
    int4 head (-0.9 GB at 1.5B). Two copies of one matrix differ by quantisation noise (a few % of its norm);
    two distinct matrices differ by more than their norm, so the tolerance separates the cases widely."""
    import torch

    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if emb is None or head is None or emb.weight.shape != head.weight.shape:
        return False
    if emb.weight is head.weight:
        return True
    a, b = emb.weight.detach().float(), head.weight.detach().float()
    return bool(torch.linalg.norm(a - b) <= tolerance * torch.linalg.norm(a))


def _plain_config(out_dir: Path, tok, tied: bool = False) -> None:
    """Make config.json describe the plain fp32 checkpoint that is now on disk.

    Drops `quantization_config` (the builder refuses "gguf quantized" checkpoints, though the weights are fp32
    now), and adds the end-of-turn tokens to eos: the GGUF names one eos, chat models also stop at <|im_end|>."""
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    vocab = tok.get_vocab()
    eos = cfg.get("eos_token_id")
    stops = list(eos) if isinstance(eos, list) else ([eos] if eos is not None else [])
    for t in ("<|im_end|>", "<|endoftext|>"):
        if t in vocab and vocab[t] not in stops:
            stops.append(vocab[t])
    cfg["eos_token_id"] = stops
    if tied:
        cfg["tie_word_embeddings"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))
