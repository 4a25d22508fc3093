"""The results grid: a list model of hits, a delegate that draws each thumbnail with its match
outlined, and the view (icon mode, uniform cells, so thousands of results scroll smoothly)."""

from __future__ import annotations

import datetime as dt
import os

from sorce_desktop.core.regions import Box
from sorce_desktop.core.search.answer import RegionKind
from sorce_desktop.gui.qt import Qt, QtCore, QtGui, QtWidgets, Signal
from sorce_desktop.gui.session import ResultItem
from sorce_desktop.gui.thumbnails import ThumbnailCache

ItemRole = Qt.ItemDataRole.UserRole + 1

CAPTION_H = 22
PAD = 6
OUTLINE = QtGui.QColor("#ffd60a")  # a warm yellow reads on sky, grass and skin alike
OUTLINE_HALO = QtGui.QColor(0, 0, 0, 150)
#: words read in the photo are outlined in another colour, with an "Aa" tab, so the kinds never mix
WORDS_OUTLINE = QtGui.QColor("#3fd0ff")
WORDS_TAG = "Aa"


def outline_color(kind: RegionKind) -> QtGui.QColor:
    return WORDS_OUTLINE if kind == RegionKind.TEXT else OUTLINE


def covers_photo(box: Box, width: int, height: int) -> bool:
    """The whole photo matched: an outline round its edge says nothing."""
    return box.x0 <= 0 and box.y0 <= 0 and box.x1 >= width and box.y1 >= height


def draw_outline(
    painter: QtGui.QPainter, rect: QtCore.QRectF, kind: RegionKind, *, width: float = 1.6, dashed: bool = False,
    tag: bool = True,
) -> None:
    """One matched region: a halo, the outline in its kind's colour, and for words an "Aa" tab."""
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.setPen(QtGui.QPen(OUTLINE_HALO, width + 2))
    painter.drawRoundedRect(rect, 2, 2)
    pen = QtGui.QPen(outline_color(kind), width)
    if dashed:
        pen.setStyle(Qt.PenStyle.DashLine)
    painter.setPen(pen)
    painter.drawRoundedRect(rect, 2, 2)
    if kind == RegionKind.TEXT and tag:
        font = QtGui.QFont(painter.font())
        font.setPixelSize(10)
        font.setBold(True)
        painter.setFont(font)
        fm = QtGui.QFontMetricsF(font)
        w, h = fm.horizontalAdvance(WORDS_TAG) + 6, fm.height() + 1
        y = rect.top() - h if rect.top() - h >= 0 else rect.bottom()
        tab = QtCore.QRectF(rect.left(), y, w, h)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(WORDS_OUTLINE)
        painter.drawRect(tab)
        painter.setPen(QtGui.QColor("#00141c"))
        painter.drawText(tab, Qt.AlignmentFlag.AlignCenter, WORDS_TAG)


DIVIDER_LABEL = "Less likely matches"


def source_label(source: str) -> str:
    return {"text": "Text in photo", "both": "Picture + text", "name": "File name", "filter": "Filter"}.get(
        source, "Picture"
    )


def short_date(taken: str | None) -> str:
    """"14 Jul 2019" of a capture time in ISO 8601 ("" where there is none)."""
    try:
        when = dt.date.fromisoformat((taken or "")[:10])
    except ValueError:
        return ""
    return f"{when.day} {when.strftime('%b %Y')}"


def match_phrase(hit, rank: int) -> str:
    """How a photo came to be shown, in the tooltip, the accessible name and the detail view."""
    if hit.source == "filter":
        return match_label(hit, rank)[1]
    return f"{source_label(hit.source)} match, {match_label(hit, rank)[1]}"


