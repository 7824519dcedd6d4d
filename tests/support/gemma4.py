"""Tiny gemma4_unified checkpoint and bundles, built once and cached; a plain-onnxruntime stepper that feeds the
KV cache exactly as the engine is meant to (so the export is tested against the contract, not against itself).

Cache: $XDG_CACHE_HOME/voiced/test-cache/gemma4-tiny-<versions + hash of the export code>/ (about 3 MB).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort

from voiced.model.embeddings import EmbeddingTable
from voiced.model.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]
_EXPORT_SOURCES = [
    "model_export/gemma4.py",
    "model_export/logits_keep.py",
    "model_export/onnx_wrappers.py",
    "model_export/tiny_gemma4.py",
    "model_export/tiny_tokenizer.py",
    "model_export/quantize.py",
    "model_export/stream_export.py",
]


def cache_dir() -> Path:
    import onnxruntime
    import torch
    import transformers

    h = hashlib.sha256()
    for rel in _EXPORT_SOURCES:
        h.update((ROOT / rel).read_bytes())
    key = f"gemma4-tiny-tf{transformers.__version__}-pt{torch.__version__}-ort{onnxruntime.__version__}-{h.hexdigest()[:12]}"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    d = base / "voiced" / "test-cache" / key
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def _locked(d: Path):
    """Two pytest processes building the same fixture wait for each other instead of racing."""
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def tiny_checkpoint(variant: str = "") -> Path:
    """variant "" = 6 layers (5 sliding + 1 full); "kvshared" = 12 layers whose last 2 reuse earlier layers' KV."""
    from model_export.tiny_gemma4 import build_tiny_checkpoint

    d = cache_dir()
    out = d / f"checkpoint{variant}"
    with _locked(d):
        if not (out / "config.json").is_file():
            tmp = d / f"checkpoint{variant}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            if variant == "kvshared":
                build_tiny_checkpoint(tmp, seed=1, num_layers=12, num_kv_shared_layers=2)
            else:
                build_tiny_checkpoint(tmp, seed=0)
            tmp.rename(out)
    return out


def tiny_bundle(precision: str, variant: str = "") -> Path:
    from model_export.gemma4 import export_bundle

    ckpt = tiny_checkpoint(variant)
    d = cache_dir()
    out = d / f"bundle{variant}-{precision}"
    with _locked(d):
        if not (out / "manifest.json").is_file():
            export_bundle(ckpt, out, precision=precision, max_context=512)
    return out


class OrtGemma4:
    """Feeds decoder.onnx chunk by chunk like the engine: full layers keep everything, sliding layers keep only
    their `window - 1` most recent entries, attention_mask covers the whole conversation."""

    def __init__(self, bundle: Path) -> None:
        self.dir = Path(bundle)
        self.manifest = Manifest.model_validate_json((self.dir / "manifest.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.dir / self.manifest.decoder.file), opts, providers=["CPUExecutionProvider"])
        emb, dec = self.manifest.embeddings, self.manifest.decoder
        scales = self.dir / emb.scale_file if emb.scale_file else None
        self.table = EmbeddingTable(emb, self.dir / emb.file, scales, dec.hidden_size, dec.vocab_size)  # the engine's reader
        self.reset()

    def reset(self) -> None:
        self.pos = 0
        self.past: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, layer in enumerate(self.manifest.decoder.layers):
            if layer.shares_kv_with is None:
                z = np.zeros((1, layer.kv_heads, 0, layer.head_dim), dtype=np.float32)
                self.past[i] = (z, z)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.table.rows(np.asarray(ids, dtype=np.int64))[None]

    def step(self, embeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = embeds.shape[1]
        feeds = {
            "inputs_embeds": embeds.astype(np.float32),
            "attention_mask": np.ones((1, self.pos + s), dtype=np.int64),
            "position_ids": np.arange(self.pos, self.pos + s, dtype=np.int64)[None],
            "logits_to_keep": np.array([s], dtype=np.int64),  # every position: the tests compare them all
        }
        for i, (k, v) in self.past.items():
            feeds[f"past_key_values.{i}.key"] = k
            feeds[f"past_key_values.{i}.value"] = v
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.session.run(names, feeds)))
        for i in self.past:
            k, v = out[f"present.{i}.key"], out[f"present.{i}.value"]
            window = self.manifest.decoder.layers[i].window
            if window is not None:
                k, v = k[:, :, -(window - 1) :], v[:, :, -(window - 1) :]
            assert k.shape[2] == (self.pos + s if window is None else min(self.pos + s, window - 1))
            self.past[i] = (np.ascontiguousarray(k), np.ascontiguousarray(v))
        self.pos += s
        return out["logits"], out[self.manifest.decoder.hidden_output]

    def run(self, embeds: np.ndarray, chunks: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Prefill/decode `embeds` [1,S,H] in the given chunk sizes (summing to S); concatenated outputs."""
        assert sum(chunks) == embeds.shape[1]
        logits, hidden, at = [], [], 0
        for c in chunks:
            lg, hs = self.step(embeds[:, at : at + c])
            logits.append(lg)
            hidden.append(hs)
            at += c
        return np.concatenate(logits, axis=1), np.concatenate(hidden, axis=1)


def hf_model(checkpoint: Path):
    import torch
    from transformers import Gemma4UnifiedForConditionalGeneration

    return Gemma4UnifiedForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()


def hf_audio_inputs(checkpoint: Path, text: str, wav: np.ndarray) -> dict:
    """What Gemma4UnifiedProcessor(text=..., audio=[wav]) returns, built from transformers' own pieces.

    The processor class itself cannot be constructed here: its __init__ demands an image and a video processor,
    which need torchvision/PIL (not in the export extra). So this calls its feature extractor and its own
    `replace_audio_token` (the placeholder expansion) and tokenizer, which are the audio path's whole logic.
    """
    from types import SimpleNamespace

    from transformers import AutoTokenizer, Gemma4UnifiedAudioFeatureExtractor, Gemma4UnifiedProcessor

    tok = AutoTokenizer.from_pretrained(checkpoint)
    feats = Gemma4UnifiedAudioFeatureExtractor()([wav], return_tensors="pt")
    this = SimpleNamespace(boa_token=tok.boa_token, eoa_token=tok.eoa_token, audio_token=tok.audio_token)
    expansion = Gemma4UnifiedProcessor.replace_audio_token(this, feats, 0)
    assert text.count(tok.audio_token) == 1, "one audio item per prompt in these tests"
    ids = tok(text.replace(tok.audio_token, expansion), add_special_tokens=False, return_tensors="pt")["input_ids"]
    return {"input_ids": ids, "input_features": feats["input_features"], "input_features_mask": feats["input_features_mask"]}
