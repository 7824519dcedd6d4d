"""Builder output folder -> voiced bundle: the files the engine reads, and a manifest that describes them.

Why read the graph rather than trust genai_config.json: the manifest promises the engine exact I/O names and
KV shapes, so they are taken from the ONNX graph the engine will actually load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from voiced.model.integrity import MANIFEST, hash_file
from voiced.model.manifest import (
    AsrAudio,
    DecoderSpec,
    FileEntry,
    LayerKV,
    Manifest,
    ProjectorAudio,
    TokenizerSpec,
)

DECODER = "decoder.onnx"
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "<eos>")


def _graph_io(onnx_path: Path) -> tuple[dict[str, tuple[str, list]], dict[str, tuple[str, list]]]:
    """Input and output name -> (elem type, dims) without loading the external weights."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)

    def dims(vi) -> list:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    def kind(vi) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    inputs = {vi.name: (kind(vi), dims(vi)) for vi in model.graph.input}
    outputs = {vi.name: (kind(vi), dims(vi)) for vi in model.graph.output}
    return inputs, outputs


def _as_list(v) -> list[int]:
    if v is None:
        return []
    return [int(x) for x in (v if isinstance(v, list) else [v])]


def _tokenizer_spec(bundle: Path, genai: dict) -> TokenizerSpec:
    tok = json.loads((bundle / "tokenizer.json").read_text())
    special = {t["content"]: int(t["id"]) for t in tok.get("added_tokens", []) if t.get("special")}
    cfg_path = bundle / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}

    def token_str(v) -> str | None:
        return v.get("content") if isinstance(v, dict) else v

    stop = _as_list(genai["model"].get("eos_token_id"))
    for name in _STOP_TOKENS:
        if name in special and special[name] not in stop:
            stop.append(special[name])
    if not stop:
        raise ValueError("no stop token found: the checkpoint names no eos_token_id and no known end-of-turn token")
    return TokenizerSpec(
        bos_token=token_str(cfg.get("bos_token")),
        eos_token=token_str(cfg.get("eos_token")),
        stop_ids=stop,
        special_tokens=special,
    )


def file_entries(bundle: Path) -> dict[str, FileEntry]:
    """Every file under the bundle except the manifest itself, with sha256 and size."""
    out: dict[str, FileEntry] = {}
    for p in sorted(bundle.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(bundle).as_posix()
            out[rel] = FileEntry(sha256=hash_file(p), bytes=p.stat().st_size)
    return out


def write_bundle(
    built: Path,
    out_dir: Path,
    *,
    name: str,
    family: str,
    precision: str,
    description: str = "",
    source: dict[str, str] | None = None,
    system_prompt: str | None = None,
    audio: AsrAudio | ProjectorAudio | None = None,
    extra_dirs: Iterable[tuple[Path, str]] = (),
) -> Manifest:
    """Move the builder's files from `built` into `out_dir`, copy extra folders (e.g. ASR weights), hash, write
    manifest.json last (its presence marks a finished bundle)."""
    built, out_dir = Path(built), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    genai = json.loads((built / "genai_config.json").read_text())
    dec = genai["model"]["decoder"]
    onnx_name = dec["filename"]
    if onnx_name != DECODER:
        raise ValueError(f"builder wrote {onnx_name}; pass filename={DECODER} to the builder")
    for fname in [DECODER, f"{DECODER}.data", "tokenizer.json", "tokenizer_config.json", "genai_config.json"]:
        if (built / fname).is_file():
            shutil.move(str(built / fname), out_dir / fname)
    template = built / "chat_template.jinja"
    if not template.is_file():
        raise ValueError(f"{built} has no chat_template.jinja: the checkpoint needs a chat template")
    shutil.move(str(template), out_dir / "chat_template.jinja")
    for src, rel in extra_dirs:
        shutil.copytree(src, out_dir / rel, dirs_exist_ok=True)

    inputs, outputs = _graph_io(out_dir / DECODER)
    n_layers = int(dec["num_hidden_layers"])
    layers = []
    for i in range(n_layers):
        kdtype, kdims = inputs[f"past_key_values.{i}.key"]
        kv_heads = kdims[1] if isinstance(kdims[1], int) else int(dec["num_key_value_heads"])
        head_dim = kdims[3] if isinstance(kdims[3], int) and kdims[3] else int(dec["head_size"])
        layers.append(LayerKV(kv_heads=kv_heads, head_dim=head_dim))
    kv_dtype = inputs["past_key_values.0.key"][0]
    decoder = DecoderSpec(
        file=DECODER,
        input="inputs_embeds" if "inputs_embeds" in inputs else "input_ids",
        hidden_size=int(dec["hidden_size"]),
        vocab_size=int(genai["model"]["vocab_size"]),
        max_context=int(genai["model"]["context_length"]),
        layers=layers,
        kv_dtype=kv_dtype,
        hidden_output="hidden_states" if "hidden_states" in outputs else None,
        quantization=precision,
        # the builder's GroupQueryAttention updates KV in place when past and present share one buffer
        past_present_share_buffer=bool(genai.get("search", {}).get("past_present_share_buffer", False)),
    )
    manifest = Manifest(
        name=name,
        family=family,
        description=description,
        source=dict(source or {}),
        decoder=decoder,
        audio=audio,
        tokenizer=_tokenizer_spec(out_dir, genai),
        system_prompt=system_prompt,
        files=file_entries(out_dir),
    )
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    tmp.replace(out_dir / MANIFEST)
    return manifest
