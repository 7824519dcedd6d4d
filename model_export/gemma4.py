"""Gemma 4 (transformers `gemma4_unified`) checkpoint -> voiced bundle.

    python -m model_export gemma4 CHECKPOINT_DIR -o BUNDLE_DIR [--precision int4|fp32] [--tiny]

Writes decoder.onnx (own torch.onnx wrapper, legacy TorchScript exporter: the dynamo exporter needs
onnxscript, which the export extra does not carry; traced weightless and filled from the safetensors one block at
a time, int4 while reading, so the 12B exports within a 16 GB laptop's RAM: see stream_export),
audio_projector.onnx, embed_tokens.npy (+ scales for int8), tokenizer.json, chat_template.jinja and manifest.json. int4 = MatMulNBits block 32 symmetric, accuracy level 4.
The graph I/O contract with the engine is documented in onnx_wrappers.Gemma4DecoderStep and in the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .logits_keep import add_logits_to_keep
from .quantize import DEFAULT_PLAN, BlockPlan

log = logging.getLogger("model_export.gemma4")

SUPPORTED_MODEL_TYPE = "gemma4_unified"
SUPPORTED_ARCH = "Gemma4UnifiedForConditionalGeneration"
DECODER = "decoder.onnx"
PROJECTOR = "audio_projector.onnx"
PROJECTOR_INPUT = "audio_frames"
PROJECTOR_OUTPUT = "audio_embeds"
HIDDEN_OUTPUT = "hidden_states"
OPSET = 17


class UnsupportedCheckpoint(ValueError):
    """The folder is not a gemma4_unified checkpoint this exporter can read; the message names what is missing."""


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    config: dict
    tokenizer_json: Path
    chat_template: str
    tokenizer_config: dict
    generation_config: dict


@contextmanager
def step(name: str, index: int, total: int) -> Iterator[None]:
    """Progress for every long step: one line when it starts, one with its duration when it ends."""
    log.info("[%d/%d] %s ...", index, total, name)
    t0 = time.monotonic()
    yield
    log.info("[%d/%d] %s done in %.1f s", index, total, name, time.monotonic() - t0)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _chat_template(root: Path, tok_cfg: dict) -> str | None:
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text()
    tpl = tok_cfg.get("chat_template")
    if isinstance(tpl, str):
        return tpl
    if isinstance(tpl, list):  # named templates: take the default one
        for entry in tpl:
            if entry.get("name") == "default":
                return entry["template"]
    for name in ("chat_template.json", "processor_config.json"):
        tpl = _read_json(root / name).get("chat_template")
        if isinstance(tpl, str):
            return tpl
    return None


def inspect_checkpoint(root: Path) -> CheckpointFiles:
    """Refuse anything but a complete gemma4_unified checkpoint, naming every missing piece at once."""
    root = Path(root)
    missing: list[str] = []
    if not root.is_dir():
        raise UnsupportedCheckpoint(f"{root} is not a directory: pass the folder holding config.json and *.safetensors")
    config = _read_json(root / "config.json")
    if not config:
        missing.append("config.json")
    elif config.get("model_type") != SUPPORTED_MODEL_TYPE:
        raise UnsupportedCheckpoint(
            f"{root}/config.json has model_type {config.get('model_type')!r}; this exporter reads only "
            f"{SUPPORTED_MODEL_TYPE!r} ({SUPPORTED_ARCH}, e.g. google/gemma-4-12B-it)"
        )
    else:
        if not isinstance(config.get("text_config"), dict):
            missing.append("config.json: text_config")
        if not isinstance(config.get("audio_config"), dict):
            missing.append("config.json: audio_config (the encoder-free audio projector)")
        for key in ("boa_token_id", "eoa_token_index", "audio_token_id"):
            if config.get(key) is None:
                missing.append(f"config.json: {key}")
    if not list(root.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if not (root / "tokenizer.json").is_file():
        missing.append("tokenizer.json")
    tok_cfg = _read_json(root / "tokenizer_config.json")
    template = _chat_template(root, tok_cfg)
    if template is None:
        missing.append("a chat template (chat_template.jinja, or chat_template in tokenizer_config.json)")
    if missing:
        raise UnsupportedCheckpoint(f"{root} is not a usable {SUPPORTED_MODEL_TYPE} checkpoint; missing: " + "; ".join(missing))
    return CheckpointFiles(root, config, root / "tokenizer.json", template or "", tok_cfg, _read_json(root / "generation_config.json"))


def _token_ids(tokenizer_json: Path) -> dict[str, int]:
    data = json.loads(tokenizer_json.read_text())
    return {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}


def _special_tokens(ck: CheckpointFiles) -> tuple[dict[str, int], list[int], str | None, str | None]:
    """Special token ids from the tokenizer, cross-checked against the ids the model config was trained with."""
    added = _token_ids(ck.tokenizer_json)
    wanted = ["<bos>", "<eos>", "<pad>", "<|turn>", "<turn|>", "<|audio>", "<|audio|>", "<audio|>"]
    specials = {t: added[t] for t in wanted if t in added}
    cfg = ck.config
    for name, key in (("<|audio>", "boa_token_id"), ("<audio|>", "eoa_token_index"), ("<|audio|>", "audio_token_id")):
        if name in specials and specials[name] != cfg[key]:
            raise UnsupportedCheckpoint(
                f"tokenizer.json gives {name} id {specials[name]} but config.json {key} is {cfg[key]}: "
                "the tokenizer files do not belong to this checkpoint"
            )
    eos = ck.generation_config.get("eos_token_id", cfg["text_config"].get("eos_token_id"))
    stops = sorted({int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
    if "<turn|>" in specials and specials["<turn|>"] not in stops:
        stops.append(specials["<turn|>"])
    if not stops:
        raise UnsupportedCheckpoint("no eos_token_id in generation_config.json or config.json: the engine needs stop ids")

    def tok_str(key: str) -> str | None:
        v = ck.tokenizer_config.get(key)
        return v.get("content") if isinstance(v, dict) else v

    return specials, stops, tok_str("bos_token") or ("<bos>" if "<bos>" in specials else None), tok_str("eos_token")


def _example_inputs(step_module, seq: int = 3, past_full: int = 5):
    """Trace inputs with distinct lengths per axis, so that no two dynamic sizes fold into one constant."""
    import torch

    hidden = step_module.cfg.hidden_size
    past = []
    for i in step_module.cached_layers:
        g = step_module.geometry[i]
        p = past_full if g.window is None else min(past_full, g.window - 1) - 1
        past += [torch.randn(1, g.kv_heads, p, g.head_dim), torch.randn(1, g.kv_heads, p, g.head_dim)]
    return (
        torch.randn(1, seq, hidden),
        torch.ones(1, past_full + seq, dtype=torch.int64),
        torch.arange(past_full, past_full + seq, dtype=torch.int64)[None],
        *past,
    )


def _decoder_io(step_module) -> dict:
    """Input/output names and dynamic axes of decoder.onnx (the engine contract), shared by both export routes."""
    inputs = ["inputs_embeds", "attention_mask", "position_ids"]
    outputs = ["logits", HIDDEN_OUTPUT]
    axes: dict[str, dict[int, str]] = {
        "inputs_embeds": {1: "sequence_length"},
        "attention_mask": {1: "total_sequence_length"},
        "position_ids": {1: "sequence_length"},
        "logits": {1: "sequence_length"},
        HIDDEN_OUTPUT: {1: "sequence_length"},
    }
    for i in step_module.cached_layers:
        for kind in ("key", "value"):
            inputs.append(f"past_key_values.{i}.{kind}")
            outputs.append(f"present.{i}.{kind}")
            axes[f"past_key_values.{i}.{kind}"] = {2: f"past_sequence_length_{i}"}
            axes[f"present.{i}.{kind}"] = {2: f"total_sequence_length_{i}"}
    return dict(input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET)


def export_decoder(model, path: Path) -> list:
    """Trace Gemma4DecoderStep into `path` (fp32, external data). Returns the layer geometry."""
    import torch

    from .onnx_wrappers import Gemma4DecoderStep

    step_module = Gemma4DecoderStep(model).eval()
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(
            step_module, _example_inputs(step_module), str(path), dynamo=False, do_constant_folding=True, **_decoder_io(step_module)
        )
    _to_external_data(path)
    return step_module.geometry


def _projector_io() -> dict:
    return dict(
        input_names=[PROJECTOR_INPUT],
        output_names=[PROJECTOR_OUTPUT],
        dynamic_axes={PROJECTOR_INPUT: {0: "frames"}, PROJECTOR_OUTPUT: {0: "frames"}},
        opset_version=OPSET,
    )


def export_projector(model, path: Path) -> None:
    import torch

    from .onnx_wrappers import AudioProjector

    frame = model.config.audio_config.audio_embed_dim
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(AudioProjector(model).eval(), (torch.randn(7, frame),), str(path), dynamo=False, **_projector_io())
    _to_external_data(path)


@contextmanager
def _quiet_tracer() -> Iterator[None]:
    """The legacy exporter warns on every call (deprecation, tracer int casts); they bury the progress lines."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _to_external_data(path: Path) -> None:
    """One graph file + one `<name>.data` file, whatever the exporter produced (2 GB protobuf limit)."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    for f in path.parent.iterdir():  # the legacy exporter may scatter one file per initializer next to the graph
        if f != path and f.parent == path.parent and f.suffix not in (".onnx", ".npy", ".json", ".jinja", ".data") and f.is_file():
            f.unlink()
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def tied_int4_embeddings(decoder: Path, vocab: int, hidden: int, multiplier: float):
    """The EmbeddingSpec that reads token rows from the output head's MatMulNBits weight in decoder.onnx.data.

    MatMulNBits keeps B as [N, K/block, block/2]: for the head N is the vocabulary and K the hidden size, so row
    `id` of the packed weight (and of its [N, K/block] scales) is token `id`'s embedding, exactly as the head
    sees it. Offsets come from the saved graph, whichever route wrote it."""
    import onnx

    from voiced.model.manifest import EmbeddingSpec

    graph = onnx.load(str(decoder), load_external_data=False).graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "MatMulNBits" or not node.name.startswith("/lm_head/"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (attrs.get("N"), attrs.get("K"), attrs.get("bits")) != (vocab, hidden, 4) or len(node.input) != 3:
            raise RuntimeError(
                f"{decoder.name}: the output head is {attrs}, not int4 [{vocab} x {hidden}] without zero points; report the graph"
            )
        where = {}
        for role, name in (("weight", node.input[1]), ("scales", node.input[2])):
            ext = {e.key: e.value for e in inits[name].external_data}
            if ext.get("location") != decoder.name + ".data":
                raise RuntimeError(f"{decoder.name}: the head's {role} is not in {decoder.name}.data; report the graph")
            where[role] = int(ext.get("offset", 0))
        if inits[node.input[2]].data_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"{decoder.name}: the head's scales are not float32; report the graph")
        return EmbeddingSpec(
            file=decoder.name + ".data", dtype="int4", offset=where["weight"], scale_offset=where["scales"],
            block_size=int(attrs["block_size"]), multiplier=multiplier,
        )  # fmt: skip
    raise RuntimeError(f"{decoder.name} has no int4 /lm_head/ MatMulNBits to read embeddings from; report the graph")


def _export_in_memory(ck: CheckpointFiles, tmp: Path, precision: str, plan: BlockPlan) -> tuple[int, object, list, float, bool]:
    """Reference route: from_pretrained in fp32, trace with the weights, quantize the saved graph. Needs RAM for
    several fp32 copies of the model (>100 GB for the 12B); tests compare the streamed route against it."""
    import torch
    from transformers import Gemma4UnifiedForConditionalGeneration

    from .quantize import int8_rows, quantize_int4

    total = 6 if precision == "int4" else 5
    with step(f"load {ck.root} (fp32)", 1, total):
        model = Gemma4UnifiedForConditionalGeneration.from_pretrained(ck.root, dtype=torch.float32).eval()
    text = model.config.text_config
    with step("export decoder.onnx", 2, total):
        geometry = export_decoder(model, tmp / DECODER)
    with step("export audio_projector.onnx", 3, total):
        export_projector(model, tmp / PROJECTOR)
    embed = model.model.language_model.embed_tokens
    tied = model.lm_head.weight is embed.weight
    multiplier = float(embed.embed_scale.float())
    with step("write embeddings" + (" (none: int4 rows of the tied head)" if tied and precision == "int4" else ""), 4, total):
        table = embed.weight.detach().float().numpy()
        if precision == "int4" and not tied:
            q, scales = int8_rows(table)
            np.save(tmp / "embed_tokens.npy", q)
            np.save(tmp / "embed_scales.npy", scales)
        elif precision != "int4":
            np.save(tmp / "embed_tokens.npy", table.astype(np.float32))
    del model, table, embed
    if precision == "int4":
        with step(f"int4 MatMulNBits (blocks {plan})", 5, total):
            quantize_int4(tmp / DECODER, tmp / DECODER, plan=plan)  # loads it whole first: in place is safe
    return total, text, geometry, multiplier, tied


@dataclass(frozen=True)
class WeightlessGraphs:
    """What the trace phase of the streamed route leaves for the weight-filling phase."""

    decoder_names: dict[str, list[str]]  # graph input of decoder.onnx -> candidate checkpoint names
    projector_names: dict[str, list[str]]
    embed_names: list[str]
    all_names: list[list[str]]  # every tensor of the full model (to check the checkpoint before long steps)
    text: object  # the checkpoint's text config
    geometry: list
    multiplier: float


def trace_weightless_graphs(config, out_dir: Path) -> WeightlessGraphs:
    """decoder.onnx and audio_projector.onnx without weights, declared at the checkpoint's sizes.

    Traced from shrunk copies of the model (stream_export.trace_weightless): the full-size model exists only on
    the meta device, so this phase needs tens of MB whatever the checkpoint's size."""
    import torch

    from .onnx_wrappers import AudioProjector, Gemma4DecoderStep, layer_geometry
    from .stream_export import SIZE_KEYS, meta_model, placeholder_model, source_names, trace_configs, trace_weightless

    real = meta_model(config)  # shapes, tied names and the embedding scale of the full-size model, on meta
    text = real.config.text_config
    embed = real.model.language_model.embed_tokens
    multiplier = float(embed.embed_scale.float())
    hf_names = source_names(real)
    embed_names = hf_names[id(embed.weight)]
    shapes = {name: tuple(t.shape) for name, t in real.state_dict(keep_vars=True).items()}
    real_sizes = {k: getattr(text, k) for k in SIZE_KEYS}
    del real, embed
    configs = trace_configs(config)
    traced = [placeholder_model(c) for c in configs]
    sizes = [{k: getattr(c.text_config, k) for k in SIZE_KEYS} for c in configs]

    def real_shape(names: list[str]) -> tuple[int, ...]:
        return shapes[names[0]]

    def decoder(model):
        s = Gemma4DecoderStep(model).eval()
        return s, _example_inputs(s), _decoder_io(s)

    def projector(model):
        frame = model.config.audio_config.audio_embed_dim
        return AudioProjector(model).eval(), (torch.randn(7, frame),), _projector_io()

    with _quiet_tracer():
        with step("trace decoder.onnx (weightless, shrunk)", 2, 7):
            decoder_names = trace_weightless(traced, sizes, real_sizes, decoder, out_dir / DECODER, real_shape)
        with step("trace audio_projector.onnx (weightless, shrunk)", 3, 7):
            projector_names = trace_weightless(traced, sizes, real_sizes, projector, out_dir / PROJECTOR, real_shape)
    return WeightlessGraphs(decoder_names, projector_names, embed_names, list(hf_names.values()), text, layer_geometry(text), multiplier)


