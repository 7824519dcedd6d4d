#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system packages, then a virtual environment.
# Usage: scripts/setup.sh [--plan] run|test|build   (a second call is a no-op check taking well under a second)
#   run    .venv with voiced's runtime only (no torch/transformers: the daemon never imports them)
#   test   .venv with the export tools and the test tools too (the suite exports tiny models)
#   build  .venv-build with the export tools, made on demand by `voiced model prepare` when it must export
#   --plan prints the environment and the pip command it would use, and changes nothing
set -euo pipefail
plan=0
if [[ ${1:-} == --plan ]]; then plan=1; shift; fi
mode=${1:-run}
cd "$(dirname "$0")/.."
case $mode in
  run) venv=.venv extras="" ;;
  test) venv=.venv extras="export,dev" ;;
  build) venv=.venv-build extras="export" ;;
  *) echo "usage: scripts/setup.sh [--plan] run|test|build" >&2; exit 2 ;;
esac
spec="."
[[ -n $extras ]] && spec=".[${extras}]"
if ((plan)); then
  echo "venv=$venv"
  echo "pip install -e $spec"
  exit 0
fi

apt_pkgs=(espeak-ng libespeak-ng1 libportaudio2 sox pulseaudio pulseaudio-utils ca-certificates)
[[ $mode == test ]] && apt_pkgs+=(systemd chromium)  # chromium: the browser-page tests (Playwright drives it by path)

py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=$(command -v "$cand"); break
  fi
done
if [[ -z $py ]]; then
  apt_pkgs+=(python3 python3-venv python3-dev)
elif [[ $py == /usr/bin/* ]] && ! "$py" -c 'import ensurepip' 2>/dev/null; then
  apt_pkgs+=(python3-venv python3-dev)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ $mode == build ]] && missing=()  # made from a checkout whose runtime packages are already there
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "voiced set-up needs these Debian packages: ${missing[*]}" >&2
    echo "Fix: sudo apt-get update && sudo apt-get install -y ${missing[*]}   (then run this again)" >&2
    exit 1
  fi
  echo "==> installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ -z $py ]]; then py=/usr/bin/python3; fi

key=${extras//,/-}
stamp="$venv/.voiced-setup-$(cat pyproject.toml | sha256sum | cut -c1-16)-${key:-runtime}"
# a test environment holds everything the runtime needs: `make run` after `make test` has nothing to do
test_stamp=".venv/.voiced-setup-$(cat pyproject.toml | sha256sum | cut -c1-16)-export-dev"
if [[ $mode == run && -f $test_stamp ]]; then stamp=$test_stamp; fi
if [[ ! -f $stamp ]]; then
  if [[ $mode == build ]]; then
    echo "==> creating $venv for the model export: torch, transformers and onnx tools (~1 GB, first time: a few minutes)" >&2
  else
    echo "==> creating $venv with $py and installing voiced${extras:+[$extras]} (first time: a few minutes)"
  fi
  [[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip wheel 2>&1 | grep -v "^WARNING: Location" || true
  # torch is pinned in pyproject to the CPU wheel; pip must not resolve an unpinned CUDA build first.
  # PYTHONWARNINGS: setuptools' "Editable installation ... be careful" box is advice for package authors and
  # reads like an error to everyone else.
  PYTHONWARNINGS="ignore:Editable installation" "$venv/bin/python" -m pip install --progress-bar off -q -e "$spec" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import voiced, webrtcvad, onnxruntime" || { echo "set-up failed: $venv cannot import voiced; remove $venv and run again" >&2; exit 1; }
  rm -f "$venv"/.voiced-setup-*
  touch "$stamp"
fi

# Test mode: llama.cpp's server is the real peer of the model-server tests (tests/test_remote_llama.py) and of
# benchmarks/model_server.py. llama-cpp-python has no wheel on PyPI, so it is built once into a cache keyed on
# its version and installed from there (its [server] extras come from PyPI).
if [[ $mode == test ]]; then
  llama_ver=0.3.36
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/voiced/wheels"
  server_deps="'fastapi', 'uvicorn', 'sse-starlette', 'starlette-context', 'pydantic-settings'"  # its [server] extra
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; [m.version(d) for d in ($server_deps)]; sys.exit(m.version('llama_cpp_python') != '$llama_ver')" 2>/dev/null; then
    if ! compgen -G "$wheels/llama_cpp_python-$llama_ver-*.whl" >/dev/null; then
      if ! command -v g++ >/dev/null || ! command -v make >/dev/null; then
        [[ $(id -u) -eq 0 ]] || { echo "building llama-cpp-python needs a C++ compiler. Fix: sudo apt-get install -y build-essential" >&2; exit 1; }
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential >/dev/null
      fi
      echo "==> building llama-cpp-python $llama_ver into $wheels (once: 10-15 min on 2 cores)"
      mkdir -p "$wheels"
      CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \
        .venv/bin/python -m pip wheel --no-deps --progress-bar off -w "$wheels" "llama-cpp-python==$llama_ver"
    fi
    echo "==> installing llama-cpp-python[server] $llama_ver from $wheels"
    .venv/bin/python -m pip install -q --progress-bar off --find-links "$wheels" "llama-cpp-python[server]==$llama_ver" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import llama_cpp.server.app" || { echo "set-up failed: llama_cpp.server does not import; remove $wheels/llama_cpp_python-* and run again" >&2; exit 1; }
  fi
fi
