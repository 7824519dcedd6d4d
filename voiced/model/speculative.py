"""Speculative decoding: a drafter guesses k tokens, the decoder checks all of them in one call.

Why this is exact: the decoder's logits at the k+1 verified positions are the logits plain decoding would have
computed one step at a time (same cache, same positions), so for greedy decoding accepting the longest prefix of
drafts that equal the decoder's argmax reproduces plain greedy output token for token whatever the drafter says;
a bad drafter only costs speed. For temperature > 0 the standard rejection rule (accept d with probability
min(1, p(d)/q(d)), else sample from max(0, p - q) renormalised) keeps the decoder's sampling distribution.

Why it pays on a CPU at all: a decode step is memory-bound (every weight is read once per call), so running k+1
positions costs little more than one; each accepted draft saves a whole step. k adapts to what is measured:
per-position acceptance and the cost of a draft step relative to a verify call.

The MTP drafter (Gemma 4's assistant, or one trained for the default bundle) has no KV cache of its own: it
attends to the target's KV of a few layers, and its input is the target's embedding of the last token joined to
the target's last hidden state; every draft step runs at the same position (the last token's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from voiced.model.bundle import BundleError
from voiced.model.manifest import DrafterSpec
from voiced.model.sampling import GenerationConfig

if TYPE_CHECKING:
    from voiced.model.engine import Engine

__all__ = ["Draft", "DraftInput", "Drafter", "KPolicy", "OnnxDrafter", "target_probs", "verify"]


@dataclass
class DraftInput:
    """What a drafter sees at the start of a round: the token just chosen (not yet run through the decoder), the
    decoder's last hidden state (of the position before it), its absolute position, and the target's KV."""

    token: int
    hidden: np.ndarray | None  # [hidden] of the last cached position; None when the decoder exports none
    position: int  # absolute position of `token` (= tokens held in the cache)
    kv: dict[int, list[np.ndarray]]  # target layer -> [key, value] arrays [1, kv_heads, rows, head_dim]


@dataclass
class Draft:
    tokens: list[int]
    probs: list[np.ndarray] | None = None  # q over the target vocabulary per token; None = greedy drafts (one-hot)


class Drafter(Protocol):
    reads_layers: list[int]

    def propose(self, inp: DraftInput, k: int) -> Draft: ...


# ----------------------------------------------------------------------------------------------------------
# verification
# ----------------------------------------------------------------------------------------------------------


def target_probs(logits: np.ndarray, cfg: GenerationConfig) -> np.ndarray:
    """The distribution Sampler draws from (temperature, then the top-p nucleus), as a full-vocabulary vector."""
    z = logits.astype(np.float64) / cfg.temperature
    p: npt.NDArray[np.float64] = np.exp(z - z.max())
    p /= p.sum()
    if cfg.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        n = min(int(np.searchsorted(cum, cfg.top_p)) + 1, p.size)
        keep = np.zeros_like(p)
        keep[order[:n]] = p[order[:n]]
        p = keep / keep.sum()
    return p


def verify(logits: np.ndarray, draft: Draft, cfg: GenerationConfig, rng: np.random.Generator) -> tuple[int, int]:
    """logits [k+1, vocab] at the positions of (token, d1..dk) -> (accepted drafts m, the token after them).

    Greedy: m = length of the agreeing prefix, the next token is the decoder's argmax after it.
    Sampling: the rejection rule of Leviathan et al. / Chen et al.; the returned token is the resample after a
    rejection, or a fresh sample from the last distribution when every draft was accepted."""
    d = draft.tokens
    if cfg.temperature == 0.0:
        g = np.argmax(logits, axis=-1)
        m = 0
        while m < len(d) and int(g[m]) == d[m]:
            m += 1
        return m, int(g[m])
    for i, tok in enumerate(d):
        p = target_probs(logits[i], cfg)
        q = None if draft.probs is None else draft.probs[i]
        qd = 1.0 if q is None else float(q[tok])
        if qd > 0 and rng.random() < min(1.0, p[tok] / qd):
            continue
        if q is None:
            resid = p.copy()
            resid[tok] = 0.0
        else:
            resid = np.maximum(p - q, 0.0)
        s = resid.sum()
        if s <= 0:  # p == q: any sample of p is right
            resid, s = p, p.sum()
        return i, int(rng.choice(resid.size, p=resid / s))
    p = target_probs(logits[len(d)], cfg)
    return len(d), int(rng.choice(p.size, p=p))


# ----------------------------------------------------------------------------------------------------------
# choosing k
# ----------------------------------------------------------------------------------------------------------


@dataclass
class KPolicy:
    """Picks k per round. Fixed when `fixed` > 0; otherwise the k that maximises expected tokens per millisecond,

        E(k) = (1 + sum_{i<=k} prod_{j<=i} a_j) / (verify_ms(k) + k * draft_ms),

    where a_j is the measured acceptance of draft position j given the ones before it were accepted,
    verify_ms(k) the measured cost of a decoder call over k+1 positions (on a CPU it is far from flat: a 1.5B
    int4 model measured 38 / 47 / 71 / 110 ms for 1 / 2 / 4 / 7 positions) and draft_ms one draft step. Costs
    not yet measured for some k are extrapolated linearly from those that are (prior slope: `marginal_verify`
    of a one-position call per extra position). When the best k is 0 a probe round of k=1 every `probe_every`
    rounds keeps the estimates alive."""

    fixed: int = 0
    k_max: int = 8
    prior: list[float] = field(default_factory=list)
    decay: float = 0.9
    marginal_verify: float = 0.3
    probe_every: int = 8
    # measured
    accept: list[float] = field(init=False)
    verify_ms: dict[int, float] = field(init=False)
    draft_ms: float | None = field(init=False, default=None)
    rounds: int = field(init=False, default=0)
    tries: list[int] = field(init=False)  # per position: drafts judged
    hits: list[int] = field(init=False)  # per position: drafts accepted

    def __post_init__(self) -> None:
        base = [0.6 * 0.9**i for i in range(self.k_max)]
        # manifest acceptance is per position (unconditional); turn it into conditional rates
        cond, prev = [], 1.0
        for a in list(self.prior)[: self.k_max]:
            cond.append(min(0.99, a / prev) if prev > 0 else 0.0)
            prev = max(a, 1e-6)
        self.accept = cond + base[len(cond) :]
        self.verify_ms = {}
        self.tries = [0] * self.k_max
        self.hits = [0] * self.k_max

    def _verify_cost(self, k: int) -> float:
        if k in self.verify_ms:
            return self.verify_ms[k]
        known = sorted(self.verify_ms.items())
        if not known:
            return 1.0 + self.marginal_verify * k  # relative units until something is measured
        if len(known) == 1:
            k0, t0 = known[0]
            one = t0 / (1.0 + self.marginal_verify * k0)
            return one * (1.0 + self.marginal_verify * k)
        (k0, t0), (k1, t1) = known[0], known[-1]
        slope = max(0.0, (t1 - t0) / (k1 - k0))
        return t0 + slope * (k - k0)

    def next_k(self) -> int:
        self.rounds += 1
        if self.fixed > 0:
            return min(self.fixed, self.k_max)
        draft = self.draft_ms if self.draft_ms is not None else 0.1 * self._verify_cost(0)
        best_k, best = 0, 1.0 / self._verify_cost(0)
        reach, tokens = 1.0, 1.0
        for k in range(1, self.k_max + 1):
            reach *= self.accept[k - 1]
            tokens += reach
            e = tokens / (self._verify_cost(k) + k * draft)
            if e > best:
                best_k, best = k, e
        if best_k == 0 and self.rounds % self.probe_every == 0:
            return 1
        return best_k

    def observe(self, k: int, accepted: int, draft_ms: float, verify_ms: float) -> None:
        if verify_ms > 0:
            old = self.verify_ms.get(k)
            self.verify_ms[k] = verify_ms if old is None else self.decay * old + (1 - self.decay) * verify_ms
        if k <= 0:
            return
        for i in range(min(k, accepted + 1)):  # positions that were judged: all accepted ones and the first miss
            hit = i < accepted
            self.tries[i] += 1
            self.hits[i] += hit
            self.accept[i] = self.decay * self.accept[i] + (1 - self.decay) * float(hit)
        step = draft_ms / k
        self.draft_ms = step if self.draft_ms is None else self.decay * self.draft_ms + (1 - self.decay) * step

    def per_position(self) -> list[float | None]:
        """Measured unconditional acceptance per position (None where never tried)."""
        out: list[float | None] = []
        reach = 1.0
        for t, h in zip(self.tries, self.hits):
            if t == 0:
                out.append(None)
                continue
            reach *= h / t
            out.append(round(reach, 4))
        return out


# ----------------------------------------------------------------------------------------------------------
# the ONNX drafter
# ----------------------------------------------------------------------------------------------------------


class OnnxDrafter:
    """drafter.onnx of a bundle. Graph contract (written by model_export's assistant / train-drafter):

    inputs:  `inputs_embeds` float [1, 1, 2*H_target] (target embedding of the token ++ target hidden state)
             or, for bundles whose decoder takes input_ids, `input_ids` int64 [1, 1] + `target_hidden` [1, 1, H];
             `position_ids` int64 [1, 1]; `kv.{layer}.key|value` [1, kv_heads, rows, head_dim] per reads_layers.
    outputs: `logits` [1, 1, V_draft] (V_draft = target vocab, or draft_vocab mapped by vocab_map_file),
             `hidden_out` [1, 1, H_target] (the state fed to the next draft step).
    """

    def __init__(self, engine: Engine, spec: DrafterSpec, threads: int = 0):
        bundle = engine.bundle
        self.engine, self.spec = engine, spec
        self.reads_layers = list(spec.reads_layers)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(bundle.path(spec.file)), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise BundleError(bundle.dir, f"{spec.file} (the drafter) does not load ({str(e).splitlines()[0][:300]})") from None
        names = {i.name for i in self.session.get_inputs()}
        self.by_id = "input_ids" in names
        need = ["position_ids"] + [f"kv.{i}.{w}" for i in self.reads_layers for w in ("key", "value")]
        need += ["input_ids", "target_hidden"] if self.by_id else ["inputs_embeds"]
        missing = [n for n in need if n not in names]
        if missing:
            raise BundleError(bundle.dir, f"{spec.file} does not match manifest.json (missing inputs {', '.join(missing)})")
        self.vocab_map = np.load(bundle.path(spec.vocab_map_file)).astype(np.int64) if spec.vocab_map_file else None
        self.kv_inputs = {i: [f"kv.{i}.key", f"kv.{i}.value"] for i in self.reads_layers}
        self.last_ms = 0.0

    def propose(self, inp: DraftInput, k: int) -> Draft:
        t0 = time.perf_counter()
        feeds: dict[str, np.ndarray] = {"position_ids": np.array([[inp.position]], np.int64)}
        for i, names in self.kv_inputs.items():
            for n, a in zip(names, inp.kv[i]):
                feeds[n] = a
        assert inp.hidden is not None, "the drafter needs the decoder's hidden_states output"
        hidden = inp.hidden.reshape(1, 1, -1).astype(np.float32)
        tok = inp.token
        out: list[int] = []
        for _ in range(k):
            if self.by_id:
                feeds["input_ids"] = np.array([[tok]], np.int64)
                feeds["target_hidden"] = hidden
            else:
                emb = self.engine.embed([tok]).astype(np.float32).reshape(1, 1, -1)
                feeds["inputs_embeds"] = np.concatenate([emb, hidden], axis=-1)
            logits, hidden = self.session.run(["logits", "hidden_out"], feeds)
            j = int(np.argmax(logits[0, -1]))
            tok = int(self.vocab_map[j]) if self.vocab_map is not None else j
            out.append(tok)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return Draft(out)
