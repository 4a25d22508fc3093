"""The window watches its folders: a photo dropped in is indexed without pressing anything, a deleted one
leaves the index, and closing the window stops the watcher."""

from __future__ import annotations

import shutil

import pytest
from conftest import scene_photos
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
    shutil.copyfile(scene_photos(1, start=20)[0], photos / "dropped.jpg")
    qtbot.waitUntil(lambda: win.session.status.indexed == 4, timeout=30000)
    assert any(e.kind == "indexed" and str(photos / "dropped.jpg") in e.paths for e in events)
    (photos / "dropped.jpg").unlink()
    qtbot.waitUntil(lambda: win.session.status.indexed == 3, timeout=30000)
    win.close()
    assert not watcher.running


def test_changing_settings_does_not_block_the_window(qtbot, tmp_path, tiny_clip):
    """Other text settings (or another model) give the indexing service a new indexer, in turn with its
    jobs: the window does not wait for the job in progress, the one watcher keeps running and what lands
    afterwards is indexed with the new settings; closing during a job stops everything."""
    import threading
    import time

    photos = copy_photos(tmp_path / "photos", 2)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 2)
    session = win.session
    service, watcher = session.indexing_service, session._watcher
    qtbot.waitUntil(lambda: not session.indexing, timeout=60000)

    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    # a batch still being embedded: it goes on until the test lets it
    service.call(lambda: (started.set(), release.wait(60), finished.set()))
    assert started.wait(10)
    old = service.indexer
    session.text_settings_changed()
    # the UI thread returned while the job was still held: it did not wait for it (structural, no clock)
    assert not finished.is_set()
    assert service.indexer is old  # the new indexer takes over once that job is done
    release.set()
    qtbot.waitUntil(lambda: service.indexer is not old, timeout=20000)
    assert session._watcher is watcher and watcher.running
    qtbot.waitUntil(lambda: not session.indexing, timeout=60000)
    shutil.copyfile(scene_photos(1, start=20)[0], photos / "dropped.jpg")
    qtbot.waitUntil(lambda: session.status.indexed == 3, timeout=30000)

    # changed twice in a row, then the window closes while a job is still running
    started.clear()
    service.call(lambda: (started.set(), time.sleep(1.5)))
    assert started.wait(10)
    session.text_settings_changed()
    session.text_settings_changed()
    win.close()
    assert not watcher.running and not service.running


def test_a_photo_indexed_while_a_query_is_open_appears_where_it_ranks(qtbot, tmp_path, tiny_clip):
    from gui_support import search

    photos = copy_photos(tmp_path / "photos", 3)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 3)
    search(qtbot, win, "a dog on a sofa")
    assert win.model.rowCount() == 3
    dropped = photos / "dropped.jpg"
    shutil.copyfile(scene_photos(1, start=20)[0], dropped)
    qtbot.waitUntil(lambda: win.model.rowCount() == 4, timeout=30000)
    assert str(dropped) in [it.hit.path for it in win.model.items]
    scores = [it.hit.score for it in win.model.items]
    assert scores == sorted(scores, reverse=True)  # inserted where it ranks, not appended
    assert win.search.text() == "a dog on a sofa"  # the open query stays as typed
    dropped.unlink()
    qtbot.waitUntil(lambda: win.model.rowCount() == 3, timeout=30000)
    win.close()
