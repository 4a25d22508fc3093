"""The retrieval harness (`sorce-desktop bench retrieval`): its mechanics on tiny random models.

Random weights say nothing about quality, so the figures are checked against an independent
reference (every photo embedded directly, scored as its best region, ranked with numpy), against
cases whose answer is known by hand, and through the command line; the loaders against the files the
tests write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scene_support import write_coco_set

from sorce_desktop.bench import retrieval as br
from sorce_desktop.bench.layouts import default_coco_small
from sorce_desktop.core.photos.images import load_image
from sorce_desktop.core.regions import Box, get_layout


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory) -> Path:
    """Twelve drawn photos and their objects' annotations, in the COCO layout (as the benchmarks' COCO sample)."""
    return write_coco_set(tmp_path_factory.mktemp("coco-set"), 12)


@pytest.fixture(scope="module")
def sorce_like(tmp_path_factory, coco_set) -> Path:
    return br.make_sorce_like(coco_set, tmp_path_factory.mktemp("sorce-like"), n=4)


@pytest.fixture(scope="module")
def coco_subset(tmp_path_factory) -> Path:
    """Eight drawn photos and their annotations, in the COCO layout."""
    return write_coco_set(tmp_path_factory.mktemp("coco-subset"), 8)


# -- an independent reference --------------------------------------------------------------------------
@dataclass
class RefHit:
    path: str
    box: Box
    width: int
    height: int


def reference(embedder, layout, pool: list[Path], queries: list[tuple[str, dict[str, dict[str, list]]]], ks):
    """Recall and localisation computed without the product's store, indexer or search: each photo
    decoded as the indexer decodes it, embedded, scored as its best region."""
    photos = []
    for p in pool:
        decoded = load_image(p, embedder.decode_min_side(layout))
        regions = embedder.embed_photos([decoded], layout)[0]
        photos.append((str(p.resolve()), decoded.width, decoded.height, regions))
    out = {}
    for text, targets in queries:
        q = embedder.embed_texts([text])[0]
        scored = []
        for path, w, h, regions in photos:
            s = [float(r.vector @ q) for r in regions]
            i = int(np.argmax(s))
            scored.append((s[i], RefHit(path, regions[i].box, w, h)))
        ranked = [h for _, h in sorted(scored, key=lambda t: -t[0])]
        for d, wanted in targets.items():
            o = out.setdefault(
                d, {"queries": 0, "hits": dict.fromkeys(ks, 0), "loc": 0, "centre": 0, "iou": 0.0}
            )
            o["queries"] += 1
            rank = next(i for i, h in enumerate(ranked) if h.path in wanted)
            for k in ks:
                o["hits"][k] += rank < k
            boxes = wanted[ranked[rank].path]
            if rank < max(ks) and boxes:
                hit = ranked[rank]
                o["loc"] += 1
                o["centre"] += any(
                    hit.box.contains_point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes
                )
                o["iou"] += max(hit.box.iou(Box.from_list(b)) for b in boxes)
    return out


def sorce_queries(root: Path):
    """The queries of a SORCE-layout folder, read here independently of the harness's loader."""
    qs = []
    for line in (root / "dataset.jsonl").read_text().splitlines():
        rec = json.loads(line)
        targets = {}
        for d, sub in br.SORCE_DIFFICULTIES.items():
            key = "bbox" if sub == "full_res" else f"bbox_{sub}"
            targets[d] = {str((root / sub / rec["image"]).resolve()): [rec[key]]}
        qs.append((rec["caption"], targets))
    return qs


def check_against_reference(result, ref, ks):
    for d, o in ref.items():
        got = result["difficulties"][d]
        assert got["queries"] == o["queries"]
        for k in ks:
            assert got[f"recall_at_{k}"] == pytest.approx(o["hits"][k] / o["queries"], abs=1e-4), (d, k)
        assert got["localised"] == o["loc"]
        if o["loc"]:
            assert got["centre_in_box"] == pytest.approx(o["centre"] / o["loc"], abs=1e-4)
            assert got["mean_iou"] == pytest.approx(o["iou"] / o["loc"], abs=1e-3)


