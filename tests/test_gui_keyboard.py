"""Keyboard use, the first-run page, and the throttle."""

from __future__ import annotations

import pytest
from gui_support import copy_photos, open_test_window, search, wait_indexed, wait_ready

from sorce_desktop.gui.qt import QtCore

pytestmark = pytest.mark.gui
Key = QtCore.Qt.Key
Mod = QtCore.Qt.KeyboardModifier


def test_keyboard_navigation(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 10)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    win.resize(1000, 700)
    win.activateWindow()
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 10)
    search(qtbot, win, "a clock on the wall")
    # Down from the search field goes to the first result
    qtbot.keyClick(win.search, Key.Key_Down)
    assert win.grid.hasFocus() and win.grid.currentIndex().row() == 0
    qtbot.keyClick(win.grid, Key.Key_Right)
    assert win.grid.currentIndex().row() == 1
    # Enter opens the photo large, with the match outlined where the hit's box is
    qtbot.keyClick(win.grid, Key.Key_Return)
    assert win.center.currentWidget() is win.detail
    item = win.model.item(1)
    assert win.detail.item is item
    b = item.shown_box
    rect = win.detail.view.outline_rect()
    if rect is not None:
        assert (rect.x(), rect.y(), rect.width(), rect.height()) == (b.x0, b.y0, b.width, b.height)
    # arrows move between results in the detail view
    qtbot.keyClick(win.detail.view, Key.Key_Right)
    assert win.detail.item is win.model.item(2) and win.grid.currentIndex().row() == 2
    qtbot.keyClick(win.detail.view, Key.Key_Left)
    assert win.detail.item is win.model.item(1)
    qtbot.waitUntil(lambda: win.detail.view.photo_size == (item.hit.width, item.hit.height), timeout=10000)
    # zoom from the keyboard
    z = win.detail.view.transform().m11()
    qtbot.keyClick(win.detail.view, Key.Key_Plus)
    assert win.detail.view.transform().m11() > z
    # Esc goes back to the grid, on the same photo
    qtbot.keyClick(win.detail.view, Key.Key_Escape)
    assert win.center.currentWidget() is win.results_stack and win.grid.hasFocus()
    assert win.grid.currentIndex().row() == 1
    # Ctrl+F back to the search field; Esc clears it
    qtbot.keyClick(win.grid, Key.Key_F, Mod.ControlModifier)
    assert win.search.hasFocus()
    qtbot.keyClick(win.search, Key.Key_Escape)
    assert win.search.text() == "" and win.model.rowCount() == 0
    # thumbnails: Ctrl+= larger, Ctrl+- smaller
    side = win.delegate.side
    qtbot.keyClick(win.search, Key.Key_Equal, Mod.ControlModifier)
    assert win.delegate.side > side and win.size_slider.value() == win.delegate.side
    qtbot.keyClick(win.search, Key.Key_Minus, Mod.ControlModifier)
    assert win.delegate.side == side
    # Ctrl+1 to the folders, where Delete asks to remove the selected folder
    qtbot.keyClick(win.search, Key.Key_1, Mod.ControlModifier)
    assert win.folders.list.hasFocus() and win.folders.selected_path() == str(photos)
    asked = []
    win.folders.remove_requested.disconnect()
    win.folders.remove_requested.connect(asked.append)
    qtbot.keyClick(win.folders.list, Key.Key_Delete)
    assert asked == [str(photos)]
    win.close()


def test_every_menu_action_has_a_shortcut_or_mnemonic(qtbot, tmp_path, tiny_clip):
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    menus = [a.menu() for a in win.menuBar().actions() if a.menu() is not None]
    assert len(menus) >= 4
    for menu in menus:
        assert "&" in menu.title()
        for a in menu.actions():
            if not a.isSeparator():
                assert "&" in a.text() or not a.shortcut().isEmpty(), a.text()
    win.close()


