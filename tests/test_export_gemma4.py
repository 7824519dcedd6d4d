"""model_export.gemma4: a tiny random gemma4_unified exported to a bundle, checked against transformers itself.

The decoder is fed with plain onnxruntime the way the engine feeds it (chunked prefill, then one token at a
time, sliding layers trimmed to window - 1), over prompts several sliding windows long.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jinja2
import numpy as np
import onnx
import pytest
import torch

from model_export.gemma4 import UnsupportedCheckpoint, export_bundle, inspect_checkpoint, main
from model_export.quantize import BlockPlan
from tests.support.gemma4 import OrtGemma4, cache_dir, hf_audio_inputs, hf_model, tiny_bundle, tiny_checkpoint
from tests.support.speech import espeak
from voiced.model.audio_in import AudioProjector, frame_audio, pcm_to_float
from voiced.model.manifest import Manifest

# prefill chunks longer than the window (16) after a non-empty past, and single decode steps across window edges
CHUNKS = [20] + [1] * 5 + [18] + [1] * 7


@pytest.fixture(scope="module")
def ckpt() -> Path:
    return tiny_checkpoint()


@pytest.fixture(scope="module")
def model(ckpt):
    return hf_model(ckpt)


@pytest.fixture(scope="module")
def fp32(ckpt) -> Path:
    return tiny_bundle("fp32")


@pytest.fixture(scope="module")
def int4(ckpt) -> Path:
    return tiny_bundle("int4")


@pytest.fixture(scope="module")
def speech_pcm() -> np.ndarray:
    return espeak("turn on the kitchen lights")


def _text_ids(model, n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, model.config.text_config.vocab_size, size=n)


def test_fp32_logits_match_transformers_past_the_sliding_window(model, fp32):
    ids = _text_ids(model, sum(CHUNKS))
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)[None])
        ref_hidden = model.model(input_ids=torch.from_numpy(ids)[None]).last_hidden_state.numpy()
    ort_model = OrtGemma4(fp32)
    assert len(ids) > 3 * ort_model.manifest.decoder.layers[0].window
    logits, hidden = ort_model.run(ort_model.embed(ids), CHUNKS)
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(hidden, ref_hidden, atol=1e-3, rtol=0)
    # the comparison is not vacuous: logits vary and the softcap (30) is in the graph
    assert np.abs(logits).max() > 1.0 and np.abs(logits).max() < 30.0


def test_audio_path_matches_transformers_processor_and_model(ckpt, model, fp32, speech_pcm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What did I say?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    wav = speech_pcm.astype(np.float32) / 32768.0
    inputs = hf_audio_inputs(ckpt, text, wav)
    with torch.no_grad():
        ref_logits = model(**inputs).logits.numpy()
        ref_embeds = model.model.get_audio_features(inputs["input_features"], inputs["input_features_mask"]).pooler_output[0].numpy()

    ort_model = OrtGemma4(fp32)
    spec = ort_model.manifest.audio
    projector = AudioProjector(fp32, spec, threads=1)
    frames = projector.frames(speech_pcm)
    np.testing.assert_array_equal(frames, inputs["input_features"][0].numpy())  # same padding, framing, scaling
    embeds, n = projector.project(speech_pcm)
    assert n == len(speech_pcm) // 640 + 1 == embeds.shape[0]
    np.testing.assert_allclose(embeds, ref_embeds, atol=1e-4, rtol=0)

    ids = inputs["input_ids"][0].numpy()
    placeholders = ids == spec.audio_token_id
    assert placeholders.sum() == n
    first = int(np.argmax(placeholders))
    assert ids[first - 1] == spec.boa_id and ids[first + n] == spec.eoa_id
    x = ort_model.embed(ids)
    x[0, placeholders] = embeds
    s = len(ids)
    logits, _ = ort_model.run(x, [s - 12, 4] + [1] * 8)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-3, rtol=0)


def test_kv_shared_layers_have_no_cache_and_match_transformers():
    """num_kv_shared_layers > 0: the sharing layers get no past/present of their own (LayerKV.shares_kv_with)."""
    ckpt = tiny_checkpoint("kvshared")
    bundle = tiny_bundle("fp32", "kvshared")
    m = Manifest.model_validate_json((bundle / "manifest.json").read_text())
    assert [layer.shares_kv_with for layer in m.decoder.layers] == [None] * 10 + [9, 5]
    names = {i.name for i in onnx.load(str(bundle / "decoder.onnx"), load_external_data=False).graph.input}
    assert "past_key_values.9.key" in names and not any(n.startswith(("past_key_values.10.", "past_key_values.11.")) for n in names)
    model = hf_model(ckpt)
    ids = _text_ids(model, sum(CHUNKS), seed=7)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)[None]).logits.numpy()
    ort_model = OrtGemma4(bundle)
    logits, _ = ort_model.run(ort_model.embed(ids), CHUNKS)
    np.testing.assert_allclose(logits, ref, atol=1e-3, rtol=0)


def test_int4_top1_agreement_is_reported(model, int4, capsys):
    ids = _text_ids(model, sum(CHUNKS), seed=5)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)[None]).logits.numpy()
    ort_model = OrtGemma4(int4)
    logits, _ = ort_model.run(ort_model.embed(ids), CHUNKS)
    agreement = float((logits.argmax(-1) == ref.argmax(-1)).mean())
    graph = onnx.load(str(int4 / "decoder.onnx"), load_external_data=False)
    nbits = [n for n in graph.graph.node if n.op_type == "MatMulNBits"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
    record = {
        "int4_top1_agreement": agreement,
        "positions": len(ids),
        "matmulnbits": len(nbits),
        "max_abs_logit_diff": float(np.abs(logits - ref).max()),
    }
    (cache_dir() / "int4_agreement.json").write_text(json.dumps(record))
    with capsys.disabled():
        print(f"\ntiny gemma4 int4 vs transformers fp32: {json.dumps(record)}")
    assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs["accuracy_level"] == 4
    weights = {t.name for t in graph.graph.initializer}
    assert len(nbits) == 5 * 7 + 6 + 1  # q k v o gate up down per sliding layer, no v_proj on k_eq_v, lm_head
    assert not [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert agreement >= 0.4, record  # random tiny weights are int4's worst case; the real figure is reported


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_manifest_describes_the_bundle(ckpt, fp32, int4, precision):
    bundle = fp32 if precision == "fp32" else int4
    m = Manifest.model_validate_json((bundle / "manifest.json").read_text())
    for rel, entry in m.files.items():
        data = (bundle / rel).read_bytes()
        assert len(data) == entry.bytes and hashlib.sha256(data).hexdigest() == entry.sha256, rel
    assert {"decoder.onnx", "decoder.onnx.data", "audio_projector.onnx", "tokenizer.json", "chat_template.jinja", m.embeddings.file} <= set(
        m.files
    )
    kinds = [layer.kind for layer in m.decoder.layers]
    assert kinds == ["sliding"] * 5 + ["full"]
    assert all(layer.window == 16 and (layer.kv_heads, layer.head_dim) == (2, 16) for layer in m.decoder.layers[:5])
    assert (m.decoder.layers[5].kv_heads, m.decoder.layers[5].head_dim, m.decoder.layers[5].window) == (1, 32, None)
    assert m.decoder.input == "inputs_embeds" and m.decoder.hidden_output == "hidden_states" and m.decoder.logit_softcap == 30.0
    assert m.decoder.quantization == precision
    assert m.embeddings.multiplier == pytest.approx(8.0)  # sqrt(hidden 64)
    # int4: the tiny model ties its head to its embedding, so the table is the head's int4 weight, stored once
    assert (m.embeddings.dtype, m.embeddings.scale_file is not None) == (("int4", False) if precision == "int4" else ("float32", False))
    assert not list(bundle.glob("embed_*.npy")) if precision == "int4" else (bundle / "embed_tokens.npy").is_file()
    cfg = json.loads((ckpt / "config.json").read_text())
    assert (m.audio.boa_id, m.audio.eoa_id, m.audio.audio_token_id) == (cfg["boa_token_id"], cfg["eoa_token_index"], cfg["audio_token_id"])
    assert m.audio.frame_samples == 640
    tok = m.tokenizer
    assert tok.special_tokens["<turn|>"] in tok.stop_ids and tok.special_tokens["<eos>"] in tok.stop_ids
    names = {i.name for i in onnx.load(str(bundle / "decoder.onnx"), load_external_data=False).graph.input}
    assert {"inputs_embeds", "attention_mask", "position_ids", "logits_to_keep"} | {
        f"past_key_values.{i}.{k}" for i in range(6) for k in ("key", "value")
    } == names


def test_chat_template_is_gemma4_turn_format(fp32):
    m = Manifest.model_validate_json((fp32 / "manifest.json").read_text())
    tpl = jinja2.Environment().from_string((fp32 / m.tokenizer.chat_template_file).read_text())
    text = tpl.render(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
        bos_token=m.tokenizer.bos_token,
        add_generation_prompt=True,
    )
    assert text == "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\nHello.<turn|>\n<|turn>model\n"
    assert "<start_of_turn>" not in text


def test_audio_projector_framing_edges(fp32, speech_pcm):
    m = Manifest.model_validate_json((fp32 / "manifest.json").read_text())
    projector = AudioProjector(fp32, m.audio, threads=1)
    empty, n = projector.project(np.zeros(0, dtype=np.int16))
    assert n == 0 and empty.shape == (0, m.decoder.hidden_size)
    a, na = projector.project(speech_pcm[:1281])
    b, nb = projector.project(speech_pcm[:1281].tobytes())
    assert na == nb == 3 and np.array_equal(a, b)
    assert np.array_equal(frame_audio(pcm_to_float(speech_pcm[:1281]), 640)[2, 1:], np.zeros(639, np.float32))
    short = AudioProjector(fp32, m.audio.model_copy(update={"max_frames": 4}), threads=1)
    assert short.project(speech_pcm)[1] == 4
    with pytest.raises(ValueError, match="mono"):
        pcm_to_float(np.zeros((10, 2), dtype=np.int16))


def test_refuses_unsupported_checkpoints(ckpt, tmp_path):
    other = tmp_path / "gemma3"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    with pytest.raises(UnsupportedCheckpoint, match="model_type 'gemma3'.*gemma4_unified"):
        inspect_checkpoint(other)

    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(ckpt / "config.json", partial / "config.json")
    with pytest.raises(UnsupportedCheckpoint) as err:
        export_bundle(partial, tmp_path / "out")
    assert "*.safetensors" in str(err.value) and "tokenizer.json" in str(err.value) and "chat template" in str(err.value)
    assert not (tmp_path / "out").exists()

    assert main(["gemma4", str(partial), "-o", str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------ streamed export (the CLI route)


@pytest.fixture(scope="module")
def both_routes(ckpt, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Fresh (uncached) bundles from the streamed route and from the load-everything reference route."""
    d = tmp_path_factory.mktemp("routes")
    return {
        (route, precision): export_bundle(
            ckpt, d / f"{route}-{precision}", precision=precision, max_context=512, streamed=route == "streamed"
        )
        for route in ("streamed", "in_memory")
        for precision in ("fp32", "int4")
    }


