"""The detail view: one photo large, the match outlined, zoomable; arrow keys move between results."""

from __future__ import annotations

import datetime as dt
import html
import os

from sorce_desktop.core.controller import display_path
from sorce_desktop.core.photos.images import load_image
from sorce_desktop.core.search.answer import RegionKind
from sorce_desktop.core.words import human_size
from sorce_desktop.gui.qt import Qt, QtCore, QtGui, QtWidgets, Signal
from sorce_desktop.gui.results import (
    OUTLINE,
    OUTLINE_HALO,
    WORDS_OUTLINE,
    WORDS_TAG,
    covers_photo,
    match_phrase,
    outline_color,
)
from sorce_desktop.gui.session import ResultItem
from sorce_desktop.gui.tasks import run_task
from sorce_desktop.gui.thumbnails import pil_to_qimage

#: the detail view decodes at most this short side (a screen's worth; zooming further shows pixels)
DETAIL_MIN_SIDE = 2000
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_IFD = 0x8769


def photo_date(path: str, mtime_ns: int) -> str:
    """When the photo was taken (EXIF), else when the file was last changed."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            raw = img.getexif().get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL)
        if raw:
            when = dt.datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
            return when.strftime("%-d %b %Y, %H:%M") if os.name != "nt" else when.strftime("%d %b %Y, %H:%M")
    except Exception:
        pass
    if mtime_ns:
        when = dt.datetime.fromtimestamp(mtime_ns / 1e9)
        return when.strftime("%d %b %Y, %H:%M") + " (file date)"
    return ""


def taken_label(taken: str, source: str | None) -> str:
    """A catalog's capture time as the info line says it: "14 Jul 2019, 10:00" (the camera's wall clock
    where the photo was taken), or the file's time in this computer's time zone, "(file date)"."""
    try:
        when = dt.datetime.fromisoformat(taken)
    except ValueError:
        return taken
    if source == "file" and when.tzinfo is not None:
        when = when.astimezone()
    said = f"{when.day} {when.strftime('%b %Y, %H:%M')}"
    return said + (" (file date)" if source == "file" else "")


class KindTag(QtWidgets.QGraphicsItem):
    """The "Aa" tab on a line of words' outline: the same size at every zoom, just above its corner."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFlag(QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setZValue(3)

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802
        return QtCore.QRectF(0, -15, 24, 15)

    def paint(self, painter: QtGui.QPainter, _option, _widget=None) -> None:
        r = self.boundingRect()
        painter.fillRect(r, WORDS_OUTLINE)
        font = QtGui.QFont(painter.font())
        font.setPixelSize(10)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QtGui.QColor("#00141c"))
        painter.drawText(r, Qt.AlignmentFlag.AlignCenter, WORDS_TAG)


class NameLabel(QtWidgets.QLabel):
    """A name (a file's, or a path) and a note after it on one line that never widens its window: the
    name is elided in the middle to the width the layout gives, and the whole name is in the tooltip."""

    def __init__(self, parent=None, *, bold: bool = True, note_color: str = "gray", separator: str = "  "):
        super().__init__(parent)
        self._name = self._note = self._shown = ""
        self._bold, self._note_color, self._sep = bold, note_color, separator
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)

    def set_name(self, name: str, note: str = "") -> None:
        self._name, self._note = name, note
        self.setToolTip(name)
        self._fit()

    def shown_name(self) -> str:
        """The name as shown (elided when it does not fit)."""
        return self._shown

    def full_text(self) -> str:
        return self._name + (self._sep + self._note if self._note else "")

    def minimumSizeHint(self) -> QtCore.QSize:  # noqa: N802
        return QtCore.QSize(0, super().minimumSizeHint().height())

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        return QtCore.QSize(0, super().sizeHint().height())

    def resizeEvent(self, e) -> None:  # noqa: N802
        super().resizeEvent(e)
        self._fit()

    def _fit(self) -> None:
        font = QtGui.QFont(self.font())
        font.setBold(self._bold)
        note_w = QtGui.QFontMetrics(self.font()).horizontalAdvance(self._sep + self._note) if self._note else 0
        room = max(0, self.contentsRect().width() - note_w - 4)
        self._shown = QtGui.QFontMetrics(font).elidedText(self._name, Qt.TextElideMode.ElideMiddle, room)
        name = html.escape(self._shown)
        name = f"<b>{name}</b>" if self._bold else name
        note = html.escape(self._note)
        if self._note_color:
            note = f"<span style='color:{self._note_color}'>{note}</span>"
        sep = self._sep.replace(" ", "&nbsp;")
        self.setText(name + (sep + note if self._note else ""))


