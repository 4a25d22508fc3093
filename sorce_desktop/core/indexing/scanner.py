"""Walking photo folders (read-only): which image files exist, with size and mtime."""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_mod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sorce_desktop.core.paths import under_any
from sorce_desktop.core.photos.images import is_image_name

#: Partial downloads and sync tools' staging files: never indexed until renamed to their real name.
TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".temp", ".download", ".partial", ".!sync", ".syncthing")
TEMP_PREFIXES = (".", "~$", ".~", "~")


def is_temporary_name(name: str) -> bool:
    low = name.lower()
    return low.startswith(TEMP_PREFIXES) or low.endswith(TEMP_SUFFIXES) or ".syncthing." in low


@dataclass(frozen=True)
class FileEntry:
    path: str
    folder: str  # the watched folder it belongs to
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: dict[str, FileEntry] = field(default_factory=dict)
    #: (path, reason) for folders or files that could not be read during the walk
    errors: list[tuple[str, str]] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)  # watched folders that are not there


def bytes_hash(data: bytes) -> str:
    """The same content hash as :func:`file_hash`, for bytes already read."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class NotRegularFile(OSError):
    """A path that is not a regular file (a FIFO, socket or device named like a photo, a dangling link)."""


def open_regular(path: str | os.PathLike) -> int:
    """Open a file for reading without ever blocking, and only if it is a regular file; returns an fd.

    A FIFO opened for reading blocks until a writer comes, and a path can turn into one between the scan
    and the read: opening non-blocking returns at once whatever the path is, and fstat on the open fd
    (not a stat before it, which races) says what was opened. The fd is switched back to blocking reads,
    which for a regular file never wait on anyone."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file (a pipe, socket or device)", os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash (BLAKE2b-128) used to recognise a moved file or an unchanged rewrite."""
    h = hashlib.blake2b(digest_size=16)
    with os.fdopen(open_regular(path), "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


#: the running system's own trees (processes, kernel objects, devices): never photo folders, and full of
#: links back to the whole file system (/proc/self/root is /)
SYSTEM_TREES = ("/proc", "/sys", "/dev")


def _may_follow(link: str, here: str, root: str) -> bool:
    """Whether the walk of ``root`` goes down the symlinked folder ``link`` found in the folder ``here``
    (both real paths but ``link``): not from or into the system's own trees, and not back to the folder
    being walked or above it, whose whole tree (a link to /) would be walked before the loop was seen."""
    target = os.path.realpath(link)
    if under_any(here, SYSTEM_TREES) or under_any(target, SYSTEM_TREES):
        return False
    return not under_any(root, [target])


def walk_images(
    root: str, skip: Iterable[str] = (), errors: list[tuple[str, str]] | None = None
) -> Iterator[FileEntry]:
    """Image files under ``root``: hidden folders, temporary files and ``skip`` (the app's own data) are
    left out; symlinked folders are followed once (loops end), but never into /proc, /sys or /dev nor back
    above ``root``; unreadable folders are reported."""
    skip = [os.path.realpath(s) for s in skip]
    real_root = os.path.realpath(root)
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError as exc:
            if errors is not None:
                errors.append((d, f"folder cannot be read ({exc.strerror or exc})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # symlink loop or a folder reached twice
        seen_dirs.add(key)
        real_d = os.path.realpath(d)
        if under_any(real_d, skip):
            continue
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as exc:
            if errors is not None:
                reason = (
                    "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
                )
                errors.append((d, f"folder cannot be read ({reason})"))
            continue
        subdirs = []
        for e in entries:
            name = e.name
            try:
                if e.is_dir(follow_symlinks=True):
                    if not name.startswith(".") and (not e.is_symlink() or _may_follow(e.path, real_d, real_root)):
                        subdirs.append(e.path)
                    continue
                if not is_image_name(name) or is_temporary_name(name):
                    continue
                if not e.is_file(follow_symlinks=True):
                    # FIFOs, sockets, devices named like photos: never opened (a FIFO would block)
                    if errors is not None:
                        if e.is_symlink() and not os.path.exists(e.path):
                            errors.append((e.path, "a symbolic link to a file that does not exist"))
                        else:
                            errors.append((e.path, "not a regular file (a pipe, socket or device)"))
                    continue
                est = e.stat(follow_symlinks=True)
            except OSError as exc:
                if errors is not None and is_image_name(name):
                    errors.append((e.path, f"the file cannot be read ({exc.strerror or exc})"))
                continue
            yield FileEntry(e.path, root, est.st_size, est.st_mtime_ns)
        stack.extend(sorted(subdirs, reverse=True))


def folder_is_there(folder: str, has_photos: Callable[[str], bool] | None = None) -> bool:
    """Whether a library folder is really there (the one rule, for ``index`` and the watcher): a folder
    that holds something, or an empty one from which no photo was indexed. An empty folder whose photos
    the catalog holds (``has_photos``) is a mount point whose drive or share is absent, or a folder whose
    contents all vanished at once: offline, so its photos are not forgotten."""
    try:
        if not os.path.isdir(folder):
            return False
        with os.scandir(folder) as it:
            empty = next(it, None) is None
    except OSError:
        return False
    return not (empty and has_photos is not None and has_photos(folder))


def folder_offline(store, folder: str) -> bool:
    """Whether a library folder is offline: the one answer every reader of the fact gets (``status``, the
    window's folder list, the planner choosing where a moved photo came from). Offline when the catalog
    says so (its ``online`` column, written by the indexing service alone: from a scan, or from what the
    watcher reports) or when it is not there now (:func:`folder_is_there`, the rule the scan and the
    watcher decide by), so a drive unplugged while nothing watches reads as offline at once, and an empty
    mount point reads as offline to ``status`` as it does to ``index`` and ``watch``."""
    return not store.folder_online(folder) or not folder_is_there(folder, store.folder_has_photos)


def scan(
    folders: Iterable[str], skip: Iterable[str] = (), has_photos: Callable[[str], bool] | None = None
) -> ScanResult:
    """The image files under ``folders``; a folder that is not there (:func:`folder_is_there`, with
    ``has_photos`` telling which folders the catalog has photos from) is listed as offline."""
    result = ScanResult()
    for folder in folders:
        if not folder_is_there(folder, has_photos):
            result.offline.append(folder)
            continue
        for entry in walk_images(folder, skip, result.errors):
            result.files[os.path.abspath(entry.path)] = entry
    return result


def canonical_folder(path: str | os.PathLike) -> str:
    return str(Path(path).expanduser().resolve())


def existing_folder(path: str | os.PathLike) -> str:
    """``path`` as a canonical folder; FileNotFoundError saying what is wrong when it is not a folder."""
    folder = canonical_folder(path)
    system = next((t for t in SYSTEM_TREES if under_any(folder, [t])), None)
    if system is not None:
        raise FileNotFoundError(
            f"{path} is in {system}, the running system's own files, not a folder of photos."
        )
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise FileNotFoundError(f"{path} is a file, not a folder: give the folder that holds your photos.")
        raise FileNotFoundError(f"The folder {path} does not exist.")
    return folder
