"""`python -m model_export train-drafter BUNDLE_DIR`: train a multi-token-prediction drafter for a bundle that has
none (the embedded default), by self-distillation on the target's own greedy replies.

Design (the shape family of Gemma 4's assistant, sized for a 2-core CPU):
- input per draft step: the target's embedding of the last token and the target's last hidden state (post final
  norm); for the first step that is the decoder's own state, for later steps the drafter's previous `hidden_out`;
- one attention block reading the KV of the target's last layer (no KV of its own), queries rotated at the
  position of the last token with the target's own rotary table (read from the decoder's cos/sin cache), then a
  small gated MLP;
- `hidden_out` is trained to be the target's next hidden state (regression) and its logits are that state times
  the target's own output embedding rows, restricted to a reduced vocabulary (the tokens the target's replies use
  plus the lowest-id, most frequent BPE merges), so a draft step costs a small fraction of a decoder step.

Data: the target writes its own questions (topics -> "list questions ...") and answers them greedily with the
bundle's speech system prompt; every reply is then traced through the runtime decoder graph (Conversation.trace)
for per-position argmax and hidden states and the last layer's KV. The labels are therefore what the verifying
graph will compute, not what some other implementation would.

Everything runs on the CPU; progress is printed for each phase. `--quick` sizes everything for tests.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_export.progress import printer

DRAFTER = "drafter.onnx"
VOCAB_MAP = "drafter_vocab.npy"
OPSET = 17

Progress = Callable[[str], None]

TOPICS = [
    "the weather", "cooking and recipes", "world capitals", "animals", "the human body", "space and planets",
    "history", "sports", "music", "math and arithmetic", "units and conversions", "timers and reminders",
    "travel", "health and sleep", "computers and the internet", "languages and words", "geography",
    "famous inventions", "plants and gardening", "money and saving", "cars and driving", "science facts",
    "movies and books", "holidays and calendars", "small talk", "home and cleaning", "exercise", "the ocean",
    "dinosaurs", "electricity",
]  # fmt: skip
FALLBACK_FORMS = [
    "What is {t}?", "Tell me one fact about {t}.", "Why does {t} matter?", "How do I learn about {t}?",
    "Give me a tip about {t}.", "What should I know about {t}?",
]  # fmt: skip
EXPLAIN = "Explain in a few sentences how {t} works."
ASKERS = ["people", "children", "a busy parent", "a student", "an older person", "a traveller"]


# ----------------------------------------------------------------------------------------------------------
# what the drafter needs to know of the target graph
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TargetInfo:
    layer: int  # the decoder layer whose KV the drafter reads
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    inv_freq: np.ndarray  # rotary frequencies [head_dim // 2], read from the decoder's cos cache
    interleaved: bool
    scale: float


def _initializer(model, name: str, base: Path) -> np.ndarray:
    """One initializer of a graph loaded without its external data, read from its data file by offset.

    Why not onnx's own loader: it refuses data files with several hard links, and prepared bundles are
    hard-linked into test and benchmark copies."""
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import uses_external_data

    for t in model.graph.initializer:
        if t.name != name:
            continue
        if not uses_external_data(t):
            return numpy_helper.to_array(t)
        info = {e.key: e.value for e in t.external_data}
        loc = (base / info["location"]).resolve()
        if base.resolve() not in loc.parents:
            raise SystemExit(f"{name}: external data {info['location']} lies outside {base}")
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        count = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type in (helper.onnx.TensorProto.INT4, helper.onnx.TensorProto.UINT4):
            raise SystemExit(f"{name}: packed int4 initializers are read through onnxruntime, not here")
        raw = np.fromfile(
            loc, dtype=np.uint8, count=int(info.get("length", count * np.dtype(dtype).itemsize)), offset=int(info.get("offset", 0))
        )
        return raw.view(dtype).reshape(tuple(t.dims))
    raise KeyError(name)


def inspect_target(bundle_dir: Path, manifest) -> TargetInfo:
    """Read the attention geometry and rotary table of the decoder's last layer from its graph."""
    import onnx

    path = bundle_dir / manifest.decoder.file
    model = onnx.load(str(path), load_external_data=False)
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    if not gqa or manifest.decoder.input != "input_ids":
        raise SystemExit(
            f"{path} is not a GroupQueryAttention graph taking input_ids (an onnxruntime-genai export); train-drafter "
            "reads its rotary table from there. Fix: for Gemma 4 bundles export the real assistant "
            "(`python -m model_export gemma4-assistant`)"
        )
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa[-1].attribute}
    if not attrs.get("do_rotary"):
        raise SystemExit(f"{path}: its attention applies no rotary embedding inside the graph; train-drafter needs one")
    cos = _initializer(model, gqa[-1].input[7], path.parent).astype(np.float64)
    sin = _initializer(model, gqa[-1].input[8], path.parent).astype(np.float64)
    inv_freq = np.arctan2(sin[1], cos[1])  # cos_cache[p, i] = cos(p * inv_freq[i])
    layers = manifest.decoder.layers
    last = max(i for i, lay in enumerate(layers) if lay.shares_kv_with is None)
    if layers[last].window is not None:
        raise SystemExit(f"{path}: the last layer is a sliding-window layer; train-drafter supports full attention only")
    return TargetInfo(
        layer=last, kv_heads=layers[last].kv_heads, head_dim=layers[last].head_dim,
        hidden=manifest.decoder.hidden_size, vocab=manifest.decoder.vocab_size, inv_freq=inv_freq.astype(np.float32),
        interleaved=bool(attrs.get("rotary_interleaved", 0)), scale=float(attrs.get("scale") or layers[last].head_dim ** -0.5),
    )  # fmt: skip


