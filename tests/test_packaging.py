"""Packaging pieces that run without building a bundle: icons, metadata, the spec, size report, the Linux
menu-entry script, the frozen-app runtime hook, and the bundle's check/smoke entry points run from source.
(The bundle itself is built and run by packaging/build.py + packaging/smoke_test.py, here and in CI.)"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
sys.path.insert(0, str(PACKAGING))

SVG = ROOT / "resources" / "sorce-desktop.svg"


def test_meta_comes_from_pyproject():
    from bundle_meta import _load_toml, load_meta

    from sorce_desktop import __version__

    project = _load_toml(ROOT / "pyproject.toml")["project"]
    meta = load_meta()
    assert (meta.name, meta.version) == (project["name"], project["version"])
    assert meta.version == __version__
    assert meta.display_name == "Sorce Desktop"
    assert meta.version_tuple[: len(meta.version.split("."))] == tuple(int(x) for x in meta.version.split("."))


def test_meta_rejects_dynamic_version(tmp_path):
    from bundle_meta import load_meta

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    with pytest.raises(ValueError, match="version"):
        load_meta(tmp_path / "pyproject.toml")


def test_spec_is_valid_python():
    compile((PACKAGING / "sorce-desktop.spec").read_text(), "sorce-desktop.spec", "exec")


@pytest.mark.skipif(not SVG.is_file(), reason="no app icon SVG yet")
def test_icons_from_svg(tmp_path):
    from make_icons import ICNS_SIZES, ICO_SIZES, PNG_SIZES, make_icons
    from PIL import Image

    made = make_icons(SVG, tmp_path)
    with Image.open(made["ico"]) as ico:
        assert ico.info["sizes"] == {(s, s) for s in ICO_SIZES}
    with Image.open(made["icns"]) as icns:
        # Pillow lists retina entries as (w, h, 2): 1024 px is (512, 512, 2)
        got = {w * scale for w, _, scale in icns.info["sizes"]}
        assert {32, 64, 128, 256, 512, 1024} <= got <= set(ICNS_SIZES)
    for size in PNG_SIZES:
        assert Image.open(made["png_dir"] / f"{size}.png").size == (size, size)
    png = Image.open(made["png"]).convert("RGBA")
    assert png.size == (256, 256)
    alpha = png.getchannel("A")
    covered = sum(1 for a in alpha.getdata() if a > 0) / (256 * 256)
    assert 0.2 < covered <= 1.0, covered  # the drawing fills the icon, not a blank or a speck
    # drawn, not one flat colour
    assert len(set(png.resize((32, 32)).getdata())) > 20


def test_icons_reject_a_broken_svg(tmp_path):
    from make_icons import make_icons

    bad = tmp_path / "bad.svg"
    bad.write_text("<svg this is not xml")
    with pytest.raises(ValueError):
        make_icons(bad, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        make_icons(tmp_path / "missing.svg", tmp_path / "out")


def test_size_report_groups_by_package(tmp_path):
    from build import size_report

    internal = tmp_path / "sorce-desktop" / "_internal"
    (internal / "torch" / "lib").mkdir(parents=True)
    (internal / "torch" / "lib" / "libtorch_cpu.so").write_bytes(b"x" * 3000)
    (internal / "PySide6").mkdir()
    (internal / "PySide6" / "QtCore.abi3.so").write_bytes(b"x" * 1000)
    (internal / "libpython3.11.so.1.0").write_bytes(b"x" * 500)
    (tmp_path / "sorce-desktop" / "sorce-desktop").write_bytes(b"x" * 10)
    rep = size_report(tmp_path / "sorce-desktop")
    assert rep["bytes"] == 4510 and rep["files"] == 4
    parts = {p["name"]: p["bytes"] for p in rep["parts"]}
    assert parts["torch"] == 3000 and parts["PySide6"] == 1000
    assert rep["parts"][0]["name"] == "torch"
    assert rep["biggest_files"][0]["path"].endswith("libtorch_cpu.so")


@pytest.mark.skipif(sys.platform == "win32" or not shutil.which("sh"), reason="POSIX shell script")
def test_linux_menu_entry_script(tmp_path):
    bundle = tmp_path / "my apps" / "sorce-desktop"  # a space in the path on purpose
    bundle.mkdir(parents=True)
    shutil.copy2(PACKAGING / "linux" / "install-desktop-entry.sh", bundle)
    shutil.copy2(ROOT / "resources" / "sorce-desktop.desktop", bundle)
    (bundle / "sorce-desktop.png").write_bytes(b"\x89PNG")
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "share"), HOME=str(tmp_path))
    subprocess.run(["sh", str(bundle / "install-desktop-entry.sh")], check=True, env=env, capture_output=True)
    entry = (tmp_path / "share" / "applications" / "sorce-desktop.desktop").read_text()
    assert f'Exec="{bundle}/sorce-desktop"\n' in entry
    assert f"TryExec={bundle}/sorce-desktop\n" in entry
    assert "Icon=sorce-desktop" in entry
    assert (tmp_path / "share" / "icons" / "hicolor" / "256x256" / "apps" / "sorce-desktop.png").is_file()
    subprocess.run(
        ["sh", str(bundle / "install-desktop-entry.sh"), "--remove"], check=True, env=env, capture_output=True
    )
    assert not (tmp_path / "share" / "applications" / "sorce-desktop.desktop").exists()


def _run_hook(tmp_path, monkeypatch, system_ca: bool) -> dict[str, str]:
    """Run the runtime hook as in a frozen app: a fake _MEIPASS, no std streams, a clean environment."""
    base = tmp_path / "bundle"
    (base / "certifi").mkdir(parents=True)
    (base / "certifi" / "cacert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (base / "resources").mkdir()
    for k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "SORCE_DESKTOP_RESOURCES", "SORCE_DESKTOP_CA_SOURCE"):
        monkeypatch.setenv(k, "")  # so that monkeypatch puts the original state back afterwards
        monkeypatch.delenv(k)
    hook = runpy.run_path(str(PACKAGING / "pyi_rth_sorce_desktop.py"))  # not frozen: does nothing yet
    assert "SORCE_DESKTOP_RESOURCES" not in os.environ
    monkeypatch.setattr(sys, "_MEIPASS", str(base), raising=False)
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    hook["_setup"].__globals__["_system_ca_available"] = lambda: system_ca
    hook["_setup"]()
    streams_ok = sys.stdout is not None and sys.stderr is not None
    print("stdout works", file=sys.stdout)
    return {
        "streams": str(streams_ok),
        "resources": os.environ.get("SORCE_DESKTOP_RESOURCES", ""),
        "cert": os.environ.get("SSL_CERT_FILE", ""),
        "source": os.environ.get("SORCE_DESKTOP_CA_SOURCE", ""),
        "base": str(base),
    }


def test_runtime_hook_uses_certifi_without_a_system_store(tmp_path, monkeypatch):
    got = _run_hook(tmp_path, monkeypatch, system_ca=False)
    assert got["streams"] == "True"
    assert got["resources"] == str(Path(got["base"]) / "resources")
    assert got["cert"] == str(Path(got["base"]) / "certifi" / "cacert.pem")
    assert got["source"] == "certifi"


def test_runtime_hook_keeps_a_system_store(tmp_path, monkeypatch):
    got = _run_hook(tmp_path, monkeypatch, system_ca=True)
    assert got["cert"] == "" and got["source"] == "system"


def test_runtime_hook_keeps_the_users_cert_file(tmp_path, monkeypatch):
    base = tmp_path / "b"
    (base / "certifi").mkdir(parents=True)
    (base / "certifi" / "cacert.pem").write_text("x")
    monkeypatch.setenv("SSL_CERT_FILE", "/corp/ca.pem")
    monkeypatch.setenv("SORCE_DESKTOP_RESOURCES", "")
    monkeypatch.setenv("SORCE_DESKTOP_CA_SOURCE", "")
    hook = runpy.run_path(str(PACKAGING / "pyi_rth_sorce_desktop.py"))
    monkeypatch.setattr(sys, "_MEIPASS", str(base), raising=False)
    hook["_setup"].__globals__["_system_ca_available"] = lambda: False
    hook["_setup"]()
    assert os.environ["SSL_CERT_FILE"] == "/corp/ca.pem"


def _entry(args: list[str], env_extra: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(PACKAGING / "entry.py"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.gui
def test_bundle_check_from_source_resources_and_qt(tmp_path):
    from conftest import scene_photos

    photo = scene_photos(1)[0]
    proc = _entry(["--bundle-check", "--only", "resources", "qt", "--photo", str(photo)], {})
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert proc.returncode == 0, out
    assert out["qt"]["photo"]["size"][0] > 0 and "svg" in out["qt"]["image_formats"]
    assert out["qt"]["thread_pool"] == ["ran"]
    # and it can fail: a bundle check that insists on being frozen fails from source
    proc = _entry(["--bundle-check", "--only", "frozen", "--require-frozen"], {})
    assert proc.returncode == 1
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["frozen"]["ok"] is False


@pytest.mark.gui
def test_smoke_window_from_source(tmp_path):
    shot = tmp_path / "win.png"
    proc = _entry(["--smoke-test", "--data-dir", str(tmp_path / "data"), "--screenshot", str(shot)], {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    out = json.loads(line)
    assert out["shown"] is True and out["title"] == "Sorce Desktop" and out["platform"] == "offscreen"
    assert out["size"][0] > 300 and out["size"][1] > 200
    from PIL import Image

    img = Image.open(shot)
    assert img.size[0] >= out["size"][0] and len(set(img.convert("RGB").resize((40, 30)).getdata())) > 3


# -- run.sh: the system libraries the window needs on Linux (issue 30, item 16) --------------------------
def _check_qt_libs():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "check_qt_libs.py"
    spec = importlib.util.spec_from_file_location("check_qt_libs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: what ldd said on a fresh Debian desktop without two of the plugin's libraries
LDD_FRESH_DEBIAN = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f3f)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f3f)
\tlibxcb-icccm.so.4 => not found
"""


