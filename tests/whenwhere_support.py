"""Photos with EXIF capture times and GPS positions written by the tests (Pillow writes both IFDs)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw
from PIL.TiffImagePlugin import IFDRational

LISBON = (38.7223, -9.1393)
PARIS = (48.8566, 2.3522)


def _dms(x: float) -> tuple:
    d = int(x)
    m = int((x - d) * 60)
    s = ((x - d) * 60 - m) * 60
    return IFDRational(d, 1), IFDRational(m, 1), IFDRational(int(round(s * 10000)), 10000)


def write_photo(
    path: Path,
    color=(200, 40, 40),
    *,
    taken: str | None = None,
    offset: str | None = None,
    gps: tuple[float, float] | None = None,
    mtime: float | None = None,
    size=(96, 64),
) -> Path:
    """A small JPEG; ``taken`` 'YYYY:MM:DD HH:MM:SS' as DateTimeOriginal, ``gps`` (lat, lon) in degrees;
    ``mtime``: the file's modification time (seconds since the epoch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle(
        [size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=(20, 20, 200)
    )
    exif = Image.Exif()
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken
        if offset is not None:
            exif.get_ifd(0x8769)[0x9011] = offset
    if gps is not None:
        lat, lon = gps
        g = exif.get_ifd(0x8825)
        g[1], g[2] = ("N" if lat >= 0 else "S"), _dms(abs(lat))
        g[3], g[4] = ("E" if lon >= 0 else "W"), _dms(abs(lon))
    img.save(path, exif=exif)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path
