"""The app's name, version and identifiers for the bundles, read from pyproject.toml (one source of truth)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BundleMeta:
    name: str  # distribution name: executable, bundle folder and archive name ("sorce-desktop")
    version: str  # "0.1.0"
    description: str
    license: str

    @property
    def display_name(self) -> str:
        """What people see: window/app menu name, macOS .app name ("Sorce Desktop")."""
        return " ".join(part.capitalize() for part in self.name.split("-"))

    @property
    def bundle_id(self) -> str:
        """macOS bundle identifier (reverse DNS; letters, digits, '-' and '.' only)."""
        return f"io.github.{self.name}"

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """Numeric parts for the Windows version resource: "1.2.3rc1" -> (1, 2, 3)."""
        return tuple(int(m) for m in re.findall(r"\d+", self.version.split("+")[0])[:4])


def _load_toml(path: Path) -> dict:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_meta(pyproject: Path = ROOT / "pyproject.toml") -> BundleMeta:
    project = _load_toml(Path(pyproject))["project"]
    if "version" not in project:
        raise ValueError(f"{pyproject} has no static [project].version; the bundles need one")
    lic = project.get("license", "")
    if isinstance(lic, dict):
        lic = lic.get("text", "")
    return BundleMeta(
        name=project["name"],
        version=str(project["version"]),
        description=project.get("description", project["name"]),
        license=str(lic),
    )


def platform_tag() -> str:
    """windows-x86_64, macos-arm64, linux-x86_64: part of the archive name."""
    import platform
    import sys

    system = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"
