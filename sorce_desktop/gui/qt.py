"""The one place the Qt binding is named: every GUI module imports Qt from here."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtNetwork, QtSvg, QtWidgets  # noqa: F401
from PySide6.QtCore import Qt, Signal, Slot  # noqa: F401

__all__ = ["QtCore", "QtGui", "QtNetwork", "QtSvg", "QtWidgets", "Qt", "Signal", "Slot"]
