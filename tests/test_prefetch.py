"""Per-photo work before the model (crops, resizing, tile skipping) runs on the indexer's decoding
threads, ahead of the model, and gives exactly what doing it inside ``embed_photos`` gives."""

from __future__ import annotations

import threading

import numpy as np
from conftest import catalog_rows, scene_photos
from PIL import Image

from sorce_desktop.core.models.dual import DualEncoderEmbedder
from sorce_desktop.core.models.speed import SpeedProfile
from sorce_desktop.core.photos.images import DecodedImage, load_image
from sorce_desktop.core.regions import get_layout


def _photo(path) -> DecodedImage:
    img = Image.open(path).convert("RGB")
    return DecodedImage(img, img.width, img.height)


def test_prepared_photos_embed_exactly_like_unprepared_ones(tiny_siglip):
    # tiles at a smaller input and low-detail skipping: both parts of the preparation in play
    emb = DualEncoderEmbedder(tiny_siglip, speed=SpeedProfile("x", tile_size=16, min_detail=6.0))
    layout = get_layout("cells4o")
    paths = scene_photos(3)
    want = emb.embed_photos([_photo(p) for p in paths], layout)
    prepared = [emb.prepare(_photo(p), layout) for p in paths]
    assert all(len(p.prepared) == 1 for p in prepared)
    got = emb.embed_photos(prepared, layout)
    for g, w in zip(got, want):
        assert [r.name for r in g] == [r.name for r in w]
        assert [r.box for r in g] == [r.box for r in w]
        np.testing.assert_array_equal(np.stack([r.vector for r in g]), np.stack([r.vector for r in w]))


def test_a_photo_prepared_for_another_layout_or_speed_is_prepared_again(tiny_siglip):
    fast = DualEncoderEmbedder(tiny_siglip, speed=SpeedProfile("x", tile_size=16))
    plain = DualEncoderEmbedder(tiny_siglip)
    photo = fast.prepare(_photo(scene_photos(1)[0]), get_layout("grid2"))
    grid3 = plain.embed_photos([photo], get_layout("grid3"))[0]
    assert len(grid3) == 10  # not the 5 regions of the grid2 preparation
    ref = plain.embed_photos([_photo(scene_photos(1)[0])], get_layout("grid3"))[0]
    np.testing.assert_array_equal(np.stack([r.vector for r in grid3]), np.stack([r.vector for r in ref]))


def test_the_smaller_tile_input_decodes_smaller(tiny_siglip):
    layout = get_layout("cells4o")
    plain = DualEncoderEmbedder(tiny_siglip)
    small = DualEncoderEmbedder(tiny_siglip, speed=SpeedProfile("x", tile_size=16))
    assert plain.decode_min_side(layout) == plain.size * 4
    assert small.decode_min_side(layout) == max(small.size, 16 * 4)
    assert small.decode_min_side(get_layout("global")) == small.size  # the whole photo still fills the input
    # decoded at that size, the finest tile still fills the tile input
    photo = load_image(scene_photos(1)[0], small.decode_min_side(layout))
    scale = photo.image.width / photo.width
    finest = min(min(r.box.width, r.box.height) for r in layout.regions(photo.width, photo.height)[1:])
    assert finest * scale >= 16


def test_indexer_prepares_on_its_decoding_threads(tiny_siglip, photo_dir, indexed_library):
    emb = DualEncoderEmbedder(tiny_siglip, speed=SpeedProfile("x", tile_size=16, min_detail=6.0))
    layout = get_layout("cells4o")
    prepared_on: list[str] = []
    arrived_prepared: list[bool] = []
    real_prepare, real_embed = emb.prepare, emb.embed_photos

    def prepare(photo, lay):
        prepared_on.append(threading.current_thread().name)
        return real_prepare(photo, lay)

    def embed_photos(photos, lay):
        arrived_prepared.extend(bool(p.prepared) for p in photos)
        return real_embed(photos, lay)

    emb.prepare, emb.embed_photos = prepare, embed_photos
    lib, report = indexed_library(photo_dir, model=emb, layout=layout.name, batch_size=4)
    with lib:
        assert report.embedded == 12 and report.failed == 0
        assert len(prepared_on) == 12 and all(n.startswith("decode") for n in prepared_on)
        assert arrived_prepared == [True] * 12
        # what was stored is what embedding the same decoded photos directly gives
        row = lib.store.photo_by_path(str(photo_dir / sorted(p.name for p in photo_dir.iterdir())[0]))
        stored = catalog_rows(lib.store, "SELECT name, vector FROM regions WHERE photo_id=? ORDER BY id", (row.id,))
        direct = real_embed([load_image(row.path, emb.decode_min_side(layout))], layout)[0]
        assert [r[0] for r in stored] == [r.name for r in direct]
        got = np.stack([np.frombuffer(r[1], np.float32) for r in stored])
        np.testing.assert_allclose(got, np.stack([r.vector for r in direct]), atol=1e-5)


def test_a_photo_that_cannot_be_prepared_is_a_recorded_error(tiny_siglip, photo_dir, indexed_library):
    emb = DualEncoderEmbedder(tiny_siglip)
    layout = get_layout("grid2")
    bad = load_image(sorted(photo_dir.iterdir())[0])
    real_prepare = emb.prepare

    def prepare(photo, lay):
        if (photo.width, photo.height) == (bad.width, bad.height):  # that photo (and any of its size)
            raise RuntimeError("boom")
        return real_prepare(photo, lay)

    emb.prepare = prepare
    lib, report = indexed_library(photo_dir, model=emb, layout=layout.name, batch_size=4)
    with lib:
        assert report.failed >= 1 and report.embedded + report.failed == 12
        errors = catalog_rows(lib.store, "SELECT error FROM photos WHERE error IS NOT NULL")
        assert errors and all("could not be prepared" in e[0] and "boom" in e[0] for e in errors)
