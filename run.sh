#!/usr/bin/env bash
# Set up (first time) and open the app. Extra arguments go to sorce-desktop, e.g. ./run.sh index ~/Pictures
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
export SORCE_DESKTOP_PROG="${SORCE_DESKTOP_PROG:-$0}"  # hints name the command as typed
exec .venv/bin/sorce-desktop "$@"
