"""Token embedding rows for graphs that take inputs_embeds, from the table format the manifest names.

Why several formats: float32/float16 tables are exact; int8 rows (one scale per row) halve an fp16 table; and
`int4` reads the rows of the tied output head's MatMulNBits weight inside the decoder's own data file, so a
model whose head is its embedding (Gemma) stores that matrix once, at 4.5-5 bits a weight, instead of twice
(int4 head + int8 table: 1.6 GB more for the 12B's 262144 x 3840 table, the difference between 0.71 and
0.60 bytes per parameter). Every format is memory-mapped: a lookup pages in only the rows it reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voiced.model.manifest import EmbeddingSpec


class EmbeddingTable:
    def __init__(self, spec: EmbeddingSpec, path: Path, scale_path: Path | None, hidden: int, vocab: int):
        """Raises ValueError naming what does not fit; the engine turns it into a BundleError for the file."""
        self.multiplier = np.float32(spec.multiplier)
        self.table: np.ndarray
        self.scales: np.ndarray | None = None
        self.block = 0
        if spec.dtype == "int4":
            block = int(spec.block_size or 0)
            if block <= 0 or block % 2 or hidden % block:
                raise ValueError(f"int4 block size {spec.block_size} does not divide the hidden size {hidden}")
            k_blocks = hidden // block
            need = max(spec.offset + vocab * hidden // 2, spec.scale_offset + vocab * k_blocks * 4)
            size = path.stat().st_size
            if size < need:
                raise ValueError(f"it holds {size} bytes but the int4 embedding rows end at byte {need}")
            self.table = np.memmap(path, dtype=np.uint8, mode="r", offset=spec.offset, shape=(vocab, hidden // 2))
            self.scales = np.memmap(path, dtype=np.float32, mode="r", offset=spec.scale_offset, shape=(vocab, k_blocks))
            self.block = block
            return
        self.table = np.load(path, mmap_mode="r")
        if scale_path is not None:
            self.scales = np.load(scale_path)
        if self.table.ndim != 2 or self.table.shape[1] != hidden:
            raise ValueError(f"it has shape {self.table.shape}, expected (vocab, {hidden})")

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """float32 [len(ids), hidden]: table row x scale(s) x multiplier."""
        rows: np.ndarray
        if self.block:
            assert self.scales is not None  # an int4 table always comes with its scales (__init__)
            packed = self.table[ids]  # [n, hidden/2]: two weights a byte, the first in the low nibble
            n = packed.shape[0]
            q = np.empty((n, packed.shape[1] * 2), dtype=np.float32)
            q[:, 0::2] = packed & 0x0F
            q[:, 1::2] = packed >> 4
            q -= 8.0  # symmetric MatMulNBits: zero point 8
            q = q.reshape(n, -1, self.block) * self.scales[ids][:, :, None]
            rows = q.reshape(n, -1)
        else:
            rows = self.table[ids].astype(np.float32)
            if self.scales is not None:
                rows *= self.scales[ids].reshape(-1, 1).astype(np.float32)
        if self.multiplier != 1.0:
            rows *= self.multiplier
        return rows
