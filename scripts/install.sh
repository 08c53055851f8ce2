#!/usr/bin/env bash
# Install everything headstart needs on a fresh machine (idempotent; a second run takes seconds):
#   - Debian data packages: openclipart-png (demo images), dataset-fashion-mnist (benchmark images);
#   - a project virtualenv .venv with the pinned Python packages (pyproject.toml) and the test tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

missing=()
[ -d /usr/share/openclipart/png ] || missing+=(openclipart-png)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: headstart needs Python 3.11 (torch 2.14.1 wheels); set PYTHON=/path/to/python3.11" >&2; exit 2; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-64)"
if [ "$(cat .venv/.install-stamp 2>/dev/null)" != "$stamp" ]; then
  start=$(date +%s)
  echo "install: Python packages into .venv (first time: a few minutes, torch is 5 GB)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  # onnxruntime and onnxruntime-gpu overwrite each other's files: exactly one may be installed
  if .venv/bin/python -m pip show -q onnxruntime >/dev/null 2>&1; then
    echo "error: the CPU 'onnxruntime' package got installed beside onnxruntime-gpu; pip uninstall onnxruntime" >&2
    exit 2
  fi
  echo "$stamp" > .venv/.install-stamp
  echo "install: done in $(( $(date +%s) - start ))s" >&2
fi
