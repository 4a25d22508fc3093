"""The first-run page: pick a photo folder and a model, watch the model arrive, then start."""

from __future__ import annotations

import os

from sorce_desktop.core.controller import display_path
from sorce_desktop.core.models.registry import DEFAULT_MODEL, KNOWN_MODELS, model_info
from sorce_desktop.core.words import human_size, time_left
from sorce_desktop.gui import resources
from sorce_desktop.gui.qt import Qt, QtWidgets, Signal
from sorce_desktop.gui.session import LoadState, ModelState

LOCAL = "__local__"


def model_choices(recommended: str = DEFAULT_MODEL) -> list[tuple[str, str]]:
    """(label, model id) for the model pickers: dual encoders first (they run on a laptop)."""
    out = []
    for m in sorted(
        KNOWN_MODELS.values(), key=lambda m: (m.kind != "dual", m.speed_class != "laptop", m.download_mb)
    ):
        star = "Recommended: " if m.id == recommended else ""
        gpu = ", needs a GPU" if m.speed_class != "laptop" else ""
        out.append((f"{star}{m.title} — {m.download_mb / 1000:.1f} GB{gpu}", m.id))
    return out


def describe_model(model: str) -> str:
    info = model_info(model)
    if info is None:
        name = os.path.basename(model.rstrip("/\\")) or model
        return f"A model folder on this computer ({display_path(name)}); nothing to download."
    text = f"{info.title}. Downloads once ({info.download_mb / 1000:.1f} GB), then works offline."
    return f"{text} {info.notes}".strip()


class ModelPicker(QtWidgets.QWidget):
    """A combo of known models plus "a model folder on this computer…"."""

    changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.combo = QtWidgets.QComboBox()
        self.combo.setAccessibleName("Model")
        for label, mid in model_choices():
            self.combo.addItem(label, mid)
        self.combo.insertSeparator(self.combo.count())
        self.combo.addItem("A model folder on this computer…", LOCAL)
        self.combo.activated.connect(self._activated)
        self.about = QtWidgets.QLabel()
        self.about.setObjectName("muted")
        self.about.setWordWrap(True)
        # room for its wrapped lines (set_model sizes it): a form layout does not grow a wrapped label by itself
        self.about.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo)
        lay.addWidget(self.about)
        self.setFocusProxy(self.combo)
        #: the model this machine is advised (core/models/advice.py) and why; DEFAULT_MODEL until it is known
        self.recommended: tuple[str, str] = (DEFAULT_MODEL, "")
        self.chosen = False  # a model was picked (or named in the settings): advice no longer moves the picker
        self.set_model(DEFAULT_MODEL, chosen=False)

    def model(self) -> str:
        return self.combo.currentData()

    def set_model(self, model: str, chosen: bool = True) -> None:
        self.chosen = self.chosen or chosen
        i = self.combo.findData(model)
        if i < 0:
            self.combo.insertItem(self.combo.count() - 2, display_path(model), model)
            i = self.combo.findData(model)
        self.combo.setCurrentIndex(i)
        about = describe_model(model)
        advised, why = self.recommended
        lines = 3
        if model == advised and why and advised != DEFAULT_MODEL:
            # the advice moved away from the default (a GPU with room for a multimodal LLM): say why
            about, lines = f"{why} {about}", 6
        self.about.setMinimumHeight(self.about.fontMetrics().lineSpacing() * lines + 4)
        self.about.setText(about)
        self.combo.setToolTip(f"{display_path(model)}\n{why}" if model == advised and why else display_path(model))
        self.changed.emit(model)

    def recommend(self, model: str, reason: str) -> None:
        """The advice for this machine (a GPU with room for a multimodal LLM gets one, anything else the dual
        encoder, with the reason in words): marked "Recommended" in the list and shown with its reason; the
        picker moves to it unless a model was already chosen."""
        self.recommended = (model, reason)
        for label, mid in model_choices(model):
            i = self.combo.findData(mid)
            if i >= 0:
                self.combo.setItemText(i, label)
        self.set_model(model if not self.chosen else self.model(), chosen=False)

    def _activated(self, _i: int) -> None:
        if self.combo.currentData() == LOCAL:
            folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a Model Folder")
            if folder:
                self.set_model(folder)
            else:
                self.set_model(self.recommended[0])
            return
        self.set_model(self.combo.currentData())


