"""Drafters for testing exactness: they need no model, so any mismatch in the output is the engine's fault.

Why two: a random drafter is almost always wrong (every round rolls the cache back), a scripted one that knows
the plain greedy reply is almost always right (long accepted runs, rollbacks deep in a round); with a noise rate
between, the rejection point moves through every draft position.
"""

from __future__ import annotations

import numpy as np

from voiced.model.speculative import Draft, DraftInput


class RandomDrafter:
    def __init__(self, vocab: int, seed: int = 0, reads_layers: list[int] | None = None, with_probs: bool = False):
        self.vocab, self.rng = vocab, np.random.default_rng(seed)
        self.reads_layers = list(reads_layers or [])
        self.with_probs = with_probs
        self.calls = 0

    def propose(self, inp: DraftInput, k: int) -> Draft:
        self.calls += 1
        for i in self.reads_layers:  # the KV handed over must cover what the decoder holds
            assert all(a.ndim == 4 for a in inp.kv[i])
        if not self.with_probs:
            return Draft(self.rng.integers(0, self.vocab, size=k).tolist())
        probs = [self.rng.dirichlet(np.full(self.vocab, 0.3)) for _ in range(k)]
        return Draft([int(self.rng.choice(self.vocab, p=q)) for q in probs], probs)


class ScriptedDrafter:
    """Proposes the known continuation `script` (all tokens from position 0), each token wrong with prob `noise`."""

    def __init__(self, script: list[int], vocab: int, noise: float = 0.0, seed: int = 0):
        self.script, self.vocab, self.noise = list(script), vocab, noise
        self.rng = np.random.default_rng(seed)
        self.reads_layers: list[int] = []
        self.positions: list[int] = []

    def propose(self, inp: DraftInput, k: int) -> Draft:
        self.positions.append(inp.position)
        assert self.script[inp.position] == inp.token, "the drafter must be given the token at its position"
        out = []
        for p in range(inp.position + 1, inp.position + 1 + k):
            t = self.script[p] if p < len(self.script) else 0
            if self.rng.random() < self.noise:
                t = (t + 1 + int(self.rng.integers(0, self.vocab - 1))) % self.vocab
            out.append(int(t))
        return Draft(out)


def varied_gemma4_bundle():
    """The tiny Gemma 4 fp32 bundle with its embedding multiplier at 0.2 instead of sqrt(64).

    Why: with full-scale inputs the random tiny model's greedy reply copies one token forever, which would let a
    wrong cache pass an equality test; with smaller inputs its greedy replies vary token to token. Cached next to
    the bundle it is made from."""
    import json

    from tests.support import gemma4

    src = gemma4.tiny_bundle("fp32")
    dst = src.parent / "bundle-fp32-varied"
    with gemma4._locked(src.parent):
        if not (dst / "manifest.json").is_file():
            import shutil

            tmp = src.parent / "bundle-fp32-varied.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("manifest.json"))
            m = json.loads((src / "manifest.json").read_text())
            m["embeddings"]["multiplier"] = 0.2
            (tmp / "manifest.json").write_text(json.dumps(m))
            tmp.rename(dst)
    return dst
