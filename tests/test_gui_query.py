"""The window shows the query as understood (removable chips), says what it did not understand, filters by
period and by the selected folder, and sorts by date."""

from __future__ import annotations

import pytest
from gui_support import open_test_window, search, wait_indexed, wait_ready
from whenwhere_support import LISBON, PARIS, write_photo

pytestmark = pytest.mark.gui


def _photos(root):
    write_photo(root / "kite-beach.jpg", (230, 200, 120), taken="2023:07:14 10:30:00", gps=LISBON)
    write_photo(root / "tram.jpg", (240, 220, 30), taken="2024:02:01 09:00:00", gps=LISBON)
    write_photo(root / "trips" / "eiffel.jpg", (90, 90, 200), taken="2019:12:31 23:30:00", gps=PARIS)
    write_photo(root / "trips" / "garden.jpg", (60, 160, 60), taken="2021:06:01 08:00:00")
    return root


def names(win):
    return [it.hit.path.rsplit("/", 1)[-1] for it in win.model.items]


def _indexed_window(qtbot, tmp_path, tiny_clip):
    """A window on the four photos of :func:`_photos`, indexed."""
    root = _photos(tmp_path / "photos")
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(root))
    wait_indexed(qtbot, win, 4)
    return win, root


def wait_for(qtbot, win, check, timeout=30000):
    qtbot.waitUntil(lambda: win.result is not None and not win.throttle.pending and check(), timeout=timeout)


def test_chips_period_sort_and_folder_filter(qtbot, tmp_path, tiny_clip):
    win, root = _indexed_window(qtbot, tmp_path, tiny_clip)

    search(qtbot, win, "a photo after:2021 -string")
    assert win.query_bar.chip_labels() == ["a photo", "after 2021", "not: string"]
    assert sorted(names(win)) == ["garden.jpg", "kite-beach.jpg", "tram.jpg"]
    assert not win.query_bar.problem.isVisible()

    # removing a chip takes its words out of the field and searches again
    after = next(p for p in win.result.answer.parts if p.label == "after 2021")
    win.query_bar.remove_part.emit(after)
    wait_for(qtbot, win, lambda: win.result.query.text == "a photo -string")
    assert win.search.text() == "a photo -string" and len(names(win)) == 4

    # the period filter and the order
    win.query_bar.period.setCurrentIndex(3)  # in the year...
    win.query_bar.year.setValue(2023)
    wait_for(qtbot, win, lambda: win.result.query.after == "2023")
    assert names(win) == ["kite-beach.jpg"] and "2023" in win.query_bar.chip_labels()
    win.query_bar.period.setCurrentIndex(0)
    win.query_bar.sort.setCurrentIndex(1)  # newest first
    wait_for(qtbot, win, lambda: win.result.query.sort == "date" and win.result.query.after is None)
    assert names(win) == ["tram.jpg", "kite-beach.jpg", "garden.jpg", "eiffel.jpg"]

    # what is not understood is one line; the rest still runs
    search(qtbot, win, "a photo after:2023-13")
    assert win.query_bar.problem.isVisible() and "after:2023-13" in win.query_bar.problem.text()
    assert len(names(win)) == 4
    # ... shown whole: its own line across the bar, tall enough for its wrapped text (it was cut off)
    problem = win.query_bar.problem
    qtbot.waitUntil(lambda: problem.width() >= 0.8 * win.query_bar.width(), timeout=5000)
    assert problem.height() >= problem.heightForWidth(problem.width())

    # a selected folder restricts the results; its chip's x goes back to all folders
    search(qtbot, win, "a photo in:trips")
    assert sorted(names(win)) == ["eiffel.jpg", "garden.jpg"]
    search(qtbot, win, "a photo")
    win.folders.list.setCurrentRow(0)
    wait_for(qtbot, win, lambda: win.result.query.folder == str(root))
    assert win.query_bar.chip_labels()[-1] == f"in {root.name}"
    win.query_bar.chip_buttons()[-1].click()
    wait_for(qtbot, win, lambda: win.result.query.folder is None)
    assert not win.folders.list.selectedItems()

    # the detail view says when and where, once, as people read a date (the catalog's, not the raw ISO form)
    search(qtbot, win, "a photo in:trips 2019")
    win.open_detail(0)
    qtbot.waitUntil(lambda: "31 Dec 2019, 23:30" in win.detail.info.full_text(), timeout=10000)
    info = win.detail.info.full_text()
    assert "Paris" in info and "2019-12-31" not in info and info.count("2019") == 1
    win.close_detail()

    # a period that keeps no photo is named as the reason nothing was found
    search(qtbot, win, "a photo 2018")
    assert names(win) == [] and "None of your photos fits “2018”." in win.empty.body.text()

    # a query refused as a whole (only what to leave out) says why, with no chips or count of the one before
    win.search.setFocus()
    win.search.clear()
    qtbot.keyClicks(win.search, "-string")
    qtbot.waitUntil(lambda: win._search_error is not None, timeout=30000)
    assert "Only what to leave out is given (not: string)" in win.empty.body.text()
    assert win.query_bar.chip_labels() == [] and win.result_info.text() == "" and names(win) == []


