"""Decoding photos: upright, RGB, no larger than needed, and safe against hostile files.

Every failure becomes an :class:`ImageError` with a sentence a user understands; callers record it
and move on. Files are only ever opened for reading.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos); optional at import time so a broken wheel does not kill the app
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # pragma: no cover - depends on the platform wheel
    HEIF_AVAILABLE = False

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)

#: Photos above this many pixels are refused (decompression-bomb guard). 200 MP covers every camera.
MAX_PIXELS = 200_000_000
#: Bytes of a file above which it is refused before decoding.
MAX_FILE_BYTES = 512 * 1024 * 1024

#: A file may hold this many bytes per pixel of its (first) image, plus ``PADDING_SLACK_BYTES``, before it
#: is taken for padding or other data: 16 covers uncompressed 16-bit RGBA with room to spare, and the
#: slack covers metadata, embedded previews, depth and gain maps.
MAX_BYTES_PER_PIXEL = 16
PADDING_SLACK_BYTES = 64 * 1024 * 1024
#: Bytes of a file's start searched for a JPEG frame header.
_JPEG_HEAD_BYTES = 1 << 18

# Pillow's own guard warns at MAX_IMAGE_PIXELS and raises at twice that; we check ourselves first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class ImageError(Exception):
    """A photo that cannot be used, with the reason in words."""


@dataclass
class DecodedImage:
    """An upright RGB image, possibly decoded at reduced size.

    ``width``/``height`` are the full-resolution upright size: region boxes live in that space.
    ``image`` may be smaller (``scale`` = image.width / width); crop through :meth:`crop`.
    """

    image: Image.Image
    width: int
    height: int
    #: per-photo work an embedder did ahead of its model (crops, letterboxing, tile skipping), keyed by
    #: what that work depends on: the indexer fills it on a decode thread while the model runs on
    #: another batch (``Embedder.prepare``), and ``embed_photos`` reuses it instead of redoing it.
    prepared: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def scale(self) -> float:
        return self.image.width / self.width

    def crop(self, box) -> Image.Image:
        sx = self.image.width / self.width
        sy = self.image.height / self.height
        x0, y0, x1, y1 = box.scaled(sx, sy)
        x0, y0 = int(x0), int(y0)
        x1 = max(x0 + 1, int(round(x1)))
        y1 = max(y0 + 1, int(round(y1)))
        return self.image.crop((x0, y0, x1, y1))


def is_image_name(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fsdecode(path))[1].lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: map the 16-bit range onto 8 bits instead of clipping everything above 255.
        img = img.convert("I")
        _, hi = img.getextrema()
        if hi > 255:
            img = img.point(lambda v: v * (255 / 65535))
        return img.convert("L").convert("RGB")
    if mode == "F":
        lo, hi = img.getextrema()
        span = (hi - lo) or 1.0
        return img.point(lambda v: (v - lo) * 255 / span).convert("L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK (Pillow inverts Adobe CMYK JPEGs itself), YCbCr, LAB, 1, L, HSV
    return img.convert("RGB")


def _jpeg_frame_marker(head: bytes) -> int | None:
    """The SOFn marker of a JPEG (which coding it uses), from the file's first bytes; None if not found."""
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        m = head[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            return m
        if m == 0xDA:
            return None
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


def _min_bits_jpeg(img: Image.Image, head: bytes) -> int:
    """The fewest bits any Huffman-coded JPEG of this frame can have: a baseline block costs at least
    a DC code and an end-of-block code (1 bit each at the least), a progressive one at least its DC code.
    0 when unknown (arithmetic coding, a frame header further in than ``head``)."""
    marker = _jpeg_frame_marker(head)
    per_block = {0xC0: 2, 0xC1: 2, 0xC2: 1}.get(marker or 0, 0)
    layers = getattr(img, "layer", None) or []
    if not per_block or not layers:
        return 0
    w, h = img.size
    hmax = max(max(a, b) for _, a, b, _ in layers) or 1
    blocks = 0
    for _, a, b, _ in layers:
        blocks += (w * h * a * b) // (hmax * hmax * 64)
    return per_block * blocks


def _min_bits_png(img: Image.Image) -> int:
    """The fewest bits a PNG of this size can have: deflate compresses at most 1032:1, and every row
    holds its filter byte and its pixels (the fewest bits per pixel the mode allows)."""
    bits = {"1": 1, "L": 1, "P": 1, "LA": 16, "I;16": 16, "I": 16, "RGB": 24, "RGBA": 32}.get(img.mode, 1)
    w, h = img.size
    raw_bytes = h * (1 + (w * bits + 7) // 8)
    return 8 * raw_bytes // 1032


def check_plausible(img: Image.Image, size: int, head: bytes) -> None:
    """Refuse a file whose header promises more pixels than its bytes can hold (an altered or cut file:
    decoding it would invent the missing part, at the header's size), or whose bytes are mostly
    something else than its image (padding: it would be read whole for nothing). ``size``: the file's
    bytes; ``head``: its first bytes (``_JPEG_HEAD_BYTES`` is enough)."""
    w, h = img.size
    frames = max(1, int(getattr(img, "n_frames", 1) or 1))
    if img.format == "JPEG":
        need = _min_bits_jpeg(img, head)
    elif img.format == "PNG":
        need = _min_bits_png(img)
    else:
        need = 0
    if need and size * 8 < need:
        raise ImageError(
            f"the header claims {w}x{h} pixels, more than its {size / 1024:.0f} KB can hold "
            "(a damaged or altered file)"
        )
    if size > PADDING_SLACK_BYTES + MAX_BYTES_PER_PIXEL * w * h * frames:
        raise ImageError(
            f"the file holds {size / 2**20:.0f} MB for a {w}x{h} image: it is mostly padding or other data"
        )


def check_header_file(f: BinaryIO, size: int) -> None:
    """:func:`check_plausible` from the header of the open file ``f`` alone, before anything reads the
    whole file; ``f`` is left at its start. Files Pillow cannot identify pass (decoding says why)."""
    try:
        head = f.read(_JPEG_HEAD_BYTES)
        f.seek(0)
        with Image.open(f) as img:
            check_plausible(img, size, head)
    except ImageError:
        raise
    except Exception:
        return
    finally:
        f.seek(0)


@contextmanager
def decode_reasons() -> Iterator[None]:
    """Turn what Pillow raises while opening or decoding a photo into an :class:`ImageError` whose reason
    is a sentence about the file (Pillow's own messages name Python objects: "cannot identify image file
    <_io.BytesIO object at 0x...>")."""
    try:
        yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("the image is too large to decode safely (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image, or an image format that cannot be read") from None
    except PermissionError:
        raise ImageError("permission denied when reading the file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = " ".join(_OBJECT_REPR.sub("", str(exc)).split()) or type(exc).__name__
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise ImageError("the image file is truncated or damaged") from None
        raise ImageError(f"the image cannot be decoded ({msg})") from None
    except MemoryError:
        raise ImageError("not enough memory to decode the image") from None


#: a Python object's default repr inside a library's message ("<_io.BytesIO object at 0x7f2f0ed60d60>")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def probe_upright_size(path: str | os.PathLike, data: bytes | None = None) -> tuple[int, int]:
    """(width, height) of the photo upright, from its header alone; :class:`ImageError` with the reason
    in words when it is not a readable image. ``data``: the file's bytes, when already read."""
    with decode_reasons(), Image.open(io.BytesIO(data) if data is not None else path) as probe:
        return upright_size(probe)


def upright_size(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        orientation = 1
    return (h, w) if orientation in _SWAPS_AXES else (w, h)


def _draft_request(fmt: str | None, width: int, height: int, min_side: int | None) -> tuple[int, int] | None:
    """The size Pillow's draft is asked for so a JPEG keeps ``min_side`` (None: decoded whole)."""
    if fmt != "JPEG" or not min_side or min(width, height) <= min_side or width < 1 or height < 1:
        return None
    factor = min(width, height) / min_side
    return max(1, int(width / factor)), max(1, int(height / factor))


def _draft(img: Image.Image, min_side: int | None) -> None:
    """A JPEG decoded at a reduced scale (Pillow's draft: 1/2, 1/4 or 1/8) that keeps ``min_side``."""
    want = _draft_request(img.format, *img.size, min_side)
    if want is not None:
        img.draft("RGB", want)


def decoded_size(fmt: str | None, width: int, height: int, min_side: int | None) -> tuple[int, int]:
    """The size :func:`load_image` decodes a ``width`` x ``height`` image of format ``fmt`` at for
    ``min_side`` (before its EXIF rotation), read off the header alone: a JPEG at the draft scale Pillow
    picks for :func:`_draft`'s request (the largest of 1/8, 1/4, 1/2 that keeps the size asked for);
    every other format decodes whole (it is reduced only after decoding)."""
    want = _draft_request(fmt, width, height, min_side)
    if want is None:
        return width, height
    scale = min(width // want[0], height // want[1])
    s = next(s for s in (8, 4, 2, 1) if scale >= s)
    return (width + s - 1) // s, (height + s - 1) // s


def _reduce_factor(img: Image.Image, min_side: int | None) -> int:
    """The integer factor another format is reduced by after decoding (1: kept whole)."""
    if not min_side or img.format == "JPEG":
        return 1
    factor = min(img.size) // min_side
    return factor if factor >= 2 and img.mode not in ("I;16", "I;16B", "I;16L", "I;16N") else 1


def same_decode(data: bytes, side_a: int | None, side_b: int | None) -> bool:
    """Whether ``load_image(data=data, min_side=side_a)`` and ``min_side=side_b`` give the very same
    pixels (they do when both come to the same draft scale or reduction), read from the header only."""
    if side_a == side_b:
        return True

    def plan(min_side):
        with Image.open(io.BytesIO(data)) as img:
            _draft(img, min_side)
            return img.format, img.size, _reduce_factor(img, min_side)

    try:
        return plan(side_a) == plan(side_b)
    except Exception:  # a header Pillow cannot read: the decode itself will say why
        return False


def load_image(
    path: str | os.PathLike, min_side: int | None = None, data: bytes | None = None
) -> DecodedImage:
    """Open a photo upright in RGB.

    ``data``: the file's bytes when the caller has read them already (the indexer hashes them too),
    so the file is read once.

    ``min_side``: the smallest size the *short* side of the decoded image may have; JPEGs are then
    decoded at a reduced scale (Pillow's draft mode: a DCT-domain shrink, several times faster)
    as long as they keep at least that. ``None`` decodes at full size.
    """
    p = Path(path)
    if data is None:
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ImageError("the file no longer exists") from None
        except PermissionError:
            raise ImageError("permission denied when reading the file") from None
        except OSError as exc:
            raise ImageError(f"the file cannot be read ({exc.strerror or exc})") from None
        if not p.is_file():
            raise ImageError("not a regular file")
        size = st.st_size
    else:
        size = len(data)
    if size == 0:
        raise ImageError("the file is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"the file is too large ({size / 2**20:.0f} MB)")
    with decode_reasons(), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data) if data is not None else p) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"the image is too large to decode safely ({w}x{h} pixels)")
            if data is not None:
                head = data[:_JPEG_HEAD_BYTES]
            else:
                with open(p, "rb") as f:
                    head = f.read(_JPEG_HEAD_BYTES)
            check_plausible(img, size, head)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            full_w, full_h = upright_size(img)
            _draft(img, min_side)
            img.load()
            factor = _reduce_factor(img, min_side)
            if factor > 1:
                # Other formats decode at full size only: shrink before the RGB copy, as JPEG's draft
                # does while decoding, so a 14000x14000 scan holds its raw pixels, not three copies.
                if img.mode in ("1", "P"):  # modes Pillow cannot reduce
                    img = img.convert("RGBA" if img.mode == "P" else "L")
                img = img.reduce(factor)
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
            if rgb is img:
                rgb = img.copy()
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError("the image has no pixels")
    return DecodedImage(rgb, full_w, full_h)