def match_label(hit, rank: int) -> tuple[str, str]:
    """How well a photo matched, the one way the window says it: the model's own match probability
    where it has one ("73%"), else the photo's place in the ranking ("#3"). Raw scores are on a scale
    per kind of match (a picture's cosine, a word score), so they are never shown side by side.
    Returns (short, for the grid; a phrase, for tooltips and the detail view). A photo a filter alone kept
    (a folder or a period, nothing typed) has no match: the grid shows when it was taken."""
    if hit.source == "filter":
        return short_date(hit.taken), "kept by the folder or period chosen, newest first"
    if hit.probability is not None:
        sure = "a likely match" if hit.likely else "a less likely match"
        return f"{hit.probability:.0%}", f"match probability {hit.probability:.0%} ({sure})"
    return f"#{rank:,}", f"ranked #{rank:,}"


class ResultsModel(QtCore.QAbstractListModel):
    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.items: list[ResultItem] = []
        self._row_of: dict[int, int] = {}

    def rowCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: QtCore.QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        it = self.items[index.row()]
        if role == ItemRole:
            return it
        if role == Qt.ItemDataRole.DisplayRole:
            return os.path.basename(it.hit.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [it.hit.path, match_phrase(it.hit, index.row() + 1)]
            if it.hit.text:
                lines.append(f"Words matched: “{it.hit.text}”")
            return "\n".join(lines)
        if role == Qt.ItemDataRole.AccessibleTextRole:
            words = f", words “{it.hit.text}”" if it.hit.text else ""
            return (
                f"{os.path.basename(it.hit.path)}{words}, {match_phrase(it.hit, index.row() + 1)}"
            )
        return None

    def set_items(self, items: list[ResultItem]) -> None:
        self.beginResetModel()
        self.items = list(items)
        self._row_of = {it.hit.photo_id: i for i, it in enumerate(self.items)}
        self.endResetModel()

    def item(self, row: int) -> ResultItem:
        return self.items[row]

    def divider_row(self) -> int | None:
        """Where the likely matches end (the first row that is not one), when the list has both."""
        if not self.items or not self.items[0].hit.likely:
            return None
        return next((i for i, it in enumerate(self.items) if it.hit.likely is False), None)

    def row_of(self, photo_id: int) -> int | None:
        return self._row_of.get(photo_id)

    def photo_changed(self, photo_id: int) -> None:
        row = self._row_of.get(photo_id)
        if row is not None:
            ix = self.index(row)
            self.dataChanged.emit(ix, ix)

    def thumb_changed(self, key: str) -> None:
        for row, it in enumerate(self.items):
            if it.thumb_key == key:
                ix = self.index(row)
                self.dataChanged.emit(ix, ix)

    def reorder(self, photo_ids: list[int]) -> None:
        """Show the items in this order (re-rank by zoomed score); selection follows its photo."""
        by_id = {it.hit.photo_id: it for it in self.items}
        items = [by_id[p] for p in photo_ids if p in by_id]
        if len(items) != len(self.items):
            return  # not the list on screen (a newer search replaced it)
        self.layoutAboutToBeChanged.emit()
        old = dict(self._row_of)
        self.items = items
        self._row_of = {it.hit.photo_id: i for i, it in enumerate(self.items)}
        self.changePersistentIndexList(
            [self.index(old[it.hit.photo_id]) for it in self.items],
            [self.index(i) for i in range(len(self.items))],
        )
        self.layoutChanged.emit()


def caption_name(name: str, advance, width: float) -> str:
    """A file name that fits ``width``: whole if it can be; else without its extension; else elided in
    the middle, keeping more of its end than of its start.

    Camera and export names share their beginnings ("IMG_20240611_...", "000000000139"), so the end is
    what tells two photos apart, and the start says what kind of name it is: "IMG_…0139"."""
    if advance(name) <= width:
        return name
    stem = os.path.splitext(name)[0] or name
    if advance(stem) <= width:
        return stem
    for keep in range(len(stem) - 1, 0, -1):
        head = keep // 3
        cut = stem[:head] + "…" + stem[len(stem) - (keep - head) :]
        if advance(cut) <= width:
            return cut
    return "…" + stem[-1:]


def fit_rect(area: QtCore.QRectF, width: int, height: int) -> QtCore.QRectF:
    """Where a ``width`` x ``height`` photo is drawn inside ``area``: as large as fits, centred."""
    if width <= 0 or height <= 0:
        return QtCore.QRectF(area)
    s = min(area.width() / width, area.height() / height)
    w, h = width * s, height * s
    return QtCore.QRectF(area.x() + (area.width() - w) / 2, area.y() + (area.height() - h) / 2, w, h)


def box_in(image_rect: QtCore.QRectF, box: Box, width: int, height: int) -> QtCore.QRectF:
    """A box in full-resolution photo pixels, mapped onto the photo as drawn in ``image_rect``."""
    sx = image_rect.width() / width
    sy = image_rect.height() / height
    return QtCore.QRectF(
        image_rect.x() + box.x0 * sx, image_rect.y() + box.y0 * sy, box.width * sx, box.height * sy
    )


class ResultDelegate(QtWidgets.QStyledItemDelegate):
    def __init__(self, thumbs: ThumbnailCache, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.thumbs = thumbs
        self.side = 180  # thumbnail side, logical pixels
        self.cell_width = self.side + 2 * PAD  # widened by the view so a row fills the window

    # -- geometry (the tests check these against the hits' boxes) ------------------------------------
    def sizeHint(self, option, index) -> QtCore.QSize:  # noqa: N802
        return QtCore.QSize(self.cell_width, self.side + CAPTION_H + 2 * PAD)

    def image_area(self, cell: QtCore.QRect) -> QtCore.QRectF:
        return QtCore.QRectF(cell.x() + PAD, cell.y() + PAD, cell.width() - 2 * PAD, self.side)

    def image_rect(self, cell: QtCore.QRect, item: ResultItem) -> QtCore.QRectF:
        return fit_rect(self.image_area(cell), item.hit.width, item.hit.height)

    def outline_rect(self, cell: QtCore.QRect, item: ResultItem) -> QtCore.QRectF | None:
        """The best match's outline (None: the whole photo matched)."""
        if item.hit.width <= 0 or item.hit.height <= 0:
            return None
        box = item.shown_box
        if covers_photo(box, item.hit.width, item.hit.height):
            return None
        return box_in(self.image_rect(cell, item), box, item.hit.width, item.hit.height)

    def outline_rects(self, cell: QtCore.QRect, item: ResultItem) -> list[tuple[str, QtCore.QRectF]]:
        """Every matched region's outline on the thumbnail, (kind, rect), the best first."""
        w, h = item.hit.width, item.hit.height
        if w <= 0 or h <= 0:
            return []
        image = self.image_rect(cell, item)
        return [(kind, box_in(image, box, w, h)) for kind, box, _r in item.outlines() if not covers_photo(box, w, h)]

    # -- painting ------------------------------------------------------------------------------------
    def paint(self, painter: QtGui.QPainter, option, index) -> None:
        item: ResultItem = index.data(ItemRole)
        if item is None:
            return
        cell = option.rect
        painter.save()
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
        if option.state & QtWidgets.QStyle.StateFlag.State_Selected:
            focused = bool(option.state & QtWidgets.QStyle.StateFlag.State_HasFocus)
            self._paint_selection(painter, option.palette, cell, focused)
        self._paint_thumbnail(painter, option.palette, cell, item)
        self._paint_outlines(painter, cell, item)
        self._paint_caption(painter, option, cell, item, index.row())
        painter.restore()

    def _paint_selection(self, painter: QtGui.QPainter, pal, cell: QtCore.QRect, focused: bool) -> None:
        hl = QtGui.QColor(pal.color(QtGui.QPalette.ColorRole.Highlight))
        hl.setAlpha(70 if not focused else 95)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(hl)
        painter.drawRoundedRect(QtCore.QRectF(cell).adjusted(1, 1, -1, -1), 8, 8)

    def _paint_thumbnail(self, painter: QtGui.QPainter, pal, cell: QtCore.QRect, item: ResultItem) -> None:
        """The photo fitted into the thumbnail area, or a placeholder (saying why when it cannot load)."""
        target = self.image_rect(cell, item)
        dpr = painter.device().devicePixelRatioF() if painter.device() else 1.0
        px = int(max(target.width(), target.height()) * dpr + 0.5)
        pm = self.thumbs.get(item.thumb_key, item.hit.path, px)
        clip = QtGui.QPainterPath()
        clip.addRoundedRect(target, 4, 4)
        if pm is not None and not pm.isNull():
            painter.save()
            painter.setClipPath(clip)
            painter.drawPixmap(target, pm, QtCore.QRectF(pm.rect()))
            painter.restore()
            return
        painter.setPen(Qt.PenStyle.NoPen)
        base = QtGui.QColor(pal.color(QtGui.QPalette.ColorRole.Mid))
        base.setAlpha(60)
        painter.setBrush(base)
        painter.drawPath(clip)
        err = self.thumbs.error(item.thumb_key)
        if err:
            painter.setPen(pal.color(QtGui.QPalette.ColorRole.PlaceholderText))
            painter.drawText(
                target.adjusted(6, 6, -6, -6),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                "Cannot show this photo",
            )

    def _paint_outlines(self, painter: QtGui.QPainter, cell: QtCore.QRect, item: ResultItem) -> None:
        refined = item.hit.refined_box is not None
        # the best match last, so it is drawn on top where outlines overlap
        for kind, rect in reversed(self.outline_rects(cell, item)):
            picture = kind != RegionKind.TEXT
            draw_outline(
                painter,
                rect,
                kind,
                width=2.0 if picture and refined else 1.6,
                dashed=picture and not refined and item.refining,  # the tile's; the tighter one is on its way
                tag=self.side >= 128,
            )

    def _paint_caption(
        self, painter: QtGui.QPainter, option, cell: QtCore.QRect, item: ResultItem, row: int
    ) -> None:
        """The name (or the words matched), the kind of match and how well it matched, discreetly."""
        pal = option.palette
        cap = QtCore.QRectF(
            cell.x() + PAD, cell.y() + PAD + self.side + 3, cell.width() - 2 * PAD, CAPTION_H - 4
        )
        small = QtGui.QFont(option.font)
        small.setPointSizeF(max(7.5, option.font.pointSizeF() * 0.85))
        painter.setFont(small)
        fm = QtGui.QFontMetricsF(small)
        muted = QtGui.QColor(pal.color(QtGui.QPalette.ColorRole.PlaceholderText))
        score = match_label(item.hit, row + 1)[0]
        score_w = fm.horizontalAdvance(score) + 4
        painter.setPen(muted)
        painter.drawText(cap, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, score)
        left = cap.adjusted(0, 0, -score_w, 0)
        if item.hit.source in ("text", "both"):
            badge = "Aa"
            bw = fm.horizontalAdvance(badge) + 8
            br = QtCore.QRectF(left.x(), left.y() + 1, bw, left.height() - 2)
            painter.setPen(Qt.PenStyle.NoPen)
            acc = QtGui.QColor(pal.color(QtGui.QPalette.ColorRole.Highlight))
            acc.setAlpha(60)
            painter.setBrush(acc)
            painter.drawRoundedRect(br, 4, 4)
            painter.setPen(pal.color(QtGui.QPalette.ColorRole.Text))
            painter.drawText(br, Qt.AlignmentFlag.AlignCenter, badge)
            left = left.adjusted(bw + 4, 0, 0, 0)
        if item.hit.text:
            label = fm.elidedText(f"“{item.hit.text}”", Qt.TextElideMode.ElideRight, left.width())
        else:
            label = caption_name(os.path.basename(item.hit.path), fm.horizontalAdvance, left.width())
        painter.setPen(pal.color(QtGui.QPalette.ColorRole.Text))
        painter.drawText(left, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, label)


class ResultsView(QtWidgets.QListView):
    """Icon-mode grid. Enter opens the current photo; the visible range drives refinement."""

    activated_item = Signal(int)
    visible_changed = Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setMovement(QtWidgets.QListView.Movement.Static)
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QtWidgets.QListView.LayoutMode.Batched)
        self.setBatchSize(200)
        self.setSpacing(0)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QtWidgets.QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)
        self.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.setWordWrap(False)
        self.doubleClicked.connect(lambda ix: self.activated_item.emit(ix.row()))
        self.verticalScrollBar().valueChanged.connect(lambda _v: self.visible_changed.emit())
        self.setAccessibleName("Results")

    def divider_lines(self) -> list[QtCore.QLineF]:
        """The line between the likely matches and the rest, in viewport coordinates: along the gap
        above the first other one's row from its cell on, and below the likely ones of that row."""
        model = self.model()
        row = model.divider_row() if isinstance(model, ResultsModel) else None
        if row is None:
            return []
        cell = QtCore.QRectF(self.visualRect(model.index(row)))
        first = QtCore.QRectF(self.visualRect(model.index(0)))
        right = float(self.viewport().width())
        top, bottom, x = cell.top(), cell.bottom() + 1, cell.left()
        if x <= first.left() + 1:
            return [QtCore.QLineF(0, top, right, top)]
        return [
            QtCore.QLineF(x, top, right, top),
            QtCore.QLineF(x, top, x, bottom),
            QtCore.QLineF(0, bottom, x, bottom),
        ]

    def paintEvent(self, e) -> None:  # noqa: N802
        super().paintEvent(e)
        lines = self.divider_lines()
        if not lines:
            return
        p = QtGui.QPainter(self.viewport())
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        accent = QtGui.QColor(self.palette().color(QtGui.QPalette.ColorRole.Highlight))
        p.setPen(QtGui.QPen(accent, 2))
        for ln in lines:
            p.drawLine(ln)
        # the label sits on the line where the less likely matches begin
        font = QtGui.QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.8))
        p.setFont(font)
        fm = QtGui.QFontMetricsF(font)
        text = DIVIDER_LABEL
        start = lines[0].p1()
        r = QtCore.QRectF(start.x() + 8, start.y() - fm.height() / 2 - 1, fm.horizontalAdvance(text) + 12, fm.height() + 2)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(accent)
        p.drawRoundedRect(r, r.height() / 2, r.height() / 2)
        p.setPen(self.palette().color(QtGui.QPalette.ColorRole.HighlightedText))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, text)
        p.end()

    def focusInEvent(self, e: QtGui.QFocusEvent) -> None:  # noqa: N802
        """Focus by Tab (or a click elsewhere and back) shows where the keyboard is at once: the current
        photo (the first, when there is none yet) is selected, so it is highlighted before any arrow key."""
        super().focusInEvent(e)
        model = self.model()
        if e.reason() == Qt.FocusReason.MouseFocusReason:
            return  # the click selects the photo under it
        if model is None or model.rowCount() == 0 or self.selectionModel() is None:
            return
        ix = self.currentIndex()
        if not ix.isValid():
            ix = model.index(0, 0)
        if not self.selectionModel().isSelected(ix):
            self.selectionModel().setCurrentIndex(ix, QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect)
            self.scrollTo(ix)

    def keyPressEvent(self, e: QtGui.QKeyEvent) -> None:  # noqa: N802
        if e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            self.activated_item.emit(self.currentIndex().row())
            return
        super().keyPressEvent(e)

    def resizeEvent(self, e) -> None:  # noqa: N802
        super().resizeEvent(e)
        self.fit_columns()
        self.visible_changed.emit()

    def fit_columns(self) -> None:
        """Share the row's width out among as many cells as fit, so rows end at the right edge."""
        delegate = self.itemDelegate()
        if not isinstance(delegate, ResultDelegate):
            return
        width = self.viewport().width() - 1
        base = delegate.side + 2 * PAD
        cols = max(1, width // base)
        cell = max(base, width // cols)
        if cell != delegate.cell_width:
            delegate.cell_width = cell
            self.doItemsLayout()

    def visible_rows(self) -> list[int]:
        model = self.model()
        if model is None or model.rowCount() == 0:
            return []
        vp = self.viewport().rect()
        first = self.indexAt(vp.topLeft() + QtCore.QPoint(8, 8))
        start = first.row() if first.isValid() else 0
        rows = []
        for r in range(start, model.rowCount()):
            rect = self.visualRect(model.index(r, 0))
            if rect.top() > vp.bottom():
                break
            if rect.intersects(vp):
                rows.append(r)
        return rows
