"""Region layouts: how a photo is cut into the regions that each get an embedding.

Boxes are integer pixel coordinates ``(x0, y0, x1, y1)`` of the *upright* photo (EXIF orientation
applied), half-open like Python slices. Every layout includes the whole photo as its first region,
so a layout never loses what a single-embedding search would find.

A layout is data: a name and a list of scales. Adding a layout is adding an entry to ``LAYOUTS``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def intersection(self, other: Box) -> int:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(0, w) * max(0, h)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def contains_point(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1

    def scaled(self, sx: float, sy: float) -> tuple[float, float, float, float]:
        return (self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    @classmethod
    def from_list(cls, values: Iterable[float]) -> Box:
        x0, y0, x1, y1 = (int(round(v)) for v in values)
        return cls(x0, y0, x1, y1)


@dataclass(frozen=True)
class RegionSpec:
    """One region of a photo: a stable name (``global``, ``g3_r0c2``, ...) and its box.

    ``subject`` is set only by prompt-set layouts: the words a multimodal LLM's prompt uses for the
    region (``"the left upper corner in the above image"``); crop layouts leave it ``None``."""

    name: str
    box: Box
    subject: str | None = None


def _spans(length: int, count: int, overlap: float) -> list[tuple[int, int]]:
    """``count`` spans that cover ``[0, length)`` end to end, each widened by ``overlap``.

    The first span starts at 0 and the last ends at ``length``, so every pixel is covered; with
    ``overlap`` > 0 neighbours share a band, which keeps an object cut by a plain grid line whole
    in one of them.
    """
    count = min(count, length)  # never more spans than pixels
    if count <= 1:
        return [(0, length)]
    size = min(length, length / count * (1.0 + overlap))
    stride = (length - size) / (count - 1)
    spans = []
    for i in range(count):
        start = int(round(i * stride))
        end = length if i == count - 1 else int(round(i * stride + size))
        spans.append((start, max(end, start + 1)))
    return spans


@dataclass(frozen=True)
class GridScale:
    """A grid of ``cols`` x ``rows`` cells. ``square`` makes the counts follow the photo's aspect
    ratio (``cols``/``rows`` then give the count along the *short* side), so cells stay near square
    on panoramas instead of becoming slivers.

    ``long`` counts ``cells`` along the *long* side instead: cells are near square with a side of
    long side / ``cells`` (never more than the short side), so every cell's longest side, which is
    what the model's letterboxed square input is scaled to, is the same on 4:3, 3:2 and 16:9 photos;
    a 3:2 photo then needs 3x2 cells where a plain 3x3 grid spends 9 on the same magnification
    (``bench layouts`` measures this)."""

    cells: int
    overlap: float = 0.0
    square: bool = False
    long: bool = False

    #: a cell may be this much (as a share of the cell side) longer than the target side rather than
    #: adding a row of slivers: 640x427 is 3x2.0016 cells of 213 px, and should be 3x2, not 3x3
    LONG_SLACK = 0.05

    def counts(self, width: int, height: int) -> tuple[int, int]:
        if self.long:
            side = min(max(width, height) / self.cells, min(width, height))
            cols = max(1, math.ceil(width / side - self.LONG_SLACK))
            rows = max(1, math.ceil(height / side - self.LONG_SLACK))
            return cols, rows
        if not self.square:
            return self.cells, self.cells
        short = max(1, min(width, height))
        cols = max(1, math.ceil(self.cells * width / short - 0.25))
        rows = max(1, math.ceil(self.cells * height / short - 0.25))
        return cols, rows


@dataclass(frozen=True)
class RegionLayout:
    name: str
    description: str
    scales: tuple[GridScale, ...] = ()

    def regions(self, width: int, height: int) -> list[RegionSpec]:
        if width <= 0 or height <= 0:
            raise ValueError(f"photo has no pixels: {width}x{height}")
        out = [RegionSpec("global", Box(0, 0, width, height))]
        seen = {out[0].box}
        for scale in self.scales:
            cols, rows = scale.counts(width, height)
            tag = f"{'c' if scale.long else 't' if scale.square else 'g'}{scale.cells}"
            for r, (y0, y1) in enumerate(_spans(height, rows, scale.overlap)):
                for c, (x0, x1) in enumerate(_spans(width, cols, scale.overlap)):
                    box = Box(x0, y0, x1, y1)
                    if box in seen:
                        continue
                    seen.add(box)
                    out.append(RegionSpec(f"{tag}_r{r}c{c}", box))
        return out

    def max_cells(self) -> int:
        """The finest subdivision along the short side: used to decide how large to decode."""
        return max([1] + [s.cells for s in self.scales])

    def count(self, width: int = 640, height: int = 480) -> int:
        return len(self.regions(width, height))


LAYOUTS: dict[str, RegionLayout] = {
    layout.name: layout
    for layout in (
        RegionLayout("global", "one embedding of the whole photo (what other photo apps do)"),
        RegionLayout("grid2", "the whole photo plus a 2x2 grid", (GridScale(2),)),
        RegionLayout("grid3", "the whole photo plus a 3x3 grid", (GridScale(3),)),
        RegionLayout(
            "tiles",
            "the whole photo plus overlapping near-square tiles at two scales (2 and 3 per short side)",
            (GridScale(2, overlap=0.25, square=True), GridScale(3, overlap=0.25, square=True)),
        ),
        # Measured by `sorce-desktop bench layouts` on coco-small (docs/benchmarks.md): near-square
        # cells counted along the long side magnify small objects most per embedding.
        RegionLayout("grid4", "the whole photo plus a 4x4 grid", (GridScale(4),)),
        RegionLayout(
            "cells3",
            "the whole photo plus near-square cells, 3 along the long side (7 regions on 3:2, 10 on 4:3)",
            (GridScale(3, long=True),),
        ),
        RegionLayout(
            "cells4",
            "the whole photo plus near-square cells, 4 along the long side (13 regions on 3:2 and 4:3)",
            (GridScale(4, long=True),),
        ),
        RegionLayout(
            "cells4o",
            "the whole photo plus near-square cells, 4 along the long side, overlapping by 10% "
            "(13 regions on 3:2 and 4:3; the default)",
            (GridScale(4, overlap=0.1, long=True),),
        ),
        RegionLayout(
            "cells5o",
            "the whole photo plus near-square cells, 5 along the long side, overlapping by 25% "
            "(21 regions on 3:2 and 4:3: thorough)",
            (GridScale(5, overlap=0.25, long=True),),
        ),
    )
}

#: 4 near-square cells along the long side with 10 % overlap: the cheapest layouts whose median
#: small-object gain over the global view reaches 9x are the 13-region ones, and among those this
#: overlap keeps the worst-served decile best magnified (bench layouts, docs/benchmarks.md).
DEFAULT_LAYOUT = "cells4o"


@dataclass(frozen=True)
class PromptRegion:
    """One prompt of a prompt set: a region named in words, and the part of the photo it stands for.

    ``subject`` replaces the words "above image" in the model's image prompt; ``frac`` is the box as
    fractions ``(x0, y0, x1, y1)`` of the upright photo."""

    name: str
    subject: str
    frac: tuple[float, float, float, float]

    def box(self, width: int, height: int) -> Box:
        fx0, fy0, fx1, fy1 = self.frac
        x0, y0 = int(round(fx0 * width)), int(round(fy0 * height))
        x1, y1 = int(round(fx1 * width)), int(round(fy1 * height))
        # a 1-pixel photo still gets non-empty boxes
        return Box(min(x0, width - 1), min(y0, height - 1), max(x1, x0 + 1), max(y1, y0 + 1))


@dataclass(frozen=True)
class PromptLayout(RegionLayout):
    """Regions a multimodal LLM embeds by being *told* where to look (Regional Prompts, ReP), not by
    cropping: the photo is seen whole, and each prompt's box is where its words point. The first
    prompt must be the whole photo. Adding a region (centre, thirds) is adding a ``PromptRegion``."""

    prompts: tuple[PromptRegion, ...] = ()

    def regions(self, width: int, height: int) -> list[RegionSpec]:
        if width <= 0 or height <= 0:
            raise ValueError(f"photo has no pixels: {width}x{height}")
        return [RegionSpec(p.name, p.box(width, height), p.subject) for p in self.prompts]

    def max_cells(self) -> int:
        return 1  # the model sees the whole photo; nothing is cropped


_WHOLE = (0.0, 0.0, 1.0, 1.0)

#: Prompt-set layouts, for multimodal-LLM backends only (a dual encoder cannot follow words).
PROMPT_LAYOUTS: dict[str, PromptLayout] = {
    layout.name: layout
    for layout in (
        # The SORCE paper's Regional Prompts, in the order of its evaluation code (MCG-NJU/SORCE,
        # eval_sorce.py, emb_data_position: global, lu, lb, ru, rb): each replaces "above image" in the
        # image prompt with "the <corner> corner in the above image".
        PromptLayout(
            "rep",
            "Regional Prompts (SORCE): the whole photo plus its four corners, named in the prompt",
            prompts=(
                PromptRegion("global", "above image", _WHOLE),
                PromptRegion("left_upper", "the left upper corner in the above image", (0.0, 0.0, 0.5, 0.5)),
                PromptRegion("left_lower", "the left lower corner in the above image", (0.0, 0.5, 0.5, 1.0)),
                PromptRegion("right_upper", "the right upper corner in the above image", (0.5, 0.0, 1.0, 0.5)),
                PromptRegion("right_lower", "the right lower corner in the above image", (0.5, 0.5, 1.0, 1.0)),
            ),
        ),
    )
}


def get_layout(name: str) -> RegionLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        pass
    try:
        return PROMPT_LAYOUTS[name]
    except KeyError:
        known = ", ".join([*LAYOUTS, *PROMPT_LAYOUTS])
        raise ValueError(f"unknown region layout {name!r}; known layouts: {known}") from None
