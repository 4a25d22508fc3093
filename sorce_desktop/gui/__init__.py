"""The window (Qt lives only below this package; see gui/qt.py for the one module naming the binding)."""
