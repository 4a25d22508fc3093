"""What a new user met in the window (issue 30): long names that widened the window, the grid's current
item invisible after Tab, plurals, scores on three scales, the re-index estimate, counts that disagreed,
and the offline start's banners. Each test drives the real window on a small library indexed once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import no_text_reading
from gui_support import copy_photos, open_test_window, search, wait_indexed, wait_ready

from sorce_desktop.gui.qt import QtCore, QtGui, QtWidgets

pytestmark = pytest.mark.gui

N_PHOTOS = 6
LONG_NAME = "holiday_" + "a_very_long_descriptive_file_name_" * 3 + "exported_from_the_camera_roll_0139.jpg"


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_clip) -> tuple[Path, Path]:
    """(data folder, photo folder): six photos, one of them with a ~130-character name, indexed by the
    tiny model without text reading; each test opens a window on its own copy of the data folder."""
    from sorce_desktop.cli import main

    root = tmp_path_factory.mktemp("newuser")
    photos = copy_photos(root / "photos", N_PHOTOS)
    first = sorted(photos.iterdir())[0]
    first.rename(photos / LONG_NAME)
    assert len(LONG_NAME) >= 120
    data = root / "data"
    no_text_reading(data)
    assert main(["index", str(photos), "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", str(data)]) == 0
    return data, photos


@pytest.fixture
def window(qtbot, tmp_path, library, tiny_clip):
    data, _photos = library
    mine = tmp_path / "data"
    shutil.copytree(data, mine)
    win = open_test_window(qtbot, mine, tiny_clip)
    win.resize(1180, 760)
    win.show()
    qtbot.waitExposed(win)
    wait_ready(qtbot, win)
    wait_indexed(qtbot, win, N_PHOTOS)
    yield win
    win.close()


# -- 3: a long file name never widens the window ----------------------------------------------------------
def test_long_name_never_widens_the_window(window, qtbot):
    win = window
    search(qtbot, win, "a photo")
    qtbot.waitUntil(lambda: win.model.rowCount() == N_PHOTOS, timeout=20000)
    width, min_width = win.width(), win.minimumSizeHint().width()
    row = next(i for i, it in enumerate(win.model.items) if it.hit.path.endswith(LONG_NAME))
    win.open_detail(row)
    qtbot.wait(300)  # layouts settle
    QtWidgets.QApplication.processEvents()
    assert win.center.currentWidget() is win.detail
    assert win.width() == width and win.minimumSizeHint().width() <= min_width
    assert win.minimumWidth() <= min_width
    # elided in the middle: the start and the end of the name are shown, the whole name in the tooltip
    title = win.detail.title
    shown = title.shown_name()
    assert "…" in shown and shown != LONG_NAME
    assert shown.startswith(LONG_NAME[:6]) and shown.endswith(LONG_NAME[-6:])
    assert title.toolTip() == LONG_NAME
    assert title.geometry().right() <= win.detail.similar_button.geometry().left()
    win.close_detail()


def test_grid_caption_elides_in_the_middle(window):
    from sorce_desktop.gui.results import caption_name

    fm = QtGui.QFontMetricsF(window.grid.font())
    label = caption_name(LONG_NAME, fm.horizontalAdvance, 150)
    assert label.startswith("holiday") and label.endswith("0139") and "…" in label
    assert fm.horizontalAdvance(label) <= 150


# -- 8: the grid shows its current item as soon as Tab gives it focus -------------------------------------
def test_tab_into_the_grid_shows_the_current_item(window, qtbot):
    from PySide6.QtCore import Qt

    win = window
    search(qtbot, win, "a photo")
    qtbot.waitUntil(lambda: win.model.rowCount() == N_PHOTOS, timeout=20000)
    win.search.setFocus()
    qtbot.waitUntil(lambda: win.search.hasFocus(), timeout=5000)
    cell = win.grid.visualRect(win.model.index(0))
    before = win.grid.viewport().grab(cell).toImage()
    qtbot.keyClick(win.search, Qt.Key.Key_Tab)
    qtbot.waitUntil(lambda: win.grid.hasFocus(), timeout=5000)
    qtbot.wait(100)
    after = win.grid.viewport().grab(cell).toImage()
    assert win.grid.currentIndex().row() == 0
    assert [ix.row() for ix in win.grid.selectedIndexes()] == [0]
    # painted: the cell's margin (outside the thumbnail) takes the highlight colour
    x, y = 3, cell.height() - 3
    assert before.pixelColor(x, y) != after.pixelColor(x, y)


# -- 9: plurals ------------------------------------------------------------------------------------------
def test_errors_dialog_counts_one_file(qtbot):
    from sorce_desktop.gui.folders import ErrorsDialog

    def head(dlg) -> str:
        qtbot.addWidget(dlg)
        return next(lb.text() for lb in dlg.findChildren(QtWidgets.QLabel) if "could not be indexed" in lb.text())

    assert head(ErrorsDialog([("/p/broken.jpg", "the file is not an image")])).startswith("1 file could not")
    assert head(ErrorsDialog([("/p/a.jpg", "x"), ("/p/b.jpg", "y")])).startswith("2 files could not")


# -- 1: words reach open results when a picture model is in use -------------------------------------------
@pytest.mark.slow
def test_words_read_after_the_picture_rerank_open_results(qtbot, tmp_path, tiny_clip, worded_photos):
    """A photo dropped into a watched folder is committed by its picture first, then by its words: the
    open results follow both commits, so it ends up matched by its words (outlined), not by its picture
    alone until Enter is pressed."""
    root, boxes = worded_photos
    lantern = boxes["lantern"][0]
    photos = copy_photos(tmp_path / "photos", 2)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip, ocr=True)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 2, timeout=180000)
    search(qtbot, win, "lantern")
    shown = []
    win.session.results.connect(lambda res: shown.append([(it.hit.path, it.hit.source) for it in res.items]))
    shutil.copy2(lantern, photos / "dropped.jpg")
    dropped = str(photos / "dropped.jpg")

    def matched_by_words() -> bool:
        return any(it.hit.path == dropped and it.hit.text_regions for it in win.model.items)

    qtbot.waitUntil(lambda: any(p == dropped for res in shown for p, _s in res), timeout=60000)
    qtbot.waitUntil(matched_by_words, timeout=120000)
    top = win.model.item(0)
    assert top.hit.path == dropped and top.hit.source in ("text", "both")
    assert any(kind == "text" for kind, _b, _r in top.outlines())
    win.close()


# -- 5 and 2: one source of counts, and counts that stay while paused -------------------------------------
def _numbers(text: str, word: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) " + word, text)]


def test_status_bar_folder_list_and_summary_count_alike_and_stay_while_paused(window, qtbot, tmp_path):
    """Photos indexed before, more added while paused: the status bar, each folder and "N photos
    searchable" give the same numbers (the status bar used to count the run: "paused at 0 of 8" beside
    "6 photos searchable"), and they do not move while paused."""
    win = window
    more = copy_photos(tmp_path / "more", 8, start=10)
    phases: list[str] = []
    win.session.index_progress.connect(lambda p: phases.append(p.phase))
    win.toggle_pause()
    win.add_folder(str(more))
    qtbot.waitUntil(lambda: "paused" in phases, timeout=30000)
    qtbot.waitUntil(lambda: win.session.status.pending == 8, timeout=20000)
    qtbot.wait(300)
    st = win.session.status
    bar = win.status_label.text()
    folders = [win.folders.list.item(i).data(QtCore.Qt.ItemDataRole.UserRole + 1) for i in range(win.folders.list.count())]
    from sorce_desktop.gui.folders import folder_counts_text

    lines = [folder_counts_text(f) for f in folders]
    assert "paused" in bar
    assert _numbers(bar, "indexed") == [st.indexed] == [N_PHOTOS]
    assert _numbers(bar, "to do") == [st.pending] == [8]
    assert sum(n for ln in lines for n in _numbers(ln, "indexed")) == st.indexed
    assert sum(n for ln in lines for n in _numbers(ln, "to do")) == st.pending
    assert _numbers(win.folders.summary.text(), "photos searchable") == [st.indexed]
    qtbot.wait(1000)
    win.session.refresh_status()
    qtbot.wait(300)
    assert win.status_label.text() == bar and win.session.status.indexed == N_PHOTOS  # nothing moved
    win.toggle_pause()
    wait_indexed(qtbot, win, N_PHOTOS + 8)
    qtbot.waitUntil(lambda: win._progress is None, timeout=20000)
    assert win.status_label.text() == f"{N_PHOTOS + 8} photos indexed"
    assert win.folders.summary.text() == f"{N_PHOTOS + 8} photos searchable"


# -- 6: one readable score ---------------------------------------------------------------------------------
RAW_SCORE = re.compile(r"-?\d\.\d{2,}")  # a cosine or word score as printed: 0.03, -0.26, 1.02


def test_one_readable_score_never_a_raw_one(window, qtbot):
    """A model without a match probability (CLIP): every place ranks ("#1", "ranked #2"), none prints a
    raw score (a picture's cosine beside a word score are on different scales)."""
    from PySide6.QtCore import Qt

    from sorce_desktop.gui.results import ItemRole

    win = window
    search(qtbot, win, "a photo")
    qtbot.waitUntil(lambda: win.model.rowCount() == N_PHOTOS, timeout=20000)
    for row in range(win.model.rowCount()):
        ix = win.model.index(row)
        tip = win.model.data(ix, Qt.ItemDataRole.ToolTipRole)
        spoken = win.model.data(ix, Qt.ItemDataRole.AccessibleTextRole)
        assert f"ranked #{row + 1}" in tip and f"ranked #{row + 1}" in spoken
        assert not RAW_SCORE.search(tip.split("\n", 1)[1]) and not RAW_SCORE.search(spoken)
    # the grid's caption: what the delegate paints, read back from the painter
    painted: list[str] = []
    item = win.model.data(win.model.index(1), ItemRole)
    image = QtGui.QImage(400, 400, QtGui.QImage.Format.Format_ARGB32)
    painter = QtGui.QPainter(image)

    class Recorder:
        def __getattr__(self, name):
            return getattr(painter, name)

        def drawText(self, *args):  # noqa: N802
            painted.append(args[-1])
            return painter.drawText(*args)

    opt = QtWidgets.QStyleOptionViewItem()
    opt.rect = QtCore.QRect(0, 0, 200, 240)
    opt.font = win.grid.font()
    opt.palette = win.grid.palette()
    win.delegate._paint_caption(Recorder(), opt, opt.rect, item, 1)
    painter.end()
    assert "#2" in painted and not any(RAW_SCORE.fullmatch(t) for t in painted)
    win.open_detail(2)
    assert "ranked #3" in win.detail.match_info.text() and not RAW_SCORE.search(win.detail.match_info.text())
    win.close_detail()


def test_match_label_is_the_probability_where_the_model_has_one():
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import PhotoHit
    from sorce_desktop.gui.results import match_label

    hit = PhotoHit("/p/a.jpg", 0.031, Box(0, 0, 1, 1), "global", 1, 10, 10, probability=0.734, likely=True)
    assert match_label(hit, 4) == ("73%", "match probability 73% (a likely match)")
    hit.probability, hit.likely = None, None
    assert match_label(hit, 4) == ("#4", "ranked #4")


# -- 7: the re-index estimate counts what is redone, at the rate measured for it ---------------------------
def _answer_when_asked(qtbot, text: str, seen: list) -> None:
    def click() -> None:
        box = QtWidgets.QApplication.activeModalWidget()
        if not isinstance(box, QtWidgets.QMessageBox):
            QtCore.QTimer.singleShot(50, click)
            return
        seen.append(box.informativeText())
        next(b for b in box.buttons() if b.text() == text).click()

    QtCore.QTimer.singleShot(50, click)


def test_reindex_estimate_uses_the_picture_stage_rate(window, qtbot):
    """Switching to Thorough redoes only picture vectors (the words read are kept): the estimate uses the
    picture stage's measured rate, not one that counted reading text, and says seconds when it is
    seconds (47 photos said "about a minute" and took 2 s)."""
    from dataclasses import replace

    from sorce_desktop.core.indexing.indexer import IndexReport
    from sorce_desktop.core.indexing.service import EventKind, IndexEvent

    win = window
    # a run that read text for 58 of its 60 s: its picture stage did 47 photos in 2 s
    report = IndexReport(embedded=47, embed_seconds=60.0, text_seconds=58.0, text_read=47)
    win.session._service_event(IndexEvent(EventKind.RECONCILED, report=report))
    assert win.session.last_rate == pytest.approx(23.5)
    seen: list[str] = []
    _answer_when_asked(qtbot, "Only New Photos", seen)
    win.apply_settings(replace(win.settings, speed="thorough"))
    assert seen, "no re-index question was asked"
    assert f"{N_PHOTOS} photos must be indexed again" in seen[0]
    # 6 photos at 23.5/s slowed 4 times by thorough: about a second
    assert "a few seconds" in seen[0] and "about a minute" not in seen[0]
    assert "352 photos a minute" in seen[0]  # 23.5 a second, a quarter of it


# -- 4: the offline start: one banner, one set of actions, an answer to every click ------------------------
HUB_MODEL = "google/siglip2-base-patch16-256"


def _shown(win, cls, text: str) -> list:
    return [w for w in win.findChildren(cls) if w.isVisibleTo(win) and w.text() == text]


def test_offline_start_one_banner_and_an_answer_to_every_click(qtbot, tmp_path, hub_unreachable):
    win = open_test_window(qtbot, tmp_path / "data", HUB_MODEL, ocr=True)
    win.resize(1180, 760)
    win.show()
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.session.text_only and win.session.state.state == "error", timeout=60000)
    assert win.session.state.reason == "offline"
    banners = [b for b in (win.text_banner, win.download_panel) if b.isVisibleTo(win)]
    assert banners == [win.text_banner]  # one banner (it used to be two, stacked)
    assert len(_shown(win, QtWidgets.QPushButton, "Choose Model Folder…")) == 1  # one set of actions
    assert win.text_banner.title.text().startswith("No internet connection")
    button = win.text_banner.download_button
    assert button.text() == "Try Again" and button.isEnabled()
    states: list[str] = []
    win.session.model_state.connect(lambda st: states.append(st.state))
    qtbot.mouseClick(button, QtCore.Qt.MouseButton.LeftButton)
    # at once: the click is answered before the try ends
    assert win.text_banner.status.isVisibleTo(win) and win.text_banner.status.text().startswith("Trying to get")
    assert not button.isEnabled()
    qtbot.waitUntil(lambda: states and states[-1] == "error", timeout=60000)
    note = win.text_banner.status.text()
    assert re.fullmatch(r"Still offline at \d\d:\d\d\.", note), note
    assert win.text_banner.status.isVisibleTo(win) and button.isEnabled()
    assert [b for b in (win.text_banner, win.download_panel) if b.isVisibleTo(win)] == [win.text_banner]
    assert len(_shown(win, QtWidgets.QPushButton, "Choose Model Folder…")) == 1
    win.close()
