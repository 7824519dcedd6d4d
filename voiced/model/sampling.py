"""Choosing the next token from one row of logits: greedy, or temperature + nucleus (top-p) sampling.

Why numpy over a vocabulary-sized row per step rather than a graph op: at 150k-260k entries a partial sort costs
well under a millisecond, far below one decode step, and it keeps the graphs free of sampling state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 96
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop_ids: list[int] | None = field(default=None)  # None = the bundle's stop ids

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Sampler:
    """Holds the random generator of one generate() call, so a seed reproduces the whole reply."""

    def __init__(self, cfg: GenerationConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def __call__(self, logits: np.ndarray) -> int:
        cfg = self.cfg
        if cfg.temperature == 0.0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / cfg.temperature
        if cfg.top_p < 1.0:
            # the nucleus is usually a handful of tokens: look at the top k candidates first, widen if needed
            k = min(64, z.size)
            while True:
                idx = np.argpartition(-z, k - 1)[:k] if k < z.size else np.arange(z.size)
                idx = idx[np.argsort(-z[idx])]
                p = np.exp(z[idx] - z[idx[0]])
                total = np.exp(z - z[idx[0]]).sum() if k < z.size else p.sum()
                cum = np.cumsum(p) / total
                if cum[-1] >= cfg.top_p or k >= z.size:
                    n = min(int(np.searchsorted(cum, cfg.top_p)) + 1, idx.size)
                    keep, pk = idx[:n], p[:n]
                    return int(keep[self.rng.choice(n, p=pk / pk.sum())])
                k = min(k * 4, z.size)
        p = np.exp(z - z.max())
        return int(self.rng.choice(z.size, p=p / p.sum()))
