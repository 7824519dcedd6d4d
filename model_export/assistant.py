"""`python -m model_export gemma4-assistant ASSISTANT_DIR -o BUNDLE_DIR`: Gemma 4's MTP drafter -> drafter.onnx.

transformers' gemma4_unified_assistant is a small decoder with no KV cache of its own: each layer attends to the
target's KV of the last target layer of its own type (sliding / full), its input is the target's embedding of
the last token joined to the target's last hidden state (pre_projection), its output state goes back to the
target's width (post_projection) for the next draft step, and its head is tied to its own embedding table. Every
draft step runs at the position of the last token (SinglePositionMultiTokenCandidateGenerator).

The graph wraps transformers' own forward (weights and numerics theirs); the contract is OnnxDrafter's
(voiced/model/speculative.py): inputs `inputs_embeds` [1,1,2H], `position_ids` [1,1], `kv.{i}.key|value` for the
target layers it reads (sliding: at most window-1 rows, the engine's rule); outputs `logits`, `hidden_out`.
The bundle's manifest gets a `drafter` entry and its file hashes are refreshed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DRAFTER = "drafter.onnx"
OPSET = 17


def tiny_assistant_config(manifest, hidden: int = 32) -> dict:
    """A random assistant's text config for a target bundle: 1 sliding + 1 full layer with the attention
    geometry of the target layers it reads (their KV is its KV), everything else small."""
    reads = reads_layers(manifest)
    layers = manifest.decoder.layers
    sl, fu = layers[reads["sliding_attention"]], layers[reads["full_attention"]]
    return dict(
        model_type="gemma4_unified_text",
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=sl.kv_heads, head_dim=sl.head_dim,
        global_head_dim=fu.head_dim, num_global_key_value_heads=fu.kv_heads, attention_k_eq_v=True,
        sliding_window=sl.window, vocab_size=manifest.decoder.vocab_size, pad_token_id=0,
        final_logit_softcapping=manifest.decoder.logit_softcap,
    )  # fmt: skip


def build_tiny_assistant(out_dir: Path, manifest, seed: int = 0) -> Path:
    """A random Gemma4UnifiedAssistantForCausalLM sized for a target bundle (tests, `--tiny`)."""
    import torch
    from transformers import Gemma4UnifiedAssistantConfig, Gemma4UnifiedAssistantForCausalLM

    cfg = Gemma4UnifiedAssistantConfig(text_config=tiny_assistant_config(manifest), backbone_hidden_size=manifest.decoder.hidden_size)
    torch.manual_seed(seed)
    with _all_shared_kv_fix():
        model = Gemma4UnifiedAssistantForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.ndim == 2:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    model.save_pretrained(out_dir)
    return Path(out_dir)


@contextmanager
def _all_shared_kv_fix() -> Iterator[None]:
    """transformers 5.23 cannot build an assistant: its config makes every layer a KV consumer
    (num_kv_shared_layers = num_hidden_layers), and Gemma4UnifiedTextConfig.kv_sharing_modes then raises
    "The set of layer types producing a cache is different ..." because no layer produces. Every layer of an
    assistant reuses the target's KV, so while the model is built that property answers "reuse" for all layers."""
    from transformers import Gemma4UnifiedTextConfig

    original = Gemma4UnifiedTextConfig.kv_sharing_modes

    def modes(self):
        if self.num_kv_shared_layers and self.num_kv_shared_layers >= self.num_hidden_layers:
            return ["reuse"] * self.num_hidden_layers
        return original.fget(self)

    Gemma4UnifiedTextConfig.kv_sharing_modes = property(modes)
    try:
        yield
    finally:
        Gemma4UnifiedTextConfig.kv_sharing_modes = original


def load_assistant(path: Path):
    import torch
    from transformers import Gemma4UnifiedAssistantForCausalLM

    with _all_shared_kv_fix():
        return Gemma4UnifiedAssistantForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def assistant_step(model, reads: dict[str, int]):
    """Wrap transformers' assistant forward with explicit KV inputs (order: sliding key, value, full key, value)."""
    import torch
    from torch import nn

    class AssistantStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.types = list(reads)

        def _masked_logits(self, hidden: torch.Tensor) -> torch.Tensor:
            """transformers' centroid-masked head with its fill value kept in the graph (their `.item()` would
            freeze one trace-time number into the graph)."""
            me = self.model.masked_embedding
            centroid_logits = me.centroids(hidden)
            _, top = torch.topk(centroid_logits, k=me.centroid_intermediate_top_k, dim=-1)
            per = me.token_ordering.long().view(me.num_centroids, me.vocab_size_per_centroid)
            sel = per[top]
            emb = self.model.lm_head.weight[sel.reshape(-1)].view(1, 1, -1, me.hidden_size)
            logits = (hidden.unsqueeze(-2) @ emb.transpose(-1, -2)).squeeze(-2)
            out = torch.zeros(1, 1, me.vocab_size, dtype=hidden.dtype) + (logits.min() - 1.0)
            return out.scatter(-1, sel.view(1, 1, -1), logits)

        def forward(self, inputs_embeds, position_ids, *kv):
            shared = {t: (kv[2 * j], kv[2 * j + 1]) for j, t in enumerate(self.types)}
            m = self.model
            x = m.pre_projection(inputs_embeds)
            # masks: every row given is visible (the sliding rows are already the window), as transformers' bidirectional
            # masks with no padding; a dict skips mask building (its packed-sequence probe does not export)
            masks = {"full_attention": None, "sliding_attention": None}
            out = m.model(inputs_embeds=x, position_ids=position_ids, attention_mask=masks, shared_kv_states=shared, use_cache=False)
            h = out.last_hidden_state
            logits = self._masked_logits(h) if m.config.use_ordered_embeddings else m.lm_head(h)
            return logits, m.post_projection(h)

    return AssistantStep().eval()