def embedding_rows(bundle_dir: Path, manifest, ids: np.ndarray) -> np.ndarray:
    """The target's input embedding of `ids` [n, hidden], computed by the decoder's own embedding node (a plain
    Gather of fp32 rows or an int4 GatherBlockQuantized shared with the head: the node says which)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    path = bundle_dir / manifest.decoder.file
    model = onnx.load(str(path), load_external_data=False)
    node = next((n for n in model.graph.node if n.op_type in ("Gather", "GatherBlockQuantized") and "input_ids" in n.input), None)
    if node is None:
        raise SystemExit(f"{path}: no embedding Gather reads input_ids")
    # the node and what feeds it (e.g. a Reshape of the head's int4 matrix that the embedding shares)
    producers = {o: n for n in model.graph.node for o in n.output}
    init_names = {t.name for t in model.graph.initializer}
    nodes, inits, todo, seen = [], [], [node], set()
    while todo:
        n = todo.pop()
        nodes.append(n)
        for name in n.input:
            if not name or name == "input_ids" or name in seen:
                continue
            seen.add(name)
            if name in init_names:
                inits.append(numpy_helper.from_array(np.ascontiguousarray(_initializer(model, name, path.parent)), name))
            elif name in producers:
                todo.append(producers[name])
            else:
                raise SystemExit(f"{path}: the embedding reads {name}, which is neither a weight nor computed from weights")
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    nodes.sort(key=lambda n: order[id(n)])
    mini = helper.make_model(
        helper.make_graph(
            nodes, "embedding",
            [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, None])],
            [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)], initializer=inits,
        ),
        opset_imports=list(model.opset_import),
    )  # fmt: skip
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(mini.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = [sess.run(None, {"input_ids": ids[None, i : i + 4096].astype(np.int64)})[0][0] for i in range(0, len(ids), 4096)]
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# data: the target's own questions and greedy replies, traced through the runtime graph
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Sequence_:
    ids: np.ndarray  # [T] prompt + reply
    labels: np.ndarray  # [T] the decoder's argmax after each position
    hidden: np.ndarray  # [T, H] float16, the decoder's (post-norm) hidden state at each position
    key: np.ndarray  # [kv_heads, T, head_dim] float16, the read layer's cache
    value: np.ndarray
    start: int  # first reply position


@dataclass
class DataPlan:
    questions: int = 300
    explanations: int = 30
    per_topic: int = 8
    max_reply: int = 64
    max_explain: int = 160
    seed: int = 0


def _parse_questions(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        q = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"')
        if q.endswith("?") and 3 <= len(q.split()) <= 25:
            out.append(q)
    return out


def _generate(conv, chat, messages: list[dict], max_new: int):
    from voiced.model.sampling import GenerationConfig

    conv.sync(chat.render(messages))
    text = "".join(d.text for d in conv.generate(GenerationConfig(max_new_tokens=max_new, temperature=0.0)))
    return text, list(conv.tokens)


def make_prompts(engine, chat, plan: DataPlan, say: Progress) -> tuple[list[str], list[str]]:
    """Questions the target writes itself (topic by topic), topped up from templates where it writes too few."""
    rng = np.random.default_rng(plan.seed)
    topics = list(TOPICS)
    rng.shuffle(topics)
    conv = engine.conversation()
    questions: list[str] = []
    need_topics = max(1, math.ceil(plan.questions / plan.per_topic))
    t0 = time.monotonic()
    rounds = [topics[i % len(topics)] for i in range(need_topics)]  # more questions than topics: ask again, as someone else
    for n, topic in enumerate(rounds):
        asker = ASKERS[n % len(ASKERS)]
        ask = f"Write {plan.per_topic} different short questions that {asker} might ask a voice assistant about {topic}. One question per line, nothing else."
        text, _ = _generate(conv, chat, [{"role": "user", "content": ask}], 24 * plan.per_topic)
        got = [q for q in _parse_questions(text) if q not in questions][: plan.per_topic]
        if len(got) < plan.per_topic // 2:  # a model that does not follow the request: templates fill in
            got += [f.format(t=topic) for f in FALLBACK_FORMS][: plan.per_topic - len(got)]
        questions += got
        say(f"prompts: topic {n + 1}/{need_topics} ({topic}): {len(questions)} questions, {time.monotonic() - t0:.0f} s")
    explains = [EXPLAIN.format(t=t) for t in (topics * (1 + plan.explanations // len(topics)))[: plan.explanations]]
    return questions[: plan.questions], explains


def collect(engine, chat, system: str | None, prompts: list[tuple[str, int]], layer: int, say: Progress) -> list[Sequence_]:
    conv, tracer = engine.conversation(), engine.conversation()
    out: list[Sequence_] = []
    t0, tokens = time.monotonic(), 0
    for n, (user, max_new) in enumerate(prompts):
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        start = len(chat.render(msgs))
        _, ids = _generate(conv, chat, msgs, max_new)
        if len(ids) - start < 3:
            continue
        labels, hidden = tracer.trace(ids)
        k, v = tracer.kv_arrays(layer)
        out.append(
            Sequence_(np.asarray(ids, np.int64), labels, hidden.astype(np.float16), k[0].astype(np.float16), v[0].astype(np.float16), start)
        )
        tokens += len(ids) - start
        if n % 5 == 4 or n == len(prompts) - 1:
            el = time.monotonic() - t0
            say(f"replies: {n + 1}/{len(prompts)}, {tokens} reply tokens, {el:.0f} s (eta {el / (n + 1) * (len(prompts) - n - 1):.0f} s)")
    return out


def save_data(path: Path, seqs: list[Sequence_], measure: list[tuple[str, int]], key: str) -> None:
    """The traced replies, so a second training run (other sizes, more epochs) skips the slow part."""
    np.savez(
        path, key=np.array(key), measure=np.array(json.dumps(measure)),
        lengths=np.array([len(s.ids) for s in seqs]), starts=np.array([s.start for s in seqs]),
        ids=np.concatenate([s.ids for s in seqs]), labels=np.concatenate([s.labels for s in seqs]),
        hidden=np.concatenate([s.hidden for s in seqs]), key_=np.concatenate([s.key for s in seqs], axis=1),
        value=np.concatenate([s.value for s in seqs], axis=1),
    )  # fmt: skip


def load_data(path: Path, key: str) -> tuple[list[Sequence_], list[tuple[str, int]]] | None:
    try:
        z = np.load(path)
    except (OSError, ValueError):
        return None
    if str(z["key"]) != key:
        return None
    seqs, at = [], 0
    for n, st in zip(z["lengths"].tolist(), z["starts"].tolist()):
        sl = slice(at, at + n)
        seqs.append(Sequence_(z["ids"][sl], z["labels"][sl], z["hidden"][sl], z["key_"][:, sl], z["value"][:, sl], st))
        at += n
    return seqs, [tuple(m) for m in json.loads(str(z["measure"]))]


def draft_vocab(seqs: list[Sequence_], vocab: int, size: int, always: Sequence[int]) -> np.ndarray:
    """Draft index -> target id: every token the replies use or the target predicts there, then the lowest ids
    (BPE merges in rank order: the frequent ones), up to `size`."""
    seen = Counter()
    for s in seqs:
        seen.update(s.ids[s.start :].tolist())
        seen.update(s.labels[s.start :].tolist())
    chosen = [t for t in always if 0 <= t < vocab]
    chosen += [t for t, _ in seen.most_common() if t not in set(chosen)]
    chosen = chosen[:size]
    have = set(chosen)
    t = 0
    while len(chosen) < min(size, vocab):
        if t not in have:
            chosen.append(t)
        t += 1
    return np.asarray(chosen, np.int64)


# ----------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    width: int = 1024
    heads: int = 8
    ffn: int = 2048

    @classmethod
    def quick(cls) -> Shape:
        return cls(width=64, heads=2, ffn=128)


def build_model(info: TargetInfo, table: np.ndarray, shape: Shape):
    """The drafter as a torch module; `table` [Vd + 1, H] is the target's embedding of the draft vocabulary and
    one last row for tokens outside it (their mean), used both as the input embedding and as the output head."""
    import torch
    from torch import nn

    class RMSNorm(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    class Drafter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h, d, hd = info.hidden, shape.width, info.head_dim
            if shape.heads % info.kv_heads:
                raise ValueError(f"drafter heads ({shape.heads}) must be a multiple of the target's KV heads ({info.kv_heads})")
            self.register_buffer("table", torch.tensor(table, dtype=torch.float32))
            self.register_buffer("inv_freq", torch.tensor(info.inv_freq, dtype=torch.float32))
            self.tok_in = nn.Linear(h, d, bias=False)
            self.hid_in = nn.Linear(h, d)
            self.n_attn, self.q, self.o = RMSNorm(d), nn.Linear(d, shape.heads * hd), nn.Linear(shape.heads * hd, d, bias=False)
            self.n_mlp, self.gate, self.up, self.down = (
                RMSNorm(d),
                nn.Linear(d, shape.ffn, bias=False),
                nn.Linear(d, shape.ffn, bias=False),
                nn.Linear(shape.ffn, d, bias=False),
            )
            self.n_out, self.post = RMSNorm(d), nn.Linear(d, h)
            self.heads, self.groups, self.hd = shape.heads, shape.heads // info.kv_heads, hd
            # no residual from the input state: starting from "the next state is this state" makes the first
            # guesses confidently the current token (measured: held-out acceptance 0.21 vs ? after 5 epochs)

        def rotate(self, q, pos):
            """q [N, heads, hd] rotated at positions pos [N], in the target's layout (half split or interleaved)."""
            ang = pos.float()[:, None] * self.inv_freq[None]  # [N, hd/2]
            cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
            if info.interleaved:
                x1, x2 = q[..., 0::2], q[..., 1::2]
                return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
            x1, x2 = q[..., : self.hd // 2], q[..., self.hd // 2 :]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

        def step(self, tok, hid, pos, key, value, mask):
            """tok [N] draft indices, hid [N, H], pos [N]; key/value [kvh, T, hd]; mask [N, T] (True = visible)."""
            x = self.tok_in(self.table[tok]) + self.hid_in(hid)
            n = x.shape[0]
            q = self.rotate(self.q(self.n_attn(x)).view(n, self.heads, self.hd), pos)
            q = q.view(n, -1, self.groups, self.hd).permute(1, 2, 0, 3)  # [kvh, g, N, hd]
            s = torch.einsum("kgnd,ktd->kgnt", q, key) * info.scale
            s = s.masked_fill(~mask[None, None], float("-inf"))
            a = torch.einsum("kgnt,ktd->kgnd", torch.softmax(s, dim=-1), value)
            x = x + self.o(a.permute(2, 0, 1, 3).reshape(n, -1))
            m = self.n_mlp(x)
            x = x + self.down(torch.nn.functional.silu(self.gate(m)) * self.up(m))
            out = self.post(self.n_out(x))
            return out, out @ self.table[:-1].T

    return Drafter()


# ----------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TrainPlan:
    epochs: int = 12
    lr: float = 1e-3
    steps_ahead: int = 3
    batch_positions: int = 256
    holdout: float = 0.1
    regress: float = 1.0
    seed: int = 0
    history: list[dict] = field(default_factory=list)


def _to_draft(ids: np.ndarray, inv: np.ndarray) -> np.ndarray:
    return inv[ids]


def _batches(seqs, inv, plan: TrainPlan, rng):
    """Per sequence: positions p (reply region) with their step inputs/labels for `steps_ahead` unrolled steps."""
    import torch

    order = rng.permutation(len(seqs))
    for i in order:
        s = seqs[i]
        T = len(s.ids)
        ps = np.arange(max(1, s.start), T - 1)
        if len(ps) == 0:
            continue
        yield s, torch.from_numpy(ps)


def _run_sequence(model, s, ps, inv, plan: TrainPlan, vd: int):
    """Losses and hits for positions ps of one sequence, unrolling `steps_ahead` draft steps."""
    import torch
    import torch.nn.functional as F

    T = len(s.ids)
    key = torch.from_numpy(s.key.astype(np.float32))
    value = torch.from_numpy(s.value.astype(np.float32))
    hidden = torch.from_numpy(s.hidden.astype(np.float32))
    ids_d = torch.from_numpy(_to_draft(s.ids, inv))
    labels_d = torch.from_numpy(_to_draft(s.labels, inv))
    mask = torch.arange(T)[None, :] < ps[:, None]  # the cache holds positions before p
    hid = hidden[ps - 1]
    ce_total, reg_total, hits, alive = 0.0, 0.0, [], torch.ones(len(ps), dtype=torch.bool)
    var = hidden[s.start :].var().clamp_min(1e-6)
    for j in range(plan.steps_ahead):
        q = ps + j
        ok = q < T - 1
        qc = q.clamp(max=T - 2)
        out, logits = model.step(ids_d[qc], hid, ps, key, value, mask)
        lab = labels_d[qc]
        valid = ok & (lab < vd)
        if valid.any():
            ce_total = ce_total + F.cross_entropy(logits[valid], lab[valid])
            reg_total = reg_total + ((out[valid] - hidden[qc][valid]) ** 2).mean() / var
        pred = logits.argmax(-1)
        alive = alive & valid & (pred == lab)
        hits.append((alive.sum().item(), int(ok.sum().item())))
        hid = out
    return ce_total, reg_total, hits


def train(model, seqs: list[Sequence_], inv: np.ndarray, vd: int, plan: TrainPlan, say: Progress) -> dict:
    import torch

    torch.manual_seed(plan.seed)
    rng = np.random.default_rng(plan.seed)
    idx = rng.permutation(len(seqs))
    n_hold = max(1, int(len(seqs) * plan.holdout)) if len(seqs) > 1 else 0
    hold, tr = [seqs[i] for i in idx[:n_hold]], [seqs[i] for i in idx[n_hold:]]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.01)
    total_steps = plan.epochs * max(1, len(tr))
    warm = max(1, total_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay to 5 %
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, i / total_steps))))
    )
    t0 = time.monotonic()
    result: dict = {}
    for epoch in range(plan.epochs):
        model.train()
        loss_sum, n = 0.0, 0
        for s, ps in _batches(tr, inv, plan, rng):
            ce, reg, _ = _run_sequence(model, s, ps, inv, plan, vd)
            loss = ce + plan.regress * reg
            if not torch.is_tensor(loss):
                sched.step()
                continue
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item()
            n += 1
        result = evaluate(model, hold or tr, inv, plan, vd)
        result["train_loss"] = round(loss_sum / max(1, n), 4)
        plan.history.append({"epoch": epoch + 1, **result})
        say(
            f"train: epoch {epoch + 1}/{plan.epochs}, loss {result['train_loss']}, held-out acceptance per position "
            f"{result['acceptance']}, {time.monotonic() - t0:.0f} s"
        )
    return result


