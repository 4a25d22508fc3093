"""Thumbnails: made off the UI thread, cached on disk by content hash, kept in memory while shown.

A thumbnail is the upright photo (EXIF applied, as the region boxes are) shrunk to ``DISK_SIDE`` on
its long side and saved as JPEG under the app's thumbnail folder, named by the photo's content hash:
a moved or renamed photo keeps its thumbnail, an edited one gets a new one. The grid asks for a
size in device pixels; the worker scales the disk copy to it, so the UI thread only draws.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from sorce_desktop.core.photos.images import ImageError, load_image
from sorce_desktop.gui.qt import QtCore, QtGui, Signal
from sorce_desktop.gui.tasks import run_task

log = logging.getLogger(__name__)

DISK_SIDE = 512
MEMORY_BYTES = 160 * 2**20


def pil_to_qimage(img: Image.Image) -> QtGui.QImage:
    """A QImage that owns its pixels (safe to hand to another thread)."""
    img = img.convert("RGB")
    data = img.tobytes("raw", "RGB")
    qimg = QtGui.QImage(data, img.width, img.height, 3 * img.width, QtGui.QImage.Format.Format_RGB888)
    return qimg.copy()


class ThumbnailCache(QtCore.QObject):
    """``get(key, path, px)`` returns a pixmap now if one is in memory (possibly of another size,
    still fine to draw scaled) and, if it is not the asked size, loads one in the background and
    emits ``ready(key)``."""

    ready = Signal(str)
    failed = Signal(str, str)

    def __init__(self, folder: Path, limit_mb: int = 512, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.folder = Path(folder)
        self.limit_bytes = max(16, limit_mb) * 2**20
        self._memory: OrderedDict[str, QtGui.QPixmap] = OrderedDict()
        self._memory_bytes = 0
        self._inflight: set[tuple[str, int]] = set()
        self._failed: dict[str, str] = {}
        self.generation = 0  # bumped by clear(): late results for an old generation are dropped

    def disk_path(self, key: str) -> Path:
        safe = "".join(c for c in key if c.isalnum())[:64] or "x"
        return self.folder / safe[:2] / f"{safe}.jpg"

    def error(self, key: str) -> str | None:
        return self._failed.get(key)

    def get(self, key: str, path: str, px: int) -> QtGui.QPixmap | None:
        pm = self._memory.get(key)
        if pm is not None:
            self._memory.move_to_end(key)
            if max(pm.width(), pm.height()) >= min(px, DISK_SIDE) * 0.95 or key in self._failed:
                return pm
        if key not in self._failed:
            self._request(key, path, px)
        return pm

    def _request(self, key: str, path: str, px: int) -> None:
        if (key, px) in self._inflight:
            return
        self._inflight.add((key, px))
        gen = self.generation
        disk = self.disk_path(key)

        def work() -> QtGui.QImage:
            return make_thumbnail(path, disk, px)

        def done(img: QtGui.QImage) -> None:
            self._inflight.discard((key, px))
            if gen != self.generation:
                return
            self._store(key, QtGui.QPixmap.fromImage(img))
            self.ready.emit(key)

        def failed(exc: BaseException) -> None:
            self._inflight.discard((key, px))
            self._failed[key] = str(exc)
            self.failed.emit(key, str(exc))

        run_task(work, done, failed, lane="thumbs", name="thumbnail")

    def _store(self, key: str, pm: QtGui.QPixmap) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= old.width() * old.height() * 4
        self._memory[key] = pm
        self._memory_bytes += pm.width() * pm.height() * 4
        while self._memory_bytes > MEMORY_BYTES and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            self._memory_bytes -= dropped.width() * dropped.height() * 4

    def clear(self) -> None:
        self.generation += 1
        self._memory.clear()
        self._memory_bytes = 0
        self._inflight.clear()

    def prune(self) -> None:
        """Keep the disk cache under its size limit (oldest first), in the background."""
        folder, limit = self.folder, self.limit_bytes
        run_task(lambda: prune_folder(folder, limit), name="prune thumbnails")


def make_thumbnail(path: str, disk: Path, px: int) -> QtGui.QImage:
    """The thumbnail of ``path`` with its long side ``px`` (at most ``DISK_SIDE``), made once on disk."""
    img: Image.Image | None = None
    if disk.is_file():
        try:
            with Image.open(disk) as f:
                img = f.convert("RGB")
            os.utime(disk)  # recently used: kept longest by prune_folder
        except OSError:
            img = None
    if img is None:
        try:
            decoded = load_image(path, min_side=DISK_SIDE // 2)
        except ImageError as exc:
            raise ImageError(f"{exc}") from None
        img = decoded.image
        img.thumbnail((DISK_SIDE, DISK_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
        try:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(".tmp")
            img.save(tmp, "JPEG", quality=87)
            os.replace(tmp, disk)
        except OSError as exc:  # a full or read-only cache folder costs speed, not the thumbnail
            log.warning("thumbnail cache not written (%s)", exc)
    side = min(px, DISK_SIDE)
    if max(img.size) > side:
        img = img.copy()
        img.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return pil_to_qimage(img)


def prune_folder(folder: Path, limit_bytes: int) -> int:
    files = []
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                st = os.stat(p)
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
            total += st.st_size
    removed = 0
    for _mtime, size, p in sorted(files):
        if total <= limit_bytes:
            break
        try:
            os.remove(p)
        except OSError:
            continue
        total -= size
        removed += 1
    return removed
