"""The query as understood, shown back as removable chips ("kite", "after 2023", "not: string"), what was
not understood (one line), a period filter and the order of the results. The core parses the query
(core/search/query.py) and says what each part is; this bar only draws that and says what the user changed."""

from __future__ import annotations

import datetime as dt

from sorce_desktop.core.search.query import QueryPart
from sorce_desktop.gui.qt import Qt, QtCore, QtWidgets, Signal

ANY_TIME, THIS_YEAR, LAST_YEAR, IN_YEAR, FROM_TO = range(5)
PERIODS = ["Any time", "This year", "Last year", "In the year…", "From – to…"]
SORTS = [("Best match first", "relevance"), ("Newest first", "date")]

_STYLE = """
QToolButton#chip { border: 1px solid palette(mid); border-radius: 11px; padding: 2px 8px;
                   background: palette(alternate-base); }
QToolButton#chip:hover { border-color: palette(highlight); }
QLabel#problem { color: #b3261e; }
"""


class QueryBar(QtWidgets.QWidget):
    changed = Signal()  # the period or the order changed: search again
    remove_part = Signal(object)  # a chip's QueryPart: take it out of the query

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("queryBar")
        self.setStyleSheet(_STYLE)
        # chips and the problem line take the room left by the controls: they never widen the window
        ignored = QtWidgets.QSizePolicy.Policy.Ignored
        preferred = QtWidgets.QSizePolicy.Policy.Preferred
        self.chip_row = QtWidgets.QWidget()
        self.chip_row.setSizePolicy(ignored, preferred)
        self.chips = QtWidgets.QHBoxLayout(self.chip_row)
        self.chips.setContentsMargins(0, 0, 0, 0)
        self.chips.setSpacing(6)
        self.problem = QtWidgets.QLabel()
        self.problem.setObjectName("problem")
        self.problem.setSizePolicy(ignored, preferred)
        self.problem.hide()
        self.period = QtWidgets.QComboBox()
        self.period.addItems(PERIODS)
        self.period.setAccessibleName("Taken when")
        self.period.setToolTip("Only photos taken in this period (the camera's date, else the file's)")
        this_year = dt.date.today().year
        self.year = QtWidgets.QSpinBox()
        self.year.setRange(1900, this_year + 1)
        self.year.setValue(this_year)
        self.year.setAccessibleName("Year")
        self.date_from = QtWidgets.QDateEdit(QtCore.QDate(this_year, 1, 1))
        self.date_to = QtWidgets.QDateEdit(QtCore.QDate.currentDate())
        for d, name in ((self.date_from, "From"), (self.date_to, "To")):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
            d.setAccessibleName(name)
        self.to_label = QtWidgets.QLabel("to")
        self.sort = QtWidgets.QComboBox()
        for label, value in SORTS:
            self.sort.addItem(label, value)
        self.sort.setAccessibleName("Order")
        # what was not understood gets a line of its own under the chips, wrapped: squeezed beside the
        # controls it was cut off mid-word
        self.problem.setWordWrap(True)
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(14, 0, 10, 6)
        outer.setSpacing(4)
        lay = QtWidgets.QHBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        lay.addWidget(self.chip_row, 1)
        for w in (self.period, self.year, self.date_from, self.to_label, self.date_to, self.sort):
            lay.addWidget(w)
        outer.addLayout(lay)
        outer.addWidget(self.problem)
        self._sync_period()
        self.period.currentIndexChanged.connect(self._period_changed)
        for sig in (self.year.valueChanged, self.date_from.dateChanged, self.date_to.dateChanged):
            sig.connect(lambda *_: self.changed.emit())
        self.sort.currentIndexChanged.connect(lambda *_: self.changed.emit())

    # -- what the user chose -------------------------------------------------------------------------
    def after_before(self) -> tuple[str | None, str | None]:
        """The period as the core's --after/--before take it (the start of a day, month or year)."""
        i = self.period.currentIndex()
        today = dt.date.today()
        if i == THIS_YEAR:
            return str(today.year), str(today.year + 1)
        if i == LAST_YEAR:
            return str(today.year - 1), str(today.year)
        if i == IN_YEAR:
            return str(self.year.value()), str(self.year.value() + 1)
        if i == FROM_TO:
            a, b = self.date_from.date().toPython(), self.date_to.date().toPython()
            a, b = min(a, b), max(a, b)
            return a.isoformat(), (b + dt.timedelta(days=1)).isoformat()
        return None, None

    def sort_order(self) -> str:
        return self.sort.currentData()

    def clear_period(self) -> None:
        self.period.setCurrentIndex(ANY_TIME)

    def _period_changed(self, _i: int) -> None:
        self._sync_period()
        self.changed.emit()

    def _sync_period(self) -> None:
        i = self.period.currentIndex()
        self.year.setVisible(i == IN_YEAR)
        for w in (self.date_from, self.to_label, self.date_to):
            w.setVisible(i == FROM_TO)

    # -- what the core understood --------------------------------------------------------------------
    def set_parts(self, parts: list[QueryPart], problems: list[str]) -> None:
        while self.chips.count():
            w = self.chips.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        for part in parts:
            chip = QtWidgets.QToolButton()
            chip.setObjectName("chip")
            chip.setText(f"{part.label}  ×")
            chip.setToolTip(f"Remove “{part.label}” from the search")
            chip.setAccessibleName(f"{part.label}, remove")
            chip.setCursor(Qt.CursorShape.PointingHandCursor)
            chip.clicked.connect(lambda _=False, p=part: self.remove_part.emit(p))
            self.chips.addWidget(chip)
        self.chips.addStretch(1)
        self.problem.setText("Not understood: " + "; ".join(problems) if problems else "")
        self.problem.setToolTip("\n".join(problems))
        self.problem.setVisible(bool(problems))

    def chip_buttons(self) -> list[QtWidgets.QToolButton]:
        return [w for i in range(self.chips.count()) if (w := self.chips.itemAt(i).widget()) is not None]

    def chip_labels(self) -> list[str]:
        return [c.text().rsplit("  ×", 1)[0] for c in self.chip_buttons()]
