"""Give a decoder graph a `logits_to_keep` input: the LM head runs on the last k positions only.

Why: a prefill of S tokens needs the next-token logits of its last position alone, yet the exported graphs
(onnxruntime-genai's builder, our torch wrappers) run the LM head over all S positions. The head is the widest
MatMul of a small model (vocabulary x hidden) and its output is S x vocab floats, so a prompt pays for S - 1
rows it throws away. Verifying drafts still needs every position: the engine asks for k = S there, 1 elsewhere
(transformers' `logits_to_keep`, onnxruntime-genai's pruned prefill graphs). `benchmarks/prefill_logits.py`
measures the prefill both ways.

The pass edits the graph only: the weights stay in their external data file, untouched.
"""

from __future__ import annotations

from pathlib import Path

INPUT = "logits_to_keep"
ALL = 2**62  # as k: more rows than any sequence has, so Slice keeps them all
_HEADS = {"MatMul", "MatMulNBits", "Gemm"}
_ELEMENTWISE = {"Mul", "Div", "Tanh", "Cast", "Add"}  # softcapping and dtype casts after the head


class LogitsKeepError(RuntimeError):
    """The graph's logits do not come from a MatMul we can find; the message names the fix."""


def add_logits_to_keep(path: Path) -> str:
    """Rewrite `path` (an ONNX decoder with a `logits` output) in place; returns the head node's name.

    Inserts Slice(head input, starts=-k, ends=max, axis=1) before the LM head, k read from a new int64 input
    `logits_to_keep` of shape [1]; the head's output and everything after it then has k rows. The input is
    required: a default (an initializer of its name) would make it an overridable initializer, which
    onnxruntime's IO binding, the engine's way in, cannot bind. `genai_view` gives onnxruntime-genai's
    generator, which does not feed it, a copy that keeps every position. An already rewritten graph is left
    as it is."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if any(i.name == INPUT for i in graph.input):
        return ""
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get("logits")
    while node is not None and node.op_type in _ELEMENTWISE:  # up to the head through the one computed input
        computed = [name for name in node.input if name in producer and producer[name].op_type != "Constant"]
        node = producer[computed[0]] if len(computed) == 1 else None
    if node is None or node.op_type not in _HEADS:
        raise LogitsKeepError(
            f"{path.name}: no MatMul found under its `logits` output (found {node.op_type if node else 'none'}); "
            "export with the builder or the torch wrappers, or leave the graph unpruned (every position's logits)"
        )
    hidden = node.input[0]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.INT64, [1]))
    pre = "/logits_to_keep/"
    graph.initializer.extend(
        [
            helper.make_tensor(pre + "end", TensorProto.INT64, [1], [ALL]),
            helper.make_tensor(pre + "axis", TensorProto.INT64, [1], [1]),
        ]
    )
    cut = [
        helper.make_node("Neg", [INPUT], [pre + "start"], name=pre + "Neg"),
        helper.make_node("Slice", [hidden, pre + "start", pre + "end", pre + "axis"], [pre + "hidden"], name=pre + "Slice"),
    ]
    node.input[0] = pre + "hidden"
    at = list(graph.node).index(node)
    for k, extra in enumerate(cut):
        graph.node.insert(at + k, extra)
    for out in graph.output:
        if out.name == "logits":
            dims = out.type.tensor_type.shape.dim
            if len(dims) == 3:
                dims[1].ClearField("dim_value")
                dims[1].dim_param = "logits_length"
    onnx.save_model(model, str(path))
    return node.name


def genai_view(bundle: Path, into: Path) -> Path:
    """A folder `into` (on the bundle's filesystem) that onnxruntime-genai's generator can load: the bundle's
    files hard-linked, and a decoder whose `logits_to_keep` defaults to every position (as graphs before this
    pass computed), so the generator, which does not feed it, runs as it did. For benchmarks/decode.py."""
    import os

    import onnx
    from onnx import TensorProto, helper

    into.mkdir(parents=True, exist_ok=True)
    for f in bundle.iterdir():
        if f.is_file() and f.name != "decoder.onnx":
            os.link(f, into / f.name)
    model = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    if any(i.name == INPUT for i in model.graph.input):
        model.graph.initializer.append(helper.make_tensor(INPUT, TensorProto.INT64, [1], [ALL]))
    onnx.save_model(model, str(into / "decoder.onnx"))
    return into