def _export_streamed(ck: CheckpointFiles, tmp: Path, precision: str, plan: BlockPlan) -> tuple[int, object, list, float, bool]:
    """Streamed route: trace weightless shrunk copies of the model, then fill (and int4-quantize) the real
    weights block by block. Nothing of checkpoint size is ever allocated: see stream_export."""
    from transformers import AutoConfig

    from .stream_export import CheckpointIndex, fill_graph, write_embeddings

    total = 7
    quantize = precision == "int4"
    with step("index checkpoint tensors", 1, total):
        index = CheckpointIndex.open(ck.root, SUPPORTED_MODEL_TYPE)
    graphs = trace_weightless_graphs(AutoConfig.from_pretrained(ck.root), tmp)  # seconds, whatever the size
    for names in graphs.all_names:  # fail on a missing tensor before any long step
        index.locate(names, names[0], "the bundle")
    with step(f"weights: decoder.onnx ({'int4 MatMulNBits as read' if quantize else 'fp32'})", 4, total):
        stats = fill_graph(tmp / DECODER, graphs.decoder_names, index, quantize=quantize, plan=plan)
        if quantize and stats.matmulnbits == 0:
            raise RuntimeError(f"int4: no MatMul of {DECODER} was quantized; export with --precision fp32 or report the graph")
        log.info("decoder.onnx: %d tensors, %d MatMulNBits, %.1f MB", stats.tensors, stats.matmulnbits, stats.bytes_written / 1e6)
    with step("weights: audio_projector.onnx (fp32)", 5, total):
        fill_graph(tmp / PROJECTOR, graphs.projector_names, index, quantize=False)
    tied = any(names == graphs.embed_names for names in graphs.decoder_names.values())  # the head reads the table
    with step("write embeddings" + (" (none: int4 rows of the tied head)" if tied and quantize else ""), 6, total):
        if not (tied and quantize):
            write_embeddings(index, graphs.embed_names, tmp, int8=quantize)
    return total, graphs.text, graphs.geometry, graphs.multiplier, tied


