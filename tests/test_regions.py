"""The near-square "cells" layouts (4 along the long side, ...): coverage, bounds, aspect, counts,
and the magnification they promise (every cell's longest side is at most long side / cells)."""

from __future__ import annotations

import math

import pytest

from sorce_desktop.core.regions import DEFAULT_LAYOUT, LAYOUTS, Box, GridScale, RegionLayout

NEW = ["grid4", "cells3", "cells4", "cells4o", "cells5o"]
PHOTOS = [(640, 480), (480, 640), (640, 427), (640, 428), (500, 375), (4000, 3000), (6000, 4000),
          (1920, 1080), (1080, 1920), (1000, 1000), (4000, 1000), (30000, 200), (7, 3), (1, 1)]  # fmt: skip


def covers(regions, w, h) -> bool:
    """Every pixel lies in some region: the union of the boxes' column and row cuts, checked cell by
    cell of the arrangement they make (exact, not sampled)."""
    xs = sorted({0, w, *(v for r in regions for v in (r.box.x0, r.box.x1))})
    ys = sorted({0, h, *(v for r in regions for v in (r.box.y0, r.box.y1))})
    tiles = [r.box for r in regions[1:]] or [regions[0].box]
    for x0, x1 in zip(xs, xs[1:]):
        for y0, y1 in zip(ys, ys[1:]):
            if not any(t.x0 <= x0 and x1 <= t.x1 and t.y0 <= y0 and y1 <= t.y1 for t in tiles):
                return False
    return True


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("size", PHOTOS)
def test_tiles_alone_cover_the_photo_within_bounds(name, size):
    w, h = size
    regions = LAYOUTS[name].regions(w, h)
    assert regions[0].box == Box(0, 0, w, h)
    for r in regions:
        assert 0 <= r.box.x0 < r.box.x1 <= w and 0 <= r.box.y0 < r.box.y1 <= h
    assert len({r.name for r in regions}) == len(regions)
    assert len(set(r.box for r in regions)) == len(regions)
    # The tiles without the global view already cover every pixel: no part of a photo is only seen
    # at global magnification.
    assert covers(regions, w, h)


CAMERAS = [(640, 480), (480, 640), (640, 427), (4000, 3000), (6000, 4000), (1920, 1080), (1080, 1920)]


@pytest.mark.parametrize("name", ["cells3", "cells4", "cells4o", "cells5o"])
@pytest.mark.parametrize("size", [s for s in PHOTOS if min(s) >= 100])
def test_cells_are_near_square(name, size):
    # Rounding a row count up can leave cells up to ~1.7:1 on unusual aspects (4:1 panoramas);
    # on the aspects cameras and phones make they stay within 4:3.
    limit = 1.35 if size in CAMERAS else 1.75
    tiles = LAYOUTS[name].regions(*size)[1:]
    for r in tiles:
        aspect = max(r.box.width, r.box.height) / min(r.box.width, r.box.height)
        assert aspect <= limit, (r, aspect)


@pytest.mark.parametrize(
    "name, cells, overlap",
    [("cells3", 3, 0.0), ("cells4", 4, 0.0), ("cells4o", 4, 0.1), ("cells5o", 5, 0.25)],
)
@pytest.mark.parametrize(
    "size", [(640, 480), (480, 640), (640, 427), (4000, 3000), (6000, 4000), (1920, 1080)]
)
def test_cells_keep_their_magnification(name, cells, overlap, size):
    """The letterboxed model input is scaled by a region's longest side, so that side sets the
    magnification: at most (long / cells) x (1 + overlap), plus the 5 % slack and a pixel of rounding."""
    w, h = size
    bound = max(w, h) / cells * (1 + overlap) * (1 + GridScale.LONG_SLACK / cells) + 1
    for r in LAYOUTS[name].regions(w, h)[1:]:
        assert max(r.box.width, r.box.height) <= bound, r


@pytest.mark.parametrize(
    "name, size, count",
    [
        ("cells3", (640, 427), 7),  # 3x2: a 3x3 grid spends 10 on the same magnification
        ("cells3", (6000, 4000), 7),
        ("cells3", (1920, 1080), 7),
        ("cells3", (640, 480), 10),
        ("cells4", (640, 480), 13),
        ("cells4", (640, 427), 13),
        ("cells4o", (4000, 3000), 13),
        ("cells4o", (480, 640), 13),
        ("cells4o", (1000, 1000), 17),
        ("cells4o", (4000, 1000), 5),  # a 4:1 panorama: 4 squares of the short side
        ("cells5o", (640, 480), 21),
        ("grid4", (640, 427), 17),
    ],
)
def test_counts(name, size, count):
    assert LAYOUTS[name].count(*size) == count


def test_overlap_grows_cells_but_not_their_number():
    plain = LAYOUTS["cells4"].regions(640, 480)
    over = LAYOUTS["cells4o"].regions(640, 480)
    assert len(plain) == len(over)
    for a, b in zip(plain[1:], over[1:]):
        assert b.box.area > a.box.area
        assert b.box.intersection(a.box) == a.box.area or a.box.intersection(b.box) > 0.8 * a.box.area
    assert plain[1].box == Box(0, 0, 160, 160)
    assert over[1].box == Box(0, 0, 176, 176)  # 160 x 1.1


def test_panorama_cells_stay_square_not_slivers():
    regions = LAYOUTS["cells4o"].regions(30000, 200)
    assert len(regions) == 151  # 150 cells of the short side; cost grows with the panorama's length
    assert all(r.box.height == 200 and r.box.width <= 221 for r in regions[1:])


def test_tag_names_say_the_mode():
    names = [r.name for r in LAYOUTS["cells4o"].regions(640, 480)]
    assert names[0] == "global" and names[1] == "c4_r0c0" and names[-1] == "c4_r2c3"
    # (scales whose boxes coincide are kept once, so pick three that differ on 640x480)
    three = RegionLayout("x", "", (GridScale(2), GridScale(3, 0.25, square=True), GridScale(4, long=True)))
    tags = {r.name.split("_")[0] for r in three.regions(640, 480)}
    assert tags == {"global", "g2", "t3", "c4"}


def test_default_layout_is_known_and_settings_follow_it():
    from sorce_desktop.core.settings import Settings

    assert DEFAULT_LAYOUT in LAYOUTS
    assert Settings().layout == DEFAULT_LAYOUT
    assert math.isclose(LAYOUTS[DEFAULT_LAYOUT].count(640, 480), 13)
