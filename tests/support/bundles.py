"""Bundles for tests, built once and cached under $XDG_CACHE_HOME/voiced/test-cache/<key-with-versions>.

Why a cache keyed on versions: the tiny bundle takes ~10 s of builder time and the default bundle minutes;
a key that includes the exporter, builder and package versions rebuilds exactly when the output could change.
Builds go into a temp folder renamed at the end, so a killed test run never leaves a half bundle behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from voiced.config import cache_home

REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    d = cache_home() / "test-cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


cache_dir.__test__ = False  # type: ignore[attr-defined]  # never collected, whatever name it is imported as
test_cache = cache_dir  # the older name, imported by tests/support/turn.py


def _exporter_version() -> str:
    from voiced.model.catalog import EXPORTER_VERSION

    return EXPORTER_VERSION


def tiny_bundle(precision: str = "int4", layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A random-weight tiny Qwen2 bundle made by the real builder route (`python -m model_export tiny-qwen2`)."""
    key = (
        f"tiny-qwen2-{precision}-l{layers}-h{hidden}-s{seed}-x{_exporter_version()}"
        f"-genai{version('onnxruntime-genai')}-tf{version('transformers')}"
    )
    out = cache_dir() / key
    if (out / "manifest.json").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir()))
    try:
        subprocess.run(
            [sys.executable, "-m", "model_export", "tiny-qwen2", "-o", str(tmp / "b"), "--precision", precision,
             "--layers", str(layers), "--hidden", str(hidden), "--seed", str(seed), "--force"],
            check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            (tmp / "b").rename(out)
        except OSError:  # another worker won the race: its bundle is as good as ours
            if not (out / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bundle_copy(src: Path, dst: Path) -> Path:
    """A private copy of a cached bundle, for tests that damage or modify files."""
    shutil.copytree(src, dst)
    return dst


def default_bundle(name: str = "default") -> Path:
    """The prepared default bundle (prepared on first use through the same path `voiced serve` takes)."""
    from voiced.model.store import ensure_prepared

    return ensure_prepared(name, progress=True)
