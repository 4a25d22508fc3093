"""Decoding: upright, RGB, reduced-size where allowed, every bad file a clear ImageError."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import scene_photos
from PIL import Image

from sorce_desktop.core.photos import images
from sorce_desktop.core.photos.images import ImageError, decoded_size, load_image


def _save_with_orientation(img: Image.Image, path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=95)


def test_exif_rotation_gives_upright_size_and_pixels(tmp_path):
    # A 40x20 image, left half red, right half blue, stored with "rotate 90 CW" (orientation 6).
    img = Image.new("RGB", (40, 20), "red")
    img.paste((0, 0, 255), (20, 0, 40, 20))
    p = tmp_path / "rot.jpg"
    _save_with_orientation(img, p, 6)
    d = load_image(p)
    assert (d.width, d.height) == (20, 40)
    arr = np.asarray(d.image)
    # rotated 90 degrees clockwise for display: the red half is now on top
    assert arr[5, 10, 0] > 200 and arr[5, 10, 2] < 60
    assert arr[35, 10, 2] > 200 and arr[35, 10, 0] < 60


def test_draft_decodes_smaller_but_keeps_full_size_coordinates():
    p = scene_photos(1)[0]
    full = load_image(p)
    small = load_image(p, min_side=100)
    assert (small.width, small.height) == (full.width, full.height)
    assert min(small.image.size) >= 100
    assert small.image.width < full.image.width


@pytest.mark.parametrize(
    "mode,make",
    [
        ("CMYK", lambda: Image.new("CMYK", (16, 12), (0, 255, 255, 0))),
        ("I;16", lambda: Image.fromarray(np.full((12, 16), 40000, dtype=np.uint16))),
        ("P", lambda: Image.new("RGB", (16, 12), (10, 200, 30)).convert("P")),
        ("RGBA", lambda: Image.new("RGBA", (16, 12), (255, 0, 0, 0))),
        ("LA", lambda: Image.new("LA", (16, 12), (100, 255))),
    ],
)
def test_modes_convert_to_rgb(tmp_path, mode, make):
    img = make()
    ext = ".jpg" if mode == "CMYK" else ".png" if mode != "I;16" else ".tif"
    p = tmp_path / f"x{ext}"
    img.save(p)
    d = load_image(p)
    assert d.image.mode == "RGB" and d.image.size == (16, 12)
    px = d.image.getpixel((3, 3))
    if mode == "CMYK":
        assert px[0] > 200 and px[1] < 60  # cyan-free magenta+yellow = red
    if mode == "I;16":
        assert px[0] > 100  # 16-bit values scaled, not clipped to black/white garbage
    if mode == "RGBA":
        assert px == (255, 255, 255)  # fully transparent -> white background


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "lime", "blue")]
    p = tmp_path / "a.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    d = load_image(p)
    assert d.image.getpixel((2, 2))[0] > 200


def test_heif_roundtrip(tmp_path):
    if not images.HEIF_AVAILABLE:
        pytest.skip("pillow-heif not available")
    p = tmp_path / "x.heic"
    Image.new("RGB", (64, 48), (0, 128, 255)).save(p)
    d = load_image(p)
    assert (d.width, d.height) == (64, 48)


def _png_bomb(w: int, h: int) -> bytes:
    raw = zlib.compress(b"\x00" * (w // 8 + 1) * 64)  # only a few rows of real data: the header does the harm

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"hello, I am not a photo\n" * 10, "not an image"),
        ("bomb.png", _png_bomb(60000, 60000), "too large"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        load_image(p)


def test_truncated_jpeg(tmp_path):
    data = scene_photos(1)[0].read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="truncated|damaged|decoded"):
        load_image(p)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(ImageError, match="no longer exists"):
        load_image(tmp_path / "gone.jpg")
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    p = tmp_path / "secret.jpg"
    Image.new("RGB", (4, 4)).save(p)
    p.chmod(0)
    with pytest.raises(ImageError, match="permission"):
        load_image(p)


def test_panorama_decodes(tmp_path):
    p = tmp_path / "pano.jpg"
    Image.new("RGB", (30000, 200), (20, 40, 60)).save(p, quality=70)
    d = load_image(p, min_side=100)
    assert (d.width, d.height) == (30000, 200)


def test_crop_maps_full_res_box_to_reduced_image():
    from sorce_desktop.core.regions import Box

    d = load_image(scene_photos(1)[0], min_side=100)
    c = d.crop(Box(0, 0, d.width // 2, d.height // 2))
    assert abs(c.width - d.image.width / 2) <= 1 and abs(c.height - d.image.height / 2) <= 1


def test_bytes_io_not_needed():
    assert io  # images are always opened from paths, read-only


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA"])
def test_png_is_shrunk_before_its_rgb_copy_like_a_jpeg_draft(tmp_path, mode):
    """Formats without a draft decode at full size; with min_side they are reduced before the RGB copy,
    so a huge scan never holds three full-size copies. Boxes stay in full-resolution coordinates."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    p = tmp_path / f"big-{mode}.png"
    img.save(p)
    d = load_image(p, min_side=200)
    assert (d.width, d.height) == (1600, 1200)
    assert d.image.size == (267, 200)  # reduced by 6 (rounding up), never below min_side
    full = load_image(p)
    assert full.image.size == (1600, 1200)
    # the reduced image is the full one averaged, not another picture
    small = np.asarray(full.image.reduce(6), np.float32)
    assert np.abs(small - np.asarray(d.image, np.float32)).max() <= 1


@pytest.mark.parametrize("size", [(4000, 3000), (3001, 1999), (641, 480), (5640, 3172)])
def test_the_decoded_size_read_off_the_header_is_the_size_load_image_decodes(tmp_path, size):
    """What the indexer's memory budget charges a photo before decoding it is what decoding gives."""
    path = tmp_path / "p.jpg"
    Image.new("RGB", size, (90, 120, 150)).save(path, quality=80)
    for side in (None, 100, 224, 479, 480, 704, 1299, 1500, 2000, 9999):
        assert decoded_size("JPEG", *size, side) == load_image(path, side).image.size, side
    png = tmp_path / "p.png"
    Image.new("RGB", (900, 600)).save(png)
    assert decoded_size("PNG", 900, 600, 100) == (900, 600)  # decoded whole, reduced only afterwards