def evaluate(model, seqs, inv, plan: TrainPlan, vd: int) -> dict:
    """Acceptance per draft position on `seqs` (unconditional: step j counts when steps 1..j all matched)."""
    import torch

    model.eval()
    hit = np.zeros(plan.steps_ahead)
    tried = np.zeros(plan.steps_ahead)
    with torch.no_grad():
        for s in seqs:
            T = len(s.ids)
            ps = torch.arange(max(1, s.start), T - 1)
            if len(ps) == 0:
                continue
            _, _, hits = _run_sequence(model, s, ps, inv, plan, vd)
            for j, (h, t) in enumerate(hits):
                hit[j] += h
                tried[j] += len(ps)
    acc = [round(float(h / t), 4) if t else 0.0 for h, t in zip(hit, tried)]
    return {"acceptance": acc, "positions": int(tried[0])}


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------


def export_onnx(model, info: TargetInfo, vocab_map: np.ndarray, path: Path) -> None:
    """The OnnxDrafter contract for input_ids bundles: input_ids [1,1] (target ids), target_hidden [1,1,H],
    position_ids [1,1], kv.{L}.key|value [1,kvh,rows,hd] -> logits [1,1,Vd], hidden_out [1,1,H]."""
    import torch
    from torch import nn

    inv = np.full(info.vocab, len(vocab_map), np.int64)
    inv[vocab_map] = np.arange(len(vocab_map))

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model
            self.register_buffer("inv", torch.from_numpy(inv))
            with torch.no_grad():  # token table folded through tok_in: [Vd+1, width] instead of [Vd+1, H]
                self.register_buffer("tok_table", model.tok_in(model.table).to(torch.float16))

        def forward(self, input_ids, target_hidden, position_ids, key, value):
            m = self.m
            tok = self.inv[input_ids.reshape(1)]
            hid = target_hidden.reshape(1, -1)
            x = self.tok_table[tok].float() + m.hid_in(hid)
            q = m.rotate(m.q(m.n_attn(x)).view(1, m.heads, m.hd), position_ids.reshape(1))
            q = q.view(1, -1, m.groups, m.hd).permute(1, 2, 0, 3)  # [kvh, g, 1, hd]
            k, v = key[0], value[0]  # [kvh, rows, hd]
            s = torch.matmul(q, k.unsqueeze(1).transpose(-1, -2)) * info.scale
            a = torch.matmul(torch.softmax(s, dim=-1), v.unsqueeze(1))
            x = x + m.o(a.permute(2, 0, 1, 3).reshape(1, -1))
            mm = m.n_mlp(x)
            x = x + m.down(torch.nn.functional.silu(m.gate(mm)) * m.up(mm))
            out = m.post(m.n_out(x))
            logits = torch.matmul(out, m.table[:-1].T)
            return logits.reshape(1, 1, -1), out.reshape(1, 1, -1)

    step = Step().eval()
    L = info.layer
    example = (
        torch.tensor([[int(vocab_map[0])]]), torch.randn(1, 1, info.hidden), torch.tensor([[9]]),
        torch.randn(1, info.kv_heads, 9, info.head_dim), torch.randn(1, info.kv_heads, 9, info.head_dim),
    )  # fmt: skip
    names = ["input_ids", "target_hidden", "position_ids", f"kv.{L}.key", f"kv.{L}.value"]
    with torch.no_grad():
        torch.onnx.export(
            step, example, str(path), input_names=names, output_names=["logits", "hidden_out"],
            dynamic_axes={f"kv.{L}.key": {2: "rows"}, f"kv.{L}.value": {2: "rows"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    data: DataPlan = field(default_factory=DataPlan)
    train: TrainPlan = field(default_factory=TrainPlan)
    shape: Shape = field(default_factory=Shape)
    draft_vocab: int = 4096
    precision: str = "int4"
    threads: int = 0
    measure: int = 4  # held-out prompts decoded with and without the drafter to decide `auto`
    data_file: Path | None = None


def train_drafter(bundle_dir: Path, opts: Options, say: Progress = print) -> dict:
    import torch

    from model_export.bundle_writer import file_entries
    from model_export.quantize import quantize_int4
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine
    from voiced.model.manifest import DrafterSpec, Manifest
    from voiced.model.prompt import ChatPrompt

    bundle_dir = Path(bundle_dir)
    t_start = time.monotonic()
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    info = inspect_target(bundle_dir, manifest)
    say(f"target: {manifest.name}, reads layer {info.layer} ({info.kv_heads} KV heads x {info.head_dim}), hidden {info.hidden}")
    torch.set_num_threads(opts.threads or torch.get_num_threads())
    engine = Engine(bundle, threads=opts.threads, drafter="off")
    chat = ChatPrompt(bundle)
    data_key = json.dumps(
        [
            manifest.files.get(manifest.decoder.file, {}).sha256 if manifest.files else "",
            opts.data.__dict__,
            opts.measure,
            manifest.system_prompt,
        ],
        default=str,
    )
    cached = load_data(opts.data_file, data_key) if opts.data_file else None
    if cached:
        seqs, measure = cached
        say(f"data: {len(seqs)} traced replies from {opts.data_file}")
    else:
        questions, explains = make_prompts(engine, chat, opts.data, say)
        prompts = [(q, opts.data.max_reply) for q in questions] + [(e, opts.data.max_explain) for e in explains]
        rng = np.random.default_rng(opts.data.seed)
        order = rng.permutation(len(prompts))
        measure = [prompts[i] for i in order[: opts.measure]]
        prompts = [prompts[i] for i in order[opts.measure :]]
        seqs = collect(engine, chat, manifest.system_prompt, prompts, info.layer, say)
        if opts.data_file and seqs:
            save_data(opts.data_file, seqs, measure, data_key)
            say(f"data: saved to {opts.data_file} (a later run with --data reuses it)")
    if not seqs:
        raise SystemExit("the target wrote no replies to train on. Fix: check the bundle answers (`voiced ask`)")
    t_data = time.monotonic() - t_start

    vocab_map = draft_vocab(seqs, info.vocab, opts.draft_vocab, manifest.tokenizer.stop_ids)
    vd = len(vocab_map)
    inv = np.full(info.vocab, vd, np.int64)
    inv[vocab_map] = np.arange(vd)
    rows = embedding_rows(bundle_dir, manifest, vocab_map)
    table = np.concatenate([rows, rows.mean(0, keepdims=True)])
    say(f"vocabulary: {vd} draft tokens cover {_coverage(seqs, inv, vd):.1%} of reply tokens")
    model = build_model(info, table, opts.shape)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"train: {n_params / 1e6:.1f} M parameters, {sum(len(s.ids) - s.start for s in seqs)} reply tokens in {len(seqs)} replies")
    result = train(model, seqs, inv, vd, opts.train, say)
    t_train = time.monotonic() - t_start - t_data

    with tempfile.TemporaryDirectory(prefix="voiced-drafter-") as tmp:
        out = Path(tmp) / DRAFTER
        say("export: drafter.onnx" + (" + int4 MatMulNBits" if opts.precision == "int4" else ""))
        export_onnx(model, info, vocab_map, out)
        if opts.precision == "int4":
            quantize_int4(out, out)
        for f in bundle_dir.glob(DRAFTER + "*"):
            f.unlink()
        for f in Path(tmp).iterdir():
            shutil.copy2(f, bundle_dir / f.name)
    np.save(bundle_dir / VOCAB_MAP, vocab_map)

    import onnxruntime
    import transformers

    manifest.drafter = DrafterSpec(
        file=DRAFTER, reads_layers=[info.layer], hidden_size=info.hidden, draft_vocab=vd, vocab_map_file=VOCAB_MAP,
        acceptance=result["acceptance"], auto=False,
        source={
            "kind": "trained by model_export train-drafter (self-distillation on the target's greedy replies)",
            "replies": str(len(seqs)), "reply_tokens": str(sum(len(s.ids) - s.start for s in seqs)),
            "shape": json.dumps(opts.shape.__dict__), "epochs": str(opts.train.epochs), "precision": opts.precision,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__,
            "data_s": f"{t_data:.0f}", "train_s": f"{t_train:.0f}",
        },
    )  # fmt: skip
    _write_manifest(bundle_dir, manifest, file_entries)

    speed = measure_speedup(bundle_dir, chat_prompts=measure, system=manifest.system_prompt, threads=opts.threads)
    manifest = Manifest.model_validate_json((bundle_dir / "manifest.json").read_text())
    manifest.drafter.speedup = speed["ratio"]
    manifest.drafter.auto = bool(speed["ratio"] > 1.05 and speed["identical"])
    manifest.drafter.source["measured"] = json.dumps(speed)
    _write_manifest(bundle_dir, manifest, file_entries)
    summary = {
        "bundle": str(bundle_dir), "acceptance": result["acceptance"], "draft_vocab": vd, "parameters": n_params,
        "data_s": round(t_data), "train_s": round(t_train), "total_s": round(time.monotonic() - t_start), **speed,
        "auto": manifest.drafter.auto,
    }  # fmt: skip
    say(f"done: {json.dumps(summary)}")
    return summary


def _coverage(seqs, inv, vd) -> float:
    tot = sum(len(s.ids) - s.start for s in seqs)
    inside = sum(int((inv[s.ids[s.start :]] < vd).sum()) for s in seqs)
    return inside / max(1, tot)


def _write_manifest(bundle_dir: Path, manifest, file_entries) -> None:
    manifest.files = {}
    (bundle_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    manifest.files = {k: v for k, v in file_entries(bundle_dir).items() if k != "manifest.json"}
    (bundle_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))


def measure_speedup(bundle_dir: Path, chat_prompts: list[tuple[str, int]], system: str | None, threads: int = 0) -> dict:
    """Decode the held-out prompts greedily without and with the drafter, interleaved (a noisy machine hits both
    alike): tok/s ratio and whether the texts are identical."""
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine
    from voiced.model.prompt import ChatPrompt
    from voiced.model.sampling import GenerationConfig

    bundle = load_bundle(bundle_dir)
    engines = {"off": Engine(bundle, threads=threads, drafter="off"), "on": Engine(bundle, threads=threads, drafter="on")}
    chat = ChatPrompt(bundle)
    tok = {"off": 0, "on": 0}
    ms = {"off": 0.0, "on": 0.0}
    identical, accepted, rounds = True, 0, 0
    for user, max_new in chat_prompts:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        texts = {}
        for mode, eng in engines.items():
            conv = eng.conversation()
            conv.sync(chat.render(msgs))
            texts[mode] = "".join(d.text for d in conv.generate(GenerationConfig(max_new_tokens=max_new, temperature=0.0)))
            st = conv.last_stats
            tok[mode] += st["decode_tokens"]
            ms[mode] += st["decode_ms"]
            if mode == "on":
                accepted += st.get("accepted", 0)
                rounds += st.get("rounds", 0)
        identical &= texts["on"] == texts["off"]
    rate = {m: tok[m] / max(ms[m], 1e-9) * 1e3 for m in tok}
    return {
        "tok_s_off": round(rate["off"], 2), "tok_s_on": round(rate["on"], 2),
        "ratio": round(rate["on"] / max(rate["off"], 1e-9), 3), "identical": identical,
        "tokens_per_round": round(tok["on"] / max(rounds, 1), 3), "prompts": len(chat_prompts),
    }  # fmt: skip


def add_train_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-drafter", help="train an MTP drafter for a bundle by self-distillation (CPU)")
    p.add_argument("bundle", type=Path, help="the bundle folder (its decoder must export hidden states)")
    p.add_argument("--questions", type=int, default=DataPlan.questions, help="self-written questions to answer")
    p.add_argument("--explanations", type=int, default=DataPlan.explanations, help="longer 'explain' prompts")
    p.add_argument("--epochs", type=int, default=TrainPlan.epochs)
    p.add_argument("--draft-vocab", type=int, default=4096, help="reduced output vocabulary of the drafter")
    p.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="an .npz to keep the traced replies in (reused when it matches)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for tests (a few prompts, a small drafter)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    say = printer("train-drafter")
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle} is not a bundle (no manifest.json). Fix: give a bundle folder (`voiced model list`)")
    opts = Options(precision=args.precision, threads=args.threads, draft_vocab=args.draft_vocab, data_file=args.data)
    opts.data.questions, opts.data.explanations, opts.train.epochs = args.questions, args.explanations, args.epochs
    if args.quick:
        opts.shape = Shape.quick()
        opts.data = DataPlan(questions=args.questions, explanations=args.explanations, per_topic=3, max_reply=16, max_explain=24)
        opts.measure = 2
    summary = train_drafter(args.bundle, opts, say)
    print(json.dumps(summary))
    return 0
