"""Sliding-window KV bookkeeping on a real (tiny, hand-built) concat graph: at most window-1 past rows reach the
graph, short rollbacks are served from the slack rows, deeper ones are refused so the conversation replays."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from voiced.model.kv import KVCache, KVNames, SlidingLayer
from voiced.model.manifest import LayerKV

NAMES = KVNames(0, ("past_key_values.0.key",), ("present.0.key",))


def concat_graph() -> ort.InferenceSession:
    """present = concat(past, new) on the sequence axis, and `seen` = the past length the graph was given."""
    past = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, [1, 2, "P", 4])
    new = helper.make_tensor_value_info("new", TensorProto.FLOAT, [1, 2, "S", 4])
    present = helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, [1, 2, "T", 4])
    seen = helper.make_tensor_value_info("seen", TensorProto.INT64, [4])
    nodes = [
        helper.make_node("Concat", ["past_key_values.0.key", "new"], ["present.0.key"], axis=2),
        helper.make_node("Shape", ["past_key_values.0.key"], ["seen"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "kv", [past, new], [present, seen]),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, cache: KVCache, n: int) -> int:
    """One graph run over n new tokens whose rows hold their absolute positions; returns past rows passed."""
    new = np.zeros((1, 2, n, 4), np.float32) + np.arange(cache.length, cache.length + n, dtype=np.float32)[None, None, :, None]
    b = sess.io_binding()
    b.bind_cpu_input("new", new)
    b.bind_output("seen", "cpu")
    cache.bind(b, first_output=1)
    sess.run_with_iobinding(b)
    out = b.get_outputs()
    cache.update(out, n)
    return int(out[0].numpy()[2])


def held(layer: SlidingLayer) -> list[int]:
    return [int(x) for x in layer._store[0][0, 0, : layer.rows, 0]]


def test_sliding_layer_passes_window_minus_one_and_serves_short_rollbacks():
    sess = concat_graph()
    layer = SlidingLayer(NAMES, LayerKV(kind="sliding", kv_heads=2, head_dim=4, window=5), np.dtype(np.float32), slack=3)
    cache = KVCache([layer], capacity=100)
    assert run(sess, cache, 3) == 0 and held(layer) == [0, 1, 2]
    assert run(sess, cache, 4) == 3 and held(layer) == [0, 1, 2, 3, 4, 5, 6]  # 4 + 3 slack rows fit
    assert run(sess, cache, 1) == 4  # the graph never sees more than window - 1 rows
    assert held(layer) == [1, 2, 3, 4, 5, 6, 7] and cache.length == 8
    assert run(sess, cache, 10) == 4 and held(layer) == list(range(11, 18))  # a chunk longer than the buffer
    assert cache.truncate(15) is True  # needs rows 11..14: held
    assert cache.length == 15 and held(layer) == [11, 12, 13, 14]
    assert run(sess, cache, 1) == 4 and held(layer) == [11, 12, 13, 14, 15]


def test_rollback_beyond_the_slack_is_refused_and_resets():
    sess = concat_graph()
    layer = SlidingLayer(NAMES, LayerKV(kind="sliding", kv_heads=2, head_dim=4, window=5), np.dtype(np.float32), slack=2)
    cache = KVCache([layer], capacity=100)
    for _ in range(12):
        run(sess, cache, 1)
    assert held(layer) == list(range(6, 12))
    assert cache.truncate(9) is False  # needs rows 5..8: row 5 is gone
    assert cache.length == 0 and held(layer) == []
