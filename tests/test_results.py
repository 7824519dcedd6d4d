"""benchmarks/RESULTS.md is generated from benchmarks/results/*.json: it must be current, and a saved benchmark
output keeps its date, machine and command."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import results  # noqa: E402  (benchmarks/ is scripts, not a package)


def test_results_md_is_current() -> None:
    assert results.RESULTS_MD.read_text() == results.render(), "benchmarks/RESULTS.md is stale: run `python benchmarks/results.py`"


def test_every_result_says_when_where_and_how() -> None:
    for r in results.load_all():
        assert r["command"].split()[0].endswith("python") or r["command"].startswith("benchmarks/"), r["_file"]
        assert date.fromisoformat(r["date"]) and "cores" in r["machine"], r["_file"]
        assert r.get("provenance"), r["_file"]


def test_save_keeps_the_output_with_date_and_machine(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text(json.dumps({"espeak": {"first_chunk_ms_median": 1.25, "rtf_median": 0.0026}, "clauses": 4}))
    d = tmp_path / "results"
    path = results.save(out, "Speech synthesis", ".venv/bin/python benchmarks/tts.py", None, d)
    saved = json.loads(path.read_text())
    assert path.name == f"{date.today().isoformat()}-tts.json" and saved["benchmark"] == "tts"
    assert saved["date"] == date.today().isoformat() and f"{__import__('os').cpu_count()} cores" in saved["machine"]
    text = results.render(d)
    assert "| espeak.first_chunk_ms_median | 1.25 |" in text and "| clauses | 4 |" in text
    assert "`.venv/bin/python benchmarks/tts.py`" in text and "(quoted)" not in text
    again = results.save(out, "Speech synthesis", ".venv/bin/python benchmarks/tts.py", None, d)
    assert again != path, "a second run the same day is kept beside the first"


def test_a_result_without_its_date_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"title": "t", "command": "c", "machine": "m", "figures": []}))
    r = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import results; results.load_all(__import__('pathlib').Path({str(tmp_path)!r}))"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "date" in r.stderr
