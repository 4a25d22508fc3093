"""Before the window opens on Linux: are the system libraries Qt's X11 (xcb) platform plugin loads there?

Qt aborts with "xcb-cursor0 or libxcb-cursor0 is needed" whatever is missing (on a fresh Debian desktop
it was libxcb-icccm4 and libxcb-keysyms1). This asks the dynamic loader (ldd on the plugin inside the
virtual environment's PySide6) which libraries it cannot find, and prints the one command that installs
them on this distribution family (apt, dnf, pacman, zypper). Run by run.sh; exit status 1 when some are
missing, 0 otherwise (also on other systems, or where the plugin or ldd is not there: nothing to say).

    python scripts/check_qt_libs.py [--plugin PATH] [--os-release PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

#: the libraries libqxcb.so loads (directly or through Qt's own), by soname, with the package holding each:
#: (Debian/Ubuntu apt, Arch pacman). dnf and zypper install by the soname itself (an RPM capability).
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libx11"),
    "libX11.so.6": ("libx11-6", "libx11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libGL.so.1": ("libgl1", "libglvnd"),
    "libEGL.so.1": ("libegl1", "libglvnd"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
}

FAMILIES = {"debian": "apt", "ubuntu": "apt", "fedora": "dnf", "rhel": "dnf", "centos": "dnf", "arch": "pacman",
            "suse": "zypper", "opensuse": "zypper"}  # fmt: skip


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames ldd could not find ("libxcb-icccm.so.4 => not found"), in its order, once each."""
    found = re.findall(r"^\s*(\S+)\s+=>\s+not found", ldd_output, re.MULTILINE)
    return list(dict.fromkeys(found))


def family(os_release: str) -> str | None:
    """'apt', 'dnf', 'pacman' or 'zypper' from /etc/os-release (ID, then ID_LIKE); None if unknown."""
    ids: list[str] = []
    for key in ("ID", "ID_LIKE"):
        m = re.search(rf"^{key}=\"?([^\"\n]*)\"?$", os_release, re.MULTILINE)
        if m:
            ids += m.group(1).lower().split()
    for i in ids:
        for name, tool in FAMILIES.items():
            if i == name or i.startswith(name + "-"):  # opensuse-tumbleweed, opensuse-leap
                return tool
    return None


def install_command(tool: str | None, missing: list[str]) -> str | None:
    """The one command that installs ``missing`` with ``tool``; None where the family is not known."""
    if tool in ("dnf", "zypper"):
        caps = " ".join(f"'{lib}()(64bit)'" for lib in missing)
        return f"sudo {tool} install {caps}"
    if tool in ("apt", "pacman"):
        column = 0 if tool == "apt" else 1
        pkgs = list(dict.fromkeys(PACKAGES[lib][column] for lib in missing if lib in PACKAGES))
        unknown = [lib for lib in missing if lib not in PACKAGES]
        if not pkgs:
            return None
        cmd = f"sudo apt install {' '.join(pkgs)}" if tool == "apt" else f"sudo pacman -S --needed {' '.join(pkgs)}"
        return cmd + (f"   (and whichever package holds {', '.join(unknown)})" if unknown else "")
    return None


def report(missing: list[str], os_release: str) -> str:
    """What to tell the user: which libraries are missing and the command that installs them."""
    libs = ", ".join(missing)
    cmd = install_command(family(os_release), missing)
    how = f"Install them with:\n\n    {cmd}\n" if cmd else "Install them with your distribution's package manager."
    return (
        f"The window needs system libraries that are not installed: {libs}.\n{how}\n"
        "Then start it again. (The command line works without them: ./run.sh index ~/Pictures.)"
    )


def plugin_path() -> str | None:
    """PySide6's xcb platform plugin, found without loading Qt."""
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "Qt", "plugins", "platforms", "libqxcb.so")
    return path if os.path.exists(path) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plugin", help="the plugin to check (default: the one in this Python's PySide6)")
    p.add_argument("--os-release", default="/etc/os-release", help="the distribution's os-release file")
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        return 0
    plugin = args.plugin or plugin_path()
    if plugin is None:
        return 0
    try:
        out = subprocess.run(["ldd", plugin], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0  # no ldd (a minimal system): Qt says what it says
    missing = missing_libraries(out)
    if not missing:
        return 0
    try:
        with open(args.os_release, encoding="utf-8") as f:
            os_release = f.read()
    except OSError:
        os_release = ""
    print(report(missing, os_release), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
