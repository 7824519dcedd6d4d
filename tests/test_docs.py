"""The user docs stay true to the code: the README's example config loads, its commands exist, its links lead
somewhere, and it stays short enough to read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from voiced.cli import build_parser
from voiced.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_for_reading() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_readme_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    path = tmp_path / "config.toml"
    path.write_text(blocks[0])
    settings, origin = load_settings(path)
    assert settings.activation.mode == "wake" and origin[("server", "wyoming")] == str(path)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_lead_somewhere(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
        if target.startswith("http"):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def test_readme_commands_exist() -> None:
    parser = build_parser()
    text = (ROOT / "README.md").read_text()
    for line in re.findall(r"^ {4}(?:\.venv/bin/)?voiced (.+?)(?:\s{2,}#.*)?$", text, re.M):
        args = [a for a in shlex.split(line) if not a.startswith("$")]
        try:
            parser.parse_args([a.replace("NAME", "default") for a in args])
        except SystemExit as e:
            raise AssertionError(f"README shows `voiced {line}`, which the CLI refuses") from e
