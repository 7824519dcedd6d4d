"""Embedding rows read from a tied head's int4 MatMulNBits weight equal what onnxruntime's MatMulNBits computes
from those very bytes (so the model's two ends see one matrix), and a table that does not fit its file fails
with a clear error instead of reading garbage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from model_export.quantize import int4_block_quant
from voiced.model.embeddings import EmbeddingTable
from voiced.model.manifest import EmbeddingSpec

VOCAB, HIDDEN = 50, 128


def _head(tmp_path: Path, block: int) -> tuple[np.ndarray, np.ndarray, Path, EmbeddingSpec]:
    """A random head [vocab, hidden] quantized like the exporter does, its bytes laid out in one data file."""
    rng = np.random.default_rng(block)
    weight = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    packed, scales = int4_block_quant(weight.T, block)  # MatMulNBits B is [K=hidden, N=vocab]
    data = tmp_path / f"decoder-{block}.onnx.data"
    head = b"\x00" * 24  # the rows need not start the file
    data.write_bytes(head + packed.tobytes() + scales.astype(np.float32).tobytes())
    spec = EmbeddingSpec(
        file=data.name, dtype="int4", offset=len(head), scale_offset=len(head) + packed.nbytes, block_size=block, multiplier=2.0
    )
    return packed, scales, data, spec


def _ort_head_columns(packed: np.ndarray, scales: np.ndarray, block: int) -> np.ndarray:
    """B as onnxruntime dequantizes it: identity @ B through MatMulNBits in fp32 (accuracy level 0: exact)."""
    node = helper.make_node(
        "MatMulNBits", ["a", "b", "s"], ["y"], domain="com.microsoft", K=HIDDEN, N=VOCAB, bits=4, block_size=block, accuracy_level=0
    )
    graph = helper.make_graph(
        [node], "head",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [HIDDEN, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [HIDDEN, VOCAB])],
        initializer=[onnx.numpy_helper.from_array(packed, "b"), onnx.numpy_helper.from_array(scales.astype(np.float32), "s")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"a": np.eye(HIDDEN, dtype=np.float32)})[0]  # [hidden, vocab]: column t is token t


@pytest.mark.parametrize("block", [32, 64])
def test_int4_rows_are_the_heads_dequantized_columns(tmp_path: Path, block: int) -> None:
    packed, scales, data, spec = _head(tmp_path, block)
    table = EmbeddingTable(spec, data, None, HIDDEN, VOCAB)
    ids = np.array([0, 7, 7, VOCAB - 1, 3])
    rows = table.rows(ids)
    expected = _ort_head_columns(packed, scales, block).T[ids] * 2.0  # times the manifest's multiplier
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-6)
    assert rows.shape == (5, HIDDEN) and np.abs(rows).max() > 0.5


def test_a_table_that_overruns_its_file_is_refused(tmp_path: Path) -> None:
    _, _, data, spec = _head(tmp_path, 32)
    late = spec.model_copy(update={"scale_offset": spec.scale_offset + 64})
    with pytest.raises(ValueError, match="rows end at byte"):
        EmbeddingTable(late, data, None, HIDDEN, VOCAB)
    with pytest.raises(ValueError, match="does not divide"):
        EmbeddingTable(spec.model_copy(update={"block_size": 48}), data, None, HIDDEN, VOCAB)