@pytest.mark.slow
def test_sorce_layout_matches_an_independent_reference(sorce_like, clip_embedder, tmp_path):
    ks = (1, 2, 5, 10)
    rs = br.load_dataset(sorce_like)
    assert rs.kind == "sorce" and rs.difficulties == ["easy", "medium", "hard"] and len(rs.queries) == 4
    layouts = [get_layout("global"), get_layout("cells4o")]
    # batch_size=1: the indexer embeds photo by photo, as the reference does, so scores match bit for bit
    result = br.evaluate(rs, clip_embedder, layouts, tmp_path, ks=ks, batch_size=1)
    assert result["photos"] == 12 and result["queries"] == 4
    pool = sorted(p for sub in br.SORCE_DIFFICULTIES.values() for p in (sorce_like / sub).glob("*.jpg"))
    queries = sorce_queries(sorce_like)
    for layout, got in zip(layouts, result["layouts"]):
        assert got["layout"] == layout.name and got["photos_indexed"] == 12
        sizes = [(im.width, im.height) for im in (load_image(p) for p in pool)]
        assert got["embeddings_per_photo"] == pytest.approx(
            np.mean([layout.count(*s) for s in sizes]), abs=1e-3
        )
        check_against_reference(got, reference(clip_embedder, layout, pool, queries, ks), ks)
    g, c = result["layouts"]
    assert g["embeddings_per_photo"] == 1.0 and "vs_global" not in g
    assert set(c["vs_global"]) == {"easy", "medium", "hard"}
    for d in c["vs_global"]:
        assert c["vs_global"][d]["recall_at_10"] == pytest.approx(
            c["difficulties"][d]["recall_at_10"] - g["difficulties"][d]["recall_at_10"]
        )


