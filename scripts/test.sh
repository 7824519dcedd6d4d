#!/usr/bin/env bash
# The whole suite. Models are prepared first (cached under $XDG_CACHE_HOME/voiced, keyed on package versions),
# so the timing of the suite itself is the tests, and the progress of a cold preparation is visible. The lint
# and the type check ([tool.ruff], [tool.mypy] in pyproject.toml) run first: they take moments and fail before a
# long preparation would.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet voiced protocol tests benchmarks model_export
.venv/bin/ruff format --check --quiet voiced protocol tests benchmarks model_export
.venv/bin/mypy
.venv/bin/voiced model prepare default
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
