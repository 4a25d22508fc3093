"""Does every runtime dependency resolve to a wheel on each bundle target, before a bundle is built?

The bundles are built by .github/workflows/bundles.yml on Windows x86_64, macOS arm64 (macos-latest) and
Linux x86_64, each with the same Python. A dependency with no wheel for one of them (torch publishes no
macOS x86_64 wheels after 2.2; onnx or onnxruntime lag behind a new Python) fails that build late, or
leaves a part out silently. This resolves what the workflow installs, per target, the way pip installs it
there: binary wheels only (``--only-binary :all:``), that platform's tags, that Python, torch from the CPU
index on Linux and Windows as the workflow does. It resolves from the indexes' metadata
(``pip install --dry-run --report``; PEP 658 metadata, so the GB of wheels are not downloaded); with
``--download`` it downloads every wheel into a temporary folder instead (``pip download``).

    python packaging/check_wheels.py [--python 3.11] [--target win_amd64 ...] [--download] [--json]

Exit status 0 when every target resolves; 1 with, per target, pip's reason for the one that does not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the CPU build of torch (the workflow installs it from there on Linux and Windows; PyPI's Linux wheel is
#: the multi-GB CUDA one)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: what the workflow installs beside the package's own dependencies (keep in step with bundles.yml)
BUNDLE_EXTRAS = ["torch==2.13.*", "opencv-python-headless", "pyinstaller>=6,<7"]


@dataclass(frozen=True)
class Target:
    name: str  # what the workflow's matrix and the archives call it
    platforms: tuple[str, ...]  # pip --platform tags (pip adds the older macOS / glibc versions of each)
    sys_platform: str  # for the dependencies' environment markers
    platform_machine: str
    torch_index: str | None  # extra index for torch (None: PyPI)


#: pip expands a macOS tag to the older macOS versions but not a manylinux tag to older glibcs: list them
#: (Ubuntu 24.04, where the workflow builds, has glibc 2.39)
_MANYLINUX_X86_64 = tuple(f"manylinux_2_{m}_x86_64" for m in range(39, 16, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64",
)

TARGETS = {
    "win_amd64": Target("windows-x86_64", ("win_amd64",), "win32", "AMD64", TORCH_CPU_INDEX),
    "macosx_arm64": Target("macos-arm64", ("macosx_14_0_arm64",), "darwin", "arm64", None),
    "manylinux_x86_64": Target("linux-x86_64", _MANYLINUX_X86_64, "linux", "x86_64", TORCH_CPU_INDEX),
}


@dataclass
class Result:
    target: str
    python: str
    ok: bool
    wheels: dict[str, str] = field(default_factory=dict)  # distribution -> version resolved
    left_out: list[str] = field(default_factory=list)  # dependencies whose markers leave them out there
    error: str = ""
    torch_index: str = ""  # what the CPU index has for this target ("" where the workflow uses PyPI's torch)


def dependencies() -> list[str]:
    """The runtime dependencies in pyproject.toml, as written (with their markers)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def marker_environment(target: Target, python: str) -> dict[str, str]:
    """The environment markers of ``target`` with ``python`` (pip judges markers by the Python running it,
    even with --platform: a Linux-only dependency of torch would be asked for on Windows)."""
    return {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python if python.count(".") == 2 else python + ".0",
        "sys_platform": target.sys_platform,
        "platform_system": {"win32": "Windows", "darwin": "Darwin", "linux": "Linux"}[target.sys_platform],
        "platform_machine": target.platform_machine,
        "os_name": "nt" if target.sys_platform == "win32" else "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def for_target(reqs: list[str], target: Target, python: str) -> tuple[list[str], list[str]]:
    """(requirements that apply on ``target`` with ``python``, without their markers; those left out)."""
    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:  # a bare CI Python: pip's own copy
        from pip._vendor.packaging.requirements import Requirement

    env = marker_environment(target, python)
    keep, left = [], []
    for text in reqs:
        r = Requirement(text)
        if r.marker is not None and not r.marker.evaluate(env):
            left.append(r.name)
            continue
        r.marker = None
        keep.append(str(r))
    return keep, left


def resolve(target_key: str, python: str, download: bool = False, require_torch_index: bool = False) -> Result:
    target = TARGETS[target_key]
    reqs, left = for_target(dependencies(), target, python)
    reqs += BUNDLE_EXTRAS
    with tempfile.TemporaryDirectory(prefix="check-wheels-") as tmp:
        report = Path(tmp) / "report.json"
        common = [*_isolated(PYPI), "--only-binary", ":all:", "--python-version", python, "--implementation",
                  "cp", "--quiet"]  # fmt: skip
        for p in target.platforms:
            common += ["--platform", p]
        # pip, with its markers judged as on the target (see marker_environment)
        pip = [sys.executable, "-c", _PIP_AS_ON_TARGET, json.dumps(marker_environment(target, python))]
        if download:
            cmd = [*pip, "download", *common, "--dest", str(Path(tmp) / "wheels"), *reqs]
        else:
            cmd = [*pip, "install", "--dry-run", "--ignore-installed", "--target",
                   str(Path(tmp) / "target"), "--report", str(report), *common, *reqs]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PIP_NO_INPUT="1"))
        result = Result(target.name, python, p.returncode == 0, left_out=left)
        if p.returncode != 0:
            result.error = _reason(p.stderr)
        elif download:
            for w in sorted((Path(tmp) / "wheels").glob("*.whl")):
                name, version = w.name.split("-")[:2]
                result.wheels[name.lower()] = version
        else:
            for item in json.loads(report.read_text())["install"]:
                meta = item["metadata"]
                result.wheels[meta["name"].lower()] = meta["version"]
    if target.torch_index:
        pin = next(r for r in BUNDLE_EXTRAS if r.startswith("torch"))
        has, seen = torch_on_index(target, python, pin.split("==")[1])
        if has is None:
            result.torch_index = f"not checked: {seen}"
            result.ok = result.ok and not require_torch_index
        elif has:
            result.torch_index = f"{pin} is there ({seen})"
        else:
            result.torch_index = f"{pin} is NOT there (it has: {seen or 'no wheel for this target'})"
            result.ok = False
    return result


