"""Photos the tests draw for themselves, so the suite runs from a clone with nothing beside it.

Each scene is made from its index alone (same index, same pixels, on every machine): a sky or wall over a
ground, with light that varies across it, buildings and trees behind, three to seven objects in front (at
least one under 1 % of the photo, as in COCO), sometimes a sign with a word on it, and the grain of a camera
sensor, saved as a JPEG of a real photo's size (640 px on the long side, mostly 640x480) and weight (about
100 kB). Colours are muted as in daylight photos: no fully saturated patches, which a test may paste in
itself. Every object is recorded with its category, box and outline, so a folder of scenes is also a data
set in the COCO layout (``write_coco_set``) for the benchmark harness's tests.

The benchmarks keep using real COCO photos; these stand in for them only in tests.
"""

from __future__ import annotations

import atexit
import json
import math
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: COCO's ids and names for the categories drawn
CATEGORIES = {
    1: "person",
    2: "bicycle",
    3: "car",
    10: "traffic light",
    16: "bird",
    17: "cat",
    18: "dog",
    28: "umbrella",
    37: "sports ball",
    38: "kite",
    44: "bottle",
    47: "cup",
    53: "apple",
    62: "chair",
    64: "potted plant",
    74: "clock",
}

#: photo sizes in COCO's proportions (640x480 the most common)
SIZES = [(640, 480)] * 6 + [(640, 427), (480, 640), (640, 360), (427, 640), (500, 375), (640, 512)]

#: words on signs; none of them is, or holds, a word the tests draw or search for themselves
SIGN_WORDS = ["OPEN", "EXIT", "TAXI", "HOTEL", "PIZZA", "SALE", "GARAGE", "POST", "KIOSK", "MUSEUM"]

#: fonts tried for the signs, else Pillow's own scalable font
FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf",
]


@dataclass
class SceneObject:
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, width, height (COCO)
    polygon: list[float]  # x0, y0, x1, y1, ... (COCO segmentation)
    area: float


@dataclass
class Scene:
    index: int
    size: tuple[int, int]
    image: Image.Image | None  # None once saved (the records are kept, the pixels are on disk)
    objects: list[SceneObject] = field(default_factory=list)
    words: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)  # word, x0 y0 x1 y1

    @property
    def file_name(self) -> str:
        return f"{self.index:012d}.jpg"


def _muted(rng: random.Random, hue: float | None = None, sat=(0.05, 0.35), val=(0.3, 0.85)) -> tuple:
    import colorsys

    h = rng.random() if hue is None else hue
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(colour: tuple, k: float) -> tuple:
    return tuple(int(max(0, min(255, c * k))) for c in colour)


def _gradient(w: int, h: int, top: tuple, bottom: tuple) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.float32(top) + t * np.float32(bottom), (h, w, 3)).copy()


def _font(size: int):
    for path in FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _polygon_area(pts: list[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]))) / 2


def _outline(
    kind: str, x: float, y: float, w: float, h: float, rng: random.Random
) -> list[tuple[float, float]]:
    """The object's outline inside the box (x, y, w, h): an ellipse, a rounded block or a rough blob."""
    cx, cy = x + w / 2, y + h / 2
    if kind == "ellipse":
        n = 24
        return [
            (cx + w / 2 * math.cos(2 * math.pi * i / n), cy + h / 2 * math.sin(2 * math.pi * i / n))
            for i in range(n)
        ]
    if kind == "block":
        c = min(w, h) * 0.15
        return [
            (x + c, y),
            (x + w - c, y),
            (x + w, y + c),
            (x + w, y + h - c),
            (x + w - c, y + h),
            (x + c, y + h),
            (x, y + h - c),
            (x, y + c),
        ]
    n = rng.randint(6, 9)
    pts = []
    for i in range(n):
        a = 2 * math.pi * i / n + rng.uniform(-0.2, 0.2)
        r = rng.uniform(0.75, 1.0)
        pts.append((cx + w / 2 * r * math.cos(a), cy + h / 2 * r * math.sin(a)))
    return pts