def test_first_run_asks_for_a_folder_and_a_model_then_indexes(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 6)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip, first_run_done=False)
    assert win.pages.currentWidget() is win.welcome
    assert not win.welcome.start_button.isEnabled()
    win.welcome.set_folder(str(photos))
    win.welcome.picker.set_model(str(tiny_clip))
    qtbot.mouseClick(win.welcome.start_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.pages.currentWidget() is win.main, timeout=60000)
    wait_indexed(qtbot, win, 6)
    from sorce_desktop.core.settings import Settings

    saved = Settings.load(tmp_path / "data" / "settings")
    assert saved.first_run_done and saved.model == str(tiny_clip)
    win.close()


def test_a_library_indexed_from_the_command_line_opens_without_the_first_run_questions(qtbot, tmp_path, tiny_clip):
    """`sorce-desktop index FOLDER --model M` first, the window after: it shows that library, searched
    with M (the model the index was made with), not the welcome page asking for a folder again."""
    from conftest import no_text_reading

    from sorce_desktop import cli
    from sorce_desktop.core.settings import Settings

    photos = copy_photos(tmp_path / "photos", 4)
    data = tmp_path / "data"
    no_text_reading(data)
    assert cli.main(["index", str(photos), "--model", str(tiny_clip), "--data-dir", str(data)]) == 0
    # the settings name another model, as they do when only the command line was used
    win = open_test_window(qtbot, data, tmp_path / "never-chosen", first_run_done=False)
    assert win.pages.currentWidget() is win.main
    wait_ready(qtbot, win)
    assert win.session.status.indexed == 4
    search(qtbot, win, "a dog")
    assert win.model.rowCount() == 4 and win.results_stack.currentWidget() is win.grid
    assert Settings.load(data / "settings").first_run_done
    win.close()


def test_missing_model_says_what_to_do(qtbot, tmp_path):
    win = open_test_window(qtbot, tmp_path / "data", tmp_path / "no-such-model")
    qtbot.waitUntil(lambda: win.session.state.state == "error", timeout=20000)
    assert "does not exist" in win.empty.body.text()
    assert [b.text() for b in win.empty.buttons if not b.isHidden()] == ["Try Again", "Choose Model Folder…"]
    win.close()


def test_throttle_runs_once_when_typing_pauses(qtbot):
    from sorce_desktop.gui.tasks import Throttle

    calls = []
    t = Throttle(80, calls.append)
    for text in ("a", "ab", "abc"):
        t.trigger(text)
    assert calls == []
    qtbot.waitUntil(lambda: calls == ["abc"], timeout=2000)
    qtbot.wait(150)
    assert calls == ["abc"]
    t.trigger("x")
    t.flush()
    assert calls == ["abc", "x"] and not t.pending


def test_first_run_page_offers_the_model_this_machine_is_advised(qtbot, tmp_path, monkeypatch):
    """core/models/advice.py's choice for this machine (here a GPU with room for the paper's multimodal LLM) is
    marked "Recommended" in the list, shown with its reason, and picked, since no model was chosen yet; a
    model the user picks meanwhile is kept."""
    from sorce_desktop.core.models import advice
    from sorce_desktop.core.models.registry import DEFAULT_MODEL

    monkeypatch.setattr(advice, "detect_hardware", lambda: advice.Hardware("cuda", "NVIDIA H100", 80.0))
    win = open_test_window(qtbot, tmp_path / "data", DEFAULT_MODEL, first_run_done=False)
    picker = win.welcome.picker
    qtbot.waitUntil(lambda: picker.model() == "lcxrocks/e5-v-ReP", timeout=30000)
    assert picker.combo.currentText().startswith("Recommended: ")
    assert "80 GB of GPU memory" in picker.about.text()
    labels = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert sum(label.startswith("Recommended: ") for label in labels) == 1
    win.close()

    # a model picked before the advice arrives stays picked; the advice is still marked in the list
    win = open_test_window(qtbot, tmp_path / "data2", DEFAULT_MODEL, first_run_done=False)
    picker = win.welcome.picker
    picker.set_model("openai/clip-vit-base-patch32")
    qtbot.waitUntil(lambda: picker.recommended[0] == "lcxrocks/e5-v-ReP", timeout=30000)
    assert picker.model() == "openai/clip-vit-base-patch32"
    i = picker.combo.findData("lcxrocks/e5-v-ReP")
    assert picker.combo.itemText(i).startswith("Recommended: ")
    win.close()
