#!/usr/bin/env bash
# Set up (first time) and open the app. Extra arguments go to sorce-desktop, e.g. ./run.sh index ~/Pictures
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
export SORCE_DESKTOP_PROG="${SORCE_DESKTOP_PROG:-$0}"  # hints name the command as typed
# The window (no command, or `gui`) on Linux/X11 needs system libraries Qt's xcb plugin loads: say which are
# missing and the one command that installs them, instead of Qt's abort naming only xcb-cursor.
window=1
for arg in "$@"; do
  case "$arg" in
    index|search|status|errors|repair|models|watch|bench|-h|--help|--version) window=0; break ;;
  esac
done
if [ "$window" = 1 ] && [ "$(uname -s)" = Linux ] && [ "${QT_QPA_PLATFORM:-xcb}" = xcb ]; then
  .venv/bin/python scripts/check_qt_libs.py || exit 1
fi
exec .venv/bin/sorce-desktop "$@"
