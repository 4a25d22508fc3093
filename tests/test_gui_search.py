"""The window end to end: add a folder -> indexing finishes -> type a query -> results with outlines
drawn where the hits' boxes are."""

from __future__ import annotations

import pytest
from gui_support import copy_photos, open_test_window, search, wait_indexed, wait_ready

pytestmark = pytest.mark.gui


def expected_outline(cell, side, pad, item):
    """The hit's shown box (refined once refined, else its tile) scaled onto the thumbnail, computed
    here from the cell's geometry (the photo fitted and centred in the thumbnail area)."""
    hit = item.hit
    box = hit.refined_box if hit.refined_box is not None else hit.box
    area_x, area_y, area_w, area_h = cell.x() + pad, cell.y() + pad, cell.width() - 2 * pad, side
    s = min(area_w / hit.width, area_h / hit.height)
    ox = area_x + (area_w - hit.width * s) / 2
    oy = area_y + (area_h - hit.height * s) / 2
    return (ox + box.x0 * s, oy + box.y0 * s, ox + box.x1 * s, oy + box.y1 * s)


def is_outline_color(c) -> bool:
    # the outline's yellow, possibly blended with its dark halo by antialiasing
    return c.red() > 150 and c.green() > 120 and c.blue() < 80 and c.red() - c.blue() > 110


def near_outline(img, x: float, y: float, radius: int = 2) -> bool:
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            px, py = int(round(x)) + dx, int(round(y)) + dy
            if 0 <= px < img.width() and 0 <= py < img.height() and is_outline_color(img.pixelColor(px, py)):
                return True
    return False


def test_add_folder_index_search_outlines(qtbot, tmp_path, tiny_clip, untouched):
    from sorce_desktop.gui.results import PAD

    photos = untouched(copy_photos(tmp_path / "photos", 16))
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    win.resize(1100, 760)
    wait_ready(qtbot, win)
    assert win.results_stack.currentWidget() is win.empty  # "add a folder" state
    assert "Add a folder" in win.empty.title.text()
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 16)
    assert [f.path for f in win.session.status.folders] == [str(photos)]
    assert win.folders.list.count() == 1

    search(qtbot, win, "a red kite in the sky")
    assert win.model.rowCount() == 16
    assert win.results_stack.currentWidget() is win.grid
    # thumbnails are loaded off the UI thread, then the grid repaints
    qtbot.waitUntil(
        lambda: all(win.thumbs._memory.get(it.thumb_key) for it in win.model.items[:4]), timeout=20000
    )
    win.grid.viewport().repaint()
    img = win.grid.viewport().grab().toImage()
    outlined = 0
    for row in win.grid.visible_rows():
        item = win.model.item(row)
        cell = win.grid.visualRect(win.model.index(row))
        if not win.grid.viewport().rect().contains(cell):
            continue  # only partly scrolled into view
        rect = win.delegate.outline_rect(cell, item)
        box = item.hit.box
        if box.x0 <= 0 and box.y0 <= 0 and box.x1 >= item.hit.width and box.y1 >= item.hit.height:
            assert rect is None  # the whole photo: no outline
            continue
        ex = expected_outline(cell, win.delegate.side, PAD, item)
        got = (rect.left(), rect.top(), rect.right(), rect.bottom())
        assert got == pytest.approx(ex, abs=0.51), (item.hit.path, box)
        # and it is painted there: outline pixels at the middle of each edge
        cx, cy = (ex[0] + ex[2]) / 2, (ex[1] + ex[3]) / 2
        for x, y in ((cx, ex[1]), (cx, ex[3]), (ex[0], cy), (ex[2], cy)):
            assert near_outline(img, x, y), (item.hit.path, x, y, ex, box, item.hit.width, item.hit.height)
        outlined += 1
    assert outlined >= 3
    # the hits' boxes are the store's regions for those photos (the GUI does not re-rank or re-box)
    for item in win.model.items[:5]:
        regions = win.session.lib.store.regions_of(item.hit.photo_id)
        assert item.hit.box in [r.box for r in regions]
    # thumbnails are cached on disk by content hash
    cached = {p.stem for p in (tmp_path / "data" / "thumbnails").rglob("*.jpg")}
    assert win.model.items[0].thumb_key in cached
    win.close()


