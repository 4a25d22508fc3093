"""The window watches its folders: a photo dropped in is indexed without pressing anything, a deleted one
leaves the index, and closing the window stops the watcher."""

from __future__ import annotations

import shutil

import pytest
from conftest import coco_photos
from gui_support import copy_photos, open_test_window, wait_indexed, wait_ready

pytestmark = pytest.mark.gui


def test_window_indexes_what_lands_in_a_watched_folder(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 3)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 3)
    watcher = win.session._watcher
    assert watcher is not None and watcher.running
    events = []
    win.session.watch_event.connect(events.append)
    shutil.copyfile(coco_photos(1, start=20)[0], photos / "dropped.jpg")
    qtbot.waitUntil(lambda: win.session.status.indexed == 4, timeout=30000)
    assert any(e.kind == "indexed" and str(photos / "dropped.jpg") in e.paths for e in events)
    (photos / "dropped.jpg").unlink()
    qtbot.waitUntil(lambda: win.session.status.indexed == 3, timeout=30000)
    win.close()
    assert not watcher.running


def test_replacing_the_watcher_does_not_block_the_window(qtbot, tmp_path, tiny_clip):
    """Other text settings (or another model) replace the watcher: the old one finishes off the UI
    thread while the window stays responsive, the new one starts only once the old has stopped (the
    two never index at once) and then indexes what lands; closing meanwhile stops both."""
    import time

    photos = copy_photos(tmp_path / "photos", 2)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 2)
    session = win.session

    def slow_stop(watcher):
        real = watcher.stop

        def stop(timeout=None):
            time.sleep(1.5)  # a batch still being embedded
            real(timeout)

        watcher.stop = stop

    old = session._watcher
    slow_stop(old)
    t0 = time.monotonic()
    session.text_settings_changed()
    assert time.monotonic() - t0 < 0.5  # the UI thread did not wait for the old watcher
    new = session._watcher
    assert new is not old and old.running and not new.running
    qtbot.waitUntil(lambda: new.running, timeout=20000)
    assert not old.running
    qtbot.waitUntil(lambda: not session.indexing, timeout=60000)
    shutil.copyfile(coco_photos(1, start=20)[0], photos / "dropped.jpg")
    qtbot.waitUntil(lambda: session.status.indexed == 3, timeout=30000)

    # replaced twice in a row, then the window closes before the first has stopped
    slow_stop(new)
    session.text_settings_changed()
    session.text_settings_changed()
    middle, last = session._stopping_watchers[-1], session._watcher
    assert new.running and not middle.running and not last.running
    win.close()
    assert not new.running and not middle.running and not last.running
