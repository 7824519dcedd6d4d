"""Engine test helpers: the tiny bundles opened once, and their transformers twin (the same seeded weights).

Why rebuild the twin instead of caching the HF folder: model_export.tiny seeds torch before building, so the
same call gives the same weights in ~1 s; the bundle's fp32 graph was made from exactly that checkpoint.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from tests.support.bundles import bundle_copy, tiny_bundle
from voiced.model.bundle import Bundle, load_bundle
from voiced.model.engine import Engine


@functools.cache
def tiny(precision: str = "fp32") -> Bundle:
    return load_bundle(tiny_bundle(precision))


@functools.cache
def tiny_engine(precision: str = "fp32", share_buffer: bool = False, prefill_chunk: int = 7) -> Engine:
    """Small prefill chunks on purpose: every multi-token sync crosses chunk boundaries."""
    return Engine(tiny(precision), threads=1, share_buffer=share_buffer, prefill_chunk=prefill_chunk)


@functools.cache
def hf_twin():
    """transformers' Qwen2ForCausalLM with the tiny bundle's weights (tests only: torch is not a runtime dep)."""
    from transformers import Qwen2ForCausalLM

    from model_export.tiny import make_tiny_qwen2

    d = Path(tempfile.mkdtemp(prefix="voiced-hf-twin-"))
    make_tiny_qwen2(d, seed=0)
    return Qwen2ForCausalLM.from_pretrained(d).eval(), d


def with_manifest(src: Path, dst: Path, **decoder_changes) -> Path:
    """A private copy of a bundle whose manifest's decoder section is changed (e.g. a short max_context)."""
    bundle_copy(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["decoder"].update(decoder_changes)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst
