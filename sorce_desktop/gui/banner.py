"""A strip above the results saying the app searches only the text in photos (no visual model yet).

Out of the box on a machine with no network the visual model cannot be downloaded, but the OCR and
text-embedding models install with the package: words in photos (signs, labels, jerseys) are found
from the first run. The banner says so, and how to get picture search (download the model, or point
to a model folder on this computer).
"""

from __future__ import annotations

from sorce_desktop.gui.qt import QtCore, QtWidgets, Signal


class TextOnlyBanner(QtWidgets.QFrame):
    download = Signal()
    choose_folder = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.title = QtWidgets.QLabel("Searching the text in your photos")
        self.title.setObjectName("bannerTitle")
        self.label = QtWidgets.QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QtWidgets.QPushButton("Download Model")
        self.download_button.setObjectName("primary")
        self.folder_button = QtWidgets.QPushButton("Choose Model Folder…")
        self.download_button.clicked.connect(self.download)
        self.folder_button.clicked.connect(self.choose_folder)
        text = QtWidgets.QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.label)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(14, 8, 10, 8)
        lay.addLayout(text, 1)
        lay.addWidget(self.download_button)
        lay.addWidget(self.folder_button)
        self.setAccessibleName("Text-only search notice")
        self.hide()

    def show_note(self, note: str, detail: str = "") -> None:
        """``note``: what is searched and what to do (core Library.text_only_note); ``detail``: why the
        model is missing, in full (the tooltip)."""
        self.label.setText(
            f"{note} Words you can read in a photo — a sign, a label, a jersey number — are found now."
        )
        self.setToolTip(detail)
        self.show()
