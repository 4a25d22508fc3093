"""Settings: model, compute device, region layout, thumbnail cache, refinement."""

from __future__ import annotations

from dataclasses import replace

from sorce_desktop.core.library import photos_to_redo
from sorce_desktop.core.models.speed import FAST_OVER_THOROUGH, speed_factor
from sorce_desktop.core.regions import LAYOUTS
from sorce_desktop.core.settings import Settings
from sorce_desktop.core.words import duration_words
from sorce_desktop.core.words import photos as count_photos
from sorce_desktop.gui.qt import QtWidgets
from sorce_desktop.gui.welcome import ModelPicker

SPEED_CHOICES = [
    ("Fast (the default)", "fast"),
    ("Thorough (full precision, slower)", "thorough"),
]


DEVICES = [
    ("Automatic (GPU when there is one)", "auto"),
    ("CPU", "cpu"),
    ("NVIDIA GPU (CUDA)", "cuda"),
    ("Apple GPU (Metal)", "mps"),
]


def reindex_cost(photos: int, rate: float | None, layout_change_only: bool, speed_factor: float = 1.0) -> str:
    """The cost of re-indexing ``photos`` (only those whose picture vectors are really made again), in
    words, for the confirmation question. ``speed_factor``: the new speed's rate over the last one's."""
    what = f"{count_photos(photos)} must be indexed again (their picture regions; the words already read in them are kept)"
    if rate and rate > 0:
        rate = rate * speed_factor
        how_long = f"; at this computer's last speed ({rate * 60:,.0f} photos a minute) that takes {duration_words(photos / rate)}"
        if not layout_change_only:
            how_long += " (another model can be faster or slower)"
    else:
        how_long = "; that can take a while on a large library"
    return (
        f"{what}{how_long}. It runs in the background; until it finishes, search finds only the photos "
        "already done again."
    )


class SettingsDialog(QtWidgets.QDialog):
    def __init__(
        self,
        settings: Settings,
        parent=None,
        *,
        variants: dict[str | None, int] | None = None,
        rate: float | None = None,
    ):
        """``variants``: the library's photos by the variant that made their vectors (for the cost of a
        speed change); ``rate``: the last indexing rate, photos per second."""
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(520)
        self._orig = settings
        self.picker = ModelPicker()
        self.picker.set_model(settings.model)
        self.device = QtWidgets.QComboBox()
        for label, value in DEVICES:
            self.device.addItem(label, value)
        self.device.setCurrentIndex(max(0, self.device.findData(settings.device)))
        self.layout_box = QtWidgets.QComboBox()
        for name, lay in LAYOUTS.items():
            self.layout_box.addItem(f"{name} — {lay.description}", name)
        self.layout_box.setCurrentIndex(max(0, self.layout_box.findData(settings.layout)))
        self.layout_box.setToolTip(
            "How each photo is cut into regions. More regions find smaller things, and cost more to index."
        )
        self.speed = QtWidgets.QComboBox()
        for label, value in SPEED_CHOICES:
            self.speed.addItem(label, value)
        self.speed.setCurrentIndex(max(0, self.speed.findData(settings.speed)))
        self.speed.setToolTip(
            "Fast runs the model in int8, feeds small tiles at a smaller size and skips blank tiles: about\n"
            f"{FAST_OVER_THOROUGH:.0f}x faster than thorough. Thorough gives every tile the full model."
        )
        self.speed_cost = QtWidgets.QLabel()
        self.speed_cost.setObjectName("muted")
        self.speed_cost.setWordWrap(True)
        self._variants = variants or {}
        self._rate = rate
        self.speed.currentIndexChanged.connect(lambda _i: self._show_speed_cost())
        self._show_speed_cost()
        self.cache = QtWidgets.QSpinBox()
        self.cache.setRange(32, 100_000)
        self.cache.setSingleStep(128)
        self.cache.setSuffix(" MB")
        self.cache.setValue(settings.thumbnail_cache_mb)
        self.refine = QtWidgets.QCheckBox("Tighten the outline by zooming into the match")
        self.refine.setChecked(settings.refine)
        self.rerank = QtWidgets.QCheckBox("Re-rank the first results by their zoomed score")
        self.rerank.setChecked(settings.rerank_by_zoom)
        self.rerank.setEnabled(settings.refine)
        self.refine.toggled.connect(self.rerank.setEnabled)
        self.ocr = QtWidgets.QCheckBox("Find words written in photos (signs, labels, documents)")
        self.ocr.setChecked(settings.ocr)
        self.ocr_thorough = QtWidgets.QCheckBox("Read words more thoroughly (slower)")
        self.ocr_thorough.setChecked(settings.ocr_thorough)
        self.ocr_thorough.setToolTip(
            "Looks for words with two other text detectors together (PP-OCRv5 and PP-OCRv4) instead of\n"
            "the default's one. It can find a few more small words on busy backgrounds, and reading\n"
            "the text of a photo takes about twice as long.\n"
            "Changing this reads the text of your photos again, in the background."
        )
        self.ocr_thorough.setEnabled(settings.ocr)
        self.ocr.toggled.connect(self.ocr_thorough.setEnabled)
        form = QtWidgets.QFormLayout()
        form.addRow("&Model:", self.picker)
        form.addRow("&Compute on:", self.device)
        form.addRow("&Regions:", self.layout_box)
        form.addRow("&Indexing speed:", self.speed)
        form.addRow("", self.speed_cost)
        form.addRow("&Thumbnail cache:", self.cache)
        form.addRow("", self.refine)
        form.addRow("", self.rerank)
        form.addRow("", self.ocr)
        form.addRow("", self.ocr_thorough)
        for label_text, w in (
            ("&Model:", self.picker),
            ("&Compute on:", self.device),
            ("&Regions:", self.layout_box),
            ("&Indexing speed:", self.speed),
            ("&Thumbnail cache:", self.cache),
        ):
            lbl = form.labelForField(w)
            if lbl is not None:
                lbl.setBuddy(w.focusProxy() or w)
            del label_text
        box = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(box)

    def speed_redo(self) -> int:
        """Photos the chosen speed would index again (made at the other speed)."""
        return photos_to_redo(self._variants, speed=self.speed.currentData())

    def _show_speed_cost(self) -> None:
        new = self.speed.currentData()
        n = self.speed_redo()
        if new == self._orig.speed:
            self.speed_cost.setText("New and changed photos are indexed at this speed.")
        elif not n:
            self.speed_cost.setText("No photo needs indexing again: new and changed photos use this speed.")
        else:
            self.speed_cost.setText(reindex_cost(n, self._rate, True, speed_factor(self._orig.speed, new)))

    def result_settings(self) -> Settings:
        return replace(
            self._orig,
            model=self.picker.model(),
            device=self.device.currentData(),
            layout=self.layout_box.currentData(),
            speed=self.speed.currentData(),
            thumbnail_cache_mb=self.cache.value(),
            refine=self.refine.isChecked(),
            rerank_by_zoom=self.rerank.isChecked(),
            ocr=self.ocr.isChecked(),
            ocr_thorough=self.ocr_thorough.isChecked(),
        )