def test_run_sh_names_the_missing_qt_libraries_and_the_command_per_distribution(tmp_path):
    check = _check_qt_libs()
    missing = check.missing_libraries(LDD_FRESH_DEBIAN)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]  # not xcb-cursor, which is there
    releases = {
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n': "sudo apt install libxcb-icccm4 libxcb-keysyms1",
        'ID=linuxmint\nID_LIKE="ubuntu debian"\n': "sudo apt install libxcb-icccm4 libxcb-keysyms1",
        'ID=fedora\n': "sudo dnf install 'libxcb-icccm.so.4()(64bit)' 'libxcb-keysyms.so.1()(64bit)'",
        'ID="rocky"\nID_LIKE="rhel centos fedora"\n': "sudo dnf install 'libxcb-icccm.so.4()(64bit)' 'libxcb-keysyms.so.1()(64bit)'",
        'ID=arch\n': "sudo pacman -S --needed xcb-util-wm xcb-util-keysyms",
        'ID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n': "sudo zypper install 'libxcb-icccm.so.4()(64bit)' 'libxcb-keysyms.so.1()(64bit)'",
    }
    for os_release, command in releases.items():
        text = check.report(missing, os_release)
        assert f"\n    {command}\n" in text, (os_release, text)
        assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in text and "cursor" not in text
    assert "package manager" in check.report(missing, "ID=gentoo\n")
    # the script as run.sh runs it, with ldd saying what it said there
    fake = Path(tmp_path) / "bin"
    fake.mkdir()
    (fake / "ldd").write_text("#!/bin/sh\ncat <<'EOF'\n" + LDD_FRESH_DEBIAN + "EOF\n")
    (fake / "ldd").chmod(0o755)
    (fake / "os-release").write_text("ID=debian\n")
    p = subprocess.run(
        [sys.executable, str(Path(check.__file__)), "--plugin", sys.executable, "--os-release", str(fake / "os-release")],
        capture_output=True, text=True, env=dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}"), timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "sudo apt install libxcb-icccm4 libxcb-keysyms1" in p.stderr, p.stderr
    # run.sh runs the check before it opens the window, and only then
    run_sh = (Path(__file__).resolve().parent.parent / "run.sh").read_text()
    assert "scripts/check_qt_libs.py" in run_sh