def reads_layers(bundle_manifest) -> dict[str, int]:
    """The target layers an assistant reads: the last cached layer of each attention type."""
    out: dict[str, int] = {}
    for i, layer in enumerate(bundle_manifest.decoder.layers):
        if layer.shares_kv_with is None:
            out["sliding_attention" if layer.kind == "sliding" else "full_attention"] = i
    return out


def export_drafter(model, manifest, path: Path) -> dict[str, int]:
    """Trace the assistant into `path` (fp32). Returns {attention type: target layer} it reads."""
    import torch

    from model_export.gemma4 import _quiet_tracer, _to_external_data

    reads = reads_layers(manifest)
    model.config._attn_implementation = "eager"  # SDPA with GQA has no ONNX symbolic; eager is the same math
    model.model.config._attn_implementation = "eager"
    step = assistant_step(model, reads)
    layers = manifest.decoder.layers
    inputs, axes, example = (
        ["inputs_embeds", "position_ids"],
        {},
        [torch.randn(1, 1, 2 * manifest.decoder.hidden_size), torch.tensor([[9]])],
    )
    for n, (t, i) in enumerate(reads.items()):
        g = layers[i]
        rows = 7 + 2 * n  # distinct per input so no two dynamic lengths fold into one
        for w in ("key", "value"):
            name = f"kv.{i}.{w}"
            inputs.append(name)
            axes[name] = {2: f"rows_{i}"}
            example.append(torch.randn(1, g.kv_heads, rows, g.head_dim))
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(step, tuple(example), str(path), input_names=inputs, output_names=["logits", "hidden_out"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)  # fmt: skip
    _to_external_data(path)
    return reads


def add_drafter(assistant_dir: Path, bundle: Path, precision: str = "int4", progress=print) -> Path:
    """Export the assistant at `assistant_dir` into `bundle` as drafter.onnx and record it in the manifest."""
    import torch
    import transformers

    from model_export.bundle_writer import file_entries
    from model_export.quantize import quantize_int4
    from voiced.model.manifest import DrafterSpec, Manifest

    bundle = Path(bundle)
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_text())
    model = load_assistant(assistant_dir)
    if model.config.backbone_hidden_size != manifest.decoder.hidden_size:
        raise SystemExit(
            f"assistant {assistant_dir} was trained for a target of width {model.config.backbone_hidden_size}, but "
            f"{bundle} has {manifest.decoder.hidden_size}. Fix: export the assistant made for this model"
        )
    with tempfile.TemporaryDirectory(prefix="voiced-drafter-") as tmp:
        out = Path(tmp) / DRAFTER
        progress("tracing the assistant into drafter.onnx")
        reads = export_drafter(model, manifest, out)
        if precision == "int4":
            progress("int4 MatMulNBits")
            quantize_int4(out, out)
        for f in bundle.glob(DRAFTER + "*"):
            f.unlink()
        for f in Path(tmp).iterdir():
            shutil.copy2(f, bundle / f.name)
    manifest.drafter = DrafterSpec(
        file=DRAFTER,
        reads_layers=sorted(reads.values()),
        hidden_size=manifest.decoder.hidden_size,
        source={
            "checkpoint": str(assistant_dir),
            "model_type": "gemma4_unified_assistant",
            "precision": precision,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },  # fmt: skip
    )
    manifest.files = {}
    (bundle / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    manifest.files = {k: v for k, v in file_entries(bundle).items() if k != "manifest.json"}
    (bundle / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    for f in bundle.iterdir():
        f.chmod(0o644)
    return bundle


def add_assistant_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gemma4-assistant", help="Gemma 4's MTP assistant -> drafter.onnx in a gemma4 bundle")
    p.add_argument("assistant", type=Path, help="gemma4_unified_assistant checkpoint folder (with --tiny: written here)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the gemma4 bundle to add the drafter to")
    p.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    p.add_argument("--tiny", action="store_true", help="first write a random assistant of the real classes, sized for the bundle")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from model_export.progress import printer
    from voiced.model.manifest import Manifest

    say = printer("gemma4-assistant")

    if not (args.output / "manifest.json").is_file():
        raise SystemExit(
            f"{args.output} is not a bundle (no manifest.json). Fix: export the target first (`python -m model_export gemma4 ...`)"
        )
    if args.tiny:
        say(f"random assistant -> {args.assistant}")
        build_tiny_assistant(args.assistant, Manifest.model_validate_json((args.output / "manifest.json").read_text()), seed=args.seed)
    add_drafter(args.assistant, args.output, args.precision, say)
    print(args.output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export")
    add_assistant_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
