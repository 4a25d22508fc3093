"""Where the app keeps its files: per-user folders, or one folder given by --data-dir / SORCE_DESKTOP_HOME."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

ENV_HOME = "SORCE_DESKTOP_HOME"


class DataDirError(Exception):
    """The data folder cannot be used (it is a file, or cannot be created or written), in words."""


@dataclass(frozen=True)
class AppPaths:
    index: Path  # catalog + vector index
    thumbnails: Path
    models: Path
    settings: Path
    logs: Path

    @classmethod
    def resolve(cls, data_dir: str | os.PathLike | None = None) -> AppPaths:
        home = data_dir or os.environ.get(ENV_HOME)
        if home:
            root = Path(home).expanduser().resolve()
            paths = cls(
                root / "index", root / "thumbnails", root / "models", root / "settings", root / "logs"
            )
        else:
            d = platformdirs.PlatformDirs("sorce-desktop", appauthor=False)
            paths = cls(
                Path(d.user_data_dir) / "index",
                Path(d.user_cache_dir) / "thumbnails",
                Path(d.user_cache_dir) / "models",
                Path(d.user_config_dir),
                Path(d.user_log_dir),
            )
        return paths

    def ensure(self) -> AppPaths:
        for p in (self.index, self.thumbnails, self.models, self.settings, self.logs):
            try:
                p.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                blocker = next((q for q in (p, *p.parents) if q.exists() and not q.is_dir()), p)
                raise DataDirError(
                    f"The data folder cannot be used: {blocker} is a file, not a folder. "
                    "Choose another --data-dir (or SORCE_DESKTOP_HOME)."
                ) from None
            except OSError as exc:
                why = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
                raise DataDirError(
                    f"The data folder {p} cannot be created ({why}). Choose a folder you can write "
                    "(--data-dir or SORCE_DESKTOP_HOME)."
                ) from None
        return self

    def roots(self) -> list[Path]:
        """Folders the scanner must never descend into (the app's own data)."""
        return [self.index, self.thumbnails, self.models, self.settings, self.logs]


# -- the one rule for "is this path in that folder" --------------------------------------------------------
def is_under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` itself or lies inside it (by name: "/a/bc" is not under "/a/b").
    Both as the caller holds them (absolute, or both real paths); a trailing separator does not matter."""
    if path == folder:
        return True
    root = folder.rstrip(os.sep)
    return path.startswith(root + os.sep) or (not root and path.startswith(os.sep))


def under_any(path: str, folders) -> bool:
    """Whether ``path`` lies in one of ``folders`` (:func:`is_under`)."""
    return any(is_under(path, f) for f in folders)


def folder_of(path: str, folders) -> str | None:
    """The innermost of ``folders`` that ``path`` lies in (:func:`is_under`), or None."""
    best = None
    for f in folders:
        if is_under(path, f) and (best is None or len(f) > len(best)):
            best = f
    return best


def relative_to_folder(path: str, folder: str | None) -> str:
    """``path`` inside ``folder`` (its file name when ``folder`` is None)."""
    if folder is None:
        return os.path.basename(path)
    return path[len(folder.rstrip(os.sep)) + 1 :]
