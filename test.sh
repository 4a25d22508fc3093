#!/usr/bin/env bash
# Set up (first time) and run the test suite, offscreen and offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
