"""`voiced model list|verify|remove|prepare` and the integrity checks, on private copies of the tiny bundle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.bundles import tiny_bundle
from voiced.cli import main
from voiced.model import store
from voiced.model.catalog import ALIASES, CANDIDATES, resolve
from voiced.model.integrity import BundleIntegrityError, check_bundle, hash_file, load_manifest, verify_bundle


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $XDG_CACHE_HOME holding one bundle named tiny-qwen2 (the tiny bundle is built before the switch)."""
    src = tiny_bundle("int4")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dst = store.models_dir() / "tiny-qwen2"
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, data: bytes) -> None:
    """Replace a file's content with a new inode, so a hard-linked original is never touched."""
    path.unlink()
    path.write_bytes(data)


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    _rewrite(path, bytes(data))


def test_bundle_dir_resolves_names_aliases_and_paths(cache: Path) -> None:
    assert store.bundle_dir("tiny-qwen2") == cache
    assert store.bundle_dir("default") == store.models_dir() / ALIASES["default"]
    assert store.bundle_dir(str(cache)) == cache.resolve()
    assert store.ensure_prepared(str(cache)) == cache.resolve()  # a path is checked, never rebuilt


def test_list_verify_remove(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-qwen2" in out and " ok" in out
    assert all(name in out for name in CANDIDATES)  # preparable ones are listed even when not prepared
    (store.models_dir() / ".tiny-qwen2.tmp-abc").mkdir()  # an interrupted preparation is not a bundle
    assert main(["model", "list"]) == 0
    assert ".tmp" not in capsys.readouterr().out

    assert main(["model", "verify", "tiny-qwen2"]) == 0
    assert "matches" in capsys.readouterr().out

    assert main(["model", "remove", "tiny-qwen2"]) == 0
    assert not cache.exists()
    assert main(["model", "remove", "tiny-qwen2"]) == 1
    assert "no bundle named" in capsys.readouterr().err


def test_corrupted_tokenizer_fails_loudly_even_on_the_quick_check(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = cache / "tokenizer.json"
    _rewrite(tok, tok.read_bytes().replace(b"capital", b"capitol", 1))
    problems = verify_bundle(cache, full=False)
    assert problems == ["tokenizer.json sha256 does not match the manifest"]
    with pytest.raises(BundleIntegrityError) as e:
        store.ensure_prepared(str(cache))
    assert "tokenizer.json" in str(e.value) and "voiced model prepare" in str(e.value) and "--force" in str(e.value)
    assert main(["model", "verify", "tiny-qwen2"]) == 1
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "voiced model prepare tiny-qwen2 --force" in err


def test_corrupted_decoder_weights(cache: Path) -> None:
    data = cache / "decoder.onnx.data"
    _flip_byte(data, data.stat().st_size // 2)
    # same size: the quick check hashes only small files, the full one finds it
    assert [p for p in verify_bundle(cache, full=True) if "decoder.onnx.data" in p] == [
        "decoder.onnx.data sha256 does not match the manifest"
    ]
    size = data.stat().st_size
    _rewrite(data, data.read_bytes()[:-100])
    assert verify_bundle(cache, full=False) == [f"decoder.onnx.data has {size - 100} bytes, manifest says {size}"]


def test_corrupted_graph_and_missing_files(cache: Path) -> None:
    _flip_byte(cache / "decoder.onnx", 100)
    assert verify_bundle(cache, full=False) == ["decoder.onnx sha256 does not match the manifest"]
    (cache / "chat_template.jinja").unlink()
    assert "chat_template.jinja is missing" in verify_bundle(cache, full=False)
    (cache / "manifest.json").write_text("{not json")
    assert verify_bundle(cache)[0].startswith("manifest.json does not parse")
    (cache / "manifest.json").unlink()
    with pytest.raises(BundleIntegrityError, match="manifest.json is missing"):
        check_bundle(cache)


def test_manifest_hashes_are_the_files_hashes(cache: Path) -> None:
    m = load_manifest(cache)
    on_disk = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(m.files) == on_disk
    for rel, entry in m.files.items():
        assert hash_file(cache / rel) == entry.sha256
        assert (cache / rel).stat().st_size == entry.bytes


def test_unknown_name_is_refused_with_the_known_names(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "prepare", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "no-such-model" in err and "qwen2.5-0.5b" in err and "default" in err
    with pytest.raises(KeyError, match="preparable names"):
        resolve("no-such-model")
    assert not any(p.name.startswith(".no-such-model.tmp") for p in store.models_dir().iterdir())


def test_cache_key_follows_package_versions_and_exporter() -> None:
    from dataclasses import replace

    c = resolve("default")
    assert c.name == ALIASES["default"]
    assert c.key("2", "int4") == c.key("2", "int4")
    assert c.key("2", "int4") != c.key("3", "int4")
    assert c.key("2", "int4") != c.key("2", "fp32")
    bumped = replace(c, gguf_parts=(replace(c.gguf_parts[0], version="9.9.9"), *c.gguf_parts[1:]))
    assert bumped.key("2", "int4") != c.key("2", "int4")


def _root_with_setup(tmp_path: Path) -> Path:
    """A checkout's two files that `scripts/setup.sh build` reads, copied: the real script runs on them."""
    import shutil

    repo = Path(__file__).parents[1]
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(repo / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy2(repo / "pyproject.toml", root / "pyproject.toml")
    return root


def test_export_runs_here_when_the_tools_are_here(tmp_path: Path) -> None:
    import sys

    assert store.export_python([], tmp_path) == sys.executable


def test_an_install_without_a_checkout_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(store.PrepareError, match=r"missing here: torch, transformers.*pip install 'voiced\[export\]'"):
        store.export_python(["torch", "transformers"], tmp_path)


def test_a_checkout_exports_in_its_build_environment(tmp_path: Path) -> None:
    """The runtime venv lacks the tools: `scripts/setup.sh build` (here finding its environment made and stamped,
    so a no-op) gives the interpreter that exports."""
    import hashlib
    import sys

    root = _root_with_setup(tmp_path)
    venv = root / ".venv-build"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / f".voiced-setup-{digest}-export").touch()
    assert store.export_python(["torch"], root, progress=False) == str(venv / "bin" / "python")


def test_a_failed_build_environment_names_the_fix(tmp_path: Path) -> None:
    root = _root_with_setup(tmp_path)
    (root / "pyproject.toml").unlink()  # the script cannot even compute its stamp
    with pytest.raises(store.PrepareError, match=r"\.venv-build failed \(exit [1-9]\d*\).*setup\.sh build"):
        store.export_python(["torch"], root, progress=False)


def test_setup_plans_a_runtime_venv_without_the_export_tools() -> None:
    import subprocess

    setup = Path(__file__).parents[1] / "scripts" / "setup.sh"
    plans = {
        m: subprocess.run([str(setup), "--plan", m], capture_output=True, text=True, check=True).stdout.splitlines()
        for m in ("run", "test", "build")
    }
    assert plans["run"] == ["venv=.venv", "pip install -e ."]
    assert plans["test"] == ["venv=.venv", "pip install -e .[export,dev]"]
    assert plans["build"] == ["venv=.venv-build", "pip install -e .[export]"]


def test_export_tools_are_present_here() -> None:
    # the daemon checks for these before spawning the exporter; the dev venv carries them all
    assert store.missing_export_tools() == []
    assert os.environ.get("XDG_CONFIG_HOME")  # conftest isolates the config
