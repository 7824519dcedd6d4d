"""Broken bundles give a BundleError that names the file at fault and the rebuild command."""

from __future__ import annotations

import json

import pytest

from tests.support.bundles import bundle_copy, tiny_bundle
from voiced.model.bundle import BundleError, load_bundle
from voiced.model.engine import Engine

FIX = "voiced model prepare b --force"


@pytest.fixture
def bundle(tmp_path):
    return bundle_copy(tiny_bundle("int4"), tmp_path / "b")


def test_sound_bundle_loads_and_verifies(bundle):
    b = load_bundle(bundle, verify=True)
    assert b.manifest.decoder.input == "input_ids"
    assert b.tokenizer.get_vocab_size() == b.manifest.decoder.vocab_size
    assert b.path("decoder.onnx").is_file()


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist.*voiced model prepare nope --force"):
        load_bundle(tmp_path / "nope")


def test_missing_manifest(bundle):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=f"manifest.json is missing.*{FIX}"):
        load_bundle(bundle)


@pytest.mark.parametrize("text, why", [("{not json", "manifest.json is invalid"), ('{"format": 1}', "decoder: Field required")])
def test_invalid_manifest(bundle, text, why):
    (bundle / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=why):
        load_bundle(bundle)


def test_missing_weights_file(bundle):
    (bundle / "decoder.onnx.data").unlink()
    with pytest.raises(BundleError, match=f"decoder.onnx.data is missing.*{FIX}"):
        load_bundle(bundle)


def test_truncated_file_caught_by_size(bundle):
    data = bundle / "decoder.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(BundleError, match="decoder.onnx.data has 1000 bytes"):
        load_bundle(bundle)


def test_corrupt_decoder_same_size(bundle):
    dec = bundle / "decoder.onnx"
    dec.write_bytes(b"\x00garbage" * (dec.stat().st_size // 8) + b"\x00" * (dec.stat().st_size % 8))
    with pytest.raises(BundleError, match="decoder.onnx sha256 does not match"):
        load_bundle(bundle, verify=True)
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"].pop("decoder.onnx")  # unlisted (no hash to check): only the graph load finds it
    (bundle / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(bundle)
    with pytest.raises(BundleError, match=f"decoder.onnx does not load.*{FIX}"):
        Engine(b)


def test_corrupt_tokenizer(bundle):
    tok = bundle / "tokenizer.json"
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"].pop("tokenizer.json")  # a manifest without that hash: the tokenizer load itself must complain
    (bundle / "manifest.json").write_text(json.dumps(m))
    tok.write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json does not load"):
        load_bundle(bundle)


def test_graph_not_matching_manifest(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["decoder"]["layers"].append(dict(m["decoder"]["layers"][0]))
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="missing input past_key_values.2.key"):
        Engine(load_bundle(bundle))