class PhotoView(QtWidgets.QGraphicsView):
    """Scene coordinates are the photo's full-resolution upright pixels, the space the boxes live in."""

    zoom_changed = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QtWidgets.QGraphicsScene(self))
        self.setRenderHints(
            QtGui.QPainter.RenderHint.Antialiasing | QtGui.QPainter.RenderHint.SmoothPixmapTransform
        )
        self.setDragMode(QtWidgets.QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QtWidgets.QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.setBackgroundBrush(QtGui.QColor("#161616"))
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pixmap = self.scene().addPixmap(QtGui.QPixmap())
        self._pixmap.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        halo = QtGui.QPen(OUTLINE_HALO, 5)
        halo.setCosmetic(True)
        self._halo = self.scene().addRect(QtCore.QRectF(), halo)
        pen = QtGui.QPen(OUTLINE, 2.5)
        pen.setCosmetic(True)  # the same width at every zoom
        self._outline = self.scene().addRect(QtCore.QRectF(), pen)
        self._halo.setZValue(1)
        self._outline.setZValue(2)
        self._others: list[QtWidgets.QGraphicsItem] = []  # the other matched regions' outlines and tags
        self._kinds: list[tuple[str, QtCore.QRectF]] = []
        self._fit = True
        self.photo_size = (0, 0)

    def set_photo(self, image: QtGui.QImage | None, width: int, height: int) -> None:
        self.photo_size = (width, height)
        pm = QtGui.QPixmap.fromImage(image) if image is not None else QtGui.QPixmap()
        self._pixmap.setPixmap(pm)
        if not pm.isNull() and width:
            self._pixmap.setScale(width / pm.width())
        self.scene().setSceneRect(QtCore.QRectF(0, 0, width, height))
        self.fit()

    def set_outline(self, rect: QtCore.QRectF | None) -> None:
        for item in (self._halo, self._outline):
            item.setVisible(rect is not None)
            if rect is not None:
                item.setRect(rect)

    def outline_rect(self) -> QtCore.QRectF | None:
        """The best match's outline (scene = photo pixels)."""
        return self._outline.rect() if self._outline.isVisible() else None

    def set_outlines(self, outlines: list[tuple[str, QtCore.QRectF]]) -> None:
        """Every matched region, the best first: (kind, rect), each in its kind's colour."""
        for item in self._others:
            self.scene().removeItem(item)
        self._others = []
        self._kinds = list(outlines)
        if not outlines:
            self.set_outline(None)
            return
        kind, rect = outlines[0]
        self.set_outline(rect)
        pen = self._outline.pen()
        pen.setColor(outline_color(kind))
        self._outline.setPen(pen)
        for i, (kind, rect) in enumerate(outlines):
            if i:
                halo = QtGui.QPen(OUTLINE_HALO, 4)
                halo.setCosmetic(True)
                line = QtGui.QPen(outline_color(kind), 2)
                line.setCosmetic(True)
                for item in (self.scene().addRect(rect, halo), self.scene().addRect(rect, line)):
                    item.setZValue(1)
                    self._others.append(item)
            if kind == RegionKind.TEXT:
                tag = KindTag()
                tag.setPos(rect.topLeft())
                self.scene().addItem(tag)
                self._others.append(tag)

    def outline_kinds(self) -> list[tuple[str, QtCore.QRectF]]:
        """What :meth:`set_outlines` drew: (kind, rect) for every outline, the best first."""
        return list(self._kinds)

    def fit(self) -> None:
        self._fit = True
        if self.photo_size[0]:
            self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.transform().m11())

    def zoom(self, factor: float) -> None:
        self._fit = False
        current = self.transform().m11()
        factor = max(0.02, min(32.0, current * factor)) / current
        self.scale(factor, factor)
        self.zoom_changed.emit(self.transform().m11())

    def zoom_to_outline(self) -> None:
        if self._outline.isVisible():
            self._fit = False
            r = self._outline.rect()
            self.fitInView(
                r.adjusted(-r.width() * 0.4, -r.height() * 0.4, r.width() * 0.4, r.height() * 0.4),
                Qt.AspectRatioMode.KeepAspectRatio,
            )
            self.zoom_changed.emit(self.transform().m11())

    def keyPressEvent(self, e: QtGui.QKeyEvent) -> None:  # noqa: N802
        # arrows step between results and Esc goes back: the page handles them, not the scroll bars
        e.ignore()

    def wheelEvent(self, e: QtGui.QWheelEvent) -> None:  # noqa: N802
        if e.angleDelta().y():
            self.zoom(1.0015 ** e.angleDelta().y())

    def mouseDoubleClickEvent(self, e) -> None:  # noqa: N802
        if self._fit:
            self.zoom_to_outline()
        else:
            self.fit()

    def resizeEvent(self, e) -> None:  # noqa: N802
        super().resizeEvent(e)
        if self._fit:
            self.fit()


