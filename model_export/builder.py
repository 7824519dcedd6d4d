"""HF folder -> voiced bundle through onnxruntime-genai's model builder (CPU, int4 MatMulNBits or fp32).

Why the builder: its graph (GroupQueryAttention, fused QKV, MatMulNBits) is the fastest measured here
(FACTS.md: 52 tok/s vs 30 for llama.cpp on the 0.5B), and its I/O names are the ones the engine reads.
It runs in a child process so its chatter goes to a log file and a crash in it reports cleanly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from model_export.bundle_writer import DECODER, write_bundle
from model_export.logits_keep import add_logits_to_keep
from model_export.quantize import DEFAULT_PLAN, BlockPlan, quantize_int4_wide
from voiced.model.catalog import EXPORTER_VERSION
from voiced.model.manifest import AsrAudio, Manifest, ProjectorAudio

Precision = Literal["int4", "fp32"]
Progress = Callable[[str], None]

# int4: MatMulNBits, symmetric, accuracy level 4 (int8 activations: the fast CPU kernel); block sizes per
# MatMul from a BlockPlan (quantize.DEFAULT_PLAN unless asked).
INT4_OPTIONS = {"block_size": "32", "is_symmetric": "1", "accuracy_level": "4"}


def _quiet(_: str) -> None:
    pass


def _wait(proc: subprocess.Popen, seconds: float) -> int | None:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _last_layer(log: Path, layers: int) -> str:
    """Where the builder is, read from its log ("layers.12" of 28), for a progress line on long exports."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "starting"
    found = re.findall(r"layers\.(\d+)", tail)
    phase = "quantising" if "quantiz" in tail else "building"
    return f"{phase} layer {min(int(found[-1]) + 1, layers)}/{layers}" if found else phase


def run_builder(
    hf_dir: Path,
    out_dir: Path,
    precision: Precision,
    log: Path,
    hidden_states: bool = True,
    progress: Progress | None = None,
    plan: BlockPlan = DEFAULT_PLAN,
) -> None:
    """`python -m onnxruntime_genai.models.builder` on a local HF folder; raises with the log's tail on failure.
    The builder takes one block size: the MatMuls a `plan` widens are left in fp32 by it (nodes_to_exclude) and
    quantized at the wide block afterwards, from the same full-precision weights."""
    say = progress or _quiet
    layers = int(json.loads((hf_dir / "config.json").read_text()).get("num_hidden_layers", 0))
    extra = {"filename": DECODER, **(INT4_OPTIONS if precision == "int4" else {})}
    wide: list[str] = []
    if precision == "int4":
        extra["block_size"] = str(plan.default)
        if not plan.uniform:
            # The builder's node names; a name that no node has is ignored by it, and quantize_int4_wide checks
            # that the plan matched something.
            wide = [f"/model/layers.{i}/{part}/{w}/MatMul" for i in range(layers) for part in ("mlp", "attn") for w in plan.wide]
            extra["nodes_to_exclude"] = ",".join(wide)
    if hidden_states:
        extra["include_hidden_states"] = "1"
    with tempfile.TemporaryDirectory(prefix="voiced-builder-cache-") as cache:
        cmd = [
            sys.executable, "-m", "onnxruntime_genai.models.builder",
            "-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c", cache,
            "--extra_options", *[f"{k}={v}" for k, v in extra.items()],
        ]  # fmt: skip
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            try:
                while (rc := _wait(proc, 15.0)) is None:
                    say(f"export + quantise: {time.monotonic() - t0:.0f} s, {_last_layer(log, layers)}")
            finally:  # interrupted: do not leave a builder holding gigabytes behind us
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    if rc != 0 or not (out_dir / DECODER).is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(
            f"onnxruntime-genai's model builder failed (exit {rc}); last lines of {log}:\n{tail}\n"
            "Fix: check that the export tools are installed (`pip install 'voiced[export]'`, incl. onnx-ir)."
        )
    if wide:
        say(f"quantise: the MatMuls of block plan {plan} at block {plan.wide_block}")
        n = quantize_int4_wide(out_dir / DECODER, plan, int(INT4_OPTIONS["accuracy_level"]))
        say(f"quantise: {n} MatMuls at block {plan.wide_block}")


def export_hf(
    hf_dir: Path,
    out_dir: Path,
    precision: Precision = "int4",
    progress: Progress | None = None,
    *,
    name: str | None = None,
    family: str | None = None,
    description: str = "",
    source: dict[str, str] | None = None,
    system_prompt: str | None = None,
    audio: AsrAudio | ProjectorAudio | None = None,
    extra_dirs: list[tuple[Path, str]] | None = None,
    hidden_states: bool = True,
    plan: BlockPlan | None = None,
) -> Manifest:
    """Export `hf_dir` into the bundle folder `out_dir` (created; must not hold another bundle)."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    plan = plan or DEFAULT_PLAN
    say = progress or _quiet
    config = json.loads((hf_dir / "config.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir.parent))
    log = out_dir.parent / f".{out_dir.name}.builder.log"  # kept only when the builder fails
    try:
        say(f"export + quantise: onnxruntime-genai builder, {precision}")
        run_builder(hf_dir, work, precision, log, hidden_states, say, plan)
        log.unlink(missing_ok=True)
        add_logits_to_keep(work / DECODER)
        say("hash: sha256 of every file")
        src = {"exporter": f"model_export {EXPORTER_VERSION}", "builder": _builder_version(), **(source or {})}
        if precision == "int4":
            src["int4_blocks"] = str(plan)
        return write_bundle(
            work,
            out_dir,
            name=name or hf_dir.name,
            family=family or config.get("model_type", "unknown"),
            precision=precision,
            description=description,
            source=src,
            system_prompt=system_prompt,
            audio=audio,
            extra_dirs=extra_dirs or [],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _builder_version() -> str:
    from importlib.metadata import version

    return f"onnxruntime-genai {version('onnxruntime-genai')}"
