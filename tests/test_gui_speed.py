"""Settings -> Indexing speed: the choice, its re-index cost counting only the photos really redone,
and the re-index itself (picture vectors made again at the new speed, nothing else)."""

from __future__ import annotations

import pytest
from gui_support import copy_photos, open_test_window, wait_indexed, wait_ready

from sorce_desktop.core.library import photos_to_redo
from sorce_desktop.core.models.speed import speed_of_variant

pytestmark = pytest.mark.gui


def test_work_redone_counts_only_picture_vectors_really_made_again():
    variants = {"float32+tiles176+skip6": 5, "float32": 2, None: 1}
    assert photos_to_redo(variants, speed="thorough") == 5
    assert photos_to_redo(variants, speed="fast") == 3  # before speeds existed: full precision
    assert photos_to_redo(variants, binding_changes=True) == 8
    # text read, no picture model until now: choosing the first one re-indexes nothing
    assert photos_to_redo({}, binding_changes=True) == 0
    assert speed_of_variant("int8+tiles176+skip6") == "fast" and speed_of_variant("float32") == "thorough"


def _click_when_asked(qtbot, text: str, seen: list) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, click)
            return
        seen.append(box.informativeText())
        next(b for b in box.buttons() if b.text() == text).click()

    QTimer.singleShot(50, click)


def test_speed_setting_shows_its_cost_and_reindexes_only_the_other_speed(qtbot, tmp_path, tiny_clip):
    from dataclasses import replace

    from sorce_desktop.gui.settings_dialog import SettingsDialog

    photos = copy_photos(tmp_path / "photos", 6)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 6)
    qtbot.waitUntil(lambda: sum(win.session.status.variants.values()) == 6, timeout=20000)
    assert {speed_of_variant(v) for v in win.session.status.variants} == {"fast"}
    store = win.session.lib.store

    dlg = SettingsDialog(win.settings, win, variants=win.session.status.variants, rate=0.5)
    assert dlg.speed.currentData() == "fast"
    assert "at this speed" in dlg.speed_cost.text()
    dlg.speed.setCurrentIndex(dlg.speed.findData("thorough"))
    cost = dlg.speed_cost.text()
    # 6 photos, at the last rate (30 a minute) slowed by thorough's factor: 7.5 a minute -> about a minute
    assert "6 photos must be indexed again" in cost and "words already read in them are kept" in cost
    assert "8 photos a minute" in cost and "about a minute" in cost
    new = dlg.result_settings()
    assert new.speed == "thorough"
    dlg.reject()

    seen: list[str] = []
    before = {r.id for r in store.photos_under()}
    _click_when_asked(qtbot, "Re-index", seen)
    win.apply_settings(replace(new))
    assert seen and "6 photos must be indexed again" in seen[0]
    qtbot.waitUntil(
        lambda: not win.session.indexing
        and {speed_of_variant(v) for v in win.session.status.variants} == {"thorough"}
        and sum(win.session.status.variants.values()) == 6,
        timeout=60000,
    )
    assert {r.id for r in store.photos_under()} == before  # the same photos, embedded again
    assert win.settings.speed == "thorough" and win.session.embedder.variant() == "float32"
    # back to fast, answering "Only New Photos": nothing is re-indexed, new photos use fast
    _click_when_asked(qtbot, "Only New Photos", seen)
    win.apply_settings(replace(win.settings, speed="fast"))
    qtbot.waitUntil(lambda: win.session.ready and win.session.embedder.variant() != "float32", timeout=60000)
    qtbot.wait(300)
    assert {speed_of_variant(v) for v in store.visual_variants()} == {"thorough"}
    win.close()


def test_settings_show_the_model_the_index_is_made_with(qtbot, tmp_path, tiny_clip, monkeypatch):
    """A library indexed on the command line with `--model DIR` keeps its saved model setting; the settings
    dialog shows the model the index is made with, and OK without a change re-indexes nothing (it planned
    a model change and asked "Changing the model means indexing your photos again")."""
    from PySide6 import QtWidgets

    from sorce_desktop.cli import main
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.gui import window as window_module

    photos = copy_photos(tmp_path / "photos", 3)
    data = tmp_path / "data"
    win = open_test_window(qtbot, data, tmp_path / "another-model")  # saved setting: a model not there
    win.close()
    assert main(["index", str(photos), "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", str(data)]) == 0
    win = open_test_window(qtbot, data, tmp_path / "another-model")
    wait_ready(qtbot, win)  # the index's own model loads
    in_use = win.session.controller.settings_in_use()
    assert in_use.model == win.session.lib.model_id() != win.settings.model
    shown = []

    class Unchanged(window_module.SettingsDialog):
        def exec(self):
            shown.append(self.picker.model())
            return QtWidgets.QDialog.DialogCode.Accepted

    def asked(*_a, **_k):
        raise AssertionError("asked to re-index for a change nobody made")

    monkeypatch.setattr(window_module, "SettingsDialog", Unchanged)
    monkeypatch.setattr(QtWidgets.QMessageBox, "exec", asked)
    win.open_settings()
    assert shown == [in_use.model]
    assert Settings.load(win.session.lib.paths.settings).model == in_use.model  # the setting now says so
    qtbot.waitUntil(lambda: not win.session.indexing, timeout=30000)  # the start's own check of the folder
    assert win.session.status.indexed == 3 and win.session.lib.model_id() == in_use.model
