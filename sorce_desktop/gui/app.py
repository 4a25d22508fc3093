"""Starting the window: ``run_gui(data_dir)`` is what ``sorce-desktop`` with no command calls.

Only Qt and the light core modules are imported here, so the window shows at once; torch and
transformers load on a worker thread with the model.
"""

from __future__ import annotations

import sys

from sorce_desktop.gui.qt import Qt, QtGui, QtWidgets


def make_app(argv: list[str] | None = None) -> QtWidgets.QApplication:
    app = QtWidgets.QApplication.instance()
    if app is None:
        QtGui.QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
            Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
        )
        app = QtWidgets.QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("sorce-desktop")
    app.setApplicationDisplayName("Sorce Desktop")
    app.setOrganizationName("sorce-desktop")
    app.setDesktopFileName("sorce-desktop")
    from sorce_desktop.gui import resources, style, tasks

    style.apply(app)
    app.setWindowIcon(resources.app_icon())
    tasks.install()
    return app


def open_window(data_dir=None):
    """The main window on ``data_dir``, shown; raises StoreError when the index cannot be opened."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.gui.window import MainWindow

    library = Library(data_dir)
    try:
        win = MainWindow(library)
    except BaseException:
        library.close()
        raise
    win.show()
    return win


def run_gui(data_dir=None) -> int:
    app = make_app()
    from sorce_desktop.core.paths import DataDirError
    from sorce_desktop.core.store import StoreError

    try:
        win = open_window(data_dir)
    except (StoreError, DataDirError) as exc:
        QtWidgets.QMessageBox.critical(None, "Sorce Desktop", str(exc))
        return 1
    win.raise_()
    return app.exec()
