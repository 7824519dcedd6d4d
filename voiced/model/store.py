"""The bundle cache: `voiced model prepare|list|verify|remove`, and finding a bundle by name or path.

Why a child process for preparation: exporting needs torch and transformers (the `export` extra); the daemon
must never import them, and a crash or OOM in the exporter must not take the daemon down. The child may run in
another environment (`.venv-build`, see `export_python`), so the runtime venv never carries the export tools. Why write-then-
rename: an interrupted preparation leaves only a hidden temp folder (cleaned up next time), never a half
bundle under the real name.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NotRequired, TypedDict

from voiced.config import Settings, cache_home
from voiced.errors import VoicedError
from voiced.model.catalog import ALIASES, CANDIDATES, canonical, expected_key, preparable_names
from voiced.model.integrity import MANIFEST, BundleIntegrityError, check_bundle, load_manifest, verify_bundle

EXPORT_MODULES = ("torch", "transformers", "onnxruntime_genai", "onnx", "gguf", "accelerate")


class PrepareError(VoicedError, RuntimeError):
    pass


class PrepareStats(TypedDict):
    """What a preparation records beside the bundle (`.NAME.stats.json`)."""

    seconds: float
    key: str | None


class BundleRow(TypedDict):
    """One line of `voiced model list`."""

    name: str
    path: str
    bytes: int
    status: str
    quantization: NotRequired[str]
    description: NotRequired[str]


def models_dir() -> Path:
    return cache_home() / "models"


def _is_path(name_or_path: str | Path) -> bool:
    s = str(name_or_path)
    return isinstance(name_or_path, Path) or "/" in s or s.startswith(".") or s.startswith("~")


def bundle_dir(name_or_path: str | Path) -> Path:
    """Where a bundle lives: a directory path as given, or the cache folder of a (possibly aliased) name."""
    if _is_path(name_or_path):
        return Path(name_or_path).expanduser().resolve()
    return models_dir() / canonical(str(name_or_path))


def is_current(path: Path, name: str) -> bool:
    """A prepared bundle is current when it passes the quick check and was built from today's pinned inputs."""
    if verify_bundle(path, full=False):
        return False
    key = expected_key(name)
    return key is None or load_manifest(path).source.get("key") == key


def missing_export_tools() -> list[str]:
    def absent(mod: str) -> bool:
        try:
            return importlib.util.find_spec(mod) is None
        except (ImportError, ValueError):
            return True

    return [m for m in EXPORT_MODULES if absent(m)]


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """One preparation per name at a time, across processes (tests in parallel, `serve` and `prepare`)."""
    models_dir().mkdir(parents=True, exist_ok=True)
    with open(models_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(name: str, force: bool = False, progress: bool = True) -> Path:
    """Build `name` into the cache unless a current copy is there; returns its folder."""
    real = canonical(name)
    final = bundle_dir(real)
    with _lock(real):
        if not force and final.is_dir() and is_current(final, real):
            return final
        if expected_key(real) is None:
            raise PrepareError(f"no bundle named {name!r} can be prepared; preparable names: {preparable_names()}")
        python = export_python(missing_export_tools(), _checkout(), name, progress)
        for stale in models_dir().glob(f".{real}.tmp-*"):  # left by an interrupted run
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{real}.tmp-", dir=models_dir()))
        t0 = time.monotonic()
        try:
            cmd = [python, "-m", "model_export", "default", real, "-o", str(tmp / real)]
            out = None if progress else subprocess.DEVNULL
            rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=out, env=_child_env()).returncode
            if rc != 0 or not (tmp / real / MANIFEST).is_file():
                raise PrepareError(
                    f"preparing {name!r} failed (exit {rc}); see the messages above. "
                    f"Fix the cause, then run `voiced model prepare {name} --force`."
                )
            if final.exists():
                shutil.rmtree(final)
            (tmp / real).rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.monotonic() - t0
        record: PrepareStats = {"seconds": round(seconds, 1), "key": expected_key(real)}
        _stats_path(real).write_text(json.dumps(record))
        if progress:
            print(f"voiced: bundle {real} prepared in {seconds:.0f} s -> {final}", file=sys.stderr)
        return final


def _checkout() -> Path:
    return Path(__file__).resolve().parents[2]


def export_python(missing: list[str], root: Path, name: str = "default", progress: bool = True) -> str:
    """The interpreter that runs the export: this one when it has the export tools (a test or build set-up),
    else the checkout's separate build environment, made on demand by `scripts/setup.sh build` (the runtime
    .venv of `make run` stays free of torch and transformers)."""
    if not missing:
        return sys.executable
    setup = root / "scripts" / "setup.sh"
    if not setup.is_file():
        raise PrepareError(
            f"preparing {name!r} needs the export tools, missing here: {', '.join(missing)}. "
            "Fix: `pip install 'voiced[export]'` in an environment of its own and run `voiced model prepare` there."
        )
    out = None if progress else subprocess.DEVNULL
    rc = subprocess.run([str(setup), "build"], cwd=root, stdout=out, stderr=out).returncode
    python = root / ".venv-build" / "bin" / "python"
    if rc != 0 or not python.is_file():
        raise PrepareError(
            f"setting up the export tools in {root / '.venv-build'} failed (exit {rc}); see the messages above. "
            f"Fix the cause (disk space? PyPI reachable?), then run `{setup} build` and `voiced model prepare {name}`."
        )
    return str(python)


