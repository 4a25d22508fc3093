"""The window over the library controller: a photo dropped in a watched folder re-runs the open query with
the vector it was answered with (the text is not embedded again), and the grid shows each hit from the row
the search read (the catalog is not asked again)."""

from __future__ import annotations

import shutil

import pytest
from conftest import scene_photos
from gui_support import copy_photos, open_test_window, search, wait_indexed, wait_ready

pytestmark = pytest.mark.gui


def test_live_results_reuse_the_answers_vector_and_rows(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 3)
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 3)
    search(qtbot, win, "a red kite")
    session = win.session
    first = session.current
    assert first is not None and first.vector is not None and len(first.items) == 3
    # each item shows what the search read: no second look at the catalog
    assert all(it.hit.photo is not None and it.thumb_key == it.hit.photo.hash for it in first.items)

    embedder = session.embedder
    embedded: list[list[str]] = []
    inner = embedder.embed_texts

    def counting(texts):
        embedded.append(list(texts))
        return inner(texts)

    embedder.embed_texts = counting
    try:
        shutil.copyfile(scene_photos(1, start=20)[0], photos / "dropped.jpg")
        qtbot.waitUntil(
            lambda: session.current is not None and session.current is not first and len(session.current.items) == 4,
            timeout=60000,
        )
    finally:
        del embedder.embed_texts
    assert embedded == []  # the same query ran again with its vector
    assert (session.current.vector == first.vector).all()
    win.close()


def test_the_errors_dialog_reads_through_the_controller(qtbot, tmp_path, tiny_clip):
    """The window lists the files that cannot be indexed as the controller gives them (as `errors` does),
    not from the store on its own."""
    photos = copy_photos(tmp_path / "photos", 2)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 2)
    asked = []
    controller = win.session.controller
    real = controller.errors
    controller.errors = lambda folder=None: asked.append(folder) or real(folder)
    got = []
    win.session.errors(got.append, str(photos))
    qtbot.waitUntil(lambda: bool(got), timeout=30000)
    assert asked == [str(photos)] and [p for p, _why in got[0]] == [str(photos / "broken.jpg")]
    win.close()
