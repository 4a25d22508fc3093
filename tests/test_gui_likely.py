"""The window splits likely matches from the rest with a divider (the model's own probability) and
offers "Show likely matches only"; with a model that has no probability the choice is off, and says why."""

from __future__ import annotations

import pytest
from calibrated_support import QUERY, calibrated_siglip
from gui_support import copy_photos, open_test_window, search, wait_indexed, wait_ready

pytestmark = pytest.mark.gui


def test_divider_and_likely_only(qtbot, tmp_path, tiny_siglip):
    photos = copy_photos(tmp_path / "photos", 10)
    model = calibrated_siglip(tiny_siglip, tmp_path / "model", sorted(photos.iterdir()))
    win = open_test_window(qtbot, tmp_path / "data", model)
    win.resize(1100, 760)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 10)
    search(qtbot, win, QUERY)
    items = win.model.items
    likely = [it.hit.likely for it in items]
    assert True in likely and False in likely
    assert likely == sorted(likely, reverse=True)
    row = win.model.divider_row()
    assert row == likely.index(False)
    assert win.likely_only.isEnabled() and f"{row} likely" in win.result_info.text()
    lines = win.grid.divider_lines()
    assert lines
    cell = win.grid.visualRect(win.model.index(row))
    assert any(abs(ln.y1() - cell.top()) <= 1 and abs(ln.y2() - cell.top()) <= 1 for ln in lines)
    # painted in the accent colour on the gap above the first less likely photo
    win.grid.viewport().repaint()
    img = win.grid.viewport().grab().toImage()
    accent = win.grid.palette().color(win.grid.palette().ColorRole.Highlight)
    y = int(cell.top())
    xs = range(cell.left() + 130, min(cell.right(), cell.left() + 170))  # beyond the label
    hits = sum(
        1
        for x in xs
        for dy in (-1, 0, 1)
        if abs(img.pixelColor(x, y + dy).red() - accent.red()) + abs(img.pixelColor(x, y + dy).blue() - accent.blue()) < 60
    )
    assert hits >= len(xs) // 2
    win.likely_only.setChecked(True)
    assert win.model.rowCount() == row and all(it.hit.likely for it in win.model.items)
    assert win.model.divider_row() is None and not win.grid.divider_lines()
    win.likely_only.setChecked(False)
    assert win.model.rowCount() == len(items)
    win.close()


def test_no_probability_no_split(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 4)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 4)
    search(qtbot, win, "a dog")
    assert win.model.rowCount() == 4 and win.model.divider_row() is None
    assert not win.likely_only.isEnabled() and "no match probability" in win.likely_only.toolTip()
    win.close()
