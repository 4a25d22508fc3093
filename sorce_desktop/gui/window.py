"""The main window: folders on the left, the search field on top, results or one photo in the middle,
indexing status at the bottom. Every slow thing goes through the Session (off the UI thread)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import replace

from sorce_desktop.core.controller import EventKind, display_path
from sorce_desktop.core.indexing.indexer import Phase, Progress
from sorce_desktop.core.library import LibraryStatus
from sorce_desktop.core.models.advice import recommend_model
from sorce_desktop.core.models.registry import DEFAULT_MODEL, model_info
from sorce_desktop.core.models.speed import speed_factor
from sorce_desktop.core.photos.images import is_image_name
from sorce_desktop.core.search.query import QueryPart, without
from sorce_desktop.core.words import count, human_size, own_name, photos, time_left
from sorce_desktop.gui import resources
from sorce_desktop.gui.banner import DownloadPanel, TextOnlyBanner, attempt_note
from sorce_desktop.gui.detail import DetailPage
from sorce_desktop.gui.folders import ErrorsDialog, FolderPanel, counts_text
from sorce_desktop.gui.qt import Qt, QtCore, QtGui, QtWidgets
from sorce_desktop.gui.query_bar import QueryBar
from sorce_desktop.gui.results import ResultDelegate, ResultsModel, ResultsView
from sorce_desktop.gui.session import LoadState, ModelState, Query, ResultItem, SearchResult, Session
from sorce_desktop.gui.settings_dialog import SettingsDialog, reindex_cost
from sorce_desktop.gui.tasks import Throttle, run_task
from sorce_desktop.gui.thumbnails import ThumbnailCache
from sorce_desktop.gui.welcome import WelcomePage

log = logging.getLogger(__name__)

SEARCH_DELAY_MS = 250
THUMB_MIN, THUMB_MAX, THUMB_STEP = 96, 360, 32

LIKELY_TIP = (
    "Hide the photos the model itself finds unlikely to match (its match probability is under 50 %).\n"
    "Photos whose words read exactly as typed always count as likely."
)
NO_PROBABILITY_TIP = (
    "This model gives no match probability (SigLIP models do), so results are ranked, not split into\n"
    "likely matches and the rest. Image searches are ranked only too."
)
READY_PLACEHOLDER = "Describe something in a photo — “a red kite in the sky”"
LOADING_PLACEHOLDER = "Getting ready — loading the model…"
TEXT_ONLY_PLACEHOLDER = "Type words written in a photo — “espresso”, “platform 9” (text search only)"


def local_folders(mime: QtCore.QMimeData) -> list[str]:
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and os.path.isdir(u.toLocalFile())]


def local_images(mime: QtCore.QMimeData) -> list[str]:
    return [
        u.toLocalFile()
        for u in mime.urls()
        if u.isLocalFile() and is_image_name(u.toLocalFile()) and os.path.isfile(u.toLocalFile())
    ]


class SearchField(QtWidgets.QLineEdit):
    """The one search field. Drop an image on it to search by that image."""

    image_dropped = QtCore.Signal(str)
    escape = QtCore.Signal()
    down = QtCore.Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("search")
        self.setClearButtonEnabled(True)
        self.setAccessibleName("Search")
        self.setAcceptDrops(True)
        self.setMinimumWidth(280)

    def dragEnterEvent(self, e) -> None:  # noqa: N802
        if local_images(e.mimeData()):
            e.acceptProposedAction()
        else:
            super().dragEnterEvent(e)

    def dragMoveEvent(self, e) -> None:  # noqa: N802
        if local_images(e.mimeData()):
            e.acceptProposedAction()
        else:
            super().dragMoveEvent(e)

    def dropEvent(self, e) -> None:  # noqa: N802
        images = local_images(e.mimeData())
        if images:
            e.acceptProposedAction()
            self.image_dropped.emit(images[0])
        else:
            super().dropEvent(e)

    def keyPressEvent(self, e: QtGui.QKeyEvent) -> None:  # noqa: N802
        if e.key() == Qt.Key.Key_Escape:
            self.escape.emit()
            return
        if e.key() == Qt.Key.Key_Down:
            self.down.emit()
            return
        super().keyPressEvent(e)


class EmptyState(QtWidgets.QWidget):
    """What to do next, when there is nothing to show: a title, a sentence, and up to two buttons."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.icon = QtWidgets.QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.title = QtWidgets.QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.title.setObjectName("emptyTitle")
        self.title.setWordWrap(True)
        self.body = QtWidgets.QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.body.setObjectName("muted")
        self.body.setWordWrap(True)
        self.body.setMaximumWidth(520)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = [QtWidgets.QPushButton(), QtWidgets.QPushButton()]
        self.buttons[0].setObjectName("primary")
        self._actions = [None, None]
        for i, b in enumerate(self.buttons):
            b.clicked.connect(lambda _c=False, i=i: self._actions[i] and self._actions[i]())
        row = QtWidgets.QHBoxLayout()
        row.addStretch(1)
        for b in self.buttons:
            row.addWidget(b)
        row.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addStretch(2)
        lay.addWidget(self.icon)
        lay.addWidget(self.title)
        body_row = QtWidgets.QHBoxLayout()
        body_row.addStretch(1)
        # the sentence takes the room (up to its maximum) before the margins do: between two plain stretches a
        # word-wrapped label got its narrow preferred width, a column of two or three words a line
        body_row.addWidget(self.body, 6)
        body_row.addStretch(1)
        lay.addLayout(body_row)
        lay.addSpacing(8)
        lay.addLayout(row)
        lay.addStretch(3)
        self.icon.setPixmap(resources.app_icon().pixmap(64, 64))

    def show_state(self, title: str, body: str, actions: list[tuple[str, object]] = ()) -> None:
        self.title.setText(title)
        self.body.setText(body)
        self.body.setVisible(bool(body))
        for i, b in enumerate(self.buttons):
            if i < len(actions):
                b.setText(actions[i][0])
                self._actions[i] = actions[i][1]
                b.show()
            else:
                self._actions[i] = None
                b.hide()


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, library, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Sorce Desktop")
        self.setWindowIcon(resources.app_icon())
        self.setAcceptDrops(True)
        self.resize(1180, 760)
        self.session = Session(library, self)
        self.settings = library.settings
        self.thumbs = ThumbnailCache(library.paths.thumbnails, self.settings.thumbnail_cache_mb, self)
        self.query: Query | None = None
        self.result: SearchResult | None = None
        self._model_tried = False  # the user asked for the model (a click): each answer is said
        self._attempt = ""  # that answer: "Trying to get …", "Still offline at 14:05."
        self._progress: Progress | None = None
        self._search_error: str | None = None
        self._folder_filter: str | None = None  # the folder list's selection restricts the results
        self._build()
        self._connect()
        self._build_menus()
        answered = self.settings.first_run_done
        first_run = self.session.controller.first_run()  # core's rule
        if self.settings.first_run_done and not answered:  # answered by the folders `index FOLDER` added
            self._save_settings()
        self.pages.setCurrentWidget(self.welcome if first_run else self.main)
        if first_run:
            self.welcome.picker.set_model(self.settings.model, chosen=self.settings.model != DEFAULT_MODEL)
            # which model suits this machine: probing for a GPU imports torch, so off the UI thread
            run_task(
                recommend_model,
                lambda rec: self.welcome.picker.recommend(rec.model_id, rec.reason),
                lambda exc: log.info("no model advice for this machine: %s", exc),
                name="model-advice",
            )
            self.session.refresh_status()
        else:
            self.session.start()
        self.thumbs.prune()
        self._update_empty()

    # -- building ------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.pages = QtWidgets.QStackedWidget()
        self.welcome = WelcomePage()
        self.main = QtWidgets.QWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.main)
        self.setCentralWidget(self.pages)
        header = self._build_header()
        self._build_results()
        self._build_main(header)
        self._build_status_bar()
        self._set_tab_order()

    def _build_header(self) -> QtWidgets.QWidget:
        """The search field, the likely-matches switch, the thumbnail size and the settings button."""
        header = QtWidgets.QWidget()
        header.setObjectName("header")
        self.search = SearchField()
        self.search.setPlaceholderText(LOADING_PLACEHOLDER)
        self.size_slider = QtWidgets.QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(THUMB_MIN, THUMB_MAX)
        self.size_slider.setValue(180)
        self.size_slider.setFixedWidth(120)
        self.size_slider.setToolTip("Thumbnail size (Ctrl+Plus / Ctrl+Minus)")
        self.size_slider.setAccessibleName("Thumbnail size")
        self.settings_button = QtWidgets.QToolButton(text="Settings")
        self.settings_button.setToolTip("Settings (Ctrl+,)")
        self.settings_button.setAutoRaise(True)
        small = QtWidgets.QLabel("▫")
        big = QtWidgets.QLabel("◻")
        for lbl in (small, big):
            lbl.setObjectName("muted")
        hl = QtWidgets.QHBoxLayout(header)
        hl.setContentsMargins(14, 10, 10, 10)
        hl.setSpacing(8)
        hl.addWidget(self.search, 1)
        self.likely_only = QtWidgets.QCheckBox("Show likely matches only")
        self.likely_only.setToolTip(LIKELY_TIP)
        self.likely_only.setEnabled(False)
        hl.addWidget(self.likely_only)
        hl.addSpacing(10)
        hl.addWidget(small)
        hl.addWidget(self.size_slider)
        hl.addWidget(big)
        hl.addWidget(self.settings_button)
        return header

    def _build_results(self) -> None:
        """The folder panel and the centre: the results grid (or why it is empty), or one photo large."""
        self.folders = FolderPanel()
        self.folders.setMinimumWidth(200)
        self.model = ResultsModel(self)
        self.delegate = ResultDelegate(self.thumbs, self)
        self.grid = ResultsView()
        self.grid.setObjectName("results")
        self.grid.setModel(self.model)
        self.grid.setItemDelegate(self.delegate)
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.empty = EmptyState()
        self.results_stack = QtWidgets.QStackedWidget()
        self.results_stack.addWidget(self.grid)
        self.results_stack.addWidget(self.empty)
        self.detail = DetailPage()
        self.center = QtWidgets.QStackedWidget()
        self.center.addWidget(self.results_stack)
        self.center.addWidget(self.detail)
        self.result_info = QtWidgets.QLabel()
        self.result_info.setObjectName("muted")

    def _build_main(self, header: QtWidgets.QWidget) -> None:
        """The main page: folders on the left; on the right the header, the banners and the centre."""
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(0)
        rl.addWidget(header)
        self.query_bar = QueryBar()  # the query as understood (chips), the period and the order
        rl.addWidget(self.query_bar)
        self.text_banner = TextOnlyBanner()  # no visual model: only the text in photos is searched
        rl.addWidget(self.text_banner)
        self.download_panel = DownloadPanel()  # the model download: progress, Cancel; failure, Retry
        rl.addWidget(self.download_panel)
        rl.addWidget(self.center, 1)
        self.splitter = QtWidgets.QSplitter()
        self.splitter.addWidget(self.folders)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([240, 940])
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setHandleWidth(1)
        ml = QtWidgets.QVBoxLayout(self.main)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addWidget(self.splitter)

    def _build_status_bar(self) -> None:
        """What the window is doing, the result count, indexing progress with Pause, and the model."""
        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        self.status_label = QtWidgets.QLabel()
        self.progress = QtWidgets.QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedWidth(160)
        self.progress.hide()
        self.pause_button = QtWidgets.QToolButton(text="Pause")
        self.pause_button.setToolTip("Pause indexing (Ctrl+Shift+P)")
        self.pause_button.setAutoRaise(True)
        self.pause_button.hide()
        self.model_label = QtWidgets.QLabel()
        self.model_label.setObjectName("muted")
        sb.addWidget(self.status_label, 1)
        sb.addPermanentWidget(self.result_info)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.pause_button)
        sb.addPermanentWidget(self.model_label)

    def _set_tab_order(self) -> None:
        chain = [
            self.search,
            self.grid,
            self.folders.list,
            self.folders.add_button,
            self.folders.remove_button,
            self.size_slider,
            self.settings_button,
        ]
        for before, after in zip(chain, chain[1:]):
            self.setTabOrder(before, after)

    def _connect(self) -> None:
        s = self.session
        s.model_state.connect(self._model_state)
        s.index_progress.connect(self._index_progress)
        s.index_finished.connect(lambda _r: self._index_finished())
        s.status_changed.connect(self._status)
        s.results.connect(self._results)
        s.search_failed.connect(self._search_failed)
        s.refined.connect(self._refined)
        s.reranked.connect(self._reranked)
        s.error.connect(self._error)
        s.watch_event.connect(self._watch_event)
        self.throttle = Throttle(SEARCH_DELAY_MS, self._run_query, self)
        self.search.textEdited.connect(self._typed)
        self.search.returnPressed.connect(lambda: self.throttle.flush(self.search.text()))
        self.search.escape.connect(self._escape)
        self.search.down.connect(self.focus_results)
        self.search.image_dropped.connect(self.search_image)
        self.size_slider.valueChanged.connect(self.set_thumb_size)
        self.likely_only.toggled.connect(lambda _on: self.result is not None and self._show_items(self.result))
        self.settings_button.clicked.connect(self.open_settings)
        self.thumbs.ready.connect(self.model.thumb_changed)
        self.thumbs.failed.connect(lambda key, _e: self.model.thumb_changed(key))
        self.grid.activated_item.connect(self.open_detail)
        self.grid.customContextMenuRequested.connect(self._grid_menu)
        self.refine_throttle = Throttle(150, lambda _v: self._refine_visible(), self)
        self.grid.visible_changed.connect(lambda: self.refine_throttle.trigger(None))
        self.folders.add_requested.connect(self.choose_folder)
        self.folders.remove_requested.connect(self.remove_folder)
        self.folders.show_failed.connect(self.show_failed)
        # deferred: the list is rebuilt on every status change and its selection restored after
        self.folders.list.itemSelectionChanged.connect(lambda: QtCore.QTimer.singleShot(0, self._folder_selected))
        self.query_bar.changed.connect(self._filters_changed)
        self.query_bar.remove_part.connect(self._remove_part)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.detail.back.connect(self.close_detail)
        self.detail.step.connect(self.step_detail)
        self.detail.find_similar.connect(self.find_similar)
        self.detail.show_in_folder.connect(show_in_folder)
        self.detail.open_photo.connect(open_file)
        self.welcome.start_requested.connect(self._first_run_start)
        self.welcome.cancel_requested.connect(self.session.cancel_download)
        self.text_banner.download.connect(lambda: self._try_model(self.settings.model))
        self.text_banner.choose_folder.connect(self.choose_model_folder)
        self.download_panel.cancel.connect(self.session.cancel_download)
        self.download_panel.retry.connect(lambda: self._try_model(self.session.state.model or None))
        self.download_panel.choose_folder.connect(self.choose_model_folder)

    def _build_menus(self) -> None:
        mb = self.menuBar()

        def act(menu, text, slot, shortcut=None, tip=""):
            a = QtGui.QAction(text, self)
            if shortcut:
                a.setShortcuts(shortcut if isinstance(shortcut, list) else [QtGui.QKeySequence(shortcut)])
            a.setStatusTip(tip)
            a.triggered.connect(slot)
            menu.addAction(a)
            return a

        K = QtGui.QKeySequence.StandardKey
        f = mb.addMenu("&File")
        self.add_action = act(f, "&Add Folder…", self.choose_folder, QtGui.QKeySequence(K.Open))
        self.remove_action = act(f, "&Remove Folder", lambda: self.folders._remove_selected())
        act(f, "Show &Failed Files…", lambda: self.show_failed(None))
        f.addSeparator()
        act(f, "&Settings…", self.open_settings, QtGui.QKeySequence("Ctrl+,"))
        f.addSeparator()
        act(f, "&Quit", self.close, QtGui.QKeySequence(K.Quit))
        e = mb.addMenu("&Edit")
        act(e, "&Find", self.focus_search, [QtGui.QKeySequence(K.Find), QtGui.QKeySequence("Ctrl+L")])
        act(e, "&Clear Search", self.clear_search)
        v = mb.addMenu("&View")
        act(
            v,
            "&Larger Thumbnails",
            lambda: self.set_thumb_size(self.delegate.side + THUMB_STEP),
            [QtGui.QKeySequence(K.ZoomIn), QtGui.QKeySequence("Ctrl+=")],
        )
        act(
            v,
            "&Smaller Thumbnails",
            lambda: self.set_thumb_size(self.delegate.side - THUMB_STEP),
            QtGui.QKeySequence(K.ZoomOut),
        )
        act(v, "&Folders", self.focus_folders, QtGui.QKeySequence("Ctrl+1"))
        act(v, "&Results", self.focus_results, QtGui.QKeySequence("Ctrl+2"))
        p = mb.addMenu("&Photo")
        act(p, "&Open Large", lambda: self.open_detail(self._current_row()), QtGui.QKeySequence("Ctrl+I"))
        act(
            p,
            "Open in Default &App",
            lambda: self._with_current(lambda it: open_file(it.hit.path)),
            QtGui.QKeySequence("Ctrl+Return"),
        )
        act(
            p,
            "Show in &Folder",
            lambda: self._with_current(lambda it: show_in_folder(it.hit.path)),
            QtGui.QKeySequence("Ctrl+Shift+R"),
        )
        act(
            p,
            "Find &Similar",
            lambda: self._with_current(self.find_similar),
            QtGui.QKeySequence("Ctrl+Shift+F"),
        )
        i = mb.addMenu("&Indexing")
        self.pause_action = act(i, "&Pause Indexing", self.toggle_pause, QtGui.QKeySequence("Ctrl+Shift+P"))
        act(i, "&Check Folders Now", self.session.request_index, QtGui.QKeySequence(K.Refresh))

    # -- first run -----------------------------------------------------------------------------------
    def _first_run_start(self, folder: str, model: str) -> None:
        self.settings.model = model
        self._save_settings()
        self.session.add_folder(folder)
        self.session.load_model(model)

    # -- model ---------------------------------------------------------------------------------------
    def _model_state(self, st: ModelState) -> None:
        if self.pages.currentWidget() is self.welcome:
            self.welcome.show_state(st)
            # No visual model but the text in photos is searchable (no network on a first run, or the
            # download was cancelled): go to the window, whose banner says so and offers the download.
            if st.state == LoadState.READY or (st.state in (LoadState.ERROR, LoadState.CANCELLED) and self.session.text_only):
                self.settings.first_run_done = True
                self._save_settings()
                self.pages.setCurrentWidget(self.main)
                self.search.setFocus()
        info = model_info(st.model)
        name = info.title if info else own_name(st.model)
        if st.state == LoadState.READY:
            self.search.setPlaceholderText(READY_PLACEHOLDER)
            self.model_label.setText(name)
            self.model_label.setToolTip(st.model)
        elif st.state == LoadState.DOWNLOADING:
            pct = 100 * st.done_bytes / max(1, st.total_bytes)
            self.search.setPlaceholderText(f"Getting ready — downloading the model ({pct:.0f}%)…")
            self.model_label.setText(
                f"Downloading {name}: {human_size(st.done_bytes)} of {human_size(st.total_bytes)}"
            )
            self.download_panel.show_progress(name, st.done_bytes, st.total_bytes, time_left(st.eta_s))
        elif st.state == LoadState.LOADING:
            self.search.setPlaceholderText(LOADING_PLACEHOLDER)
            self.model_label.setText(f"Loading {name}…")
        elif self.session.embedder is not None:  # another model could not be had: the one in use still answers
            used = model_info(self.session.embedder.model_id)
            used_name = used.title if used else own_name(self.session.embedder.model_id)
            self.search.setPlaceholderText(READY_PLACEHOLDER)
            self.model_label.setText(used_name)
            self.model_label.setToolTip(f"{name} could not be had ({st.message}); searching with {used_name}")
        elif self.session.text_only:
            self.search.setPlaceholderText(TEXT_ONLY_PLACEHOLDER)
            self.model_label.setText("Text in photos only")
            self.model_label.setToolTip(f"{name} is not available: {st.message}")
        else:
            self.search.setPlaceholderText("The model is not ready — see the message below")
            self.model_label.setText("Model not ready")
        if st.state in (LoadState.LOADING, LoadState.DOWNLOADING):
            self._attempt = f"Trying to get {name}…" if self._model_tried else ""
        elif st.state in (LoadState.ERROR, LoadState.CANCELLED):
            if self._model_tried:  # a cancel needs no answer: the user did it
                self._attempt = attempt_note(st.reason, time.strftime("%H:%M")) if st.state == LoadState.ERROR else ""
        else:
            self._model_tried, self._attempt = False, ""
        # One banner: while the text in photos is searched, the text-only banner says why the model is
        # missing and holds the actions; the download panel shows a download's progress, and a failure
        # only when there is nothing to search meanwhile.
        text_only = self.session.text_only
        if st.state == LoadState.ERROR and st.reason and not text_only:
            self.download_panel.show_failure(st.message, st.reason)
        elif st.state == LoadState.CANCELLED and not text_only:
            self.download_panel.show_cancelled(name)
        elif st.state != LoadState.DOWNLOADING:
            self.download_panel.hide()
        self.download_panel.set_status(self._attempt if st.state != LoadState.DOWNLOADING else "")
        busy = st.state in (LoadState.LOADING, LoadState.DOWNLOADING)
        for b in (self.text_banner.download_button, self.text_banner.folder_button, self.download_panel.retry_button):
            b.setEnabled(not busy)
        self._update_banner()
        self._update_empty()

    def _try_model(self, model: str | None = None) -> None:
        """A click that asks for the model (Download, Try Again, Retry): try, and say so at once."""
        self._model_tried = True
        self.session.load_model(model)

    def _update_banner(self) -> None:
        """The text-only notice: shown while there is no visual model and the text in photos is searched
        (not while the model downloads: the download panel shows that, with Cancel)."""
        st = self.session.state
        if self.session.text_only and st.state != LoadState.DOWNLOADING:
            note = self.session.status.text_only_note or (
                "No visual model is available: searching only the text read in your photos. "
                f"Download {self.settings.model} to search by what the photos show."
            )
            reason = st.reason or ("cancelled" if st.state == LoadState.CANCELLED else "")
            self.text_banner.show_note(note, st.message, reason=reason, status=self._attempt)
        else:
            self.text_banner.hide()

    # -- folders -------------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        if self.pages.currentWidget() is self.welcome:
            self.welcome.choose_folder()
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Add a Folder of Photos", os.path.expanduser("~")
        )
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> None:
        self.session.add_folder(folder)

    def remove_folder(self, folder: str, *, confirm: bool = True) -> None:
        if confirm:
            box = QtWidgets.QMessageBox(self)
            box.setIcon(QtWidgets.QMessageBox.Icon.Question)
            box.setWindowTitle("Remove Folder")
            box.setText(f"Stop watching “{own_name(folder)}”?")
            box.setInformativeText(
                "Its photos leave the search index. The folder and its photos are not touched; add it again any time."
            )
            remove = box.addButton("Remove", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
            box.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)
            box.exec()
            if box.clickedButton() is not remove:
                return
        self.session.remove_folder(folder)

    def show_failed(self, folder: str | None) -> None:
        self.session.errors(lambda errs: ErrorsDialog(errs, self).exec(), folder)

    def _status(self, status: LibraryStatus) -> None:
        # The folder list, its "N photos searchable" and the status bar all draw this one status (the
        # store's counts), in the same call, so they cannot disagree.
        self.folders.set_status(status)
        self._update_banner()
        # No run's report on show (none yet, or its last was "done"): the counts are drawn whether or not
        # the service has said "idle" yet, so the newest counts are never left behind an older drawing
        # (the "done" report can be drawn before its own counts arrive).
        if self._progress is None:
            self._idle_status(status)
        else:
            self._show_progress()
        self._update_empty()

    def _idle_status(self, status: LibraryStatus) -> None:
        if not status.folders:
            self.status_label.setText("No folders yet")
        elif self.session.ready or status.indexed:
            offline = sum(not f.online for f in status.folders)
            text = f"{photos(status.indexed)} indexed"
            if status.pending:
                text += f" · {status.pending:,} to do"
            if offline:
                text += f" · {count(offline, 'folder')} offline"
            self.status_label.setText(text)

    # -- indexing status -----------------------------------------------------------------------------
    def _index_progress(self, p: Progress) -> None:
        self._progress = p
        if p.phase in (Phase.DONE, Phase.CANCELLED):
            self._progress = None
            self.progress.hide()
            self.pause_button.hide()
            if p.phase == Phase.CANCELLED:
                self.status_label.setText("Indexing stopped")
            else:
                self._idle_status(self.session.status)
        else:
            self._show_progress()
        self._sync_pause()
        self._update_empty()

    def _show_progress(self) -> None:
        """The run in progress: its phase, rate and time left from its last report, the counts from the
        store's status (what the folder list shows too)."""
        p = self._progress
        if p is None:
            return
        if p.phase == Phase.SCANNING:
            self.status_label.setText("Checking folders for new and changed photos…")
            self.progress.setRange(0, 0)
            self.progress.show()
            self.pause_button.hide()
            return
        if p.phase not in (Phase.EMBEDDING, Phase.PAUSED) or not p.total:
            return
        st = self.session.status
        if st.pending:
            total = st.indexed + st.pending + st.failed
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(st.indexed + st.failed)
            what, counts = "Indexing", counts_text(st.indexed, st.pending, st.failed)
        elif p.done >= p.total:  # every picture is in: the words in the last ones are being read
            self.progress.setRange(0, 0)
            what, counts = "Reading the words in the last photos", counts_text(st.indexed, 0, st.failed)
        else:  # no photo waits for its picture: the run reads the words in photos already indexed
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
            what, counts = "Reading the words in photos", f"{p.done:,} of {photos(p.total)}"
        self.progress.show()
        self.pause_button.show()
        if self.session.paused:  # the session's state, not the last report's: Resume shows at once
            if p.phase == Phase.PAUSED:
                self.status_label.setText(f"{what} paused · {counts}")
            else:  # the photo in hand is finished first (within a second or two)
                self.status_label.setText(f"Pausing after the photo in hand · {counts}")
            return
        bits = [what, counts]
        if p.rate > 0:
            bits.append(f"{p.rate * 60:,.0f} photos/min")
        if p.eta_s is not None and p.done:
            bits.append(time_left(p.eta_s))
        self.status_label.setText(" · ".join(bits))

    def _index_finished(self) -> None:
        self._progress = None
        self.progress.hide()
        self.pause_button.hide()
        self._idle_status(self.session.status)
        if self.query is not None and self.result is not None and not self.result.items:
            self._run_query(None)  # nothing was found while indexing: ask again now that it is done

    def toggle_pause(self) -> None:
        if self.session.paused:
            self.session.resume()
        else:
            self.session.pause()
        self._sync_pause()
        if self._progress is not None:
            self._index_progress(self._progress)

    def _sync_pause(self) -> None:
        paused = self.session.paused
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setToolTip(("Resume" if paused else "Pause") + " indexing (Ctrl+Shift+P)")
        self.pause_action.setText("&Resume Indexing" if paused else "&Pause Indexing")

    # -- search --------------------------------------------------------------------------------------
    def _typed(self, text: str) -> None:
        if not text.strip():
            self.throttle.cancel()
            self.clear_search(keep_focus=True)
            if self._browsing():
                self._run_query(None)
            return
        self.throttle.trigger(text)

    def _browsing(self) -> bool:
        """The field is empty and a folder or a period is chosen: their photos are shown, newest first (as
        `search --folder DIR` / `--after 2023` with no text)."""
        return not self.search.text().strip() and (
            self._folder_filter is not None or self.query_bar.after_before() != (None, None)
        )

    def _run_query(self, _value) -> None:
        text = self.search.text().strip()
        if self.query is not None and self.query.image is not None and text == self.query.label:
            q = self._with_filters(self.query)  # the field shows an image query's label: run that image again
        elif text:
            q = self._with_filters(Query(text=text))
        elif self._browsing():
            q = self._with_filters(Query())
        else:
            return
        self.query = q
        self._search_error = None
        self.session.search(q)
        self._update_empty()

    def _escape(self) -> None:
        """Esc in the field: clear what is typed (a folder or a period still chosen then shows its photos);
        with nothing typed, let go of the folder and the period too."""
        if self.search.text().strip() or (self.query is not None and self.query.image is not None):
            self._typed("")
            return
        self.folders.list.clearSelection()
        self._folder_filter = None
        self.query_bar.clear_period()
        self.clear_search(keep_focus=True)

    def _with_filters(self, q: Query) -> Query:
        """``q`` within the period, order and folder the window shows as chosen."""
        after, before = self.query_bar.after_before()
        return replace(q, after=after, before=before, sort=self.query_bar.sort_order(), folder=self._folder_filter)

    def search_image(self, path: str, crop=None, label: str | None = None) -> None:
        label = label or f"Like {os.path.basename(path)}"
        # within the period and folder chosen, as a typed query is: the filters on show are the ones applied
        self.query = self._with_filters(Query(image=path, crop=crop, label=label))
        self.search.setText(label)
        self.throttle.cancel()
        self._search_error = None
        self.session.search(self.query)
        self.close_detail()
        self._update_empty()

    def find_similar(self, item: ResultItem) -> None:
        name = os.path.basename(item.hit.path)
        self.search_image(item.hit.path, item.shown_box, f"Like the outlined part of {name}")

    def clear_search(self, keep_focus: bool = False) -> None:
        self.throttle.cancel()
        self.search.clear()
        self.query = None
        self.result = None
        self.session.clear_search()
        self.model.set_items([])
        self.result_info.setText("")
        self._show_parts(None)
        self.close_detail()
        self._update_empty()
        if keep_focus:
            self.search.setFocus()

    # -- filters: period, order, folder, and the chips of the query as understood ----------------------
    def _filters_changed(self) -> None:
        image = self.query is not None and self.query.image is not None  # the same photo, within the new filters
        if image or self.search.text().strip() or self._browsing():
            self.throttle.flush(self.search.text())
        elif self.query is not None:  # the last filter of a listing taken away: back to the empty field's state
            self.clear_search()

    def _folder_selected(self) -> None:
        folder = self.folders.selected_path()
        if folder == self._folder_filter:
            return
        self._folder_filter = folder
        self._filters_changed()

    def _remove_part(self, part: QueryPart) -> None:
        """A chip's ×: take that part out of the query (its words from the field, or the filter it is)."""
        if part.tokens:
            self.search.setText(without(self.search.text(), part))
            if not self.search.text().strip():
                self.clear_search(keep_focus=True)
                return
        elif part.kind == "folder":
            self.folders.list.clearSelection()  # back to all folders
            self._folder_filter = None
        elif part.kind == "period":
            self.query_bar.clear_period()
        self._filters_changed()

    def _show_parts(self, res: SearchResult | None) -> None:
        answer = res.answer if res is not None else None
        parts = list(answer.parts) if answer is not None else []
        if res is not None and res.query.folder:
            name = os.path.basename(res.query.folder.rstrip(os.sep)) or res.query.folder
            parts.append(QueryPart("folder", f"in {name}", []))
        self.query_bar.set_parts(parts, answer.problems if answer is not None else [])

    def _results(self, res: SearchResult) -> None:
        self._show_parts(res)
        self.result = res
        self._show_items(res)
        self.grid.scrollToTop()
        self.refine_throttle.trigger(None)

    def _show_items(self, res: SearchResult) -> None:
        """Draw the answer: all of it, or its likely matches only (the core marked them)."""
        calibrated = res.answer is not None and res.answer.calibrated
        self.likely_only.setEnabled(calibrated)
        self.likely_only.setToolTip(LIKELY_TIP if calibrated else NO_PROBABILITY_TIP)
        items = res.items
        if calibrated and self.likely_only.isChecked():
            items = [it for it in items if it.hit.likely]
        self.model.set_items(items)
        n = len(res.items)
        info = f"{photos(n)} · {res.seconds * 1000:.0f} ms" if n else ""
        if calibrated and n:
            likely = sum(1 for it in res.items if it.hit.likely)
            info = f"{likely:,} likely · {info}"
        self.result_info.setText(info)
        self._update_empty()

    def _search_failed(self, _gen: int, message: str) -> None:
        self._search_error = message
        self.model.set_items([])
        self.result_info.setText("")  # the query before's chips and count are not this one's
        self._show_parts(None)
        self._update_empty()

    def _refined(self, _gen: int, photo_id: int) -> None:
        self.model.photo_changed(photo_id)
        if self.detail.item is not None and self.detail.item.hit.photo_id == photo_id:
            self.detail.update_outline()

    def _reranked(self, _gen: int, order: list[int]) -> None:
        self.model.reorder(order)

    def _refine_visible(self) -> None:
        rows = self.grid.visible_rows()
        if rows and self.result is not None:
            self.session.refine([self.model.item(r) for r in rows])

    # -- empty and error states ----------------------------------------------------------------------
    def _update_empty(self) -> None:
        st = self.session.status
        ms = self.session.state
        show_grid = False
        # a download that failed or was cancelled is told by the download panel, with Retry
        download_problem = ms.state == LoadState.CANCELLED or bool(ms.reason)
        if ms.state in (LoadState.ERROR, LoadState.CANCELLED) and not self.session.text_only and not download_problem:
            self._model_problem(ms)
        elif not st.folders:
            self.empty.show_state(
                "Add a folder of photos",
                "Choose a folder (or drop one on this window). Its photos are indexed in the background; "
                "nothing in the folder is ever changed.",
                [("Add Folder…", self.choose_folder)],
            )
        elif st.folders and all(not f.online for f in st.folders):
            self.empty.show_state(
                "Your photo folders are offline",
                "Connect the drive they are on. Their photos stay in the index, and searching works again when "
                "they are back.",
                [("Add Another Folder…", self.choose_folder)],
            )
        elif self._search_error:
            self.empty.show_state("That search did not work", self._search_error)
        elif self.query is None:
            if st.indexed == 0 and (self.session.indexing or st.pending):
                body = "You can search as soon as the first photos are done."
                self.empty.show_state("Indexing your photos…", body)
            elif self.session.text_only:
                self.empty.show_state(
                    "Search the words in your photos",
                    "No visual model is available yet, so only text that appears in the photos can be found: "
                    "a shop sign, a label, a street name, a jersey number. Type the words, or put them in "
                    "quotes to require them. Download the model (above) to search by what the photos show.",
                )
            else:
                self.empty.show_state(
                    "What are you looking for?",
                    "Describe something small: “a dog on the beach”, “a red umbrella”, “the clock on the wall”. "
                    f"{photos(st.indexed)} {'is' if st.indexed == 1 else 'are'} searchable. You can also drop a photo on "
                    "the search field, or select a folder to see its photos.",
                )
        elif self.result is None or self.session.current is None:
            if not self.session.ready:
                self.empty.show_state(
                    "Getting ready…", "The model is loading; your search runs as soon as it is ready."
                )
            else:
                show_grid = bool(self.model.rowCount())
                if not show_grid:
                    self.empty.show_state("Searching…", "")
        elif self.result.items and not self.model.rowCount() and self.likely_only.isChecked():
            q = self.query.text or self.query.label
            self.empty.show_state(
                f"No likely matches for “{q}”",
                f"The model finds none of the {photos(len(self.result.items))} it ranked a likely match.",
                [("Show All Matches", lambda: self.likely_only.setChecked(False))],
            )
        elif not self.result.items:
            body = "Try fewer or other words."
            kept_none = self.result.answer.nothing_kept() if self.result.answer is not None else None
            if kept_none:
                body = f"{kept_none} Take that part out (the × on it) or choose another."
            elif self.session.text_only:
                body = (
                    "Only the text in your photos is searched until the visual model is available: "
                    "try words written in the photo."
                )
            if st.pending or self.session.indexing:
                body += f" {photos(st.pending)} still being indexed; they become searchable as they are done."
            q = self.query.text or self.query.label
            if q:
                self.empty.show_state(f"Nothing found for “{q}”", body)
            else:  # a folder or a period with an empty field
                self.empty.show_state("No photos here", kept_none or "No indexed photo is in this folder and period.")
        else:
            show_grid = True
        self.results_stack.setCurrentWidget(self.grid if show_grid else self.empty)

    def _model_problem(self, ms: ModelState) -> None:
        if ms.state == LoadState.CANCELLED:
            self.empty.show_state(
                "The model download was cancelled",
                "Search needs the model. Download it, or choose a model folder on this computer.",
                [
                    ("Download", lambda: self.session.load_model(self.settings.model)),
                    ("Choose Model Folder…", self.choose_model_folder),
                ],
            )
            return
        if ms.mismatch:
            self.empty.show_state(
                "The index was made with another model",
                ms.message,
                [("Re-index With This Model", self.reindex_with_settings), ("Settings…", self.open_settings)],
            )
        else:
            self.empty.show_state(
                "The model is not available",
                ms.message,
                [
                    ("Try Again", lambda: self.session.load_model()),
                    ("Choose Model Folder…", self.choose_model_folder),
                ],
            )

    def choose_model_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a Model Folder")
        if folder:
            self._model_tried = True
            self.apply_settings(replace(self.settings, model=folder))

    def reindex_with_settings(self) -> None:
        self.session.load_model(self.settings.model, reindex_layout=self.settings.layout)

    # -- results navigation and detail ---------------------------------------------------------------
    def _current_row(self) -> int:
        ix = self.grid.currentIndex()
        return ix.row() if ix.isValid() else -1

    def _with_current(self, fn) -> None:
        if self.center.currentWidget() is self.detail and self.detail.item is not None:
            fn(self.detail.item)
            return
        row = self._current_row()
        if row >= 0:
            fn(self.model.item(row))

    def focus_search(self) -> None:
        if self.center.currentWidget() is self.detail:
            self.close_detail()
        self.search.setFocus()
        self.search.selectAll()

    def focus_folders(self) -> None:
        lst = self.folders.list
        lst.setFocus()
        if not lst.selectedItems() and lst.count():
            lst.setCurrentRow(
                max(0, lst.currentRow()), QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect
            )

    def focus_results(self) -> None:
        if self.model.rowCount() == 0:
            return
        self.close_detail()
        self.grid.setFocus()
        ix = self.grid.currentIndex()
        if not ix.isValid():
            ix = self.model.index(0)
        # selected, not only current: the highlight shows where the keyboard is
        self.grid.selectionModel().setCurrentIndex(ix, QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.grid.scrollTo(ix)

    def open_detail(self, row: int) -> None:
        if row < 0 or row >= self.model.rowCount():
            return
        item = self.model.item(row)
        self.grid.setCurrentIndex(self.model.index(row))
        self.detail.show_item(item, row, self.model.rowCount(), self.thumbs._memory.get(item.thumb_key))
        self.center.setCurrentWidget(self.detail)
        self.detail.setFocus()
        self.session.refine([item], detail=True)

    def step_detail(self, delta: int) -> None:
        row = self._current_row() + delta
        if 0 <= row < self.model.rowCount():
            self.open_detail(row)

    def close_detail(self) -> None:
        if self.center.currentWidget() is self.detail:
            self.center.setCurrentWidget(self.results_stack)
            self.grid.setFocus()
            if self.grid.currentIndex().isValid():
                self.grid.scrollTo(self.grid.currentIndex())

    def _grid_menu(self, pos) -> None:
        ix = self.grid.indexAt(pos)
        if not ix.isValid():
            return
        item = self.model.item(ix.row())
        m = QtWidgets.QMenu(self)
        m.addAction("Open Large", lambda: self.open_detail(ix.row()))
        m.addAction("Open in Default App", lambda: open_file(item.hit.path))
        m.addAction("Show in Folder", lambda: show_in_folder(item.hit.path))
        m.addSeparator()
        m.addAction("Find Similar", lambda: self.find_similar(item))
        m.addAction(
            "Copy Path", lambda: QtWidgets.QApplication.clipboard().setText(display_path(item.hit.path))
        )
        m.exec(self.grid.viewport().mapToGlobal(pos))

    # -- thumbnails ----------------------------------------------------------------------------------
    def set_thumb_size(self, side: int) -> None:
        side = max(THUMB_MIN, min(THUMB_MAX, int(side)))
        if side == self.delegate.side:
            return
        self.delegate.side = side
        if self.size_slider.value() != side:
            self.size_slider.setValue(side)
        self.grid.fit_columns()
        self.grid.doItemsLayout()
        self.grid.viewport().update()
        self.refine_throttle.trigger(None)

    # -- settings ------------------------------------------------------------------------------------
    def open_settings(self) -> None:
        st = self.session.status
        # the model and layout the index is made with (they may differ from the saved ones: `index --model`)
        shown = self.session.controller.settings_in_use()
        dlg = SettingsDialog(shown, self, variants=st.variants, rate=self.session.last_rate)
        if dlg.exec() != QtWidgets.QDialog.DialogCode.Accepted:
            return
        self.apply_settings(dlg.result_settings())

    def apply_settings(self, new) -> None:
        """Change the settings: core's plan says what that redoes (core/controller.py); the window asks
        the user about the costly parts, saves the settings and has the session carry the plan out."""
        old = self.session.controller.settings_in_use()
        plan = self.session.controller.plan(new, self.session.status.variants)
        if plan.rebind and plan.pictures:  # only the work really redone: none for a first model
            box = QtWidgets.QMessageBox(self)
            box.setIcon(QtWidgets.QMessageBox.Icon.Question)
            box.setWindowTitle("Re-index Your Photos?")
            what = "region layout" if new.model == old.model else "model"
            box.setText(f"Changing the {what} means indexing your photos again.")
            box.setInformativeText(reindex_cost(plan.pictures, self.session.last_rate, new.model == old.model))
            go = box.addButton("Re-index", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
            box.addButton("Keep Current", QtWidgets.QMessageBox.ButtonRole.RejectRole)
            box.exec()
            if box.clickedButton() is not go:
                new = replace(new, model=old.model, layout=old.layout)
                plan = self.session.controller.plan(new, self.session.status.variants, keep_binding=True)
        if plan.speed_redo and self.session.ready:
            box = QtWidgets.QMessageBox(self)
            box.setIcon(QtWidgets.QMessageBox.Icon.Question)
            box.setWindowTitle("Re-index Your Photos?")
            box.setText(f"Indexing “{new.speed}” means indexing photos made at the other speed again.")
            measured = self.session.rates.get(new.speed)  # a run at that speed was timed: its rate
            rate = measured or self.session.last_rate
            factor = 1.0 if measured else speed_factor(old.speed, new.speed)
            box.setInformativeText(reindex_cost(plan.speed_redo, rate, True, factor))
            go = box.addButton("Re-index", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
            box.addButton("Only New Photos", QtWidgets.QMessageBox.ButtonRole.RejectRole)
            box.exec()
            if box.clickedButton() is not go:
                plan = plan.without_speed_redo()  # the new speed applies to new and changed photos only
        fields = ("model", "layout", "speed", "device", "thumbnail_cache_mb", "refine", "rerank_by_zoom", "ocr", "ocr_thorough")
        for field in fields:
            setattr(self.settings, field, getattr(new, field))
        self._save_settings()
        self.thumbs.limit_bytes = self.settings.thumbnail_cache_mb * 2**20
        self.thumbs.prune()
        self.session.carry_out(plan)

    def _save_settings(self) -> None:
        try:
            self.settings.save(self.session.lib.paths.settings)
        except OSError as exc:
            self._error(f"The settings could not be saved ({exc}).")

    def _watch_event(self, ev) -> None:
        """Live folder watching: say what just happened (folder counts follow through status_changed)."""
        if ev.kind == EventKind.ONLINE and not any(f.path == ev.folder and not f.online for f in self.session.status.folders):
            return  # a folder just added: the folder list shows it; only a folder that came back is news
        if ev.kind in (EventKind.NOTICE, EventKind.OFFLINE, EventKind.ONLINE, EventKind.ERROR) and ev.message:
            self.statusBar().showMessage(ev.message, 15000)
        elif ev.kind == EventKind.INDEXED and ev.paths and not self.session.indexing:
            n = len(ev.paths)
            self.statusBar().showMessage(f"{count(n, 'new or changed photo')} indexed", 5000)

    def _error(self, message: str) -> None:
        QtWidgets.QMessageBox.warning(self, "Sorce Desktop", message)

    # -- drag and drop, closing ----------------------------------------------------------------------
    def dragEnterEvent(self, e) -> None:  # noqa: N802
        if local_folders(e.mimeData()):
            e.acceptProposedAction()

    def dragMoveEvent(self, e) -> None:  # noqa: N802
        if local_folders(e.mimeData()):
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802
        folders = local_folders(e.mimeData())
        if not folders:
            return
        e.acceptProposedAction()
        if self.pages.currentWidget() is self.welcome:
            self.welcome.set_folder(folders[0])
            return
        for f in folders:
            self.add_folder(f)

    def closeEvent(self, e) -> None:  # noqa: N802
        self.throttle.cancel()
        self.refine_throttle.cancel()
        self.session.close()
        super().closeEvent(e)


def open_file(path: str) -> None:
    QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(path))


def show_in_folder(path: str) -> None:
    """The platform's file manager, with the photo selected where the platform can do that."""
    try:
        if sys.platform == "darwin":
            subprocess.Popen(["open", "-R", path])
            return
        if os.name == "nt":
            subprocess.Popen(["explorer", "/select,", os.path.normpath(path)])
            return
        # freedesktop file managers select the file through this D-Bus call; else open the folder
        uri = QtCore.QUrl.fromLocalFile(path).toString()
        subprocess.Popen(
            [
                "dbus-send",
                "--session",
                "--dest=org.freedesktop.FileManager1",
                "--type=method_call",
                "/org/freedesktop/FileManager1",
                "org.freedesktop.FileManager1.ShowItems",
                f"array:string:{uri}",
                "string:",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return
    except OSError:
        pass
    QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(os.path.dirname(path)))
