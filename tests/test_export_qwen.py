"""The builder route on a tiny random Qwen2: graph I/O, manifest, numerics against torch, tokenizer checks."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
import onnxruntime as ort
import pytest

from model_export.gguf import TokenizerMismatch, verify_tokenizer
from model_export.tiny import make_tokenizer
from tests.support.bundles import tiny_bundle
from voiced.model.integrity import load_manifest, verify_bundle


@pytest.fixture(scope="session")
def int4_bundle() -> Path:
    return tiny_bundle("int4")


@pytest.fixture(scope="session")
def fp32_bundle() -> Path:
    return tiny_bundle("fp32")


def _empty_past(m) -> dict[str, np.ndarray]:
    return {
        f"past_key_values.{i}.{kv}": np.zeros((1, layer.kv_heads, 0, layer.head_dim), np.float32)
        for i, layer in enumerate(m.decoder.layers)
        for kv in ("key", "value")
    }


def _run(sess, ids: np.ndarray, past: dict, total: int, keep: int = 0) -> dict[str, np.ndarray]:
    """One graph run; the logits of the last `keep` positions (0: all of them)."""
    names = [o.name for o in sess.get_outputs()]
    feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), **past}
    feeds["logits_to_keep"] = np.array([keep or ids.shape[1]], np.int64)
    return dict(zip(names, sess.run(None, feeds)))


def _present_as_past(out: dict, n: int) -> dict[str, np.ndarray]:
    return {f"past_key_values.{i}.{kv}": out[f"present.{i}.{kv}"] for i in range(n) for kv in ("key", "value")}


def test_manifest_describes_the_graph(int4_bundle: Path) -> None:
    m = load_manifest(int4_bundle)
    sess = ort.InferenceSession(str(int4_bundle / m.decoder.file))
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name for o in sess.get_outputs()}
    assert m.decoder.input == "input_ids" and "input_ids" in inputs and "attention_mask" in inputs
    assert len(m.decoder.layers) == 2
    for i, layer in enumerate(m.decoder.layers):
        assert inputs[f"past_key_values.{i}.key"].shape[1] == layer.kv_heads == 2
        assert {f"present.{i}.key", f"present.{i}.value"} <= outputs
    assert "logits" in outputs and inputs["logits_to_keep"].type == "tensor(int64)"
    assert m.decoder.hidden_output == "hidden_states" and "hidden_states" in outputs
    assert m.decoder.quantization == "int4"
    graph = __import__("onnx").load(str(int4_bundle / m.decoder.file), load_external_data=False).graph
    blocks = {n.name: a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    # The default block plan: the builder quantizes at 32 and leaves the MLP in fp32 for the block-64 pass.
    assert len(blocks) == 2 * 5 + 1 and not [n.name for n in graph.node if n.op_type == "MatMul"]
    assert {n: b for n, b in blocks.items() if b == 64}.keys() == {
        f"/model/layers.{i}/mlp/{p}/MatMul_Q4" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")
    }, blocks
    assert m.source["int4_blocks"] == "32,gate_proj=64,up_proj=64,down_proj=64"
    assert m.source["exporter"].startswith("model_export")
    assert verify_bundle(int4_bundle, full=True) == []


def test_tokenizer_and_stop_ids(int4_bundle: Path) -> None:
    from tokenizers import Tokenizer

    m = load_manifest(int4_bundle)
    tok = Tokenizer.from_file(str(int4_bundle / m.tokenizer.file))
    im_end = tok.token_to_id("<|im_end|>")
    assert im_end in m.tokenizer.stop_ids
    assert m.tokenizer.special_tokens["<|im_start|>"] == tok.token_to_id("<|im_start|>")
    text = "What is the capital of France?"
    assert tok.decode(tok.encode(text).ids) == text
    template = (int4_bundle / m.tokenizer.chat_template_file).read_text()
    prompt = jinja2.Template(template).render(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_fp32_graph_matches_torch_and_decodes_incrementally(fp32_bundle: Path, tmp_path: Path) -> None:
    import torch
    from transformers import Qwen2ForCausalLM

    from model_export.tiny import make_tiny_qwen2

    hf = make_tiny_qwen2(tmp_path / "hf")  # same seed and shape as the cached bundle
    model = Qwen2ForCausalLM.from_pretrained(hf).eval()
    m = load_manifest(fp32_bundle)
    sess = ort.InferenceSession(str(fp32_bundle / m.decoder.file))
    ids = np.array([[1, 40, 77, 120, 2, 1, 9, 300]], np.int64)
    full = _run(sess, ids, _empty_past(m), ids.shape[1])
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(full["logits"], ref, atol=1e-4)
    assert full["hidden_states"].shape == (1, ids.shape[1], m.decoder.hidden_size)

    # prefill 5, then one token at a time: the same logits as the full pass
    out = _run(sess, ids[:, :5], _empty_past(m), 5)
    steps = [out["logits"][0]]
    for t in range(5, ids.shape[1]):
        out = _run(sess, ids[:, t : t + 1], _present_as_past(out, len(m.decoder.layers)), t + 1)
        steps.append(out["logits"][0])
    np.testing.assert_allclose(np.concatenate(steps), full["logits"][0], atol=1e-5)


def test_logits_to_keep_runs_the_head_on_the_last_positions_only(fp32_bundle: Path) -> None:
    m = load_manifest(fp32_bundle)
    sess = ort.InferenceSession(str(fp32_bundle / m.decoder.file))
    ids = np.array([[1, 40, 77, 120, 2, 1, 9, 300]], np.int64)
    full = _run(sess, ids, _empty_past(m), ids.shape[1])
    for keep in (1, 3):
        part = _run(sess, ids, _empty_past(m), ids.shape[1], keep=keep)
        assert part["logits"].shape == (1, keep, m.decoder.vocab_size)
        np.testing.assert_allclose(part["logits"][0], full["logits"][0, -keep:], atol=1e-5)
        # the cache and the hidden states still cover every position
        np.testing.assert_array_equal(part["present.0.key"], full["present.0.key"])
        assert part["hidden_states"].shape == full["hidden_states"].shape


def test_int4_stays_close_to_fp32(int4_bundle: Path, fp32_bundle: Path) -> None:
    m = load_manifest(int4_bundle)
    ids = np.array([[1, 40, 77, 120, 2]], np.int64)
    q = _run(ort.InferenceSession(str(int4_bundle / m.decoder.file)), ids, _empty_past(m), 5)["logits"]
    f = _run(ort.InferenceSession(str(fp32_bundle / m.decoder.file)), ids, _empty_past(m), 5)["logits"]
    assert not np.array_equal(q, f)  # it really is quantised
    corr = np.corrcoef(q.ravel(), f.ravel())[0, 1]
    assert corr > 0.9, corr


def _write_gguf(path: Path, tokenizer, merges: list[str]) -> Path:
    import gguf

    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tokenizer_verifier_accepts_the_truth_and_refuses_a_wrong_merge_table(tmp_path: Path) -> None:
    tok = make_tokenizer()
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in merges]
    sentences = ["What is the capital of France?", "Set a timer for five minutes.", "<|im_start|>user\nhello<|im_end|>"]
    good = _write_gguf(tmp_path / "good.gguf", tok, merges)
    assert verify_tokenizer(tok, good, sentences) > 0

    bad = _write_gguf(tmp_path / "bad.gguf", tok, list(reversed(merges)))  # same vocab, other merge order
    with pytest.raises(TokenizerMismatch, match="merges"):
        verify_tokenizer(tok, bad, sentences)
