"""The window renders the core's answer: the same order as `search --json`, every matched region
outlined and marked by kind, the words under an outline named in the detail view."""

from __future__ import annotations

import json

import pytest
from gui_support import open_test_window, search, wait_indexed, wait_ready
from signs_support import N_PHOTOS, build_signs_library

from sorce_desktop.gui.results import WORDS_OUTLINE

pytestmark = pytest.mark.gui


def _color_near(img, x: float, y: float, want, radius: int = 2) -> bool:
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            px, py = int(round(x)) + dx, int(round(y)) + dy
            if 0 <= px < img.width() and 0 <= py < img.height():
                c = img.pixelColor(px, py)
                if abs(c.red() - want.red()) + abs(c.green() - want.green()) + abs(c.blue() - want.blue()) < 90:
                    return True
    return False


@pytest.fixture
def signs_window(qtbot, tmp_path, tiny_clip):
    signs = build_signs_library(tmp_path, tiny_clip)
    win = open_test_window(qtbot, signs.data, tiny_clip)
    win.resize(1100, 760)
    wait_ready(qtbot, win)
    wait_indexed(qtbot, win, N_PHOTOS)
    return signs, win


def test_window_and_search_json_agree(signs_window, qtbot, capsys):
    from sorce_desktop.cli import main

    signs, win = signs_window
    for query in ("bakery", '"bakery"', "stop", '"stop"', '"stop" sign', "a red kite in the sky"):
        search(qtbot, win, query)
        win_order = [it.hit.path for it in win.model.items]
        assert main(["search", query, "--json", "--top", "20", "--data-dir", str(signs.data)]) == 0
        cli_order = [h["path"] for h in json.loads(capsys.readouterr().out)]
        assert cli_order and win_order[:20] == cli_order, query


def test_both_outlines_on_a_photo_matched_both_ways(signs_window, qtbot):
    from sorce_desktop.gui.results import OUTLINE

    signs, win = signs_window
    search(qtbot, win, "bakery")
    row = next(i for i, it in enumerate(win.model.items) if it.hit.path == signs.partial["bakery"])
    item = win.model.item(row)
    assert item.hit.source == "both"
    win.grid.scrollTo(win.model.index(row))
    qtbot.waitUntil(lambda: win.thumbs._memory.get(item.thumb_key) is not None, timeout=20000)
    win.grid.viewport().repaint()
    cell = win.grid.visualRect(win.model.index(row))
    rects = dict(win.delegate.outline_rects(cell, item))
    assert set(rects) == {"picture", "text"}
    img = win.grid.viewport().grab().toImage()
    for kind, color in (("picture", OUTLINE), ("text", WORDS_OUTLINE)):
        r = rects[kind]
        # painted in its kind's colour: the middle of the left and bottom edges
        assert _color_near(img, r.left(), r.center().y(), color), kind
        assert _color_near(img, r.center().x(), r.bottom(), color), kind
    # the detail view draws both and names the words under the words' outline
    win.open_detail(row)
    kinds = [k for k, _r in win.detail.view.outline_kinds()]
    assert sorted(kinds) == ["picture", "text"]
    text_rect = dict(win.detail.view.outline_kinds())["text"]
    box = signs.boxes[item.hit.path]
    assert (text_rect.left(), text_rect.top(), text_rect.right(), text_rect.bottom()) == pytest.approx(
        (box.x0, box.y0, box.x1, box.y1), abs=1
    )
    assert win.detail.words_outlined() == ["BAKERV"]
    assert "“BAKERV”" in win.detail.match_info.text()


def test_down_from_the_search_field_selects_the_first_result(signs_window, qtbot):
    from PySide6.QtCore import Qt

    signs, win = signs_window
    search(qtbot, win, "stop")
    qtbot.keyClick(win.search, Qt.Key.Key_Down)
    assert win.grid.hasFocus() or win.focusWidget() is win.grid
    assert [ix.row() for ix in win.grid.selectedIndexes()] == [0]  # highlighted, not only current


def test_status_counts_one_photo_in_words(signs_window):
    from sorce_desktop.core.library import FolderInfo, LibraryStatus

    _signs, win = signs_window
    win._idle_status(LibraryStatus([FolderInfo("/p", 1)], indexed=1))
    assert win.status_label.text() == "1 photo indexed"


def test_small_captions_keep_both_ends_of_the_name():
    from sorce_desktop.gui.results import caption_name

    names = ["000000000139.jpg", "000000000285.jpg"]
    assert [caption_name(n, len, 40) for n in names] == names
    assert [caption_name(n, len, 12) for n in names] == ["000000000139", "000000000285"]
    short = [caption_name(n, len, 6) for n in names]
    assert short == ["0…0139", "0…0285"] and short[0] != short[1]  # elided in the middle, the end kept
    long = "IMG_20240611_" + "x" * 100 + "_0139.jpg"
    assert caption_name(long, len, 20) == "IMG_20…xxxxxxxx_0139"


def test_the_status_bar_keeps_the_newest_counts(signs_window, monkeypatch):
    """Counts are read on worker threads and can come back out of order: an older reading never replaces
    a newer one. And with no run's report on show, the bar draws the counts it is given even before the
    service has said it is idle (a "done" report drawn ahead of its own counts once stayed on show:
    "21 photos indexed · 3 to do" after all 24 were in)."""
    from sorce_desktop.core.library import FolderInfo, LibraryStatus
    from sorce_desktop.gui import session as session_module

    _signs, win = signs_window
    asked = []
    monkeypatch.setattr(session_module, "run_task", lambda fn, done, name=None: asked.append(done))
    win.session.refresh_status()
    win.session.refresh_status()
    older, newer = asked
    newer(LibraryStatus([FolderInfo("/p", 24)], indexed=24))
    older(LibraryStatus([FolderInfo("/p", 24)], indexed=21, pending=3))
    assert win.session.status.indexed == 24 and win.status_label.text() == "24 photos indexed"
    monkeypatch.setattr(type(win.session.controller), "indexing", property(lambda self: True))
    win._progress = None
    win._status(LibraryStatus([FolderInfo("/p", 25)], indexed=25))
    assert win.status_label.text() == "25 photos indexed"