class DetailPage(QtWidgets.QWidget):
    back = Signal()
    step = Signal(int)  # -1 previous, +1 next
    find_similar = Signal(object)  # ResultItem
    show_in_folder = Signal(str)
    open_photo = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.item: ResultItem | None = None
        self._rank = 0
        self._token = 0
        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(10, 6, 10, 6)
        bar.setSpacing(6)
        self.back_button = QtWidgets.QToolButton(text="‹  Results")
        self.back_button.setToolTip("Back to the results (Esc)")
        self.back_button.setAutoRaise(True)
        self.back_button.clicked.connect(self.back)
        self.title = NameLabel()  # a long name is elided in the middle, never widening the window
        self.title.setObjectName("detailTitle")
        self.prev_button = QtWidgets.QToolButton(text="‹", toolTip="Previous result (Left)", autoRaise=True)
        self.next_button = QtWidgets.QToolButton(text="›", toolTip="Next result (Right)", autoRaise=True)
        self.prev_button.clicked.connect(lambda: self.step.emit(-1))
        self.next_button.clicked.connect(lambda: self.step.emit(1))
        self.similar_button = QtWidgets.QPushButton("Find Similar")
        self.similar_button.setToolTip("Search for photos like the outlined part (Ctrl+Shift+F)")
        self.folder_button = QtWidgets.QPushButton("Show in Folder")
        self.open_button = QtWidgets.QPushButton("Open")
        self.open_button.setToolTip("Open in the default app (Ctrl+Return)")
        self.similar_button.clicked.connect(lambda: self.item and self.find_similar.emit(self.item))
        self.folder_button.clicked.connect(lambda: self.item and self.show_in_folder.emit(self.item.hit.path))
        self.open_button.clicked.connect(lambda: self.item and self.open_photo.emit(self.item.hit.path))
        bar.addWidget(self.back_button)
        bar.addWidget(self.prev_button)
        bar.addWidget(self.next_button)
        bar.addSpacing(8)
        bar.addWidget(self.title, 1)
        for b in (self.similar_button, self.folder_button, self.open_button):
            bar.addWidget(b)
        self.view = PhotoView()
        # the path elided in the middle (a deep path must not widen the window either), in full in its tooltip
        self.info = NameLabel(bold=False, note_color="", separator="   ·   ")
        self.info.setObjectName("detailInfo")
        self.match_info = QtWidgets.QLabel()
        self.match_info.setObjectName("detailInfo")
        self.match_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.match_info.setWordWrap(True)
        self._extra = ""
        text_col = QtWidgets.QVBoxLayout()
        text_col.setSpacing(2)
        text_col.addWidget(self.info)
        text_col.addWidget(self.match_info)
        info_row = QtWidgets.QHBoxLayout()
        info_row.setContentsMargins(12, 6, 12, 8)
        info_row.addLayout(text_col, 1)
        # the zoom figure keeps its own column: the info lines wrap beside it, never into it
        self.zoom_label = QtWidgets.QLabel()
        self.zoom_label.setObjectName("muted")
        self.zoom_label.setMinimumWidth(QtGui.QFontMetrics(self.zoom_label.font()).horizontalAdvance("0000%") + 8)
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        info_row.addWidget(self.zoom_label, 0, Qt.AlignmentFlag.AlignTop)
        self.view.zoom_changed.connect(self._zoom_text)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(bar)
        lay.addWidget(self.view, 1)
        lay.addLayout(info_row)
        self.setFocusProxy(self.view)

    def _zoom_text(self, z: float) -> None:
        # scene units are the photo's own pixels, so the view's scale is the zoom in percent of them
        self.zoom_label.setText(f"{z * 100:.0f}%" if self.view.photo_size[0] else "")

    def show_item(self, item: ResultItem, index: int, count: int, thumb: QtGui.QPixmap | None = None) -> None:
        self.item = item
        self._rank = index + 1
        self._extra = ""
        self._token += 1
        token = self._token
        hit = item.hit
        self.title.set_name(os.path.basename(hit.path), f"{index + 1} of {count}")
        self.prev_button.setEnabled(index > 0)
        self.next_button.setEnabled(index < count - 1)
        # the thumbnail at once, the full photo when decoded
        self.view.set_photo(
            thumb.toImage() if thumb is not None and not thumb.isNull() else None, hit.width, hit.height
        )
        self.update_outline()
        self._set_info("")

        def load():
            decoded = load_image(hit.path, DETAIL_MIN_SIDE)
            return (
                pil_to_qimage(decoded.image),
                decoded.width,
                decoded.height,
                # the catalog's time where it has one (no second read of the file's header)
                photo_date(hit.path, item.mtime_ns) if hit.taken is None else "",
            )

        def loaded(res) -> None:
            if token != self._token:
                return
            img, w, h, date = res
            self.view.set_photo(img, w, h)
            self.update_outline()
            self._set_info(date)

        def failed(exc) -> None:
            if token == self._token:
                self._set_info(f"This photo cannot be shown: {exc}")

        run_task(load, loaded, failed, lane="thumbs", name="detail photo")

    def update_outline(self) -> None:
        it = self.item
        if it is None:
            return
        w, h = it.hit.width, it.hit.height
        self.view.set_outlines(
            [
                (kind, QtCore.QRectF(b.x0, b.y0, b.width, b.height))
                for kind, b, _r in it.outlines()
                if not covers_photo(b, w, h)
            ]
        )
        self._set_info(self._extra)

    def words_outlined(self) -> list[str]:
        """The words under each outline of a line of text, as the info line names them."""
        it = self.item
        if it is None:
            return []
        return [r.words for kind, _b, r in it.outlines() if kind == RegionKind.TEXT and r is not None and r.words]

    def _set_info(self, extra: str) -> None:
        it = self.item
        if it is None:
            return
        self._extra = extra
        hit = it.hit
        parts = []
        if hit.taken is not None:
            parts.append(taken_label(hit.taken, hit.taken_source))
        if extra:
            parts.append(extra)
        parts.append(f"{hit.width} × {hit.height}")
        if it.size_bytes:
            parts.append(human_size(it.size_bytes))
        match = match_phrase(hit, self._rank)
        if hit.refined_box is not None and hit.picture is not None:
            match += ", outline tightened by zooming in"
        words = self.words_outlined()
        if words:
            # each outlined line by its words, so the outline and the label cannot disagree
            named = ", ".join(f"“{w}”" for w in words)
            match += f" · words outlined (blue, Aa): {named}"
        elif hit.text:
            match += f" · words: “{hit.text}”"
        named = next((r.words for r in hit.regions if r.kind == RegionKind.NAME), None)
        if named is not None:  # no outline: the file's or a folder's name matched, not a part of the picture
            match += f" · its name matched: “{named}”"
        if hit.place:
            parts.append(hit.place)
        self.info.set_name(display_path(hit.path), "   ·   ".join(parts))
        self.match_info.setText(match)

    def keyPressEvent(self, e: QtGui.QKeyEvent) -> None:  # noqa: N802
        k = e.key()
        if k == Qt.Key.Key_Escape:
            self.back.emit()
        elif k in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.step.emit(-1)
        elif k in (Qt.Key.Key_Right, Qt.Key.Key_Down, Qt.Key.Key_Space):
            self.step.emit(1)
        elif k in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.view.zoom(1.25)
        elif k == Qt.Key.Key_Minus:
            self.view.zoom(0.8)
        elif k == Qt.Key.Key_0:
            self.view.fit()
        elif k == Qt.Key.Key_Z:
            self.view.zoom_to_outline()
        else:
            super().keyPressEvent(e)
