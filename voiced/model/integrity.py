"""Bundle file checks: hashes recorded at export time against what is on disk now.

Why two depths: a full sha256 of the decoder weights (0.5-1.5 GB) costs one to a few seconds of a core, too
much for every daemon start on 2 shared cores. The quick check hashes every file under QUICK_HASH_BYTES
(tokenizer, chat template, graph, configs: milliseconds) and checks the size of the big weight files; that
catches truncated copies, interrupted preparations and any edit of the small files. `voiced model verify`
(full=True) hashes everything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from voiced.errors import VoicedError
from voiced.model.manifest import Manifest

MANIFEST = "manifest.json"
_CHUNK = 1 << 20
QUICK_HASH_BYTES = 32 << 20  # files up to this size are hashed even by the quick check


class BundleIntegrityError(VoicedError):
    """A bundle whose files do not match its manifest; the message names the files and the fix."""

    def __init__(self, bundle: Path, problems: list[str], name: str | None = None):
        self.bundle = Path(bundle)
        self.problems = list(problems)
        target = name or str(self.bundle)
        super().__init__(
            f"bundle {self.bundle} is damaged: "
            + "; ".join(self.problems)
            + f". Fix: rebuild it with `voiced model prepare {target} --force`"
        )


def hash_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large decoders do not sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle: Path) -> Manifest:
    return Manifest.model_validate_json((Path(bundle) / MANIFEST).read_text())


def verify_bundle(bundle: Path, full: bool = False) -> list[str]:
    """Problems found, one line per bad file ([] = sound). `full` re-hashes every file; else small ones only."""
    bundle = Path(bundle)
    if not (bundle / MANIFEST).is_file():
        return [f"{MANIFEST} is missing"]
    try:
        manifest = load_manifest(bundle)
    except Exception as e:  # a manifest that does not parse is a damaged bundle, not a crash
        return [f"{MANIFEST} does not parse ({type(e).__name__}: {str(e).splitlines()[0]})"]
    if not manifest.files:
        return [f"{MANIFEST} lists no files"]
    problems: list[str] = []
    for rel, entry in sorted(manifest.files.items()):
        path = bundle / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = path.stat().st_size
        if size != entry.bytes:
            problems.append(f"{rel} has {size} bytes, manifest says {entry.bytes}")
        elif (full or size <= QUICK_HASH_BYTES) and hash_file(path) != entry.sha256:
            problems.append(f"{rel} sha256 does not match the manifest")
    return problems


def check_bundle(bundle: Path, full: bool = False, name: str | None = None) -> Manifest:
    """verify_bundle, raising BundleIntegrityError on any problem; returns the parsed manifest."""
    problems = verify_bundle(bundle, full=full)
    if problems:
        raise BundleIntegrityError(bundle, problems, name)
    return load_manifest(bundle)