def _nbits_weights(bundle: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """MatMulNBits output name -> (packed weights, scales, attributes)."""
    graph = onnx.load(str(bundle / "decoder.onnx"), load_external_data=True).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    out = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out[node.output[0]] = (inits[node.input[1]], inits[node.input[2]], attrs)
    return out


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_streamed_bundle_equals_in_memory_route(model, both_routes, precision):
    streamed, reference = both_routes[("streamed", precision)], both_routes[("in_memory", precision)]
    ids = _text_ids(model, sum(CHUNKS), seed=11)
    a, b = OrtGemma4(streamed), OrtGemma4(reference)
    la, ha = a.run(a.embed(ids), CHUNKS)
    lb, hb = b.run(b.embed(ids), CHUNKS)
    np.testing.assert_allclose(la, lb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ha, hb, atol=1e-5, rtol=0)
    assert np.abs(la).max() > 1.0  # not two graphs of zeros
    every = np.arange(model.config.text_config.vocab_size)
    assert np.array_equal(a.table.rows(every), b.table.rows(every))  # the same table, wherever each route put it
    ms = Manifest.model_validate_json((streamed / "manifest.json").read_text())
    mr = Manifest.model_validate_json((reference / "manifest.json").read_text())
    where = {"offset", "scale_offset"}  # each route lays out decoder.onnx.data in its own order
    assert ms.embeddings.model_dump(exclude=where) == mr.embeddings.model_dump(exclude=where)
    assert ms.decoder == mr.decoder and ms.audio == mr.audio and ms.tokenizer == mr.tokenizer
    if precision == "int4":
        ws, wr = _nbits_weights(streamed), _nbits_weights(reference)
        assert len(ws) == 5 * 7 + 6 + 1 and set(ws) == set(wr)
        for out, (q, s, attrs) in ws.items():
            assert attrs == wr[out][2], out
            assert np.array_equal(q, wr[out][0]) and np.array_equal(s, wr[out][1]), out  # bit-identical int4 weights


def test_weight_filling_memory_is_bounded_by_one_block_and_reports_each_layer(ckpt, tmp_path):
    """The fill phase never holds a whole tensor. Python-heap accounting (tracemalloc; numpy buffers included):
    between two progress lines the heap peaks less than one fp32 copy of the largest tensor above where it stood
    (4 KB blocks), and over the whole call it stays within a few graph protos (the weightless skeleton) plus that
    tensor. One progress line per decoder layer."""
    import logging
    import tracemalloc

    from transformers import AutoConfig

    from model_export.gemma4 import _decoder_io, _example_inputs, _quiet_tracer
    from model_export.onnx_wrappers import Gemma4DecoderStep
    from model_export.stream_export import CheckpointIndex, export_skeleton, fill_graph, placeholder_model, source_names

    index = CheckpointIndex.open(ckpt, "gemma4_unified")
    placeholder = placeholder_model(AutoConfig.from_pretrained(ckpt))
    hf_names = source_names(placeholder)
    step_module = Gemma4DecoderStep(placeholder).eval()
    with _quiet_tracer():
        ids = export_skeleton(step_module, _example_inputs(step_module), tmp_path / "decoder.onnx", _decoder_io(step_module))
    names = {g: hf_names[i] for g, i in ids.items()}
    largest = max(4 * int(np.prod(shape)) for shape in _shapes(index, names))
    assert largest == 384 * 64 * 4  # the tied embedding / lm_head
    skeleton_bytes = (tmp_path / "decoder.onnx").stat().st_size

    warm = tmp_path / "warm"
    warm.mkdir()
    shutil.copy(tmp_path / "decoder.onnx", warm / "decoder.onnx")
    fill_graph(warm / "decoder.onnx", names, index, quantize=True, block_bytes=4096)  # first-call imports are not working set

    lines: list[tuple[str, int, int]] = []  # (message, heap now, peak since the previous line)

    class Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.getMessage(), *tracemalloc.get_traced_memory()))
            tracemalloc.reset_peak()

    logger = logging.getLogger("model_export.gemma4")
    probe, level = Probe(level=logging.INFO), logger.level
    logger.addHandler(probe)
    logger.setLevel(logging.INFO)
    tracemalloc.start()
    try:
        stats = fill_graph(tmp_path / "decoder.onnx", names, index, quantize=True, block_bytes=4096)
        _, final_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        logger.removeHandler(probe)
        logger.setLevel(level)
    assert stats.matmulnbits == 42 and stats.bytes_written > 0
    steps = [(msg, peak - before) for (_, before, _), (msg, _, peak) in zip(lines, lines[1:])]
    overall = max(final_peak, *(peak for _, _, peak in lines))
    print(
        f"\nfill phase: largest growth between progress lines {max(g for _, g in steps)} B, overall peak {overall} B; "
        f"largest tensor fp32 {largest} B, skeleton {skeleton_bytes} B"
    )
    assert all(growth < largest for _, growth in steps), steps
    assert overall < 5 * skeleton_bytes + largest, (overall, skeleton_bytes)
    layer_lines = [msg.split(" ...")[0] for msg, _, _ in lines if msg.startswith("weights: decoder.onnx layer")]
    assert layer_lines == [f"weights: decoder.onnx layer {i}/6" for i in range(1, 7)]


