"""Indexing speed profiles: int8, smaller tile input, low-detail tiles skipped, and the variant the
store records per photo (so a "fast" library can be re-indexed "thorough")."""

from __future__ import annotations

import shutil

import numpy as np
from conftest import catalog_rows, no_text_reading, scene_photos
from PIL import Image

from sorce_desktop import cli
from sorce_desktop.core.models.dual import DualEncoderEmbedder
from sorce_desktop.core.models.speed import THOROUGH, SpeedProfile, get_speed
from sorce_desktop.core.photos.images import DecodedImage
from sorce_desktop.core.regions import get_layout
from sorce_desktop.core.store.catalog import Store


def _cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_int8_and_small_tiles_follow_the_reference(tiny_siglip):
    ref = DualEncoderEmbedder(tiny_siglip)
    assert ref.variant() == "float32"
    fast = DualEncoderEmbedder(tiny_siglip, speed=SpeedProfile("x", int8=True, tile_size=16))
    assert fast.int8 and fast.tile_size == 16 and fast.variant() == "int8+tiles16"
    img = Image.open(scene_photos(1)[0]).convert("RGB")
    photo = DecodedImage(img, img.width, img.height)
    layout = get_layout("grid2")
    got = fast.embed_photos([photo], layout)[0]
    want = ref.embed_photos([photo], layout)[0]
    assert [r.name for r in got] == [r.name for r in want]
    # the whole-photo view at the model's size, int8: close to float32
    assert _cos(got[0].vector, want[0].vector) > 0.98
    # tiles went through at 16 px: closer to the float32 forward at 16 px than to the one at 32 px
    crop = photo.crop(got[1].box)
    at16 = ref.forward_pixels(ref.preprocess([crop], 16))[0]
    at32 = ref.embed_images([crop])[0]
    assert _cos(got[1].vector, at16) > 0.98
    assert _cos(got[1].vector, at16) > _cos(got[1].vector, at32)


def test_blank_tiles_are_skipped_but_the_whole_photo_stays(tiny_clip):
    rng = np.random.default_rng(0)
    arr = np.full((200, 200, 3), 128, np.uint8)
    arr[:, 100:] = rng.integers(0, 255, (200, 100, 3), dtype=np.uint8)  # right half: all detail
    photo = DecodedImage(Image.fromarray(arr), 200, 200)
    layout = get_layout("grid2")
    emb = DualEncoderEmbedder(tiny_clip, speed=SpeedProfile("s", min_detail=6.0))
    assert emb.variant() == "float32+skip6"
    regions = emb.embed_photos([photo], layout)[0]
    names = [r.name for r in regions]
    assert names[0] == "global"
    assert len(names) == 3  # the two left (flat) cells of the 2x2 grid were skipped
    assert all(r.box.x0 >= 100 for r in regions[1:])
    assert len(DualEncoderEmbedder(tiny_clip, speed=THOROUGH).embed_photos([photo], layout)[0]) == 5


def test_cli_speed_is_recorded_per_photo(tmp_path, tiny_siglip):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in scene_photos(2):
        shutil.copy2(p, photos / p.name)
    data = tmp_path / "data"
    no_text_reading(data)
    assert cli.main(["index", str(photos), "--model", str(tiny_siglip), "--data-dir", str(data), "--speed", "thorough"]) == 0
    with Store(data / "index", writer=False) as store:
        assert {r[0] for r in catalog_rows(store, "SELECT variant FROM photos")} == {"float32"}
    assert get_speed(None).name == "fast"


def test_unknown_speed_is_refused():
    try:
        get_speed("ludicrous")
    except ValueError as exc:
        assert "fast" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown speed was accepted")


def test_a_photos_vectors_do_not_depend_on_its_batchmates(tiny_siglip):
    """The same photo embedded beside different photos gets the same vectors, in both speeds: int8's
    dynamic quantisation picks activation scales per forward, so "fast" runs one photo per forward."""
    photos = []
    for p in scene_photos(6, start=20):
        img = Image.open(p).convert("RGB")
        photos.append(DecodedImage(img, img.width, img.height))
    # a very dark and a very bright photo stretch a shared activation range the most
    for level in (3, 252):
        img = Image.new("RGB", (320, 240), (level, level, level))
        photos.append(DecodedImage(img, 320, 240))
    layout = get_layout("cells4o")
    for speed in ("fast", "thorough"):
        emb = DualEncoderEmbedder(tiny_siglip, speed=get_speed(speed))
        alone = emb.embed_photos(photos[:1], layout)[0]
        for mates in (photos[1:3], photos[3:], photos[6:][::-1]):
            got = emb.embed_photos([*mates, photos[0]], layout)[-1]
            assert [r.name for r in got] == [r.name for r in alone]
            diff = max(float(np.abs(a.vector - b.vector).max()) for a, b in zip(got, alone))
            assert diff < 1e-5, f"{speed}: vectors moved by {diff} with other batchmates"
