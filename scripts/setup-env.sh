#!/usr/bin/env bash
# Creates .venv (once) and installs the app with its test tools. Re-running is cheap: it reinstalls only
# when pyproject.toml changed. torch is pinned to the CPU build first, so nothing pulls a multi-GB CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sorce-installed
hash_cmd="sha256sum"; command -v sha256sum >/dev/null || hash_cmd="shasum -a 256"  # macOS has shasum
want=$(cat pyproject.toml scripts/setup-env.sh | $hash_cmd | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev,bench]"
  echo "$want" > "$stamp"
fi