def _shapes(index, names: dict[str, list[str]]) -> list[tuple[int, ...]]:
    from model_export.stream_export import tensor_shape

    return [tensor_shape(*index.locate(cands, g, "decoder.onnx")) for g, cands in names.items()]


def test_missing_tensor_names_it_and_the_fix(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    from model_export.stream_export import MissingTensor

    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    gone = "model.language_model.layers.3.mlp.up_proj.weight"
    for f in broken.glob("*.safetensors"):
        tensors = load_file(f)
        if gone in tensors:
            del tensors[gone]
            save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(MissingTensor) as err:
        export_bundle(broken, tmp_path / "out")
    assert gone in str(err.value) and "re-download" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert main(["gemma4", str(broken), "-o", str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------ weightless trace at shrunk sizes (streamed)


def _full_size_skeletons(ckpt: Path, out: Path) -> dict[str, tuple[onnx.ModelProto, dict[str, list[str]]]]:
    """The graphs traced from a placeholder model at the checkpoint's own sizes (what the shrunk trace replaces)."""
    from transformers import AutoConfig

    from model_export.gemma4 import _decoder_io, _example_inputs, _projector_io, _quiet_tracer
    from model_export.onnx_wrappers import AudioProjector, Gemma4DecoderStep
    from model_export.stream_export import export_skeleton, placeholder_model, source_names

    placeholder = placeholder_model(AutoConfig.from_pretrained(ckpt))
    hf_names = source_names(placeholder)
    step_module = Gemma4DecoderStep(placeholder).eval()
    projector = AudioProjector(placeholder).eval()
    out.mkdir()
    graphs = {}
    with _quiet_tracer():
        for name, module, example, io in (
            ("decoder.onnx", step_module, _example_inputs(step_module), _decoder_io(step_module)),
            ("audio_projector.onnx", projector, (torch.randn(7, 640),), _projector_io()),
        ):
            ids = export_skeleton(module, example, out / name, io)
            graphs[name] = (onnx.load(str(out / name)), {g: hf_names[i] for g, i in ids.items()})
    return graphs


def test_shrunk_trace_equals_full_size_trace_node_by_node(ckpt, tmp_path):
    """Traced at hidden/intermediate/vocab shrunk (twice) and declared back at the real sizes, both graphs are the
    full-size trace: same ops, attributes, constants, inputs, outputs and declared shapes, same weight names."""
    from transformers import AutoConfig

    from model_export.gemma4 import trace_weightless_graphs
    from model_export.stream_export import SIZE_KEYS, TRACE_SIZES

    config = AutoConfig.from_pretrained(ckpt)
    real = {k: getattr(config.text_config, k) for k in SIZE_KEYS}
    assert all(sizes[k] != real[k] for sizes in TRACE_SIZES for k in SIZE_KEYS)  # the comparison is not vacuous
    (tmp_path / "shrunk").mkdir()
    shrunk = trace_weightless_graphs(config, tmp_path / "shrunk")
    full = _full_size_skeletons(ckpt, tmp_path / "full")
    for name, names in (("decoder.onnx", shrunk.decoder_names), ("audio_projector.onnx", shrunk.projector_names)):
        reference, reference_names = full[name]
        graph = onnx.load(str(tmp_path / "shrunk" / name)).graph
        assert names == reference_names, name
        assert len(graph.node) == len(reference.graph.node) > 0, name
        for a, b in zip(graph.node, reference.graph.node):
            assert a == b, (name, a.name, a.op_type)
        assert list(graph.input) == list(reference.graph.input), name
        assert list(graph.output) == list(reference.graph.output), name
        assert not graph.initializer and not graph.value_info
    dims = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in onnx.load(str(tmp_path / "shrunk" / "decoder.onnx")).graph.output
    }
    assert dims["logits"] == [1, "sequence_length", 384] and dims["hidden_states"] == [1, "sequence_length", 64]
    assert shrunk.multiplier == pytest.approx(8.0)  # sqrt of the real hidden size, not of a shrunk one


class _Toy(torch.nn.Module):
    """Linear(hidden -> 8) with an optional use of `hidden` outside the weight shapes (the leaks to catch)."""

    def __init__(self, hidden: int, leak: str) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(hidden, 8, bias=False)
        self.hidden, self.leak = hidden, leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.leak == "scale":
            x = x * self.hidden**0.5
        elif self.leak == "reshape":
            x = x.reshape(-1, 2, self.hidden // 2).reshape(-1, self.hidden)
        return self.proj(x)


def _toy_trace(leak: str, path: Path) -> dict[str, list[str]]:
    from model_export.gemma4 import _quiet_tracer
    from model_export.stream_export import trace_weightless

    def make(toy: _Toy):
        io = dict(input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
        return toy, (torch.randn(3, toy.hidden),), io

    with _quiet_tracer():
        return trace_weightless(
            [_Toy(40, leak), _Toy(56, leak)],
            [{"hidden_size": 40}, {"hidden_size": 56}],
            {"hidden_size": 3840},
            make,
            path,
            lambda names: (8, 3840),
        )


def test_weightless_trace_declares_real_sizes_and_refuses_sizes_baked_into_the_graph(tmp_path):
    names = _toy_trace("none", tmp_path / "clean.onnx")
    graph = onnx.load(str(tmp_path / "clean.onnx")).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.input, *graph.output]}
    assert names == {"proj.weight": ["proj.weight"]}
    assert dims == {"x": ["n", 3840], "proj.weight": [8, 3840], "y": ["n", 8]}
    assert not list(tmp_path.glob("*.trace*"))  # the two shrunk traces are not left behind

    from model_export.stream_export import SizeBakedIn

    for leak in ("scale", "reshape"):  # sqrt(hidden) as a constant; hidden in a Reshape target
        with pytest.raises(SizeBakedIn, match="differs between traces at two shrunk sizes.*streamed=False"):
            _toy_trace(leak, tmp_path / f"{leak}.onnx")
        assert not (tmp_path / f"{leak}.onnx").exists()


_TRACE_RSS = r"""
import json, sys, tempfile
from pathlib import Path

def hwm() -> int:
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))

import onnx, torch, transformers
from transformers import AutoConfig
from model_export.gemma4 import trace_weightless_graphs
from model_export.stream_export import meta_model

config = AutoConfig.from_pretrained(sys.argv[1])
t = config.text_config
t.hidden_size, t.intermediate_size, t.vocab_size = 1536, 6144, 100000
fp32 = 4 * sum(p.numel() for p in meta_model(config).parameters())
before = hwm()
with tempfile.TemporaryDirectory() as d:
    trace_weightless_graphs(config, Path(d))
    after = hwm()
    graph = onnx.load(str(Path(d) / "decoder.onnx"), load_external_data=False).graph
    dims = {o.name: [x.dim_value or x.dim_param for x in o.type.tensor_type.shape.dim] for o in graph.output}
print(json.dumps({"fp32_bytes": fp32, "before": before, "after": after, "logits": dims["logits"]}))
"""


def test_trace_phase_memory_does_not_scale_with_the_model(ckpt):
    """A ~326M-parameter config (1.3 GB fp32; tracing it at full size grew the peak RSS by ~1.9 GB): the weightless
    trace of both graphs grows the peak RSS of a fresh process by < 25% of the fp32 size (measured +36 MB after
    the imports; nothing is allocated per weight)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _TRACE_RSS, str(ckpt)], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    growth = r["after"] - r["before"]
    print(f"\ntrace phase: peak RSS +{growth / 1e6:.0f} MB for a {r['fp32_bytes'] / 1e9:.2f} GB fp32 config")
    assert r["fp32_bytes"] > 1.2e9  # the config is the big one
    assert r["logits"] == [1, "sequence_length", 100000]  # and the graph is declared at its sizes
    assert growth < 0.25 * r["fp32_bytes"], r


def test_block_plans_set_each_matmuls_block_and_still_track_transformers(ckpt, model, int4, tmp_path):
    """The default plan takes block 64 for the MLP's projections only (one fp32 scale per 64 weights there: 4.5
    bits instead of 5); `--blocks 64` takes it everywhere. Both still agree with transformers' argmax
    about as well as uniform block 32 does, and the embedding rows follow the head's block."""
    b64 = export_bundle(ckpt, tmp_path / "b64", precision="int4", max_context=512, plan=BlockPlan.parse("64"))
    b32 = export_bundle(ckpt, tmp_path / "b32", precision="int4", max_context=512, plan=BlockPlan.parse("32"))
    wd, w64, w32 = _nbits_weights(int4), _nbits_weights(b64), _nbits_weights(b32)
    assert w64.keys() == w32.keys() == wd.keys()
    widened = 0
    nodes = {n.output[0]: n.name for n in onnx.load(str(b64 / "decoder.onnx"), load_external_data=False).graph.node}
    for name, (packed, scales, attrs) in w64.items():
        node = nodes[name]
        assert attrs["block_size"] == 64, node
        assert w32[name][2]["block_size"] == 32, node
        assert scales.size * 2 == w32[name][1].size, node  # one fp32 scale per 64 weights instead of 32
        assert packed.nbytes == w32[name][0].nbytes, node
        wide = node.startswith("/mlp/")
        widened += wide
        assert wd[name][2]["block_size"] == (64 if wide else 32), node
        assert np.array_equal(wd[name][1], (w64 if wide else w32)[name][1]), node  # the same quantizer, block for block
    assert widened == 3 * 6
    for bundle, block in ((b64, 64), (b32, 32), (int4, 32)):
        assert Manifest.model_validate_json((bundle / "manifest.json").read_text()).embeddings.block_size == block
    ids = _text_ids(model, sum(CHUNKS), seed=5)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)[None]).logits.numpy().argmax(-1)
    agree = {}
    for name, bundle in (("b32", b32), ("b64", b64), ("default", int4)):
        ort_model = OrtGemma4(bundle)
        logits, _ = ort_model.run(ort_model.embed(ids), CHUNKS)
        agree[name] = float((logits.argmax(-1) == ref).mean())
    for name in ("b64", "default"):
        assert agree[name] >= 0.4 and agree[name] >= agree["b32"] - 0.2, agree
    with pytest.raises(ValueError, match="MatMulNBits takes"):
        BlockPlan.parse("48")
    with pytest.raises(ValueError, match="gate_proj=64"):
        BlockPlan.parse("32,gate_proj")