def test_a_folder_or_a_period_with_an_empty_field_shows_their_photos_newest_first(qtbot, tmp_path, tiny_clip):
    """As `search --folder DIR` / `--after 2023` with no text: selecting a folder (or choosing a period) with
    nothing typed lists its photos, newest first; taking the last filter away goes back to the empty field."""
    win, root = _indexed_window(qtbot, tmp_path, tiny_clip)
    assert win.query is None and win.model.rowCount() == 0

    win.folders.list.setCurrentRow(0)
    wait_for(qtbot, win, lambda: win.result.query.folder == str(root) and win.result.query.text is None)
    assert names(win) == ["tram.jpg", "kite-beach.jpg", "garden.jpg", "eiffel.jpg"]
    assert {it.hit.source for it in win.model.items} == {"filter"}
    assert win.query_bar.chip_labels() == [f"in {root.name}"]

    win.query_bar.period.setCurrentIndex(3)  # in the year...
    win.query_bar.year.setValue(2019)
    wait_for(qtbot, win, lambda: win.result.query.after == "2019")
    assert names(win) == ["eiffel.jpg"]
    from sorce_desktop.gui.results import match_label

    assert match_label(win.model.item(0).hit, 1)[0] == "31 Dec 2019"  # under the thumbnail: when, not a rank
    win.open_detail(0)
    assert win.detail.match_info.text() == "kept by the folder or period chosen, newest first"
    win.close_detail()
    win.query_bar.year.setValue(2018)
    wait_for(qtbot, win, lambda: win.result.query.after == "2018")
    assert names(win) == [] and "None of your photos fits" in win.empty.body.text()

    # typing searches within the selection; emptying the field lists it again
    from PySide6.QtCore import Qt

    search(qtbot, win, "a photo")
    win.search.selectAll()
    qtbot.keyClick(win.search, Qt.Key.Key_Backspace)
    wait_for(qtbot, win, lambda: win.result.query.text is None)
    assert win.result.query.folder == str(root) and win.result.query.after == "2018"

    # the last filter taken away: back to the empty field's own state
    win.query_bar.period.setCurrentIndex(0)
    wait_for(qtbot, win, lambda: win.result.query.after is None)
    assert len(names(win)) == 4
    win.query_bar.chip_buttons()[-1].click()  # the folder's chip
    qtbot.waitUntil(lambda: win.query is None and win.model.rowCount() == 0, timeout=10000)
    assert "What are you looking for?" in win.empty.title.text()

    # Esc clears what is typed (the folder's photos show again), then lets go of the folder
    win.folders.list.setCurrentRow(0)
    wait_for(qtbot, win, lambda: win.result.query.folder == str(root))
    search(qtbot, win, "a photo")
    qtbot.keyClick(win.search, Qt.Key.Key_Escape)
    wait_for(qtbot, win, lambda: win.result.query.text is None and win.result.query.folder == str(root))
    assert win.search.text() == "" and len(names(win)) == 4
    qtbot.keyClick(win.search, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: win.query is None and win.model.rowCount() == 0, timeout=10000)
    assert not win.folders.list.selectedItems() and win._folder_filter is None


def test_find_similar_keeps_to_the_period_and_folder_chosen(qtbot, tmp_path, tiny_clip):
    win, root = _indexed_window(qtbot, tmp_path, tiny_clip)
    search(qtbot, win, "a photo")
    win.query_bar.period.setCurrentIndex(3)  # in the year...
    win.query_bar.year.setValue(2024)
    wait_for(qtbot, win, lambda: win.result.query.after == "2024")
    assert names(win) == ["tram.jpg"]
    win.find_similar(win.model.item(0))
    wait_for(qtbot, win, lambda: win.result.query.image is not None)
    assert names(win) == ["tram.jpg"] and "2024" in win.query_bar.chip_labels()
    # the period changed: the same photo is looked for within it
    win.query_bar.period.setCurrentIndex(0)
    wait_for(qtbot, win, lambda: win.result.query.image is not None and win.result.query.after is None)
    assert len(names(win)) == 4
