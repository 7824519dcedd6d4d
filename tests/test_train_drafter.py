"""`python -m model_export train-drafter`: the whole route (self-written prompts, greedy replies traced through the
runtime graph, torch training, ONNX export, manifest) on a tiny real bundle, then the engine drafting with it.

Why the identity check matters here too: this drafter takes target ids, maps them into its reduced vocabulary
and maps its guesses back; any slip there costs only speed, never a different reply, and this proves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bundles import REPO, bundle_copy, tiny_bundle
from voiced.model.bundle import load_bundle
from voiced.model.engine import Engine
from voiced.model.prompt import ChatPrompt
from voiced.model.sampling import GenerationConfig


def _train(bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model_export", "train-drafter", str(bundle), "--quick", "--questions", "6",
         "--explanations", "2", "--epochs", "2", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    dst = tmp_path_factory.mktemp("drafted") / "bundle"
    bundle_copy(tiny_bundle("fp32"), dst)
    r = _train(dst, "--precision", "fp32")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[train-drafter] train: epoch 2/2" in r.stderr  # progress is shown per phase
    return dst, json.loads(r.stdout.strip().splitlines()[-1])


def test_manifest_records_the_drafter_and_hashes_verify(trained):
    bundle_dir, summary = trained
    b = load_bundle(bundle_dir, verify=True)  # every file hash, drafter included
    d = b.manifest.drafter
    assert d is not None and d.file == "drafter.onnx"
    assert d.reads_layers == [len(b.manifest.decoder.layers) - 1]
    assert d.vocab_map_file and (bundle_dir / d.vocab_map_file).is_file()
    assert 0 < d.draft_vocab <= b.manifest.decoder.vocab_size
    assert len(d.acceptance) == 3 and all(0.0 <= a <= 1.0 for a in d.acceptance)
    assert d.acceptance == sorted(d.acceptance, reverse=True)  # unconditional: never rises with depth
    assert d.speedup == summary["ratio"] and d.auto == summary["auto"]
    assert summary["identical"] is True


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_trained_drafter_gives_plain_greedy_output(trained, k):
    bundle_dir, _ = trained
    b = load_bundle(bundle_dir)
    chat = ChatPrompt(b)
    plain, drafted = Engine(b, drafter="off"), Engine(b, drafter="on", draft_tokens=k)
    cfg = GenerationConfig(max_new_tokens=40, temperature=0.0)
    for q in ["What is the capital of France?", "Explain in a few sentences how rain works.", "hi"]:
        ids = chat.render([{"role": "user", "content": q}])
        outs = []
        for eng in (plain, drafted):
            conv = eng.conversation()
            conv.sync(ids)
            toks = [t for d in conv.generate(cfg) for t in d.token_ids]
            outs.append((toks, conv.last_stats))
        assert outs[0][0] == outs[1][0], q
        assert outs[1][1]["rounds"] >= 1
        if k:
            assert outs[1][1]["drafted"] > 0  # the ONNX drafter really ran


def test_trace_matches_step_by_step_decoding(trained):
    """The training labels come from Conversation.trace: they must be the decoder's own greedy choices."""
    b = load_bundle(trained[0])
    eng = Engine(b, drafter="off")
    ids = ChatPrompt(b).render([{"role": "user", "content": "Tell me a fact about space."}])
    conv = eng.conversation()
    conv.sync(ids)
    reply = [t for d in conv.generate(GenerationConfig(max_new_tokens=12, temperature=0.0)) for t in d.token_ids]
    top, hidden = eng.conversation().trace(ids + reply)
    assert hidden.shape == (len(ids) + len(reply), b.manifest.decoder.hidden_size)
    assert top[len(ids) - 1 : len(ids) - 1 + len(reply)].tolist() == reply


def test_refuses_a_bundle_it_cannot_read_with_the_fix(tmp_path):
    r = subprocess.run([sys.executable, "-m", "model_export", "train-drafter", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0
    assert "no manifest.json" in r.stderr and "Fix:" in r.stderr