def _stats_path(name: str) -> Path:
    return models_dir() / f".{canonical(name)}.stats.json"


def stats(name: str) -> PrepareStats | None:
    """What the last preparation of `name` recorded (its wall time), for the benchmark's cold figure."""
    try:
        record: PrepareStats = json.loads(_stats_path(name).read_text())
    except (OSError, ValueError):
        return None
    return record


def _child_env() -> dict[str, str]:
    """The child must import model_export from the same tree as this voiced (an uninstalled checkout too)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ensure_prepared(name: str, progress: bool = True) -> Path:
    """The bundle folder for `name` (a cache name, an alias or a path), prepared if needed and quick-checked.

    A path is never rebuilt: a damaged one raises BundleIntegrityError naming the file and the fix."""
    if _is_path(name):
        path = bundle_dir(name)
        check_bundle(path, full=False, name=str(path))
        _prepare_frontend(progress=progress)
        return path
    path = prepare(name, progress=progress)
    check_bundle(path, full=False, name=name)
    _prepare_frontend(progress=progress)
    return path


def _prepare_frontend(force: bool = False, progress: bool = True) -> None:
    """The audio front end's model files (Silero VAD, Smart Turn) come with every bundle preparation."""
    from voiced.audio import assets

    for name in assets.MODELS:
        assets.prepare_model(name, force=force, progress=(lambda msg: print(f"voiced: {msg}", file=sys.stderr)) if progress else None)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_bundles() -> list[BundleRow]:
    rows: list[BundleRow] = []
    if models_dir().is_dir():
        for d in sorted(models_dir().iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            row: BundleRow = {"name": d.name, "path": str(d), "bytes": _size(d), "status": ""}
            try:
                m = load_manifest(d)
                row["quantization"], row["description"] = m.decoder.quantization, m.description
                row["status"] = "ok" if is_current(d, d.name) else "stale or damaged (voiced model verify)"
            except Exception:
                row["status"] = "no valid manifest (remove it, or prepare again with --force)"
            rows.append(row)
    return rows


def describe_brain(settings: Settings) -> str:
    """Which model answers, in one line (`voiced model list`; `voiced config` shows the brain.* keys)."""
    b = settings.brain
    if b.kind == "server":
        name = b.model or "the only model it serves"
        return f"model server {b.url} ({name}, sends {b.send}); model.bundle {settings.model.bundle!r} gives the recogniser and prompt"
    return f"voiced's own engine on model.bundle {settings.model.bundle!r}"


def command(args: argparse.Namespace, settings: Settings) -> int:
    action = args.model_command
    if action == "prepare":
        from voiced.audio import assets

        try:
            if args.name in assets.MODELS:  # one front-end model file alone: `voiced model prepare smart-turn`
                print(assets.prepare_model(args.name, force=args.force))
                return 0
            path = prepare(args.name, force=args.force)
            check_bundle(path, full=False, name=args.name)
            _prepare_frontend(force=args.force)
        except (PrepareError, BundleIntegrityError) as e:
            print(f"voiced: {e}", file=sys.stderr)
            return 1
        print(path)
        return 0
    if action == "list":
        print(f"brain: {describe_brain(settings)}")
        rows = list_bundles()
        for r in rows:
            print(f"{r['name']:<20} {r['bytes'] / 1e6:>8.0f} MB  {r.get('quantization', '?'):<5} {r['status']}")
        prepared = {r["name"] for r in rows}
        for n in sorted(CANDIDATES):
            if n not in prepared:
                print(f"{n:<20} {'-':>8}     {'':<5} not prepared (voiced model prepare {n})")
        for alias, target in sorted(ALIASES.items()):
            print(f"{alias:<20} -> {target}")
        return 0
    if action == "verify":
        path = bundle_dir(args.name)
        t0 = time.monotonic()
        problems = verify_bundle(path, full=True)
        if problems:
            print(f"voiced: {BundleIntegrityError(path, problems, args.name)}", file=sys.stderr)
            return 1
        print(f"{path}: every file matches its sha256 ({time.monotonic() - t0:.1f} s)")
        return 0
    if action == "remove":
        if _is_path(args.name):
            print("voiced: `remove` takes a bundle name from `voiced model list`, not a path", file=sys.stderr)
            return 2
        path = bundle_dir(args.name)
        if not path.is_dir():
            print(f"voiced: no bundle named {args.name!r} in {models_dir()} (see `voiced model list`)", file=sys.stderr)
            return 1
        shutil.rmtree(path)
        print(f"removed {path}")
        return 0
    raise AssertionError(action)