def export_bundle(
    checkpoint: Path,
    bundle: Path,
    precision: str = "int4",
    max_context: int = 8192,
    name: str | None = None,
    streamed: bool = True,
    plan: BlockPlan | None = None,
) -> Path:
    """The whole export; `bundle` is replaced only when every step succeeded (written to a sibling temp dir).

    streamed=True (the CLI's route) never holds more than one block of weights: see stream_export. streamed=False
    is the original load-everything-in-fp32 route, kept as the reference the streamed bundle is tested against.
    `plan`: int4 block size per MatMul (quantize.DEFAULT_PLAN unless given; README, "int4 block size"). A tied
    output head (Gemma's) is stored once: the engine reads the embedding rows from its int4 weight.
    """
    import torch
    import transformers

    from voiced.model.manifest import DecoderSpec, EmbeddingSpec, FileEntry, LayerKV, Manifest, ProjectorAudio, TokenizerSpec

    if precision not in ("int4", "fp32"):
        raise ValueError(f"precision {precision!r}: use int4 or fp32")
    plan = plan or DEFAULT_PLAN
    ck = inspect_checkpoint(Path(checkpoint))
    specials, stops, bos, eos = _special_tokens(ck)
    bundle = Path(bundle)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    route = _export_streamed if streamed else _export_in_memory
    with tempfile.TemporaryDirectory(prefix=bundle.name + ".", dir=bundle.parent) as tmp_s:
        tmp = Path(tmp_s)
        total, text, geometry, multiplier, tied = route(ck, tmp, precision, plan)
        if precision == "int4" and tied:
            emb_spec = tied_int4_embeddings(tmp / DECODER, text.vocab_size, text.hidden_size, multiplier)
        elif precision == "int4":
            emb_spec = EmbeddingSpec(file="embed_tokens.npy", dtype="int8", scale_file="embed_scales.npy", multiplier=multiplier)
        else:
            emb_spec = EmbeddingSpec(file="embed_tokens.npy", dtype="float32", multiplier=multiplier)
        add_logits_to_keep(tmp / DECODER)
        shutil.copyfile(ck.tokenizer_json, tmp / "tokenizer.json")
        (tmp / "chat_template.jinja").write_text(ck.chat_template)
        with step("manifest + hashes", total, total):
            files = {f.name: FileEntry(sha256=_sha256(f), bytes=f.stat().st_size) for f in sorted(tmp.iterdir()) if f.is_file()}
            manifest = Manifest(
                name=name or f"{ck.root.name}-{precision}",
                family="gemma4",
                description=f"{SUPPORTED_ARCH} exported by model_export.gemma4 ({precision})",
                source={
                    "checkpoint": str(ck.root),
                    "model_type": SUPPORTED_MODEL_TYPE,
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                },
                decoder=DecoderSpec(
                    file=DECODER,
                    input="inputs_embeds",
                    hidden_size=text.hidden_size,
                    vocab_size=text.vocab_size,
                    max_context=min(max_context, text.max_position_embeddings),
                    layers=[
                        LayerKV(kind=g.kind, kv_heads=g.kv_heads, head_dim=g.head_dim, window=g.window, shares_kv_with=g.shares_kv_with)
                        for g in geometry
                    ],
                    kv_dtype="float32",
                    hidden_output=HIDDEN_OUTPUT,
                    quantization=precision,
                    logit_softcap=text.final_logit_softcapping,
                ),
                embeddings=emb_spec,
                audio=ProjectorAudio(
                    file=PROJECTOR,
                    frame_samples=ck.config["audio_config"].get("audio_embed_dim", 640),
                    # processor_config's audio_seq_length (750 = 30 s); the unified processor does not enforce it
                    max_frames=int(_read_json(ck.root / "processor_config.json").get("audio_seq_length", 750)),
                    boa_id=ck.config["boa_token_id"],
                    eoa_id=ck.config["eoa_token_index"],
                    audio_token_id=ck.config["audio_token_id"],
                ),
                tokenizer=TokenizerSpec(bos_token=bos, eos_token=eos, stop_ids=stops, special_tokens=specials),
                files=files,
            )
            (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2))
        if bundle.exists():
            shutil.rmtree(bundle)
        tmp.rename(bundle)
        tmp.mkdir()  # TemporaryDirectory cleanup expects it
    bundle.chmod(0o755)  # mkdtemp made it private; a bundle is read by the daemon's user
    for f in bundle.iterdir():
        f.chmod(0o644)
    log.info("bundle written to %s", bundle)
    return bundle


