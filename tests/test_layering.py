"""The package boundaries that the imports must keep: `protocol/` (what client authors take) imports nothing
from `voiced/` (the daemon), so a client needs neither the daemon's settings nor its dependencies."""

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