def test_known_answers_with_a_pool_inside_the_top_10(tmp_path, clip_embedder, coco_set):
    """Three queries x three difficulties = 9 photos: every target is within the top 10, so Recall@10
    is 1; the global layout returns the whole photo, so it always holds the target's centre and the
    IoU is exactly the target's share of the photo."""
    root = br.make_sorce_like(coco_set, tmp_path / "ds", n=3)
    rs = br.load_dataset(root)
    result = br.evaluate(rs, clip_embedder, [get_layout("global")], tmp_path / "work")
    g = result["layouts"][0]
    expected_iou = {}
    for line in (root / "dataset.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for d, sub in br.SORCE_DIFFICULTIES.items():
            b = Box.from_list(rec["bbox" if sub == "full_res" else f"bbox_{sub}"])
            w, h = load_image(root / sub / rec["image"]).width, load_image(root / sub / rec["image"]).height
            expected_iou.setdefault(d, []).append(b.area / (w * h))
    r1 = 0
    for d, s in g["difficulties"].items():
        assert s["queries"] == 3 and s["recall_at_10"] == 1.0 and s["found"] == 3 and s["localised"] == 3
        assert s["centre_in_box"] == 1.0
        assert s["mean_iou"] == pytest.approx(np.mean(expected_iou[d]), abs=1e-4)
        assert s["recall_at_1"] <= s["recall_at_5"] <= s["recall_at_10"]
        r1 += round(s["recall_at_1"] * 3)
    # Each query's top photo belongs to one difficulty (or none): at most one rank-1 hit per query.
    assert r1 <= 3


@pytest.mark.slow
def test_coco_format_matches_the_reference_and_runs_from_the_command_line(coco_subset, tiny_clip, capsys):
    from sorce_desktop.cli import main
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    rc = main(
        ["bench", "retrieval", str(coco_subset), "--model", str(tiny_clip), "--layouts", "grid2", "--json"]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "coco" and result["difficulties"] == ["any", "small"]
    assert [r["layout"] for r in result["layouts"]] == ["global", "grid2"]
    assert result["synthetic_model"] is True and result["photos"] == 8
    # The queries, built here from the annotations: categories with an object under 1 % of its photo.
    data = json.loads((coco_subset / "instances.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"], im["file_name"]) for im in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_cat: dict[int, dict[int, list]] = {}
    for a in data["annotations"]:
        if not a["iscrowd"]:
            per_cat.setdefault(a["category_id"], {}).setdefault(a["image_id"], []).append(a["bbox"])
    queries = []
    for cid, imgs in per_cat.items():
        any_t, small_t = {}, {}
        for iid, boxes in imgs.items():
            w, h, fn = sizes[iid]
            path = str((coco_subset / "images" / fn).resolve())
            xyxy = [[x, y, x + bw, y + bh] for x, y, bw, bh in boxes]
            any_t[path] = xyxy
            if all(bw * bh < 0.01 * w * h for _, _, bw, bh in boxes):
                small_t[path] = xyxy
        if small_t:
            queries.append((names[cid], {"any": any_t, "small": small_t}))
    assert result["queries"] == len(queries) > 0
    embedder = DualEncoderEmbedder(tiny_clip)
    pool = sorted((coco_subset / "images").glob("*.jpg"))
    for got in result["layouts"]:
        ref = reference(embedder, get_layout(got["layout"]), pool, queries, (1, 5, 10))
        # The indexer batches 8 photos per forward here: allow scores to differ in the last bits by
        # comparing recall only (a rank flip would need two photos tied to ~1e-6).
        for d, o in ref.items():
            for k in (1, 5, 10):
                assert got["difficulties"][d][f"recall_at_{k}"] == pytest.approx(
                    o["hits"][k] / o["queries"], abs=1e-4
                )
    assert result["layouts"][1]["embeddings_per_photo"] == 5.0


def test_the_table_says_the_model_is_random(coco_subset, tiny_clip, capsys):
    from sorce_desktop.cli import main

    assert (
        main(
            [
                "bench",
                "retrieval",
                str(coco_subset),
                "--model",
                str(tiny_clip),
                "--layouts",
                "global",
                "--limit",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "R@1" in out and "random weights" in out and out.count("\nglobal") == 2  # two difficulties


# -- loaders and scoring, by hand ------------------------------------------------------------------------
def write_sorce(root: Path, records, folders=("zoom_3x", "zoom_2x", "full_res"), size=(60, 40)):
    from PIL import Image

    for sub in folders:
        (root / sub).mkdir(parents=True, exist_ok=True)
    for rec in records:
        for sub in folders:
            Image.new("RGB", size, (10, 20, 30)).save(
                root / sub / Path(str(rec.get("file_name", rec.get("image", "x")))).name
            )
    (root / "dataset.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return root


def test_sorce_loader_reads_keys_formats_and_says_what_is_missing(tmp_path):
    root = write_sorce(
        tmp_path / "a",
        [
            {"file_name": "sub/a.jpg", "text": "a red cup", "box": [6, 4, 12, 8]},
            {
                "file_name": "b.jpg",
                "text": "a kite",
                "box": [0.5, 0.5, 0.1, 0.25],
                "box_zoom_3x": [1, 2, 3, 4],
            },
        ],
        folders=("zoom_3x", "full_res"),
    )
    rs = br.load_sorce(root, box_format="xywh")
    assert rs.difficulties == ["easy", "hard"] and [q.text for q in rs.queries] == ["a red cup", "a kite"]
    a, b = rs.queries
    assert a.targets["hard"][0].path == str((root / "full_res" / "a.jpg").resolve())
    assert a.targets["hard"][0].boxes == [(6, 4, 18, 12)] and a.targets["hard"][0].frame == (60, 40)
    assert a.targets["easy"][0].boxes is None  # no box given for the zoomed image
    assert b.targets["hard"][0].frame == (1.0, 1.0)  # fractions of the image
    assert b.targets["hard"][0].boxes_in(600, 400) == [Box(300, 200, 360, 300)]
    assert b.targets["easy"][0].boxes == [(1, 2, 4, 6)]
    assert any("zoom_2x" in n for n in rs.notes) and any("easy: 1 records give no box" in n for n in rs.notes)


def test_sorce_loader_errors_are_sentences(tmp_path):
    with pytest.raises(br.DatasetError, match="dataset.jsonl"):
        br.load_sorce(tmp_path)
    root = write_sorce(tmp_path / "b", [{"image": "a.jpg", "words": "x", "bbox": [0, 0, 1, 1]}])
    with pytest.raises(br.DatasetError, match="--caption-key"):
        br.load_sorce(root)
    assert br.load_sorce(root, caption_key="words").queries[0].text == "x"
    root = write_sorce(tmp_path / "c", [{"image": "a.jpg", "caption": "x", "bbox": [5, 5, 2, 2]}])
    with pytest.raises(br.DatasetError, match="empty"):
        br.load_sorce(root)
    (tmp_path / "d").mkdir()
    with pytest.raises(br.DatasetError, match="neither"):
        br.load_dataset(tmp_path / "d")


def test_json_array_and_limit(tmp_path):
    root = write_sorce(
        tmp_path / "e", [{"image": f"{i}.jpg", "caption": str(i), "bbox": [1, 1, 5, 5]} for i in range(3)]
    )
    (root / "dataset.jsonl").write_text(
        json.dumps([{"image": f"{i}.jpg", "caption": str(i), "bbox": [1, 1, 5, 5]} for i in range(3)])
    )
    assert [q.text for q in br.load_sorce(root, limit=2).queries] == ["0", "1"]


def test_score_hits_by_hand():
    t = br.Target("/p/b.jpg", [(10, 10, 20, 20)], (100, 100))
    hits = [
        RefHit("/p/a.jpg", Box(0, 0, 100, 100), 100, 100),
        RefHit("/p/b.jpg", Box(0, 0, 50, 50), 200, 200),  # indexed at twice the box's frame
    ]
    s = br.DifficultyScore()
    assert br.score_hits(hits, [t], (1, 2, 10), s) == 1
    assert s.hits_at == {2: 1, 10: 1} and s.found == 1 and s.localised == 1
    # target in the photo's pixels: (20, 20, 40, 40); centre (30, 30) inside (0, 0, 50, 50); IoU 400/2500
    assert s.centre_in == 1 and s.iou_sum == pytest.approx(400 / 2500)
    assert br.score_hits(hits[:1], [t], (1, 2, 10), s) is None
    j = s.to_json((1, 2, 10))
    assert j == {
        "queries": 2,
        "recall_at_1": 0.0,
        "recall_at_2": 0.5,
        "recall_at_10": 0.5,
        "found": 1,
        "localised": 1,
        "centre_in_box": 1.0,
        "mean_iou": 0.16,
    }


def test_default_coco_small_is_found():
    assert default_coco_small() is None or (default_coco_small() / "instances.json").is_file()
