"""gemma4_unified_assistant -> drafter.onnx: the same draft logits as transformers' assistant on the same inputs
(the target's KV and hidden state as the engine hands them over), and exact greedy decoding with it."""

from __future__ import annotations

import functools
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model_export.__main__ import main as export_main
from model_export.assistant import load_assistant
from tests.support import gemma4
from tests.support.drafter import varied_gemma4_bundle
from voiced.model.bundle import load_bundle
from voiced.model.engine import Engine, GenerationConfig
from voiced.model.speculative import OnnxDrafter

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def drafted_bundle(precision: str) -> tuple[Path, Path]:
    """The tiny Gemma 4 bundle with a random assistant exported into it through the CLI; built once per version
    of the exporter and cached next to the tiny bundles."""
    src = varied_gemma4_bundle()
    key = hashlib.sha256((ROOT / "model_export" / "assistant.py").read_bytes()).hexdigest()[:12]
    root = src.parent / f"assistant-{key}-{precision}"
    with gemma4._locked(src.parent):
        if not (root / "bundle" / "manifest.json").is_file() or load_bundle(root / "bundle").manifest.drafter is None:
            shutil.rmtree(root, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix="assistant-", dir=src.parent))
            shutil.copytree(src, tmp / "bundle")
            argv = ["gemma4-assistant", str(tmp / "assistant"), "-o", str(tmp / "bundle"), "--tiny", "--precision", precision]
            assert export_main(argv) == 0
            tmp.rename(root)
    return root / "bundle", root / "assistant"


def prompt(b) -> list[int]:
    return [2, 5] + b.tokenizer.encode("user\nPlay some music in the kitchen", add_special_tokens=False).ids + [6, 10, 5]


def test_manifest_records_the_drafter_and_the_bundle_verifies():
    bundle, _ = drafted_bundle("fp32")
    b = load_bundle(bundle, verify=True)  # hashes refreshed, drafter files listed
    d = b.manifest.drafter
    assert d is not None and d.file == "drafter.onnx" and d.reads_layers == [4, 5]
    assert "drafter.onnx" in b.manifest.files and d.hidden_size == b.manifest.decoder.hidden_size


def test_draft_logits_equal_transformers_assistant_on_the_engines_inputs():
    bundle, assistant_dir = drafted_bundle("fp32")
    b = load_bundle(bundle)
    eng = Engine(b, threads=1, drafter="on")
    drafter = eng.drafter
    assert isinstance(drafter, OnnxDrafter)
    hf = load_assistant(assistant_dir)
    conv = eng.conversation()
    ids = prompt(b)
    ids = ids + ids[2:] + ids[2:]  # longer than the sliding window: the sliding KV is the newest window-1 rows
    conv.sync(ids)
    tok = int(np.argmax(conv.logits))
    pos = len(ids)
    kv = {i: conv._kv.arrays(i) for i in drafter.reads_layers}
    assert kv[4][0].shape[2] == 15 and kv[5][0].shape[2] == pos
    hidden = conv._hidden.reshape(1, 1, -1)
    for _ in range(3):  # draft steps chain through hidden_out at a constant position
        x = np.concatenate([eng.embed([tok]).reshape(1, 1, -1), hidden], axis=-1).astype(np.float32)
        feeds = {"inputs_embeds": x, "position_ids": np.array([[pos]])}
        for i in drafter.reads_layers:
            feeds[f"kv.{i}.key"], feeds[f"kv.{i}.value"] = kv[i]
        logits, hidden = drafter.session.run(["logits", "hidden_out"], feeds)
        with torch.no_grad():
            ref = hf(inputs_embeds=torch.from_numpy(x), position_ids=torch.tensor([[pos]]), shared_kv_states={
                "sliding_attention": tuple(torch.from_numpy(a) for a in kv[4]),
                "full_attention": tuple(torch.from_numpy(a) for a in kv[5]),
            })  # fmt: skip
        np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(hidden, ref.last_hidden_state.numpy(), atol=1e-4)
        tok = int(np.argmax(logits[0, -1]))


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_greedy_with_the_exported_drafter_equals_plain(precision):
    bundle, _ = drafted_bundle(precision)
    b = load_bundle(bundle)
    cfg = GenerationConfig(max_new_tokens=40, stop_ids=[])
    plain = Engine(b, threads=1, drafter="off").conversation()
    plain.sync(prompt(b))
    ref = [t for d in plain.generate(cfg) for t in d.token_ids]
    for k in (0, 1, 4):
        conv = Engine(b, threads=1, drafter="on", draft_tokens=k).conversation()
        conv.sync(prompt(b))
        assert [t for d in conv.generate(cfg) for t in d.token_ids] == ref
        assert conv.last_stats["rounds"] > 0 and (k == 0 or conv.last_stats["drafted"] > 0)
