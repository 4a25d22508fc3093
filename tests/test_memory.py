"""Memory a process that stays open (the window, ``watch``) holds once indexing is over: the text reader's
arenas and the heap pages indexing freed go back to the system."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import remember_folder
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


def _library_with(tmp_path, n: int):
    from sorce_desktop.core.library import Library

    folder = tmp_path / "photos"
    folder.mkdir()
    for p in scene_photos(n):
        (folder / p.name).write_bytes(p.read_bytes())
    lib = Library(tmp_path / "data")
    remember_folder(lib, folder)
    return lib


def test_each_batch_gives_the_text_readers_memory_back_before_the_next_pictures(tmp_path, clip_embedder, monkeypatch):
    """The picture model's next batch runs without the text reader's buffers beside it (the process
    peak is then the larger of the two, not their sum), and nothing is held after the run."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.regions import get_layout
    from sorce_desktop.core.text.ocr import TextSource

    steps: list[str] = []
    monkeypatch.setattr(TextSource, "release_memory", lambda self: steps.append("release"))
    read = TextSource.read
    monkeypatch.setattr(TextSource, "read", lambda self, *a, **k: steps.append("read") or read(self, *a, **k))
    embed = clip_embedder.embed_photos
    monkeypatch.setattr(clip_embedder, "embed_photos", lambda *a: steps.append("picture") or embed(*a))
    layout = get_layout("global")
    with _library_with(tmp_path, 4) as lib:
        lib.bind(clip_embedder, layout)
        report = lib.indexer(clip_embedder, layout, text_source=TextSource(), batch_size=2).run()
    assert report.embedded == 4 and report.text_read == 4
    # a batch (one or two photos: it takes only what is decoded) is its pictures, then its words, then
    # the release
    runs = [x for i, x in enumerate(steps) if i == 0 or steps[i - 1] != x]
    batches = len(runs) // 3
    assert batches >= 2 and runs == ["picture", "read", "release"] * batches
    assert steps.count("picture") == steps.count("read") == 4


def test_decoding_stays_two_batches_ahead_of_the_model(tmp_path, clip_embedder, monkeypatch):
    """Photos decoded ahead wait holding their pixels: two batches ahead keep the model fed."""
    import threading
    import time

    from sorce_desktop.core.indexing.indexer import Indexer
    from sorce_desktop.core.regions import get_layout

    decoded = []
    lock = threading.Lock()
    decode = Indexer._decode

    def counted(self, row, *a):
        with lock:
            decoded.append(row.path)
        return decode(self, row, *a)

    monkeypatch.setattr(Indexer, "_decode", counted)
    first: list[int] = []
    embed = clip_embedder.embed_photos

    def slow_first(*a):
        if not first:
            for _ in range(200):  # the photo in hand and the four queued start decoding
                if len(decoded) >= 5:
                    break
                time.sleep(0.05)
            time.sleep(0.5)  # and a moment for more to start, had the queue room for them
            first.append(len(decoded))
        return embed(*a)

    monkeypatch.setattr(clip_embedder, "embed_photos", slow_first)
    layout = get_layout("global")
    with _library_with(tmp_path, 12) as lib:
        lib.bind(clip_embedder, layout)
        assert lib.indexer(clip_embedder, layout, batch_size=1).run().embedded == 12
    assert first == [5]  # the photo in the model and four waiting (two batches, at least four photos)
