"""The layout analysis (`sorce-desktop bench layouts`): hand-computable geometry, the letterboxed input
the product really feeds, the per-layout figures, and the command end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sorce_desktop.bench import layouts as bl
from sorce_desktop.core.models.dual import letterbox
from sorce_desktop.core.regions import DEFAULT_LAYOUT, LAYOUTS, Box, GridScale, RegionLayout

GRID2 = RegionLayout("g2", "2x2", (GridScale(2),))


def obj(box, w=600, h=300):
    return bl.SmallObject(1, w, h, tuple(float(v) for v in box), "thing")


def test_fill_and_gain_by_hand():
    regions = [r.box for r in GRID2.regions(600, 300)]  # global 600x300, four tiles 300x150
    assert regions[1] == Box(0, 0, 300, 150)
    # 30x15 = 450 px, whole in the top-left tile. Global input: the photo's longest side 600 is
    # scaled to the square, so 450 / 600^2; the tile's longest side is 300: 450 / 300^2.
    r = bl.best_region(obj((10, 10, 40, 25)), regions)
    assert r.global_fill == pytest.approx(450 / 600**2)
    assert r.best_fill == pytest.approx(450 / 300**2)
    assert r.best_region == 1 and r.whole_in_a_tile
    assert r.gain == pytest.approx(4.0)
    # Straddling the x=300 border: 10x10 on the left (a third: not enough), 20x10 on the right.
    r = bl.best_region(obj((290, 10, 320, 20)), regions)
    assert r.best_region == 2 and r.best_inside == pytest.approx(200)
    assert r.gain == pytest.approx((200 / 300**2) / (300 / 600**2))  # 2.667: cut objects gain less
    assert not r.whole_in_a_tile
    # Less than half inside every tile (a box over the centre cross): only the global view holds it.
    r = bl.best_region(obj((280, 140, 320, 160)), regions, min_inside=0.5)
    assert r.best_region == 0 and r.gain == 1.0
    # With the half rule relaxed a quarter in a tile counts, and ties: a quarter of the object in a
    # tile of half the photo's longest side fills exactly what the whole object fills globally.
    r = bl.best_region(obj((280, 140, 320, 160)), regions, min_inside=0.25)
    assert r.best_fill == pytest.approx(200 / 300**2) and r.gain == pytest.approx(1.0)


@pytest.mark.parametrize("region", [Box(0, 0, 300, 150), Box(100, 0, 220, 300), Box(0, 0, 250, 250)])
def test_fill_is_what_the_letterboxed_model_input_holds(region):
    """Draw the object white on black, crop the region and letterbox it exactly as the dual encoder
    does: the share of white pixels in the square input is the computed fill, at any input size."""
    photo = Image.new("RGB", (600, 300), (0, 0, 0))
    box = (40, 20, 100, 60)  # 60x40 px, inside all three regions
    photo.paste((255, 255, 255), box)
    crop = photo.crop(region.as_list())
    expected = bl.input_fill(bl.inside_area(box, region), region)
    for size in (64, 224, 256):
        square = np.asarray(letterbox(crop, size, (0, 0, 0), Image.NEAREST))
        assert square.shape[:2] == (size, size)
        white = (square[..., 0] > 127).mean()
        assert white == pytest.approx(expected, rel=0.06, abs=2 / size**2)


def write_coco(folder, images, annotations, categories=((1, "kite"), (2, "cup"))):
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "images": [{"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"} for i, w, h in images],
        "annotations": [
            {"id": k, "image_id": i, "bbox": list(b), "category_id": c, "iscrowd": crowd, "area": b[2] * b[3]}
            for k, (i, b, c, crowd) in enumerate(annotations)
        ],
        "categories": [{"id": c, "name": n} for c, n in categories],
    }
    (folder / "instances.json").write_text(json.dumps(data))
    return folder


def test_load_coco_keeps_small_non_crowd_boxes(tmp_path):
    folder = write_coco(
        tmp_path / "ds",
        [(1, 600, 300), (2, 400, 400)],
        [
            (1, (10, 10, 30, 15), 1, 0),  # 450 px < 1% of 180000: small
            (1, (0, 0, 300, 150), 2, 0),  # large
            (1, (10, 10, 5, 5), 1, 1),  # crowd: skipped
            (2, (390, 390, 20, 20), 2, 0),  # small, clipped to the photo
            (2, (5, 5, 0, 4), 2, 0),  # empty box: skipped
        ],
    )
    data = bl.load_coco(folder / "instances.json", 0.01)
    assert data.photos == {1: (600, 300), 2: (400, 400)}
    assert [(o.image_id, o.category, o.box) for o in data.small] == [
        (1, "kite", (10.0, 10.0, 40.0, 25.0)),
        (2, "cup", (390.0, 390.0, 400.0, 400.0)),
    ]


def test_layout_figures_by_hand():
    """Four objects on a 600x300 photo with a 2x2 grid: gains 4, 4, 2.667 (cut) and 1 (held by no
    tile), so median 3.33, reach and cut shares countable by hand."""
    small = [
        obj((10, 10, 40, 25)),  # 450 px, gain 4, fill 0.5 %
        obj((320, 160, 350, 220)),  # 1800 px, gain 4, fill 2 %: reaches 2 %
        obj((290, 10, 320, 20)),  # cut, gain 8/3
        obj((280, 140, 320, 160)),  # under half in every tile: gain 1, cut
    ]
    data = bl.CocoSet({1: (600, 300)}, small, 4)
    s = bl.analyse_layout(GRID2, data, reach=0.02)
    assert s.embeddings_per_photo == 5 and s.objects == 4
    assert s.median_gain == pytest.approx((4 + 8 / 3) / 2)
    assert s.p10_gain == pytest.approx(np.percentile([1, 8 / 3, 4, 4], 10))
    assert s.reach_share == pytest.approx(0.25) and s.global_reach_share == 0.0
    assert s.cut_share == pytest.approx(0.5)
    g = bl.analyse_layout(LAYOUTS["global"], data)
    assert g.median_gain == 1.0 and g.cut_share is None and g.embeddings_per_photo == 1
    result = bl.analyse([LAYOUTS["global"], GRID2], data, min_gain=3.0)
    assert result["qualifying"] == ["g2"] and result["cheapest_qualifying"] == "g2"
    assert bl.analyse([LAYOUTS["global"], GRID2], data, min_gain=9.0)["cheapest_qualifying"] is None


def test_cheapest_tie_goes_to_the_better_worst_decile():
    """Two layouts of equal cost that both qualify: the one whose 10th percentile is higher wins."""
    small = [obj((290, 10, 320, 20), 640, 480)] + [
        obj((10 + 30 * k, 10, 30 + 30 * k, 25), 640, 480) for k in range(4)
    ]
    data = bl.CocoSet({1: (640, 480)}, small, len(small))
    plain = RegionLayout("plain", "", (GridScale(4, long=True),))
    overlap = RegionLayout("over", "", (GridScale(4, overlap=0.1, long=True),))
    result = bl.analyse([LAYOUTS["global"], plain, overlap], data, min_gain=2.0)
    rows = {r["layout"]: r for r in result["layouts"]}
    assert rows["plain"]["embeddings_per_photo"] == rows["over"]["embeddings_per_photo"]
    best = max(("plain", "over"), key=lambda n: rows[n]["p10_gain"])
    assert result["cheapest_qualifying"] == best


def test_command_prints_json_and_writes_the_plot(tmp_path, capsys):
    from sorce_desktop.cli import main

    folder = write_coco(
        tmp_path / "ds",
        [(1, 640, 480), (2, 480, 640)],
        [(1, (100, 100, 20, 20), 1, 0), (2, (50, 600, 30, 20), 2, 0)],
    )
    png = tmp_path / "plot.png"
    rc = main(
        [
            "bench",
            "layouts",
            "--dataset",
            str(folder),
            "--layouts",
            "grid3,cells4o",
            "--plot",
            str(png),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["layout"] for r in out["layouts"]] == ["global", "grid3", "cells4o"]
    assert out["small_objects"] == 2 and out["photos"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["bench", "layouts", "--dataset", str(tmp_path / "nothing"), "--plot", ""]) == 1


COCO_SMALL_BOXES = Path(__file__).parent / "data" / "coco_small_boxes.json.gz"


def test_default_layout_is_the_cheapest_reaching_9x_on_coco_small(tmp_path):
    """The default is chosen by this analysis (docs/benchmarks.md): re-measure if layouts change. The
    analysis reads only boxes and photo sizes, so the test carries the benchmark photos' small-object boxes
    (tests/data, no photos) and writes them back as the instances.json the command reads."""
    boxes = json.loads(gzip.decompress(COCO_SMALL_BOXES.read_bytes()))
    instances = {
        "images": [
            {"id": i, "width": w, "height": h, "file_name": f"{i:012d}.jpg"} for i, w, h in boxes["images"]
        ],
        "annotations": [
            {"id": k, "image_id": i, "category_id": c, "bbox": box, "iscrowd": 0}
            for k, (i, c, *box) in enumerate(boxes["small"], 1)
        ],
        "categories": [{"id": int(c), "name": name} for c, name in boxes["categories"].items()],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    data = bl.load_coco(tmp_path / "instances.json", 0.01)
    assert len(data.small) > 2000
    result = bl.analyse(list(LAYOUTS.values()), data, min_gain=9.0)
    rows = {r["layout"]: r for r in result["layouts"]}
    assert rows["global"]["median_gain"] == 1.0
    assert rows["grid3"]["median_gain"] == pytest.approx((640 / 214) ** 2, rel=1e-3)  # 9x nominal, 8.94x
    assert result["cheapest_qualifying"] == DEFAULT_LAYOUT