def test_stale_queries_never_overwrite_newer(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 8)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 8)
    shown = []
    win.session.results.connect(lambda res: shown.append(res.query.text))
    win.search.setFocus()
    qtbot.keyClicks(win.search, "a dog")
    # typing goes through the throttle: nothing runs while the keys come
    assert win.throttle.pending and shown == []
    # queries issued back to back: only the last one's results may reach the grid
    for q in ("a", "a b", "a bo", "a boat"):
        win.session.search(__import__("sorce_desktop.gui.session", fromlist=["Query"]).Query(text=q))
    qtbot.waitUntil(lambda: "a boat" in shown, timeout=20000)
    qtbot.wait(400)  # the throttled "a dog" fires now, and is a newer query than "a boat"
    assert all(t in ("a boat", "a dog") for t in shown), shown
    # Enter runs at once; Esc clears
    win.search.clear()
    qtbot.keyClicks(win.search, "a bird")
    qtbot.keyClick(win.search, "\r")
    assert not win.throttle.pending
    qtbot.waitUntil(lambda: win.result is not None and win.result.query.text == "a bird", timeout=20000)
    qtbot.keyClick(win.search, "\x1b")
    assert win.search.text() == "" and win.model.rowCount() == 0
    assert "What are you looking for" in win.empty.title.text()
    win.close()


def test_refinement_replaces_tile_outline(qtbot, tmp_path, tiny_clip):
    """Once refined, each thumbnail's outline is painted at the refined box (checked in the painted
    pixels, the box mapped onto the thumbnail here), which lies inside the photo and, for some hits at
    least, differs from the tile the search found."""
    from sorce_desktop.gui.results import PAD

    photos = copy_photos(tmp_path / "photos", 8)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip, refine=True)
    win.resize(1100, 760)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 8)
    search(qtbot, win, "a cup on the shelf")
    qtbot.waitUntil(lambda: all(it.hit.refined_box is not None for it in win.model.items), timeout=60000)
    qtbot.waitUntil(
        lambda: all(win.thumbs._memory.get(it.thumb_key) for it in win.model.items[:4]), timeout=20000
    )
    win.grid.viewport().repaint()
    img = win.grid.viewport().grab().toImage()
    painted = moved = 0
    for row in win.grid.visible_rows():
        item = win.model.item(row)
        hit = item.hit
        cell = win.grid.visualRect(win.model.index(row))
        if not win.grid.viewport().rect().contains(cell):
            continue  # only partly scrolled into view
        rb, tile = hit.refined_box, hit.box
        assert rb.x0 >= 0 and rb.y0 >= 0 and rb.x1 <= hit.width and rb.y1 <= hit.height
        moved += rb != tile
        rect = win.delegate.outline_rect(cell, item)
        if rb.x0 <= 0 and rb.y0 <= 0 and rb.x1 >= hit.width and rb.y1 >= hit.height:
            assert rect is None  # the whole photo: no outline
            continue
        assert rect is not None, (hit.path, rb)
        ex = expected_outline(cell, win.delegate.side, PAD, item)
        got = (rect.left(), rect.top(), rect.right(), rect.bottom())
        assert got == pytest.approx(ex, abs=0.51), (hit.path, rb)
        cx, cy = (ex[0] + ex[2]) / 2, (ex[1] + ex[3]) / 2
        for x, y in ((cx, ex[1]), (cx, ex[3]), (ex[0], cy), (ex[2], cy)):
            assert near_outline(img, x, y), (hit.path, x, y, ex, rb)
        painted += 1
    assert painted >= 3, "too few refined outlines were painted to check"
    assert moved >= 1, "no refined box differs from its tile: the refinement was not shown"
    # a new query cancels the old refinement and starts over for its own hits
    old = win.session._refine_cancel
    search(qtbot, win, "a cat on the windowsill")
    assert old.is_set()
    win.close()


def test_find_similar_searches_by_the_outlined_region(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 8)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 8)
    search(qtbot, win, "a photo")
    first = win.model.item(0)
    win.find_similar(first)
    qtbot.waitUntil(
        lambda: win.result is not None and win.result.query.image == first.hit.path, timeout=20000
    )
    # the region's own crop finds its own photo first (same model, same decode)
    assert win.model.item(0).hit.path == first.hit.path
    assert win.result.query.crop == first.shown_box
    win.close()


def test_text_hits_show_the_kind_of_match_and_the_words(qtbot):
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import PhotoHit
    from sorce_desktop.gui.qt import QtCore
    from sorce_desktop.gui.results import ResultsModel
    from sorce_desktop.gui.session import ResultItem

    model = ResultsModel()
    hit = PhotoHit(
        "/photos/sign.jpg", 0.9, Box(10, 20, 110, 60), "ocr_0", 1, 640, 480, source="text", text="STOP"
    )
    model.set_items([ResultItem(hit, "abc")])
    tip = model.data(model.index(0), QtCore.Qt.ItemDataRole.ToolTipRole)
    assert "Text in photo" in tip and "“STOP”" in tip
