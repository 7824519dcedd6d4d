"""The KV cache of one conversation: one buffer pair per decoder layer, each with that layer's own geometry.

Two ways to hand a layer's cache to the graph, chosen per layer:

- shared: a buffer preallocated for the whole context, bound as both `past_key_values.{i}.*` and `present.{i}.*`.
  GroupQueryAttention (the builder's fused attention) sees past and present share memory and writes only the
  new rows in place, so a decode step copies no cache at all. Only for full-attention layers of graphs whose
  manifest says `past_present_share_buffer`.
- concat: the graph returns present = concat(past, new); the present OrtValue becomes the next past as is (no
  copy on our side). Sliding layers keep only their last `window - 1` rows (the rule agreed with the exporter:
  the graph derives its masks from positions), copied out of a buffer that also holds some slack rows so that
  short rollbacks need no replay.

Rolling back (truncate) is free for full layers. A sliding layer that has already dropped the rows a rollback
needs reports it, and the conversation replays its tokens instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from voiced.model.manifest import LayerKV


@dataclass(frozen=True)
class KVNames:
    layer: int
    past: tuple[str, ...]  # past_key_values.{i}.key [, .value]
    present: tuple[str, ...]


class SharedLayer:
    """Full-attention layer whose graph updates the cache in place (GroupQueryAttention with a shared buffer)."""

    shared = True

    def __init__(self, names: KVNames, spec: LayerKV, capacity: int, dtype: np.dtype):
        self.names = names
        self.arrays = [np.zeros((1, spec.kv_heads, capacity, spec.head_dim), dtype) for _ in names.past]
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]

    def bind(self, binding: ort.IOBinding) -> list[str]:
        for past, present, v in zip(self.names.past, self.names.present, self.values):
            binding.bind_ortvalue_input(past, v)
            binding.bind_ortvalue_output(present, v)
        return []  # nothing to collect after the run

    def update(self, outputs: list[ort.OrtValue], length: int) -> None:
        pass

    def arrays_for(self, length: int) -> list[np.ndarray]:
        """The valid rows as contiguous arrays (a drafter reads them)."""
        return [np.ascontiguousarray(a[:, :, :length, :]) for a in self.arrays]

    def truncate(self, old_length: int, n: int) -> bool:
        return True  # rows past n are ignored (the mask says how many are valid) and overwritten later

    def reset(self) -> None:
        pass


class ConcatLayer:
    """A full-attention layer whose graph returns concat(past, new): the present OrtValue is the next past."""

    shared = False

    def __init__(self, names: KVNames, spec: LayerKV, dtype: np.dtype):
        self.names = names
        self._empty = np.zeros((1, spec.kv_heads, 0, spec.head_dim), dtype)
        self.reset()

    def reset(self) -> None:
        self.values: list[ort.OrtValue] = [ort.OrtValue.ortvalue_from_numpy(self._empty) for _ in self.names.past]
        self._hold: list[np.ndarray] = []  # numpy arrays behind OrtValues made from them must outlive them

    def bind(self, binding: ort.IOBinding) -> list[str]:
        for past, v in zip(self.names.past, self.values):
            binding.bind_ortvalue_input(past, v)
        for present in self.names.present:
            binding.bind_output(present, "cpu")
        return list(self.names.present)

    def update(self, outputs: list[ort.OrtValue], length: int) -> None:
        self.values = list(outputs)

    def arrays_for(self, length: int) -> list[np.ndarray]:
        return [v.numpy() for v in self.values]

    def truncate(self, old_length: int, n: int) -> bool:
        self._hold = [np.ascontiguousarray(v.numpy()[:, :, :n, :]) for v in self.values]
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._hold]
        return True


class SlidingLayer:
    """A sliding-window layer: the graph gets at most `window - 1` past rows, the newest.

    Why hold `slack` rows more than that: a rollback (rejected drafts, a revised partial transcript) needs the
    rows before the rolled-back ones, which a cache of exactly window-1 rows has already dropped; without slack
    every rollback would replay the whole conversation. Each step copies the window once (the graph's input
    must be contiguous), the same cost as trimming the present.
    """

    shared = False

    def __init__(self, names: KVNames, spec: LayerKV, dtype: np.dtype, slack: int):
        assert spec.window is not None and spec.window >= 1
        self.names = names
        self.keep = spec.window - 1
        self.cap = self.keep + max(0, slack)
        self._store = [np.zeros((1, spec.kv_heads, self.cap, spec.head_dim), dtype) for _ in names.past]
        self._passed = 0
        self.reset()

    def reset(self) -> None:
        self.rows = 0  # rows held in _store[..., :rows, :], the newest last

    def bind(self, binding: ort.IOBinding) -> list[str]:
        self._passed = min(self.rows, self.keep)
        lo = self.rows - self._passed
        self._past = [np.ascontiguousarray(a[:, :, lo : self.rows, :]) for a in self._store]
        for name, a in zip(self.names.past, self._past):
            binding.bind_cpu_input(name, a)
        for present in self.names.present:
            binding.bind_output(present, "cpu")
        return list(self.names.present)

    def update(self, outputs: list[ort.OrtValue], length: int) -> None:
        for a, o in zip(self._store, outputs):
            new = o.numpy()[:, :, self._passed :, :]
            self._append(a, new)
        self.rows = min(self.cap, self.rows + outputs[0].shape()[2] - self._passed)
        self._past = []

    def arrays_for(self, length: int) -> list[np.ndarray]:
        """The rows the graph would be given as past for the next token: the newest window-1."""
        lo = self.rows - min(self.rows, self.keep)
        return [np.ascontiguousarray(a[:, :, lo : self.rows, :]) for a in self._store]

    def _append(self, a: np.ndarray, new: np.ndarray) -> None:
        s = new.shape[2]
        if s >= self.cap:
            a[:, :, :, :] = new[:, :, s - self.cap :, :]
            return
        if self.rows + s > self.cap:  # shift the oldest out, keeping cap - s rows
            drop = self.rows + s - self.cap
            a[:, :, : self.rows - drop, :] = a[:, :, drop : self.rows, :].copy()
            a[:, :, self.rows - drop : self.cap, :] = new
        else:
            a[:, :, self.rows : self.rows + s, :] = new

    def truncate(self, old_length: int, n: int) -> bool:
        """Keep the rows of the first n tokens; False when the rows a window at n needs are gone."""
        first = old_length - self.rows  # absolute position of the oldest held row
        if max(0, n - self.keep) < first:
            return False
        self.rows = n - first
        return True


Layer = SharedLayer | ConcatLayer | SlidingLayer


class KVCache:
    """Every layer's cache plus the number of tokens it holds; binds itself into an IOBinding for one run."""

    def __init__(self, layers: list[Layer], capacity: int):
        self.layers = layers
        self.capacity = capacity
        self.length = 0
        self._collect: list[tuple[Layer, int]] = []  # the layers whose outputs bind() collects (never a shared one)

    def bind(self, binding: ort.IOBinding, first_output: int) -> int:
        """Bind every layer; outputs bound here start at index `first_output`. Returns the next free index."""
        self._collect = []
        idx = first_output
        for layer in self.layers:
            names = layer.bind(binding)
            if names:
                self._collect.append((layer, idx))
                idx += len(names)
        return idx

    def update(self, outputs: list[ort.OrtValue], new_tokens: int) -> None:
        self.length += new_tokens
        for layer, idx in self._collect:
            layer.update(outputs[idx : idx + len(layer.names.present)], self.length)

    def arrays(self, layer: int) -> list[np.ndarray]:
        """[key, value] of decoder layer `layer` as the graph holds them now (for drafters that read them)."""
        for lay in self.layers:
            if lay.names.layer == layer:
                return lay.arrays_for(self.length)
        raise KeyError(f"layer {layer} has no KV of its own (it shares another layer's): read that layer instead")

    def truncate(self, n: int) -> bool:
        """Roll back to n tokens; False (and the cache is reset) when some layer cannot, so the caller replays."""
        if n >= self.length:
            return True
        ok = all(layer.truncate(self.length, n) for layer in self.layers if not layer.shared) if n > 0 else False
        if ok:
            self.length = n
        else:
            self.reset()
        return ok or n == 0

    def reset(self) -> None:
        self.length = 0
        for layer in self.layers:
            layer.reset()
