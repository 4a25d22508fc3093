"""Memory a process that stays open (the window, ``watch``) holds once indexing is over: the text reader's
arenas and the heap pages indexing freed go back to the system."""

from __future__ import annotations

import os
import sys

import pytest
from scene_support import scene_photos

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@linux_only
def test_the_text_readers_arenas_are_given_back():
    """A 640x480 photo is read at 1920x1440: the detector's arena then holds a few hundred MB, which
    stays held between photos (for speed) and is freed on request."""
    pytest.importorskip("rapidocr_onnxruntime")
    from PIL import Image

    from sorce_desktop.core.photos.images import DecodedImage
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(threads=2)
    photo = Image.open(scene_photos(1)[0]).convert("RGB").resize((640, 480))
    before = _resident_mb()
    engine.read(DecodedImage(photo, 640, 480))
    held = _resident_mb() - before
    assert held > 150  # the detector's buffers for a 1920x1440 input
    engine.release_memory()
    assert _resident_mb() - before < held - 150
    engine.read(DecodedImage(photo, 640, 480))  # and reading goes on as before


def test_an_index_run_gives_the_text_readers_memory_back(tmp_path, clip_embedder, monkeypatch):
    """Each run ends by releasing what the text reader held, so an idle window does not keep it."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.regions import get_layout
    from sorce_desktop.core.text.ocr import TextSource

    released = []
    monkeypatch.setattr(TextSource, "release_memory", lambda self: released.append(self))
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in scene_photos(2):
        (folder / p.name).write_bytes(p.read_bytes())
    source = TextSource()
    with Library(tmp_path / "data") as lib:
        lib.add_folder(folder)
        layout = get_layout("global")
        lib.bind(clip_embedder, layout)
        report = lib.indexer(clip_embedder, layout, text_source=source).run()
    assert report.embedded == 2 and report.text_read == 2
    assert released == [source]
