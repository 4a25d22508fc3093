"""The store's errors, each with its message in words: a full disk, a library that cannot be written,
a damaged catalog, another writer, another model. The catalog (:mod:`sorce_desktop.core.store.catalog`), the
vector file (:mod:`sorce_desktop.core.store.vectorfile`) and salvage raise them; the front ends print them as
one line. ``sorce_desktop.core.store.catalog`` re-exports every name, where callers import them from."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path


class StoreError(Exception):
    """The store cannot be used as asked, with the reason in words."""


class ModelMismatch(StoreError):
    """Vectors of another model or layout cannot be mixed with the index's. What differs, for a front end
    that names its own remedy: ``models`` (the index's, the one asked for) when the model does, ``layouts``
    the same when the layout does (by default the model, as ``stored`` and ``requested`` name it)."""

    def __init__(
        self,
        stored: str,
        requested: str,
        photos: int,
        *,
        models: tuple[str, str] | None = None,
        layouts: tuple[str, str] | None = None,
    ):
        self.stored, self.requested, self.photos = stored, requested, photos
        self.models = models if models is not None or layouts is not None else (stored, requested)
        self.layouts = layouts
        super().__init__(
            f"The index was made with the model {stored}; {requested} makes vectors that cannot be mixed "
            f"with those. Re-indexing {photos} photos with {requested} is needed (command line: add --reindex)."
        )


class StoreLocked(StoreError):
    """Another process writes to this library. ``holder``: what it wrote in the lock ("pid N", with
    " window" for the app's window), "" when unknown."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


class StoreFull(StoreError):
    """The disk holding the index is full (or failing): nothing committed is lost."""


class StoreReadOnly(StoreError):
    """The library cannot be written (a read-only mount, another user's folder); it can still be read."""


class StoreDamaged(StoreError):
    """The catalog file itself is damaged; ``sorce-desktop repair`` salvages what can be read."""


def error_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def full_message(folder: Path) -> str:
    """The one message for a full disk, whichever write hit it first."""
    return (
        f"The disk holding the index ({folder}) is full: the last batch was not saved, everything before "
        "it is kept. Free some disk space: indexing resumes where it stopped."
    )


def read_only_message(folder: Path, why: str) -> str:
    return (
        f"The library in {folder} cannot be written ({why}): index and watch need to write there. "
        "search, status and errors still work; to index, use a folder you can write (--data-dir)."
    )


def damaged_message(path: Path, exc: BaseException) -> str:
    return (
        f"The catalog {path} is damaged ({error_reason(exc)}). Run sorce-desktop repair to salvage what can be "
        "read into a new catalog (the damaged file is kept beside it), then index again to redo what was lost."
    )


FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def is_damage(exc: BaseException) -> bool:
    """Whether an SQLite error says the file itself is damaged (not busy, full or read-only)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc).lower()
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in msg or "not a database" in msg


def translate_os_error(exc: OSError, folder: Path) -> StoreError | None:
    """A full disk or a folder that cannot be written, in words; None for anything else."""
    if exc.errno in FULL_ERRNOS:
        return StoreFull(full_message(folder))
    if exc.errno in READ_ONLY_ERRNOS or isinstance(exc, PermissionError):
        why = "a read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return StoreReadOnly(read_only_message(folder, why))
    return None


def nearly_full(folder: Path) -> bool:
    """Whether the disk holding ``folder`` has (almost) no room left: what a write error without its errno
    most likely means."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < 16 * 2**20
    except OSError:
        return False
