"""The package boundaries that the imports must keep: `protocol/` (what client authors take) imports nothing
from `voiced/` (the daemon), so a client needs neither the daemon's settings nor its dependencies; and `voiced/`
imports nothing from `model_export` (the `export` extra's tools), which it only launches as a child process."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import protocol

ROOT = Path(__file__).resolve().parent.parent


def test_protocol_modules_exist_to_check() -> None:
    names = [m.name for m in pkgutil.iter_modules(protocol.__path__)]
    assert {"client", "messages", "framing", "cli"} <= set(names)


def test_protocol_imports_nothing_from_voiced() -> None:
    # a fresh interpreter: this test process has long since imported voiced
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import protocol\n"
        "for m in pkgutil.walk_packages(protocol.__path__, 'protocol.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps({'protocol': sorted(n for n in sys.modules if n.split('.')[0] == 'protocol'),\n"
        "                  'voiced': sorted(n for n in sys.modules if n.split('.')[0] == 'voiced')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "protocol.client" in loaded["protocol"] and "protocol.cli" in loaded["protocol"]
    assert loaded["voiced"] == [], f"protocol/ pulled in {loaded['voiced']}: move that code into voiced/"


def _voiced_sources() -> list[Path]:
    return sorted((ROOT / "voiced").rglob("*.py"))


def test_the_front_end_rate_is_defined_once() -> None:
    import ast

    from voiced.audio import RATE
    from voiced.config import AudioSettings

    home = ROOT / "voiced" / "audio" / "__init__.py"
    again = []
    for path in _voiced_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Constant) and value.value == RATE and path != home:
                again.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert again == [], f"16 kHz defined again at {again}: import RATE from voiced.audio instead"
    # the setting is a Literal (a type cannot name a variable), so it is checked to agree
    assert AudioSettings().sample_rate == RATE


def test_voiced_imports_nothing_from_model_export() -> None:
    import ast

    found = []
    for path in _voiced_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n.split(".")[0] == "model_export" for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    # `python -m model_export ...` in voiced/model/store.py is a child process's command line, not an import
    assert found == [], f"voiced/ imports model_export at {found}: move what it needs into voiced/model/catalog.py"


def test_the_catalog_and_cache_keys_load_without_model_export() -> None:
    code = (
        "import json, sys\n"
        "from voiced.audio import assets\n"
        "from voiced.model import store\n"
        "key = store.expected_key('default')\n"
        "print(json.dumps({'key': key, 'loaded': sorted(n for n in sys.modules if n.split('.')[0] == 'model_export')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["key"] and len(result["key"]) == 16
    assert result["loaded"] == [], f"computing a cache key pulled in {result['loaded']}"
