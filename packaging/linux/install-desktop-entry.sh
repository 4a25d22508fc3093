#!/bin/sh
# Add Sorce Desktop to the applications menu of the current user (no root needed), from the unpacked bundle:
#   ./install-desktop-entry.sh            install (the .desktop file points at this folder's executable)
#   ./install-desktop-entry.sh --remove   remove the menu entry and icon again
set -eu
here=$(cd "$(dirname "$0")" && pwd)
name=sorce-desktop
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps"
if [ "${1:-}" = "--remove" ]; then
    rm -f "$apps/$name.desktop" "$icons/$name.png"
    echo "removed $apps/$name.desktop"
    exit 0
fi
mkdir -p "$apps" "$icons"
cp "$here/$name.png" "$icons/$name.png"
# The shipped .desktop file says Exec=sorce-desktop; point it at this bundle (paths may contain spaces).
sed -e "s|^Exec=.*|Exec=\"$here/$name\"|" -e "s|^TryExec=.*|TryExec=$here/$name|" \
    "$here/$name.desktop" > "$apps/$name.desktop"
chmod 644 "$apps/$name.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" >/dev/null 2>&1 || true
echo "installed $apps/$name.desktop -> $here/$name"
echo "command line: \"$here/$name\" index ~/Pictures ; \"$here/$name\" search \"a red kite\""
