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