class WelcomePage(QtWidgets.QWidget):
    start_requested = Signal(str, str)  # photo folder, model
    cancel_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.folder: str | None = None
        self.setObjectName("welcome")
        self._build_controls()
        self._build_progress()
        self._lay_out()
        self.setTabOrder(self.folder_button, self.picker.combo)
        self.setTabOrder(self.picker.combo, self.start_button)

    def _build_controls(self) -> None:
        """The two steps (photo folder, model) and the start button."""
        self.folder_button = QtWidgets.QPushButton("Choose Folder…")
        self.folder_button.setToolTip("The folder with your photos (Ctrl+O); you can add more later")
        self.folder_button.clicked.connect(self.choose_folder)
        self.folder_label = QtWidgets.QLabel("No folder chosen yet — or drop one here.")
        self.folder_label.setObjectName("muted")
        self.folder_label.setWordWrap(True)
        self.picker = ModelPicker()
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setObjectName("primary")
        self.start_button.setDefault(True)
        self.start_button.setEnabled(False)
        self.start_button.clicked.connect(self._start)

    def _build_progress(self) -> None:
        """The model download's progress with its cancel button, and the error line (both hidden)."""
        self.progress_label = QtWidgets.QLabel()
        self.progress_label.setWordWrap(True)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(6)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        prog_row = QtWidgets.QHBoxLayout()
        prog_row.addWidget(self.progress, 1)
        prog_row.addWidget(self.cancel_button)
        self.progress_box = QtWidgets.QWidget()
        pl = QtWidgets.QVBoxLayout(self.progress_box)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.progress_label)
        pl.addLayout(prog_row)
        self.progress_box.hide()
        self.error_label = QtWidgets.QLabel()
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.hide()

    def _steps_form(self) -> QtWidgets.QFormLayout:
        form = QtWidgets.QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(12)
        frow = QtWidgets.QVBoxLayout()
        frow.addWidget(self.folder_button, 0, Qt.AlignmentFlag.AlignLeft)
        frow.addWidget(self.folder_label)
        step1 = QtWidgets.QLabel("<b>1</b>  Photos")
        step2 = QtWidgets.QLabel("<b>2</b>  Model")
        step1.setBuddy(self.folder_button)
        step2.setBuddy(self.picker.combo)
        form.addRow(step1, frow)
        form.addRow(step2, self.picker)
        return form

    def _lay_out(self) -> None:
        """One centred card: icon, title, what the app does, the steps, progress, start."""
        card = QtWidgets.QFrame()
        card.setObjectName("card")
        card.setMaximumWidth(560)
        icon = QtWidgets.QLabel()
        icon.setPixmap(resources.app_icon().pixmap(72, 72))
        icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title = QtWidgets.QLabel("Find the small things in your photos")
        title.setObjectName("welcomeTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        sub = QtWidgets.QLabel(
            "Describe something — “a red kite in the sky”, “the cup on the back shelf” — and see where it is in "
            "each photo. Your photos stay where they are; nothing is uploaded or changed."
        )
        sub.setWordWrap(True)
        sub.setAlignment(Qt.AlignmentFlag.AlignCenter)
        sub.setObjectName("muted")

        cl = QtWidgets.QVBoxLayout(card)
        cl.setContentsMargins(36, 32, 36, 28)
        cl.setSpacing(14)
        cl.addWidget(icon)
        cl.addWidget(title)
        cl.addWidget(sub)
        cl.addSpacing(8)
        cl.addLayout(self._steps_form())
        cl.addSpacing(6)
        cl.addWidget(self.progress_box)
        cl.addWidget(self.error_label)
        brow = QtWidgets.QHBoxLayout()
        brow.addStretch(1)
        brow.addWidget(self.start_button)
        cl.addLayout(brow)
        outer = QtWidgets.QVBoxLayout(self)
        outer.addStretch(1)
        row = QtWidgets.QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 3)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)

    def choose_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Choose a Folder of Photos", os.path.expanduser("~")
        )
        if folder:
            self.set_folder(folder)

    def set_folder(self, folder: str) -> None:
        self.folder = folder
        self.folder_label.setText(display_path(folder))
        self.folder_label.setObjectName("")
        self.start_button.setEnabled(True)
        self.start_button.setFocus()

    def _start(self) -> None:
        if self.folder:
            self.error_label.hide()
            self.start_requested.emit(self.folder, self.picker.model())

    def set_busy(self, busy: bool) -> None:
        for w in (self.folder_button, self.picker, self.start_button):
            w.setEnabled(not busy and (w is not self.start_button or self.folder is not None))
        self.progress_box.setVisible(busy)

    def show_state(self, st: ModelState) -> None:
        if st.state in (LoadState.LOADING, LoadState.DOWNLOADING):
            self.set_busy(True)
            if st.state == LoadState.DOWNLOADING and st.total_bytes:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * st.done_bytes / max(1, st.total_bytes)))
                left = time_left(st.eta_s)
                self.progress_label.setText(
                    f"Downloading the model: {human_size(st.done_bytes)} of {human_size(st.total_bytes)}"
                    f"{', ' + left if left else ''}. This happens once."
                )
                self.cancel_button.setEnabled(True)
            else:
                self.progress.setRange(0, 0)
                self.progress_label.setText("Getting the model ready…")
        elif st.state in (LoadState.ERROR, LoadState.CANCELLED):
            self.set_busy(False)
            self.error_label.setText(st.message)
            self.error_label.show()
