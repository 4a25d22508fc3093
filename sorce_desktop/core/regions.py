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
    """One region of a photo: a stable name (``global``, ``g3_r0c2``, ...) and its box."""

    name: str
    box: Box


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
    on panoramas instead of becoming slivers."""

    cells: int
    overlap: float = 0.0
    square: bool = False

    def counts(self, width: int, height: int) -> tuple[int, int]:
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
            tag = f"{'t' if scale.square else 'g'}{scale.cells}"
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
    )
}

DEFAULT_LAYOUT = "grid3"


def get_layout(name: str) -> RegionLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown region layout {name!r}; known layouts: {', '.join(LAYOUTS)}") from None
