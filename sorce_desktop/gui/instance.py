"""One window per library: opening the app again brings the running window to the front.

The first window listens on a local socket (QLocalServer) named after its data folder; a second launch
on the same data folder connects (QLocalSocket), asks it to come forward and exits. Another data folder
(``--data-dir``) is another library and gets its own window. A socket left behind by a window that
crashed answers nobody, so it is removed and taken over.
"""

from __future__ import annotations

from sorce_desktop.core.running import SEARCH, server_name
from sorce_desktop.gui.qt import QtCore, QtNetwork, Signal

__all__ = ["server_name", "InstanceServer", "ask_running_to_raise", "bring_to_front"]

#: how long a second launch waits for the first window to answer (it answers at once, if it runs)
CONNECT_MS = 1500
RAISE = b"raise\n"


def ask_running_to_raise(name: str, timeout_ms: int = CONNECT_MS) -> bool:
    """True when a window is running for ``name`` and was asked to come to the front."""
    sock = QtNetwork.QLocalSocket()
    sock.connectToServer(name)
    if not sock.waitForConnected(timeout_ms):
        return False
    if sock.write(RAISE) != len(RAISE):
        return False
    sock.waitForBytesWritten(timeout_ms)  # False when flushing already sent everything: not a failure
    # the window answers once it has come forward; a window too busy to answer in time still got it
    sock.waitForReadyRead(timeout_ms)
    sock.disconnectFromServer()
    return True


class InstanceServer(QtCore.QObject):
    """Listens for later launches; ``raise_requested`` fires on the UI thread when one asks."""

    raise_requested = Signal()
    #: a ``search`` on the command line asks the window (core/running.py): (socket, request line)
    search_requested = Signal(object, bytes)

    def __init__(self, name: str, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.name = name
        self.server = QtNetwork.QLocalServer(self)
        self.server.setSocketOptions(QtNetwork.QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._connection)
        self._partial: dict[QtNetwork.QLocalSocket, bytes] = {}  # a request line still arriving

    def listen(self) -> bool:
        if self.server.listen(self.name):
            return True
        # a socket file left by a window that crashed: nobody answers on it (checked by the caller)
        QtNetwork.QLocalServer.removeServer(self.name)
        return self.server.listen(self.name)

    def _connection(self) -> None:
        while self.server.hasPendingConnections():
            sock = self.server.nextPendingConnection()
            sock.readyRead.connect(lambda s=sock: self._read(s))
            sock.disconnected.connect(lambda s=sock: self._partial.pop(s, None))
            sock.disconnected.connect(sock.deleteLater)
            if sock.bytesAvailable():  # arrived with the connection: no readyRead will follow for it
                self._read(sock)

    def _read(self, sock: QtNetwork.QLocalSocket) -> None:
        data = self._partial.pop(sock, b"") + bytes(sock.readAll())
        if data.startswith(RAISE.strip()):
            self.raise_requested.emit()
            sock.write(b"ok\n")
            sock.flush()
        elif data.startswith(SEARCH) or SEARCH.startswith(data):
            if not data.endswith(b"\n"):
                self._partial[sock] = data  # the rest is on its way
                return
            self.search_requested.emit(sock, data)

    def close(self) -> None:
        self.server.close()


def bring_to_front(win) -> None:
    """Show ``win`` unminimised, on top, with the keyboard (as far as the window system allows)."""
    from sorce_desktop.gui.qt import Qt

    if win.isMinimized():
        win.setWindowState(win.windowState() & ~Qt.WindowState.WindowMinimized)
    win.show()
    win.raise_()
    win.activateWindow()
