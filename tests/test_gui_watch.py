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
