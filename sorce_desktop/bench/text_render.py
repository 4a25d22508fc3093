"""Synthetic words rendered into real photos at known boxes (for ``bench text`` and the OCR tests).

SYNTHETIC TEXT ON REAL PHOTOS: the photos are real (coco-small), the words are drawn by this module.
Each word gets a font from Debian's font packages, a height given as a share of the photo's height,
a rotation, a contrast level, and is put on the busiest spot (most edges) among random candidates, so
it competes with the scene instead of sitting on a flat sky. Its box is the bounding box of the
rendered ink, in the photo's pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from sorce_desktop.core.regions import Box

#: Debian packages and the fonts of theirs used (one regular and one bold face each)
FONT_PACKAGES: dict[str, list[str]] = {
    "fonts-dejavu-core": [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
    ],
    "fonts-liberation": [
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
    ],
    "fonts-freefont-ttf": [
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/usr/share/fonts/truetype/freefont/FreeMonoBold.ttf",
    ],
}

#: luminance difference between the words and their surroundings
CONTRASTS = {"high": 200, "medium": 120, "low": 70}

# Ordinary words with few shared substrings, so a query names exactly one photo.
WORDS = """
anchor bakery bicycle blossom bridge cabinet camera canyon carnival castle cactus cellar chimney circus
citrus compass cottage crystal dolphin dragon emerald falcon ferry festival forest fountain galaxy garden
glacier harbor harvest helmet horizon island jasmine jungle kettle lantern lemonade library lobster magnet
mango marble meadow mirror monkey mustard napkin nectar noodle oyster paddle panther parrot pepper pickle
pilgrim planet pocket pumpkin quartz quiver rabbit radish raven ribbon rocket saddle salmon sandal scooter
shadow sherbet silver sparrow spinach squirrel stadium summit sunset tablet tavern temple thunder timber
tomato tractor trumpet tulip turkey tunnel umbrella valley velvet violin walnut window winter wizard yogurt
zebra zipper almond beacon blanket buffalo butter candle carrot cereal cobalt cookie copper cricket
dagger denim diesel donkey eagle engine fabric feather fiddle flannel gadget ginger goblin gravel hammer
hazel hornet insect jacket jigsaw kayak kitten ladder lagoon lizard locket marlin mitten mosaic muffin
nugget olive orchid otter pebble pelican pigeon pirate plaster pretzel puzzle quilt raisin rattle reindeer
saffron sapphire satchel sesame shovel sketch slipper sprout stencil strudel tangle thimble toffee turnip
""".split()


@dataclass
class RenderedWord:
    word: str
    rel_height: float  # cap-to-descender height of the font size, as a share of the photo's height
    font: str
    angle: float
    contrast: str
    box: Box  # bounding box of the ink, photo pixels
    busy: bool = True  # placed on the busiest candidate spot


def available_fonts() -> tuple[list[str], list[str]]:
    """Fonts found, and a notice per missing Debian package (install it: apt-get install NAME)."""
    found, notices = [], []
    for pkg, paths in FONT_PACKAGES.items():
        have = [p for p in paths if Path(p).is_file()]
        if not have:
            notices.append(
                f"font package {pkg} is not installed (apt-get install {pkg}); its fonts are skipped"
            )
        found += have
    return found, notices


def _edge_map(img: Image.Image) -> np.ndarray:
    grey = img.convert("L").filter(ImageFilter.FIND_EDGES)
    return np.asarray(grey, dtype=np.float32)


def render_word(
    img: Image.Image,
    word: str,
    rel_height: float,
    font_path: str,
    angle: float,
    contrast: str,
    rng: random.Random,
    avoid: list[Box] | None = None,
    candidates: int = 24,
    busy: bool = True,
) -> RenderedWord | None:
    """Draw ``word`` into ``img`` (in place); None when it cannot be placed. ``busy``: on the spot with
    the most edges among ``candidates`` random ones, else on the first random spot that fits."""
    W, H = img.size
    px = max(4, int(round(rel_height * H)))
    font = ImageFont.truetype(font_path, px)
    # Size the font so the ink of a typical word (ascender to descender) is px tall.
    asc, desc = font.getmetrics()
    font = ImageFont.truetype(font_path, max(4, int(round(px * px / max(1, asc + desc)))))
    left, top, right, bottom = font.getbbox(word)
    tw, th = right - left, bottom - top
    pad = 4
    mask = Image.new("L", (tw + 2 * pad, th + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), word, font=font, fill=255)
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bb = mask.getbbox()
    if bb is None:
        return None
    mask = mask.crop(bb)
    mw, mh = mask.size
    if mw >= W - 4 or mh >= H - 4:
        return None
    edges = _edge_map(img)
    integral = np.pad(edges.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, best_score = None, -1.0
    for _ in range(candidates):
        x = rng.randint(2, W - mw - 2)
        y = rng.randint(2, H - mh - 2)
        box = Box(x, y, x + mw, y + mh)
        if avoid and any(_overlaps(box, a, margin=max(mh, 8)) for a in avoid):
            continue
        s = integral[y + mh, x + mw] - integral[y, x + mw] - integral[y + mh, x] + integral[y, x]
        if not busy:
            best = box
            break
        if s > best_score:
            best, best_score = box, float(s)
    if best is None:
        return None
    region = np.asarray(img.crop(tuple(best.as_list())).convert("L"), dtype=np.float32)
    lum = float(region.mean())
    delta = CONTRASTS[contrast]
    # Dark words on light surroundings and light words on dark ones, at the chosen difference.
    value = lum - delta if lum >= 128 else lum + delta
    value = int(max(0, min(255, value)))
    tint = rng.choice([(1.0, 1.0, 1.0), (1.0, 0.85, 0.7), (0.75, 0.9, 1.0)])
    colour = tuple(int(max(0, min(255, value * c))) for c in tint)
    layer = Image.new("RGB", mask.size, colour)
    img.paste(layer, (best.x0, best.y0), mask)
    return RenderedWord(word, rel_height, Path(font_path).stem, angle, contrast, best, busy)


def _overlaps(a: Box, b: Box, margin: int = 0) -> bool:
    return not (
        a.x1 + margin <= b.x0 or b.x1 + margin <= a.x0 or a.y1 + margin <= b.y0 or b.y1 + margin <= a.y0
    )


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def plan_words(n_photos: int, sizes: list[float], per_photo: int, seed: int) -> list[list[tuple]]:
    """Per photo: (word, rel_height, font index, angle, contrast) for each word to draw, sizes cycling
    evenly so each size gets the same number of words."""
    rng = random.Random(seed)
    words = WORDS[:]
    rng.shuffle(words)
    need = n_photos * per_photo
    if need > len(words):
        # Two-word names keep queries unique when more words are needed than the list holds.
        extra = [f"{a} {b}" for a in words for b in words if a != b]
        rng.shuffle(extra)
        words += extra[: need - len(words)]
    contrasts = list(CONTRASTS)
    plan, k = [], 0
    for _ in range(n_photos):
        row = []
        for _ in range(per_photo):
            row.append(
                (
                    words[k],
                    sizes[k % len(sizes)],
                    k,
                    rng.uniform(-15.0, 15.0),
                    contrasts[(k // len(sizes)) % len(contrasts)],
                )
            )
            k += 1
        plan.append(row)
    return plan


def angle_for(rng: random.Random) -> float:
    return math.copysign(rng.uniform(0, 15), rng.uniform(-1, 1))