def add_gemma4_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `gemma4` on model_export's CLI; the parser's `func` runs it."""
    p = subparsers.add_parser("gemma4", help="export a gemma4_unified checkpoint (Gemma 4 12B) to a voiced bundle")
    p.add_argument("checkpoint", type=Path, help="HF checkpoint folder (with --tiny: where the tiny checkpoint is written)")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to write (replaced)")
    p.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    p.add_argument("--max-context", type=int, default=8192, help="context the engine may allocate (tokens)")
    p.add_argument("--tiny", action="store_true", help="first write a tiny random-weight checkpoint of the same classes")
    p.add_argument("--seed", type=int, default=0, help="weights seed for --tiny")
    p.add_argument(
        "--blocks",
        type=BlockPlan.parse,
        default=None,
        help="int4 block plan: a block size, then name=size pairs (default 32,gate_proj=64,up_proj=64,down_proj=64: the MLP at 64; 32: uniform)",
    )
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    if args.tiny:
        from .tiny_gemma4 import build_tiny_checkpoint

        build_tiny_checkpoint(args.checkpoint, seed=args.seed)
    from .stream_export import MissingTensor

    try:
        export_bundle(args.checkpoint, args.output, precision=args.precision, max_context=args.max_context, plan=args.blocks)
    except (UnsupportedCheckpoint, MissingTensor) as e:
        log.error("%s", e)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m model_export")
    sub = parser.add_subparsers(dest="command", required=True)
    add_gemma4_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
