"""model_export/logits_keep.py on hand-built graphs, run by onnxruntime: a softcapped head, a graph it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.logits_keep import LogitsKeepError, add_logits_to_keep

H, V = 8, 11


def _save(path: Path, nodes: list, inits: list) -> Path:
    graph = helper.make_graph(
        nodes,
        "decoder",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "S", H])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", V])],
        initializer=inits,
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _softcapped(path: Path) -> Path:
    """logits = cap * tanh(hidden @ W / cap): one cap an initializer, the other a Constant node, as torch exports
    a Python float (the walk up to the head must follow neither)."""
    w = np.random.default_rng(0).standard_normal((H, V)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(3.0, np.float32), "cap")]
    nodes = [
        helper.make_node("MatMul", ["hidden", "W"], ["raw"], name="/lm_head/MatMul"),
        helper.make_node("Constant", [], ["cap_node"], value=numpy_helper.from_array(np.array(3.0, np.float32))),
        helper.make_node("Div", ["raw", "cap_node"], ["scaled"]),
        helper.make_node("Tanh", ["scaled"], ["squashed"]),
        helper.make_node("Mul", ["cap", "squashed"], ["logits"]),
    ]
    return _save(path, nodes, inits)


def test_the_head_runs_on_the_last_k_positions_after_softcapping(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((1, 5, H)).astype(np.float32)
    full = ort.InferenceSession(str(_softcapped(tmp_path / "a.onnx"))).run(None, {"hidden": x})[0]
    path = _softcapped(tmp_path / "b.onnx")
    assert add_logits_to_keep(path) == "/lm_head/MatMul"
    assert add_logits_to_keep(path) == ""  # already rewritten: left as it is
    sess = ort.InferenceSession(str(path))
    for k in (1, 3, 5):
        out = sess.run(None, {"hidden": x, "logits_to_keep": np.array([k], np.int64)})[0]
        assert out.shape == (1, k, V)
        np.testing.assert_allclose(out, full[:, -k:], rtol=1e-6)


def test_logits_not_from_a_matmul_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = _save(tmp_path / "c.onnx", [helper.make_node("Relu", ["hidden"], ["logits"])], [])
    with pytest.raises(LogitsKeepError, match="no MatMul found.*found Relu.*export with the builder"):
        add_logits_to_keep(path)
