#!/usr/bin/env bash
# The whole suite. Models are prepared first (cached under $XDG_CACHE_HOME/voiced, keyed on package versions),
# so the timing of the suite itself is the tests, and the progress of a cold preparation is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/voiced model prepare default
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