PYPI = "https://pypi.org/simple"

#: runs pip with the marker environment given as its first argument (JSON) in place of the running one's
_PIP_AS_ON_TARGET = """
import json, sys
from pip._vendor.packaging import markers
running = markers.default_environment
target = json.loads(sys.argv.pop(1))
markers.default_environment = lambda: {**running(), **target}
from pip._internal.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _isolated(index: str) -> list[str]:
    """pip options that read only ``index`` (no local configuration's extra indexes, links or constraints;
    its certificate bundle kept, for a proxy that needs one)."""
    opts = ["--isolated", "--disable-pip-version-check", "--index-url", index]
    cert = os.environ.get("PIP_CERT") or _pip_config("global.cert")
    return opts + (["--cert", cert] if cert else [])


def _pip_config(key: str) -> str | None:
    p = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True)
    return p.stdout.strip() or None if p.returncode == 0 else None


def torch_on_index(target: Target, python: str, version: str) -> tuple[bool | None, str]:
    """Whether the CPU index has a torch ``version`` wheel for ``target`` (the workflow installs it from
    there on Linux and Windows): (True/False, versions seen), or (None, why) when the index cannot be reached."""
    cmd = [sys.executable, "-m", "pip", "index", "versions", "torch", *_isolated(target.torch_index), "--retries", "1",
           "--timeout", "20", "--only-binary", ":all:", "--python-version", python, "--implementation", "cp"]  # fmt: skip
    for p in target.platforms:
        cmd += ["--platform", p]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        if re.search(r"NameResolution|ConnectTimeout|ConnectionError|Max retries|Failed to establish", p.stderr):
            return None, f"{target.torch_index} cannot be reached from here"
        return False, _reason(p.stderr)
    m = re.search(r"Available versions: (.*)", p.stdout)
    seen = m.group(1).split(", ") if m else []
    prefix = version.rstrip("*").rstrip(".")
    return any(v == prefix or v.startswith(prefix + ".") or v.startswith(prefix + "+") for v in seen), ", ".join(seen[:5])


def _reason(stderr: str) -> str:
    """pip's own sentence about what could not be found (its first error lines)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR") and not ln.startswith("ERROR: Ignored")] or lines[-3:]
    return " ".join(errors)[:600]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", default="3.11", help="the Python of the bundles (default 3.11, the workflow's)")
    p.add_argument("--target", action="append", choices=sorted(TARGETS), help="a target (default: all three)")
    p.add_argument("--download", action="store_true", help="download every wheel (pip download) instead")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--require-torch-index", action="store_true", help="fail where the CPU torch index cannot be reached (CI)"
    )
    args = p.parse_args(argv)
    results = [
        resolve(t, args.python, args.download, args.require_torch_index) for t in (args.target or list(TARGETS))
    ]
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        for r in results:
            if r.ok:
                torch = r.wheels.get("torch", "?")
                left = f"; left out by markers: {', '.join(r.left_out)}" if r.left_out else ""
                cpu = f"; CPU torch index: {r.torch_index}" if r.torch_index else ""
                print(f"{r.target} (Python {r.python}): {len(r.wheels)} wheels resolve (torch {torch}){left}{cpu}")
            else:
                why = r.error or f"CPU torch index: {r.torch_index}"
                print(f"{r.target} (Python {r.python}): does NOT resolve: {why}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
