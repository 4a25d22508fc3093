"""Build the app bundle and its archive for this platform, in one command.

    python packaging/build.py            # icons -> PyInstaller one-folder bundle -> archive -> size report

Needs the app's dependencies and PyInstaller 6 (``pip install -e . "pyinstaller>=6,<7"``). Outputs (all ignored
by git): ``dist/sorce-desktop/`` (Windows, Linux) or ``dist/Sorce Desktop.app`` (macOS), the archive
``dist/sorce-desktop-<version>-<platform>.<zip|dmg|tar.gz>``, and ``build/packaging/build-report.json``
(build time, bundle size, biggest parts). The same script runs in CI (.github/workflows/bundles.yml).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bundle_meta import load_meta, platform_tag  # noqa: E402

IS_WIN = sys.platform == "win32"
IS_MAC = sys.platform == "darwin"


def bundle_paths(dist: Path) -> dict[str, Path]:
    """Where the built bundle's pieces are: the folder to archive, the windowed and the console executable."""
    meta = load_meta()
    exe = ".exe" if IS_WIN else ""
    folder = dist / meta.name
    if IS_MAC:
        app = dist / f"{meta.display_name}.app"
        main = app / "Contents" / "MacOS" / meta.name
        cli = app / "Contents" / "MacOS" / f"{meta.name}-cli"
        return {"root": app, "main": main, "cli": cli if cli.exists() else main}
    cli = folder / f"{meta.name}-cli{exe}"
    main = folder / f"{meta.name}{exe}"
    return {"root": folder, "main": main, "cli": cli if cli.exists() else main}


def tree_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def size_report(root: Path, top: int = 15) -> dict:
    """Bundle size and its biggest parts: per package (first folder under _internal) and per file."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    groups: dict[str, int] = defaultdict(int)
    for p in files:
        rel = p.relative_to(root).parts
        if "_internal" in rel:
            rel = rel[rel.index("_internal") + 1 :]
        elif IS_MAC and rel[:2] in (("Contents", "Frameworks"), ("Contents", "Resources")):
            rel = rel[2:]
        key = rel[0] if len(rel) > 1 else "(top level: executable, libpython, shared libraries)"
        groups[key] += p.stat().st_size
    biggest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:top]
    return {
        "bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "parts": [{"name": k, "bytes": v} for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:top]],
        "biggest_files": [{"path": str(p.relative_to(root)), "bytes": p.stat().st_size} for p in biggest],
    }


def add_linux_desktop_files(folder: Path, icons: Path) -> None:
    """The .desktop file, the PNG icon and a script that installs both for the current user."""
    meta = load_meta()
    shutil.copy2(icons / f"{meta.name}.png", folder / f"{meta.name}.png")
    desktop_src = ROOT / "resources" / f"{meta.name}.desktop"
    if desktop_src.is_file():
        shutil.copy2(desktop_src, folder / f"{meta.name}.desktop")
    script = folder / "install-desktop-entry.sh"
    shutil.copy2(HERE / "linux" / "install-desktop-entry.sh", script)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def make_archive(paths: dict[str, Path], dist: Path) -> Path:
    meta = load_meta()
    base = dist / f"{meta.name}-{meta.version}-{platform_tag()}"
    root = paths["root"]
    if IS_MAC:
        if shutil.which("hdiutil"):
            out = base.with_suffix(".dmg")
            out.unlink(missing_ok=True)
            staging = dist / "dmg-staging"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            # ditto keeps the bundle's symlinks and code signatures intact.
            subprocess.run(["ditto", str(root), str(staging / root.name)], check=True)
            os.symlink("/Applications", staging / "Applications")  # drag-to-install target
            subprocess.run(
                ["hdiutil", "create", "-volname", meta.display_name, "-srcfolder", str(staging), "-ov",
                 "-format", "UDZO", str(out)],
                check=True,
            )
            shutil.rmtree(staging, ignore_errors=True)
            return out
        out = Path(str(base) + ".zip")
        subprocess.run(["ditto", "-c", "-k", "--keepParent", str(root), str(out)], check=True)
        return out
    if IS_WIN:
        out = Path(str(base) + ".zip")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    zf.write(p, Path(root.name) / p.relative_to(root))
        return out
    out = Path(str(base) + ".tar.gz")
    with tarfile.open(out, "w:gz", compresslevel=6) as tf:
        tf.add(root, arcname=root.name)  # keeps permissions and symlinks
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the bundle and archive go")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller", help="PyInstaller work folder")
    p.add_argument("--no-archive", action="store_true", help="build the bundle only")
    p.add_argument("--cli-exe", action="store_true", help="also build sorce-desktop-cli on macOS/Linux (always on Windows)")
    p.add_argument("--report", type=Path, default=ROOT / "build" / "packaging" / "build-report.json")
    args = p.parse_args(argv)

    try:
        import PyInstaller
    except ImportError:
        print('PyInstaller is missing: pip install "pyinstaller>=6,<7"', file=sys.stderr)
        return 2
    meta = load_meta()
    icons = ROOT / "build" / "packaging" / "icons"
    t_start = time.perf_counter()

    from make_icons import make_icons, renderer_name

    make_icons(ROOT / "resources" / f"{meta.name}.svg", icons)
    print(f"icons: {icons} ({renderer_name()})", flush=True)

    env = dict(os.environ, SORCE_BUNDLE_ICONS=str(icons))
    if args.cli_exe:
        env["SORCE_BUNDLE_CLI_EXE"] = "1"
    cmd = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
        "--distpath", str(args.dist), "--workpath", str(args.work), str(HERE / "sorce-desktop.spec"),
    ]
    print("$ " + " ".join(cmd), flush=True)
    t_pyi = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    pyinstaller_s = time.perf_counter() - t_pyi

    paths = bundle_paths(args.dist)
    if not paths["main"].is_file():
        print(f"build finished but {paths['main']} is missing", file=sys.stderr)
        return 1
    if not (IS_WIN or IS_MAC):
        add_linux_desktop_files(paths["root"], icons)
    report = {
        "name": meta.name,
        "version": meta.version,
        "platform": platform_tag(),
        "python": sys.version.split()[0],
        "pyinstaller": PyInstaller.__version__,
        "bundle": str(paths["root"]),
        "executable": str(paths["main"]),
        "cli_executable": str(paths["cli"]),
        "pyinstaller_seconds": round(pyinstaller_s, 1),
        "size": size_report(paths["root"]),
    }
    if not args.no_archive:
        t_arc = time.perf_counter()
        archive = make_archive(paths, args.dist)
        report["archive"] = {"path": str(archive), "bytes": archive.stat().st_size,
                             "seconds": round(time.perf_counter() - t_arc, 1)}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))

    mib = 2**20
    print(f"\nbundle: {paths['root']}  {report['size']['bytes'] / mib:.0f} MiB in {report['size']['files']} files")
    for part in report["size"]["parts"][:10]:
        print(f"  {part['bytes'] / mib:8.1f} MiB  {part['name']}")
    if "archive" in report:
        print(f"archive: {report['archive']['path']}  {report['archive']['bytes'] / mib:.0f} MiB")
    print(f"built in {report['total_seconds']:.0f}s (PyInstaller {pyinstaller_s:.0f}s); report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
