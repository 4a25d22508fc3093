"""The window with no visual model: the text in photos is indexed (real PP-OCR + MiniLM from their
packages) and searched, a banner says so and offers the download, hits show they matched words;
then a visual model arrives and the banner goes."""

from __future__ import annotations

import pytest
from conftest import catalog_rows
from gui_support import open_test_window, search, wait_indexed

from sorce_desktop.core.regions import Box

pytestmark = pytest.mark.gui

WORDS = ["lantern", "harbor"]  # drawn by the worded_photos fixture (conftest.py)


def _iou(a: Box, b: Box) -> float:
    from sorce_desktop.bench.text_render import iou

    return iou(a, b)


@pytest.mark.slow
def test_text_only_without_visual_model(qtbot, tmp_path, worded_photos, tiny_clip, untouched):
    from PySide6.QtCore import Qt

    root, boxes = worded_photos
    photos = untouched(root)
    # A model folder that is not there: like a first run with no network, no visual model loads.
    win = open_test_window(qtbot, tmp_path / "data", tmp_path / "no-such-model", ocr=True)
    win.resize(1000, 700)
    qtbot.waitUntil(lambda: win.session.text_only and win.session.ready, timeout=60000)
    assert win.session.state.state == "error" and win.session.embedder is None
    # the window says text search works and how to get picture search, instead of "model not available"
    assert win.text_banner.isVisible()
    assert "searching only the text" in win.text_banner.label.text()
    assert "Download" in win.text_banner.label.text() and win.text_banner.download_button.isVisible()
    assert win.model_label.text() == "Text in photos only"
    assert "not available" not in win.empty.title.text()

    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 2, timeout=180000)
    qtbot.waitUntil(lambda: "read in 2 photos" in win.text_banner.label.text(), timeout=20000)
    assert win.results_stack.currentWidget() is win.empty
    assert win.empty.title.text() == "Search the words in your photos"

    search(qtbot, win, "lanterm")  # one letter wrong, as OCR might read it
    assert win.model.rowCount() >= 1 and win.results_stack.currentWidget() is win.grid
    top = win.model.item(0).hit
    path, box = boxes["lantern"]
    assert top.path.endswith(path.name) and top.source == "text" and top.region == "text"
    assert "lantern" in top.text.lower()
    assert _iou(top.box, box) >= 0.5  # the outline lands on the words
    tip = win.model.data(win.model.index(0), Qt.ItemDataRole.ToolTipRole)
    assert "Text in photo" in tip and "Words matched" in tip
    assert "Text in photo match" in win.model.data(win.model.index(0), Qt.ItemDataRole.AccessibleTextRole)
    assert win.session.current.vector is None  # no visual model: nothing to refine with

    search(qtbot, win, "qzxvw")  # no such letters, and no meaning near the lines
    assert win.model.rowCount() == 0
    assert "Only the text in your photos is searched" in win.empty.body.text()

    # searching by a photo needs the visual model: said, not crashed
    win.search_image(str(boxes["harbor"][0]))
    qtbot.waitUntil(lambda: win._search_error is not None, timeout=20000)
    assert "visual model" in win._search_error

    # the visual model arrives: the banner goes, photos get visual regions, words are not read again
    win.session.load_model(str(tiny_clip))
    qtbot.waitUntil(lambda: win.session.state.state == "ready", timeout=60000)
    assert not win.session.text_only and not win.text_banner.isVisible()
    qtbot.waitUntil(lambda: win.session.lib.store.count_vectors() > 0, timeout=60000)
    wait_indexed(qtbot, win, 2)
    search(qtbot, win, "harbor")
    top = win.model.item(0).hit
    assert top.path.endswith(boxes["harbor"][0].name) and top.source in ("text", "both")
    assert {it.hit.source for it in win.model.items} >= {"visual"}  # the other photo, by picture


def test_first_run_without_network_goes_to_text_search(qtbot, tmp_path, worded_photos):
    """The welcome page's "start" with a model that cannot be had (no network): the window opens on the
    text-only search with its banner, instead of stopping at the download error."""
    root, _ = worded_photos
    win = open_test_window(qtbot, tmp_path / "data", tmp_path / "no-such-model", first_run_done=False, ocr=True)
    assert win.pages.currentWidget() is win.welcome
    win._first_run_start(str(root), str(tmp_path / "no-such-model"))
    qtbot.waitUntil(lambda: win.pages.currentWidget() is win.main, timeout=60000)
    assert win.session.text_only and win.text_banner.isVisible()
    assert win.settings.first_run_done
    qtbot.waitUntil(lambda: [f.path for f in win.session.status.folders] == [str(root)], timeout=20000)


@pytest.mark.slow
def test_thorough_text_setting_reads_the_photos_again(qtbot, tmp_path, worded_photos):
    """Settings -> "Read words more thoroughly": saved, and the photos' text is read again in the
    background with the second detector (the engine each photo was read by says so); switching it off
    reads them again with the standard engine. The words are found either way."""
    from dataclasses import replace

    from sorce_desktop.core.settings import Settings
    from sorce_desktop.gui.settings_dialog import SettingsDialog

    root, boxes = worded_photos
    win = open_test_window(qtbot, tmp_path / "data", tmp_path / "no-such-model", ocr=True)
    qtbot.waitUntil(lambda: win.session.text_only and win.session.ready, timeout=60000)
    win.add_folder(str(root))
    wait_indexed(qtbot, win, 2, timeout=180000)
    store = win.session.lib.store

    def engines() -> set[str]:
        return {e for (e,) in catalog_rows(store, "SELECT engine FROM ocr_done")}

    qtbot.waitUntil(lambda: len(engines()) == 1 and "+det" not in next(iter(engines())), timeout=60000)
    dlg = SettingsDialog(win.settings, win)
    assert not dlg.ocr_thorough.isChecked() and dlg.ocr_thorough.isEnabled()
    dlg.ocr.setChecked(False)
    assert not dlg.ocr_thorough.isEnabled()  # only means something while words are read
    dlg.ocr.setChecked(True)
    dlg.ocr_thorough.setChecked(True)
    win.apply_settings(dlg.result_settings())
    dlg.deleteLater()
    assert Settings.load(win.session.lib.paths.settings).ocr_thorough
    qtbot.waitUntil(lambda: engines() and all(e.endswith("+det ppocrv4") for e in engines()), timeout=180000)
    qtbot.waitUntil(lambda: not win.session.indexing, timeout=60000)
    search(qtbot, win, "lantern")
    assert win.model.rowCount() >= 1 and win.model.item(0).hit.path.endswith(boxes["lantern"][0].name)

    win.apply_settings(replace(win.settings, ocr_thorough=False))
    qtbot.waitUntil(lambda: engines() and not any("+det" in e for e in engines()), timeout=180000)
