"""Starting the window: ``run_gui(data_dir)`` is what ``sorce-desktop`` with no command calls.

Only Qt and the light core modules are imported here, so the window shows at once; torch and
transformers load on a worker thread with the model.
"""

from __future__ import annotations

import logging
import sys

from sorce_desktop.gui.qt import Qt, QtGui, QtWidgets

log = logging.getLogger(__name__)


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
    from sorce_desktop.core.controller import WriterLock
    from sorce_desktop.core.library import Library
    from sorce_desktop.gui.window import MainWindow

    library = Library(data_dir, holder=WriterLock.WINDOW)  # so `index` can say the window holds it
    try:
        win = MainWindow(library)
    except BaseException:
        library.close()
        raise
    win.show()
    log.info("start-up: window shown")  # bench startup reads these milestones
    return win


def instance_name(data_dir=None) -> str:
    """The single-instance socket's name: one per library (its index folder)."""
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.gui.instance import server_name

    return server_name(AppPaths.resolve(data_dir).index)


def serve_instance(win, data_dir=None):
    """Make ``win`` the library's one window: later launches bring it to the front."""
    from sorce_desktop.gui.instance import InstanceServer, bring_to_front

    server = InstanceServer(instance_name(data_dir), win)
    server.raise_requested.connect(lambda: bring_to_front(win))
    server.search_requested.connect(lambda sock, line: win.session.answer_remote(line, lambda r: _send(sock, r)))
    if not server.listen():
        return None  # no socket (a read-only runtime folder): the store's lock still keeps one writer
    win.destroyed.connect(server.close)
    return server


def run_gui(data_dir=None) -> int:
    app = make_app()
    from sorce_desktop.core.controller import StoreError, StoreLocked
    from sorce_desktop.core.paths import DataDirError
    from sorce_desktop.gui.instance import ask_running_to_raise

    # Opened again: the running window comes to the front and this launch ends quietly.
    if ask_running_to_raise(instance_name(data_dir)):
        return 0
    try:
        win = open_window(data_dir)
    except StoreLocked as exc:
        # a command-line `index` or `watch` is writing this library: say so in the window's words
        QtWidgets.QMessageBox.information(
            None,
            "Sorce Desktop",
            f"This library is being indexed from the command line ({exc.holder or 'another process'}). "
            "Open Sorce Desktop again when that has finished, or stop it (Ctrl+C in its terminal).",
        )
        return 1
    except (StoreError, DataDirError) as exc:
        QtWidgets.QMessageBox.critical(None, "Sorce Desktop", str(exc))
        return 1
    win._instance = serve_instance(win, data_dir)
    win.raise_()
    return app.exec()


def _send(sock, reply: bytes) -> None:
    """A search answer to the command line that asked, if it still waits."""
    from sorce_desktop.gui.qt import QtNetwork

    if sock.state() == QtNetwork.QLocalSocket.LocalSocketState.ConnectedState:
        sock.write(reply)
        sock.flush()
