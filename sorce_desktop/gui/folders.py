"""The side panel: watched folders with their counts, add and remove, and the failed files."""

from __future__ import annotations

import os

from sorce_desktop.core.controller import display_path
from sorce_desktop.core.library import FolderInfo, LibraryStatus
from sorce_desktop.core.words import count, photos
from sorce_desktop.gui.qt import Qt, QtCore, QtGui, QtWidgets, Signal

PathRole = Qt.ItemDataRole.UserRole + 1


def counts_text(indexed: int, pending: int, failed: int) -> str:
    """The store's counts in the words every place uses (a folder, the status bar): "8 indexed · 33 to do"."""
    parts = [f"{indexed:,} indexed"]
    if pending:
        parts.append(f"{pending:,} to do")
    if failed:
        parts.append(f"{failed:,} failed")
    return " · ".join(parts)


def folder_counts_text(f: FolderInfo) -> str:
    if not f.online:
        return "offline — connect it; its photos stay searchable"
    return counts_text(f.indexed, f.pending, f.failed)


class FolderDelegate(QtWidgets.QStyledItemDelegate):
    def sizeHint(self, option, index) -> QtCore.QSize:  # noqa: N802
        fm = option.fontMetrics
        return QtCore.QSize(160, int(fm.height() * 2.6) + 8)

    def paint(self, painter: QtGui.QPainter, option, index) -> None:
        info: FolderInfo = index.data(PathRole)
        self.initStyleOption(option, index)
        style = option.widget.style() if option.widget else QtWidgets.QApplication.style()
        opt = QtWidgets.QStyleOptionViewItem(option)
        opt.text = ""
        opt.icon = QtGui.QIcon()
        style.drawControl(QtWidgets.QStyle.ControlElement.CE_ItemViewItem, opt, painter, option.widget)
        painter.save()
        r = option.rect.adjusted(10, 4, -8, -4)
        selected = bool(option.state & QtWidgets.QStyle.StateFlag.State_Selected)
        pal = option.palette
        text = pal.color(
            QtGui.QPalette.ColorRole.HighlightedText if selected else QtGui.QPalette.ColorRole.Text
        )
        muted = QtGui.QColor(text)
        muted.setAlpha(150)
        icon = style.standardIcon(QtWidgets.QStyle.StandardPixmap.SP_DirIcon)
        isz = 18
        icon.paint(
            painter,
            QtCore.QRect(r.x(), r.y() + 2, isz, isz),
            mode=QtGui.QIcon.Mode.Normal if info.online else QtGui.QIcon.Mode.Disabled,
        )
        tr = r.adjusted(isz + 8, 0, 0, 0)
        fm = option.fontMetrics
        name = os.path.basename(info.path.rstrip(os.sep)) or info.path
        f = QtGui.QFont(option.font)
        f.setWeight(QtGui.QFont.Weight.DemiBold)
        painter.setFont(f)
        painter.setPen(text if info.online else muted)
        painter.drawText(
            QtCore.QRect(tr.x(), tr.y(), tr.width(), fm.height() + 2),
            Qt.AlignmentFlag.AlignLeft,
            QtGui.QFontMetrics(f).elidedText(display_path(name), Qt.TextElideMode.ElideMiddle, tr.width()),
        )
        small = QtGui.QFont(option.font)
        small.setPointSizeF(max(7.5, option.font.pointSizeF() * 0.86))
        painter.setFont(small)
        painter.setPen(muted)
        painter.drawText(
            QtCore.QRect(tr.x(), tr.y() + fm.height() + 3, tr.width(), fm.height() + 2),
            Qt.AlignmentFlag.AlignLeft,
            QtGui.QFontMetrics(small).elidedText(
                folder_counts_text(info), Qt.TextElideMode.ElideRight, tr.width()
            ),
        )
        painter.restore()


