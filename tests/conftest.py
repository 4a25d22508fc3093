"""Shared fixtures: tiny random models built from configs (offline), photos drawn by the tests themselves
(scene_support.py) copied to tmp folders: nothing outside the repository is needed."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest
from scene_support import scene_photos

from sorce_desktop.core.models.base import Embedder

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CountingEmbedder(Embedder):
    """Delegates to a real embedder and counts what it embeds: the calls, and every photo keyed by its
    decoded pixels (so a test can say none was embedded twice)."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.calls = 0
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.kind = inner.kind
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def layouts(self):
        return self.inner.layouts()

    def decode_min_side(self, layout):
        return self.inner.decode_min_side(layout)

    def embed_photos(self, photos, layout):
        with self._lock:
            self.calls += 1
            for p in photos:
                self.seen[hashlib.blake2b(p.image.tobytes(), digest_size=16).hexdigest()] += 1
        return self.inner.embed_photos(photos, layout)

    def embed_images(self, images):
        return self.inner.embed_images(images)

    def embed_texts(self, texts):
        return self.inner.embed_texts(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    photos = total

    def assert_none_twice(self) -> None:
        twice = [k for k, n in self.seen.items() if n > 1]
        assert not twice, f"{len(twice)} photos were embedded more than once"


def catalog_rows(store, sql: str, params=()) -> list[tuple]:
    """What the catalog file holds, read with a connection of the test's own (the store's SQL stays in
    the Store class; tests look at the file the way any other reader would)."""
    from sorce_desktop.core.store.catalog import CATALOG_NAME

    db = sqlite3.connect(f"file:{store.folder / CATALOG_NAME}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()




def remember_folder(lib, folder) -> str:
    """Remember a folder in a test's library, straight in its store, as a test sets one up (the
    application adds folders as jobs of the indexing service: LibraryController.add_folder)."""
    from sorce_desktop.core.indexing.scanner import existing_folder

    return lib.store.add_folder(existing_folder(folder))


def no_text_reading(data_dir: Path | str, **settings) -> str:
    """``data_dir`` made a data folder whose settings switch text reading off (Settings.ocr, as a user
    does in Settings), with ``settings`` besides (its other settings kept); returned as a string for
    command lines. Real OCR costs
    ~0.5-2 s a photo, so the tests that are not about the text in photos run the CLI and the window
    without it; the tests of text reading use the default settings."""
    from dataclasses import replace

    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings

    folder = AppPaths.resolve(data_dir).settings
    replace(Settings.load(folder), ocr=False, **settings).save(folder)
    return str(data_dir)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from sorce_desktop.bench.synthetic import build_dual_encoder

    return build_dual_encoder(tmp_path_factory.mktemp("tiny-clip"), "tiny-clip", seed=0)


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    from sorce_desktop.bench.synthetic import build_dual_encoder

    return build_dual_encoder(tmp_path_factory.mktemp("tiny-siglip"), "tiny-siglip", seed=1)


@pytest.fixture(scope="session")
def clip_embedder(tiny_clip):
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    return DualEncoderEmbedder(tiny_clip)


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """12 drawn photos (3 in a subfolder) in a fresh temporary folder."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, p in enumerate(scene_photos(12)):
        shutil.copy2(p, (root / "sub" if i >= 9 else root) / p.name)
    return root


@pytest.fixture
def indexed_library(tmp_path, request):
    """A factory: ``indexed_library(photos, model=..., layout=..., **indexer_arguments)`` opens a library
    in ``tmp_path/"data"``, adds the folder, binds the model (default: the tiny CLIP) with the layout and
    indexes everything; returns ``(library, IndexReport)``. What it opened is closed at teardown (a test
    may close it before, to open the same data again)."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.regions import get_layout

    opened = []

    def make(photos: Path, model: Embedder | None = None, layout: str = "grid3", **indexer_arguments):
        model = model or request.getfixturevalue("clip_embedder")
        lib = Library(tmp_path / "data")
        opened.append(lib)
        remember_folder(lib, photos)
        lib.bind(model, get_layout(layout))
        return lib, lib.indexer(model, get_layout(layout), **indexer_arguments).run()

    yield make
    for lib in opened:
        lib.close()


@pytest.fixture
def hits_and_query(tmp_path, clip_embedder):
    """Five photos as search hits, each boxed on its top-left quarter, and a text query's vector."""
    from PIL import Image

    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import PhotoHit

    folder = tmp_path / "photos"
    folder.mkdir()
    hits = []
    for i, p in enumerate(scene_photos(5)):
        dst = folder / p.name
        shutil.copy2(p, dst)
        w, h = Image.open(dst).size
        hits.append(PhotoHit(str(dst), 0.9 - i * 0.1, Box(0, 0, w // 2, h // 2), "g2_r0c0", i, w, h))
    return hits, clip_embedder.embed_texts(["a dog"])[0]


def tree_fingerprint(root: Path) -> dict[str, tuple]:
    """Names, sizes, mtimes and content hashes of everything under ``root`` (to prove it is untouched)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            digest = None
            if p.is_file() and not p.is_symlink():
                try:
                    digest = hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
                except OSError:
                    digest = "unreadable"
            out[os.fsencode(p)] = (st.st_size if p.is_file() else None, st.st_mtime_ns, st.st_mode, digest)
    return out


@pytest.fixture
def untouched():
    """Call with a folder; at teardown asserts nothing in it changed."""
    watched: list[tuple[Path, dict]] = []

    def watch(root: Path) -> Path:
        watched.append((root, tree_fingerprint(root)))
        return root

    yield watch
    for root, before in watched:
        assert tree_fingerprint(root) == before, f"photo folder {root} was modified"


WORDED = ["lantern", "harbor"]


@pytest.fixture(scope="session")
def worded_photos(tmp_path_factory):
    """Two photos with one word drawn into each (synthetic text at known boxes): ``(folder,
    {word: (photo path, word box)})``. Skips where no TrueType font is installed."""
    import random

    from PIL import Image

    from sorce_desktop.bench.text_render import available_fonts, render_word

    fonts, _ = available_fonts()
    if not fonts:
        pytest.skip("no TrueType font installed")
    root = tmp_path_factory.mktemp("worded") / "photos"
    root.mkdir()
    rng = random.Random(3)
    boxes = {}
    for i, (p, word) in enumerate(zip(scene_photos(2, start=40), WORDED)):
        img = Image.open(p).convert("RGB")
        r = render_word(img, word, 0.06, fonts[i % len(fonts)], 6.0 * (1 - 2 * i), "high", rng, busy=False)
        assert r is not None
        img.save(root / p.name, quality=95)
        boxes[word] = (root / p.name, r.box)
    return root, boxes


@pytest.fixture
def hub_unreachable(monkeypatch):
    """Downloads switched on, to a hub address where nothing answers: a machine with no network."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
