"""int4 weight-only quantization of an exported fp32 graph (ONNX Runtime MatMulNBits) and int8 embedding rows.

MatMulNBits with block 32, symmetric, accuracy level 4 (int8 activations on CPU): the settings that
onnxruntime-genai's builder uses for CPU int4, so the two routes are comparable graph for graph.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BLOCKS = (16, 32, 64, 128, 256)  # what MatMulNBits takes


@dataclass(frozen=True)
class BlockPlan:
    """The int4 block size of every MatMul: `default`, or `wide_block` for those whose node name holds one of
    `wide` ("/mlp/gate_proj/"). Why mixed: block 32 with fp32 scales costs 5 bits a weight (0.625 bytes per
    parameter, over the 0.6 goal) and block 64 4.5 bits, but block 64 everywhere adds error where it hurts
    most, in attention and the tied head; the MLP holds three quarters of a decoder's weights and tolerates it
    (benchmarks/int4_blocks.py measures each plan against the fp32 reference).

    Spelled `32` or `32,gate_proj=64,up_proj=64,down_proj=64` (`--blocks`)."""

    default: int = 32
    wide: tuple[str, ...] = ()
    wide_block: int = 64

    @classmethod
    def parse(cls, text: str) -> BlockPlan:
        head, *rest = [t.strip() for t in str(text).split(",") if t.strip()] or [""]
        try:
            default = int(head)
            pairs = [r.split("=") for r in rest]
            wide = tuple(name for name, _ in pairs)
            sizes = {int(b) for _, b in pairs}
        except ValueError:
            raise ValueError(
                f"int4 block plan {text!r}: write a block size, then name=size pairs, e.g. 32,gate_proj=64,up_proj=64"
            ) from None
        if len(sizes) > 1:
            raise ValueError(f"int4 block plan {text!r}: one wide block size for all named MatMuls, e.g. 32,gate_proj=64,up_proj=64")
        wide_block = sizes.pop() if sizes else 64
        for b in (default, wide_block):
            if b not in BLOCKS:
                raise ValueError(f"int4 block size {b} in {text!r}: MatMulNBits takes {', '.join(map(str, BLOCKS))}")
        return cls(default=default, wide=wide, wide_block=wide_block)

    def widens(self, node_name: str) -> bool:
        """`gate_proj` names "/model/layers.3/mlp/gate_proj/MatMul" (builder) and "/mlp/gate_proj_3/MatMul" (torch)."""
        return any(re.search(rf"/{re.escape(w)}(?:_\d+)?/", node_name) for w in self.wide)

    def block_for(self, node_name: str) -> int:
        return self.wide_block if self.widens(node_name) else self.default

    def __str__(self) -> str:
        return ",".join([str(self.default), *(f"{w}={self.wide_block}" for w in self.wide)])

    @property
    def uniform(self) -> bool:
        return not self.wide or self.wide_block == self.default


# benchmarks/int4_blocks.py on the 1.5B, KL to the fp32 reference: uniform 32 0.089, this 0.095, uniform 64 0.115.
DEFAULT_PLAN = BlockPlan(default=32, wide=("gate_proj", "up_proj", "down_proj"), wide_block=64)


def _widened(model, plan: BlockPlan) -> list[str]:
    """The fp32 MatMuls of `model` that `plan` quantizes at its wide block."""
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and plan.widens(n.name)]


def quantize_int4(src: Path, dst: Path, plan: BlockPlan = BlockPlan(), accuracy_level: int = 4) -> Path:
    """Rewrite every constant-weight MatMul of `src` as MatMulNBits and save to `dst` (+ dst.data): the MatMuls
    `plan` widens at its wide block, the rest at its default block (uniform 32 unless given)."""
    import onnx

    model = onnx.load(str(src), load_external_data=True)
    if wide := _widened(model, plan):
        model = _quantize(model, plan.wide_block, accuracy_level, nodes=wide)
    model = _quantize(model, plan.default, accuracy_level, nodes=None)
    n = sum(1 for node in model.graph.node if node.op_type == "MatMulNBits")
    if n == 0:
        raise RuntimeError(f"int4: no MatMul of {src} was quantized; export with --precision fp32 or report the graph")
    log.info("int4: %d MatMul -> MatMulNBits (%s)", n, plan)
    _save(model, dst)
    return dst


def quantize_int4_wide(path: Path, plan: BlockPlan, accuracy_level: int = 4) -> int:
    """Quantize, in place, the fp32 MatMuls of `path` that `plan` widens, at its wide block; returns how many.
    The builder's route leaves them in fp32 (nodes_to_exclude) so that they are quantized here from the same
    full-precision weights, not requantized from block-32 values."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    wide = _widened(model, plan)
    if not wide:
        raise RuntimeError(
            f"int4 block plan {plan}: it names no MatMul of {path.name}; name projections as the graph does (gate_proj, up_proj, ...)"
        )
    model = _quantize(model, plan.wide_block, accuracy_level, nodes=wide)
    if left := _widened(model, plan):
        raise RuntimeError(f"int4: {len(left)} MatMuls were not quantized (first: {left[0]}); report the graph")
    _save(model, path)
    return len(wide)


def _quantize(model, block_size: int, accuracy_level: int, nodes: list[str] | None):
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level)
    # Its nodes_to_include only adds to the op types it quantizes anyway: name the others as excluded instead.
    keep = set(nodes or ())
    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in keep] if nodes is not None else None
    quantizer = MatMulNBitsQuantizer(
        model, block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level, algo_config=cfg, nodes_to_exclude=others
    )
    log.info(
        "int4: quantizing %s MatMuls (block %d, symmetric, accuracy level %d)", len(nodes) if nodes else "all", block_size, accuracy_level
    )
    chatty = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")  # a line per node it skips
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        quantizer.process()
    finally:
        chatty.setLevel(level)
    return quantizer.model.model


def _save(out, dst: Path) -> None:
    import onnx

    dst.unlink(missing_ok=True)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(out, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)


def int8_rows(table: np.ndarray, rows_per_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 of an embedding table, a block of rows at a time (no fp32 copy of the whole table).

    Returns (q int8 [V,H], scales float32 [V]) with row ~= q * scale.
    """
    v = table.shape[0]
    q = np.empty(table.shape, dtype=np.int8)
    scales = np.empty(v, dtype=np.float32)
    for start in range(0, v, rows_per_block):
        block = np.asarray(table[start : start + rows_per_block], dtype=np.float32)
        s = np.abs(block).max(axis=1) / 127.0
        s[s == 0] = 1.0
        q[start : start + rows_per_block] = np.clip(np.rint(block / s[:, None]), -127, 127).astype(np.int8)
        scales[start : start + rows_per_block] = s
    return q, scales


def int4_block_quant(weight_kn: np.ndarray, block_size: int = 32, accuracy_level: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits weights for one float32 MatMul B [K, N] (or a block of its N columns), symmetric int4.

    The very quantizer quantize_int4 runs (onnxruntime's DefaultWeightOnlyQuantizer, C++ kernel), applied to one
    array instead of a loaded graph, so the streamed exporter writes the same bytes. Columns are quantized
    independently: quantizing N in blocks and concatenating equals quantizing the whole tensor.
    Returns (packed uint8 [N, K/block, block/2], scales float32 [N, K/block]).
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, DefaultWeightOnlyQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level)
    packed, scales, _zero_points = DefaultWeightOnlyQuantizer(cfg).qbits_block_quant(np.ascontiguousarray(weight_kn, dtype=np.float32))
    return packed, scales
