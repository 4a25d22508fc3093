import pytest

from sorce_desktop.core.regions import LAYOUTS, Box, get_layout

SIZES = [(640, 480), (480, 640), (641, 427), (4000, 3000), (30000, 200), (200, 30000), (1, 1), (7, 3)]


def covered(layout, w, h) -> bool:
    """Every pixel lies inside at least one region (checked on a coarse lattice plus the edges)."""
    regions = layout.regions(w, h)
    xs = sorted({0, w - 1, *range(0, w, max(1, w // 37))})
    ys = sorted({0, h - 1, *range(0, h, max(1, h // 37))})
    return all(any(r.box.x0 <= x < r.box.x1 and r.box.y0 <= y < r.box.y1 for r in regions) for x in xs for y in ys)


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("size", SIZES)
def test_regions_cover_photo_and_stay_inside(name, size):
    w, h = size
    layout = LAYOUTS[name]
    regions = layout.regions(w, h)
    assert regions[0].name == "global" and regions[0].box == Box(0, 0, w, h)
    for r in regions:
        assert 0 <= r.box.x0 < r.box.x1 <= w and 0 <= r.box.y0 < r.box.y1 <= h, r
    assert len({r.name for r in regions}) == len(regions)
    assert covered(layout, w, h)


def test_grid_counts_and_boxes():
    g3 = get_layout("grid3").regions(600, 300)
    assert len(g3) == 10
    assert g3[1].box == Box(0, 0, 200, 100) and g3[-1].box == Box(400, 200, 600, 300)
    assert len(get_layout("grid2").regions(640, 480)) == 5
    assert len(get_layout("global").regions(640, 480)) == 1


def test_tiles_stay_near_square_on_panoramas():
    tiles = [r for r in get_layout("tiles").regions(30000, 200) if r.name != "global"]
    for r in tiles:
        aspect = max(r.box.width, r.box.height) / min(r.box.width, r.box.height)
        assert aspect < 2.0, r


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="known layouts"):
        get_layout("nope")


def test_box_geometry():
    a, b = Box(0, 0, 10, 10), Box(5, 5, 15, 15)
    assert a.intersection(b) == 25
    assert a.iou(b) == pytest.approx(25 / 175)
    assert a.contains_point(10, 10) and not a.contains_point(11, 0)
