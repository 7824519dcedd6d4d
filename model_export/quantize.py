"""int4 weight-only quantization of an exported fp32 graph (ONNX Runtime MatMulNBits) and int8 embedding rows.

MatMulNBits with block 32, symmetric, accuracy level 4 (int8 activations on CPU): the settings that
onnxruntime-genai's builder uses for CPU int4, so the two routes are comparable graph for graph.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def quantize_int4(src: Path, dst: Path, block_size: int = 32, accuracy_level: int = 4) -> Path:
    """Rewrite every constant-weight MatMul of `src` as MatMulNBits and save to `dst` (+ dst.data)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(src), load_external_data=True)
    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level)
    quantizer = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level, algo_config=cfg)
    log.info("int4: quantizing %s (block %d, symmetric, accuracy level %d)", src.name, block_size, accuracy_level)
    quantizer.process()
    out = quantizer.model.model
    n = sum(1 for node in out.graph.node if node.op_type == "MatMulNBits")
    if n == 0:
        raise RuntimeError(f"int4: no MatMul of {src} was quantized; export with --precision fp32 or report the graph")
    log.info("int4: %d MatMul -> MatMulNBits", n)
    dst.unlink(missing_ok=True)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(out, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    return dst


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
