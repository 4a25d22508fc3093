"""A strip above the results saying the app searches only the text in photos (no visual model yet).

Out of the box on a machine with no network the visual model cannot be downloaded, but the OCR and
text-embedding models install with the package: words in photos (signs, labels, jerseys) are found
from the first run. The banner says so, and how to get picture search (download the model, or point
to a model folder on this computer).
"""

from __future__ import annotations

from sorce_desktop.core.words import human_size
from sorce_desktop.gui.qt import QtCore, QtWidgets, Signal

TEXT_ONLY_TITLE = "Searching the text in your photos"


def attempt_note(reason: str, at: str) -> str:
    """What a try for the model that failed again says, with when: the answer to a click."""
    if reason == "offline":
        return f"Still offline at {at}."
    return f"Tried again at {at}; the model is still not available."


class TextOnlyBanner(QtWidgets.QFrame):
    """The one banner while there is no visual model: what is searched, why the model is missing (a
    failed download's reason in its title), one set of actions, and the answer to the last click."""

    download = Signal()
    choose_folder = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.title = QtWidgets.QLabel(TEXT_ONLY_TITLE)
        self.title.setObjectName("bannerTitle")
        self.label = QtWidgets.QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QtWidgets.QLabel()  # "Trying…", "Still offline at 14:05."
        self.status.setObjectName("bannerStatus")
        self.status.hide()
        self.download_button = QtWidgets.QPushButton("Download Model")
        self.download_button.setObjectName("primary")
        self.folder_button = QtWidgets.QPushButton("Choose Model Folder…")
        self.download_button.clicked.connect(self.download)
        self.folder_button.clicked.connect(self.choose_folder)
        text = QtWidgets.QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.label)
        text.addWidget(self.status)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(14, 8, 10, 8)
        lay.addLayout(text, 1)
        lay.addWidget(self.download_button)
        lay.addWidget(self.folder_button)
        self.setAccessibleName("Text-only search notice")
        self.hide()

    def show_note(self, note: str, detail: str = "", *, reason: str = "", status: str = "") -> None:
        """``note``: what is searched and what to do (core Library.text_only_note); ``detail``: why the
        model is missing, in full (the tooltip); ``reason``: a failed download's (its title says it, and
        the download button becomes Try Again); ``status``: the answer to the last click."""
        failure = FAILURE_TITLES.get(reason) or (
            "Download cancelled" if reason == "cancelled" else "The model could not be downloaded" if reason else ""
        )
        self.title.setText(f"{failure} — {TEXT_ONLY_TITLE.lower()}" if failure else TEXT_ONLY_TITLE)
        self.label.setText(
            f"{note} Words you can read in a photo — a sign, a label, a jersey number — are found now."
        )
        self.download_button.setText("Try Again" if reason else "Download Model")
        self.status.setText(status)
        self.status.setVisible(bool(status))
        self.setToolTip(detail)
        self.show()


#: what a failed download's reason is called in the panel's title (core DownloadFailed.reason)
FAILURE_TITLES = {
    "offline": "No internet connection",
    "disk_full": "The disk is full",
    "not_found": "Model not found",
}


class DownloadPanel(QtWidgets.QFrame):
    """The model download in the window: progress with size and time left, Cancel; when it fails, why
    in plain words (no network, disk full, not found) with Retry and the model-folder way out."""

    cancel = Signal()
    retry = Signal()
    choose_folder = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.title = QtWidgets.QLabel()
        self.title.setObjectName("bannerTitle")
        self.detail = QtWidgets.QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status = QtWidgets.QLabel()  # the answer to the last Retry: "Still offline at 14:05."
        self.status.setObjectName("bannerStatus")
        self.status.hide()
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.retry_button = QtWidgets.QPushButton("Retry")
        self.retry_button.setObjectName("primary")
        self.folder_button = QtWidgets.QPushButton("Choose Model Folder…")
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button.clicked.connect(self.retry)
        self.folder_button.clicked.connect(self.choose_folder)
        text = QtWidgets.QVBoxLayout()
        text.setSpacing(4)
        text.addWidget(self.title)
        text.addWidget(self.detail)
        text.addWidget(self.status)
        text.addWidget(self.progress)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(14, 8, 10, 8)
        lay.addLayout(text, 1)
        for b in (self.cancel_button, self.retry_button, self.folder_button):
            lay.addWidget(b)
        self.setAccessibleName("Model download")
        self.hide()

    def _buttons(self, *, cancel: bool) -> None:
        self.cancel_button.setVisible(cancel)
        self.retry_button.setVisible(not cancel)
        self.folder_button.setVisible(not cancel)

    def show_progress(self, name: str, done: int, total: int, time_left: str = "") -> None:
        self.title.setText(f"Downloading {name}")
        size = f"{human_size(done)} of {human_size(total)}" if total else human_size(done)
        self.detail.setText(" · ".join(p for p in (size, time_left or "working out the time left…") if p))
        self.progress.setValue(int(1000 * done / total) if total else 0)
        self.progress.show()
        self._buttons(cancel=True)
        self.show()

    def set_status(self, status: str) -> None:
        self.status.setText(status)
        self.status.setVisible(bool(status))

    def show_failure(self, message: str, reason: str) -> None:
        title = FAILURE_TITLES.get(reason, "The model could not be downloaded")
        self.title.setText(title)
        # the message opens with the same words when it is the core's (for the command line too)
        self.detail.setText(message.removeprefix(f"{title}: ").removeprefix(title))
        self.progress.hide()
        self._buttons(cancel=False)
        self.show()

    def show_cancelled(self, name: str) -> None:
        self.title.setText("Download cancelled")
        self.detail.setText(
            f"{name} was not downloaded; what came already is kept, so Retry carries on from there."
        )
        self.progress.hide()
        self._buttons(cancel=False)
        self.show()

    @property
    def showing_progress(self) -> bool:
        return self.isVisible() and self.cancel_button.isVisible()