def draw_scene(index: int) -> Scene:
    """Scene ``index``: the same pixels and records every time."""
    rng = random.Random(index * 7919 + 17)
    nprng = np.random.default_rng(index)
    w, h = SIZES[rng.randrange(len(SIZES))]
    horizon = int(h * rng.uniform(0.35, 0.65))
    indoor = rng.random() < 0.35
    sky_hue = rng.uniform(0.05, 0.15) if indoor else rng.uniform(0.55, 0.65)
    upper = _gradient(w, horizon, _muted(rng, sky_hue, val=(0.6, 0.9)), _muted(rng, sky_hue, val=(0.5, 0.85)))
    ground_hue = rng.choice([0.07, 0.1, 0.12, 0.25, 0.3])  # earth, sand, grass
    lower = _gradient(
        w, h - horizon, _muted(rng, ground_hue, val=(0.35, 0.7)), _muted(rng, ground_hue, val=(0.2, 0.55))
    )
    base = np.concatenate([upper, lower], axis=0)
    # light that varies across the scene (a cloud's shadow, a lamp's fall-off)
    light = Image.fromarray(nprng.normal(0, 1, (6, 8)).astype(np.float32)).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    base += np.asarray(light, np.float32)[:, :, None] * 14
    # surfaces: grass, gravel, foliage, plaster (a window of one texture field, stronger on the ground)
    ty, tx = rng.randrange(_TEXTURE.shape[0] - h + 1), rng.randrange(_TEXTURE.shape[1] - w + 1)
    strength = np.empty((h, 1, 1), np.float32)
    strength[:horizon] = rng.uniform(0.0, 1.0) if rng.random() < 0.7 else 0.0  # a clear sky, a bare wall
    strength[horizon:] = rng.uniform(0.7, 1.4)
    base += _TEXTURE[ty : ty + h, tx : tx + w] * strength
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)

    # behind: buildings or furniture standing on the horizon, trees or plants
    for _ in range(rng.randint(2, 5)):
        bw, bh = rng.uniform(0.08, 0.3) * w, rng.uniform(0.15, 0.45) * h
        bx = rng.uniform(-0.05, 0.95) * w
        top = horizon - bh
        colour = _muted(rng, val=(0.25, 0.7))
        if rng.random() < 0.5:
            d.rectangle((bx, top, bx + bw, horizon + 2), fill=colour)
            for wy in np.arange(top + bh * 0.1, horizon - bh * 0.1, max(6.0, bh / 6)):  # windows or shelves
                d.line((bx + 3, wy, bx + bw - 3, wy), fill=_shade(colour, 0.75), width=2)
        else:
            d.ellipse((bx, top, bx + bw, horizon + bh * 0.1), fill=_muted(rng, rng.uniform(0.22, 0.33)))
            d.rectangle(
                (bx + bw * 0.45, horizon - 2, bx + bw * 0.55, horizon + bh * 0.1), fill=_shade(colour, 0.5)
            )

    # in front: objects of distinct categories, the first one small (under 1 % of the photo)
    scene = Scene(index, (w, h), img)
    categories = rng.sample(sorted(CATEGORIES), rng.randint(3, 7))
    for k, cid in enumerate(categories):
        share = (
            rng.uniform(0.0012, 0.007) if k == 0 else math.exp(rng.uniform(math.log(0.001), math.log(0.08)))
        )
        aspect = rng.uniform(0.5, 2.0)
        ow = max(6.0, math.sqrt(share * w * h * aspect))
        oh = max(6.0, share * w * h / ow)
        ox = rng.uniform(0, w - ow - 1)
        oy = (
            rng.uniform(max(0.0, horizon - oh * 0.8), h - oh - 1)
            if rng.random() < 0.8
            else rng.uniform(0, h - oh - 1)
        )
        pts = _outline(rng.choice(["ellipse", "block", "blob"]), ox, oy, ow, oh, rng)
        colour = _muted(rng, sat=(0.1, 0.3), val=(0.25, 0.85))
        d.polygon(pts, fill=colour, outline=_shade(colour, 0.6))
        if ow > 20 and oh > 20:  # light from above: a lit top and a darker band low down
            d.ellipse((ox + ow * 0.25, oy + oh * 0.1, ox + ow * 0.6, oy + oh * 0.3), fill=_shade(colour, 1.2))
            d.line(
                (ox + ow * 0.2, oy + oh * 0.8, ox + ow * 0.8, oy + oh * 0.8),
                fill=_shade(colour, 0.7),
                width=2,
            )
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
        x1, y1 = min(float(w), max(xs)), min(float(h), max(ys))
        scene.objects.append(
            SceneObject(
                cid,
                (round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)),
                [round(v, 2) for p in pts for v in p],
                round(_polygon_area(pts), 2),
            )
        )

    # a sign with a word on about one photo in three
    if rng.random() < 0.35:
        word = rng.choice(SIGN_WORDS)
        font = _font(max(12, int(h * rng.uniform(0.045, 0.08))))
        left, top, right, bottom = font.getbbox(word)
        tw, th = right - left, bottom - top
        pad = max(4, th // 3)
        sx = rng.randint(4, max(5, w - tw - 2 * pad - 4))
        sy = rng.randint(4, max(5, horizon - th - 2 * pad))
        d.rectangle(
            (sx, sy, sx + tw + 2 * pad, sy + th + 2 * pad),
            fill=_muted(rng, sat=(0.0, 0.15), val=(0.85, 0.95)),
        )
        d.text(
            (sx + pad - left, sy + pad - top),
            word,
            font=font,
            fill=_muted(rng, sat=(0.0, 0.3), val=(0.05, 0.25)),
        )
        scene.words.append((word, (sx + pad, sy + pad, sx + pad + tw, sy + pad + th)))

    # a lens's softness, then a sensor's grain (a window of one grain field, at a place of this scene's)
    img = img.filter(ImageFilter.SMOOTH)
    gy, gx = rng.randrange(_GRAIN.shape[0] - h + 1), rng.randrange(_GRAIN.shape[1] - w + 1)
    surface = (_TEXTURE[ty : ty + h, tx : tx + w] * 0.15).astype(np.int16)  # the objects' own surfaces
    arr = np.asarray(img, np.int16) + _GRAIN[gy : gy + h, gx : gx + w] + surface
    scene.image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return scene


def _texture_field(side: int, seed: int) -> np.ndarray:
    """Noise at a few scales (2 to 8 px), the same in the three channels but a little, as grey texture."""
    rng = np.random.default_rng(seed)
    out = np.zeros((side, side, 1), np.float32)
    for step, amp in ((2, 22.0), (4, 18.0), (8, 14.0)):
        small = rng.normal(0, amp, (side // step, side // step)).astype(np.float32)
        big = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
        out[:, :, 0] += np.asarray(big)
    return out


_TEXTURE = _texture_field(720, 1)
_grain = np.random.default_rng(0)
#: a sensor's grain: mostly the same in the three channels (luminance), a little in each (colour)
_GRAIN = (_grain.normal(0, 5, (720, 720, 1)) + _grain.normal(0, 2, (720, 720, 3))).astype(np.int16)


_folder: Path | None = None
_records: dict[int, Scene] = {}


def _cache() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="sorce-test-scenes-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder


def scene_record(index: int) -> Scene:
    """Scene ``index``'s records (its objects and words), its JPEG written once per test session."""
    if index not in _records:
        scene = draw_scene(index)
        path = _cache() / scene.file_name
        if not path.is_file():
            scene.image.save(path, quality=90)
        scene.image = None
        _records[index] = scene
    return _records[index]


def scene_photos(n: int, start: int = 0) -> list[Path]:
    """Photos ``start`` .. ``start + n - 1`` as JPEG files (named like COCO's, 12 digits): read them or
    copy them; they are shared by the whole session, so never change them in place."""
    return [_cache() / scene_record(i).file_name for i in range(start, start + n)]


def write_coco_set(folder: Path, n: int, start: int = 0) -> Path:
    """``folder`` made a data set in the COCO layout: ``images/`` and ``instances.json`` (images,
    annotations with boxes and outlines, categories), from scenes ``start`` .. ``start + n - 1``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for path in scene_photos(n, start):
        scene = scene_record(int(path.stem))
        shutil.copy2(path, folder / "images" / path.name)
        images.append(
            {"id": scene.index, "file_name": path.name, "width": scene.size[0], "height": scene.size[1]}
        )
        for o in scene.objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": scene.index,
                    "category_id": o.category_id,
                    "bbox": list(o.bbox),
                    "segmentation": [o.polygon],
                    "area": o.area,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name, "supercategory": "thing"} for i, name in CATEGORIES.items()]
    (folder / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return folder