def test_the_qt_library_check_passes_where_the_window_runs():
    check = _check_qt_libs()
    if not sys.platform.startswith("linux") or check.plugin_path() is None:
        pytest.skip("the xcb plugin is a Linux part of PySide6")
    assert check.main([]) == 0  # this machine opens the window (the GUI tests run here)


# -- the wheels every bundle target needs (issue 30, item 17) ---------------------------------------------
def _check_wheels():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "packaging" / "check_wheels.py"
    spec = importlib.util.spec_from_file_location("check_wheels", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_wheels"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_wheel_check_covers_what_the_workflow_builds_and_runs_first():
    check = _check_wheels()
    targets = check.TARGETS
    assert set(targets) == {"win_amd64", "macosx_arm64", "manylinux_x86_64"}
    assert targets["macosx_arm64"].platforms == ("macosx_14_0_arm64",)  # macos-latest is Apple silicon
    assert "manylinux_2_28_x86_64" in targets["manylinux_x86_64"].platforms  # older glibcs listed too
    # markers are judged as on the target: text reading's packages are left out on Python 3.13 (see README)
    deps = check.dependencies()
    kept, left = check.for_target(deps, targets["win_amd64"], "3.11")
    assert any(r.startswith("onnx") for r in kept) and left == []
    kept, left = check.for_target(deps, targets["win_amd64"], "3.13")
    assert {"rapidocr_onnxruntime", "onnx"} <= set(left)
    assert check.marker_environment(targets["win_amd64"], "3.11")["sys_platform"] == "win32"
    # the workflow runs it for its own target before it installs or builds anything
    import yaml

    wf = yaml.safe_load((Path(__file__).resolve().parent.parent / ".github/workflows/bundles.yml").read_text())
    job = wf["jobs"]["bundle"]
    assert {m["wheels"] for m in job["strategy"]["matrix"]["include"]} == set(targets)
    runs = [s.get("run", "") for s in job["steps"]]
    check_at = next(i for i, r in enumerate(runs) if "packaging/check_wheels.py" in r)
    build_at = next(i for i, r in enumerate(runs) if "packaging/build.py" in r)
    install_at = next(i for i, r in enumerate(runs) if "pip install -e" in r)
    assert check_at < install_at < build_at
    assert "--target ${{ matrix.wheels }}" in runs[check_at]


def test_readme_promises_only_the_bundles_that_are_built():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "-x86_64` on Intel Macs" not in readme and "macos-x86_64" not in readme
    assert "macos-arm64" in readme and "packaging/check_wheels.py" in readme
