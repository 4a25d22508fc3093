"""User settings (JSON in the per-user settings folder), saved atomically.

A settings file is the user's to edit, so whatever it holds (nesting 200,000 levels deep, megabytes, a
directory or a FIFO in its place, a value of the wrong kind) never stops a command: each value is checked
as it is read, and what cannot be used is said in one line (``Settings.problems``) naming the file or the
setting and the default used instead."""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from sorce_desktop.core.models.registry import DEFAULT_MODEL
from sorce_desktop.core.models.speed import DEFAULT_SPEED, SPEEDS
from sorce_desktop.core.regions import DEFAULT_LAYOUT, LAYOUTS, PROMPT_LAYOUTS

DEVICES = ("auto", "cpu", "cuda", "mps")
#: a settings file is a few hundred bytes; one larger than this is not read (it is not ours)
MAX_SETTINGS_BYTES = 1 << 20
#: what the window offers for the thumbnail cache (gui/settings_dialog.py)
THUMBNAIL_CACHE_MB = (32, 100_000)


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    layout: str = DEFAULT_LAYOUT
    speed: str = DEFAULT_SPEED  # indexing: "fast" (int8, smaller tiles, skips blank tiles) | "thorough"
    device: str = "auto"  # auto | cpu | cuda | mps
    thumbnail_cache_mb: int = 512
    rerank_by_zoom: bool = False  # re-rank by the refined (zoomed) score
    refine: bool = True
    ocr: bool = True
    # read text with a second detector too (core.ocr.THOROUGH_READING): for about 2x the reading time of a
    # photo; what it finds: docs/benchmarks.md, "Text in photos"
    ocr_thorough: bool = False
    first_run_done: bool = False

    #: what could not be used from the file, one line each (set by :meth:`load`; not saved)
    problems: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load(cls, folder: Path) -> Settings:
        path = Path(folder) / "settings.json"
        try:
            raw = json.loads(_read_settings_file(path))
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            return _defaults(f"the settings file {path} cannot be read ({exc.strerror or exc})")
        except RecursionError:
            return _defaults(f"the settings file {path} is nested too deeply to be read")
        except ValueError as exc:  # not JSON, or not text
            return _defaults(f"the settings file {path} is not valid JSON ({_short(exc)})")
        if not isinstance(raw, dict):
            return _defaults(f"the settings file {path} does not hold an object of settings")
        values, problems = {}, []
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            why = _unusable(f.name, value, f.default)
            if why is None:
                values[f.name] = value
            else:
                problems.append(
                    f"the setting {f.name} = {_short(value)} in {path} {why}; using the default, {f.default!r}"
                )
        settings = cls(**values)
        settings.problems = tuple(problems)
        return settings

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "settings.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, folder / "settings.json")


def _defaults(problem: str) -> Settings:
    settings = Settings()
    settings.problems = (f"{problem}; using the default settings",)
    return settings


def _read_settings_file(path: Path) -> str:
    """The file's text: opened without blocking (a FIFO in its place would wait for a writer for ever),
    a regular file only, at most MAX_SETTINGS_BYTES."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "it is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        data = f.read(MAX_SETTINGS_BYTES + 1)
    if len(data) > MAX_SETTINGS_BYTES:
        raise OSError(errno.EFBIG, f"it is larger than {MAX_SETTINGS_BYTES >> 20} MB")
    return data.decode("utf-8")  # UnicodeDecodeError is a ValueError


def _unusable(name: str, value, default) -> str | None:
    """Why ``value`` cannot be the setting ``name`` (None: it can)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "is not true or false"
    if name == "thumbnail_cache_mb":
        lo, hi = THUMBNAIL_CACHE_MB
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"is not a whole number of MB from {lo} to {hi:,}"
        return None
    if not isinstance(value, str):
        return "is not a text"
    choices = {
        "layout": [*LAYOUTS, *PROMPT_LAYOUTS],
        "speed": list(SPEEDS),
        "device": list(DEVICES),
    }.get(name)
    if choices is not None:
        return None if value in choices else f"is not one of {', '.join(choices)}"
    if name == "model" and (not value.strip() or "\x00" in value or len(value) > 4096):
        return "is not a model id or a model folder"
    return None


def _short(value, limit: int = 60) -> str:
    """A value (or an exception's message) as it can be shown in one line."""
    if isinstance(value, Exception):
        text = str(value)
    else:
        try:
            text = repr(value)
        except RecursionError:
            text = f"a deeply nested {type(value).__name__}"
    text = text.encode("ascii", "backslashreplace").decode("ascii").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."
