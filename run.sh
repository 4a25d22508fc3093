#!/usr/bin/env bash
# Set up (first time) and open the app. Extra arguments go to sorce-desktop, e.g. ./run.sh index ~/Pictures
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
exec .venv/bin/sorce-desktop "$@"
