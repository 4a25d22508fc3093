"""The app icon, read from the SVG in resources/ (the packagers derive .ico/.icns/PNG from it)."""

from __future__ import annotations

import logging
import sys
from functools import lru_cache
from pathlib import Path

from sorce_desktop.gui.qt import QtCore, QtGui, QtSvg

log = logging.getLogger(__name__)

ICON_NAME = "sorce-desktop.svg"


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    out = [
        here.parents[1] / "resources" / ICON_NAME,  # package data (wheels)
        here.parents[2] / "resources" / ICON_NAME,  # a source checkout
    ]
    bundle = getattr(sys, "_MEIPASS", None)  # PyInstaller
    if bundle:
        out.insert(0, Path(bundle) / "resources" / ICON_NAME)
    return out


def icon_path() -> Path | None:
    return next((p for p in _candidates() if p.is_file()), None)


@lru_cache(maxsize=1)
def app_icon() -> QtGui.QIcon:
    path = icon_path()
    if path is None:
        log.warning("app icon %s not found (looked in %s)", ICON_NAME, ", ".join(map(str, _candidates())))
        return QtGui.QIcon()
    renderer = QtSvg.QSvgRenderer(str(path))
    icon = QtGui.QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        img = QtGui.QImage(size, size, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
        img.fill(QtCore.Qt.GlobalColor.transparent)
        p = QtGui.QPainter(img)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        renderer.render(p)
        p.end()
        icon.addPixmap(QtGui.QPixmap.fromImage(img))
    return icon