class FolderPanel(QtWidgets.QWidget):
    add_requested = Signal()
    remove_requested = Signal(str)
    show_failed = Signal(object)  # folder path or None for all

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("sidebar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        title = QtWidgets.QLabel("FOLDERS")
        title.setObjectName("sidebarTitle")
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("folderList")
        self.list.setItemDelegate(FolderDelegate(self.list))
        self.list.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.list.setAccessibleName("Watched folders")
        self.list.setVerticalScrollMode(QtWidgets.QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.installEventFilter(self)
        self.hint = QtWidgets.QLabel("Add a folder of photos, or drop one on the window.")
        self.hint.setObjectName("muted")
        self.hint.setWordWrap(True)
        self.add_button = QtWidgets.QToolButton(text="+")
        self.add_button.setToolTip("Add a folder (Ctrl+O)")
        self.add_button.setAccessibleName("Add folder")
        self.remove_button = QtWidgets.QToolButton(text="−")
        self.remove_button.setToolTip(
            "Stop watching the selected folder (Delete). Its photos leave the index; the files are not touched."
        )
        self.remove_button.setAccessibleName("Remove folder")
        self.add_button.clicked.connect(self.add_requested)
        self.remove_button.clicked.connect(self._remove_selected)
        self.failed_link = QtWidgets.QPushButton()
        self.failed_link.setObjectName("linkButton")
        self.failed_link.setFlat(True)
        self.failed_link.setCursor(Qt.CursorShape.PointingHandCursor)
        self.failed_link.clicked.connect(lambda: self.show_failed.emit(None))
        self.failed_link.hide()
        self.summary = QtWidgets.QLabel()
        self.summary.setObjectName("muted")
        buttons = QtWidgets.QHBoxLayout()
        buttons.setContentsMargins(8, 4, 8, 8)
        buttons.setSpacing(2)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 10, 0, 0)
        lay.setSpacing(4)
        title_row = QtWidgets.QHBoxLayout()
        title_row.setContentsMargins(14, 0, 8, 0)
        title_row.addWidget(title)
        lay.addLayout(title_row)
        lay.addWidget(self.list, 1)
        for w in (self.hint, self.summary, self.failed_link):
            row = QtWidgets.QHBoxLayout()
            row.setContentsMargins(14, 0, 10, 0)
            row.addWidget(w)
            lay.addLayout(row)
        lay.addLayout(buttons)
        self.list.itemSelectionChanged.connect(self._sync_buttons)
        self._sync_buttons()

    def set_status(self, status: LibraryStatus) -> None:
        selected = self.selected_path()
        self.list.clear()
        for f in status.folders:
            it = QtWidgets.QListWidgetItem(display_path(f.path))
            it.setData(PathRole, f)
            it.setToolTip(f"{display_path(f.path)}\n{folder_counts_text(f)}")
            self.list.addItem(it)
            if f.path == selected:
                it.setSelected(True)
                self.list.setCurrentItem(it)
        self.hint.setVisible(not status.folders)
        self.summary.setVisible(bool(status.folders))
        self.summary.setText(f"{photos(status.indexed)} searchable")
        self.failed_link.setVisible(status.failed > 0)
        self.failed_link.setText(f"{count(status.failed, 'file')} could not be read…")
        self._sync_buttons()

    def paths(self) -> list[str]:
        return [self.list.item(i).data(PathRole).path for i in range(self.list.count())]

    def selected_path(self) -> str | None:
        items = self.list.selectedItems()
        return items[0].data(PathRole).path if items else None

    def _sync_buttons(self) -> None:
        self.remove_button.setEnabled(self.selected_path() is not None)

    def _remove_selected(self) -> None:
        p = self.selected_path()
        if p:
            self.remove_requested.emit(p)

    def _menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        info: FolderInfo = item.data(PathRole)
        m = QtWidgets.QMenu(self)
        if info.failed:
            m.addAction(f"Show {count(info.failed, 'Failed File')}…", lambda: self.show_failed.emit(info.path))
        m.addAction("Remove Folder", lambda: self.remove_requested.emit(info.path))
        m.exec(self.list.viewport().mapToGlobal(pos))

    def eventFilter(self, obj, e) -> bool:  # noqa: N802
        if (
            obj is self.list
            and e.type() == QtCore.QEvent.Type.KeyPress
            and e.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace)
        ):
            self._remove_selected()
            return True
        return super().eventFilter(obj, e)


class ErrorsDialog(QtWidgets.QDialog):
    """Files that could not be indexed, and why."""

    def __init__(self, errors: list[tuple[str, str]], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Files That Could Not Be Read")
        self.resize(760, 420)
        lay = QtWidgets.QVBoxLayout(self)
        self.head = QtWidgets.QLabel(
            f"{count(len(errors), 'file')} could not be indexed. They are left as they are; fix or replace a file "
            "and it is indexed again on its own next time the folder is checked."
        )
        self.head.setWordWrap(True)
        lay.addWidget(self.head)
        self.table = QtWidgets.QTreeWidget()
        self.table.setHeaderLabels(["File", "Reason"])
        self.table.setRootIsDecorated(False)
        self.table.setAlternatingRowColors(True)
        for path, reason in errors:
            it = QtWidgets.QTreeWidgetItem([display_path(path), reason])
            it.setToolTip(0, display_path(path))
            it.setToolTip(1, reason)
            self.table.addTopLevelItem(it)
        self.table.header().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.header().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Interactive)
        self.table.setColumnWidth(1, 300)
        lay.addWidget(self.table, 1)
        box = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        copy = box.addButton("Copy List", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(
            lambda: QtWidgets.QApplication.clipboard().setText(
                "\n".join(f"{display_path(p)}\t{r}" for p, r in errors)
            )
        )
        box.rejected.connect(self.reject)
        lay.addWidget(box)
