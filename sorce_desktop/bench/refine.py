"""Refinement: added latency per hit and per screenful, box shrink, and whether re-ranking helps.

Real photos from coco-small, a randomly initialised model of the default's real size (a random model
costs what the trained one costs). Quality is measured where the answer is known: a crop of a real
object from another photo is pasted into one photo of a screenful at a random place and searched for
as an image query; the bench reports how well each strategy's refined box outlines it (IoU) and
whether ranking by the refined score puts that photo higher than ranking by the tile score.
Random weights say little about retrieval quality, so the quality figures are for this protocol only.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

#: Strategies compared (RefineStrategy fields). "screen" is the default the GUI uses for a screenful.
PRESETS: dict[str, dict | str] = {
    "screen": {},  # RefineStrategy() defaults
    "screen-g2-32": dict(grid=2, zoom=0.6, margin=0.15, max_steps=2, polish=0, input_side=32),
    "screen-g2-48": dict(grid=2, zoom=0.6, margin=0.15, max_steps=2, polish=0, input_side=48),
    "screen-g2-64": dict(grid=2, zoom=0.6, margin=0.15, max_steps=2, polish=0, input_side=64),
    "screen-g3-64": dict(grid=3, zoom=0.6, margin=0.25, max_steps=3, polish=2, input_side=64),
    "detail": "DETAIL",  # DETAIL_STRATEGY: one photo opened
}


def add_arguments(p) -> None:
    p.add_argument("--spec", default=None, help="model architecture (default: the default model's)")
    p.add_argument("--cache-dir", default=None, help="where the random model is cached (~1.5 GB)")
    p.add_argument("--hits", type=int, default=24, help="hits per screenful")
    p.add_argument("--queries", type=int, default=4, help="pasted-patch queries (one screenful each)")
    p.add_argument(
        "--strategies",
        default="screen-g2-32,screen-g2-48,screen-g2-64,screen-g3-64,detail",
        help=f"comma-separated, from: {', '.join(PRESETS)}",
    )
    p.add_argument("--detail-hits", type=int, default=1, help="hits refined with 'detail' per query (slow)")
    p.add_argument("--patch-frac", type=float, default=0.15, help="pasted object side / photo short side")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def _strategy(name: str):
    from sorce_desktop.core.refine import DETAIL_STRATEGY, RefineStrategy

    preset = PRESETS[name]
    return DETAIL_STRATEGY if preset == "DETAIL" else replace(RefineStrategy(), **preset)


def _object_crops(coco: Path, exclude: set[str], n: int, rng) -> list:
    """Crops of real annotated objects (at least 64 px each way) from photos outside the screenful."""
    from PIL import Image

    meta = json.loads((coco / "instances.json").read_text())
    files = {im["id"]: im["file_name"] for im in meta["images"]}
    anns = [
        a
        for a in meta["annotations"]
        if not a.get("iscrowd")
        and a["bbox"][2] >= 64
        and a["bbox"][3] >= 64
        and files[a["image_id"]] not in exclude
    ]
    out = []
    for k in rng.choice(len(anns), size=n, replace=False):
        a = anns[int(k)]
        x, y, w, h = a["bbox"]
        with Image.open(coco / "images" / files[a["image_id"]]) as im:
            out.append(im.convert("RGB").crop((int(x), int(y), int(x + w), int(y + h))))
    return out


def run(args) -> int:
    import torch

    from sorce_desktop.bench.datasets import coco_small_dir
    from sorce_desktop.bench.synthetic_models import DEFAULT_SPEC, cache_dir, synthetic_model
    from sorce_desktop.core.images import load_image
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.refine import Refiner, refine_hits
    from sorce_desktop.core.regions import Box, get_layout
    from sorce_desktop.core.search import PhotoHit

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    spec = args.spec or DEFAULT_SPEC
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"model: random {spec} (building it the first time writes ~1.5 GB)")
    folder = synthetic_model(spec, cache_dir(args.cache_dir))
    embedder = DualEncoderEmbedder(folder, model_id=spec)
    layout = get_layout("grid3")
    coco = coco_small_dir()
    photos = sorted((coco / "images").glob("*.jpg"))
    pool = [photos[int(i)] for i in rng.choice(len(photos), size=args.hits, replace=False)]
    objects = _object_crops(coco, {p.name for p in pool}, args.queries, rng)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for n in names:
        if n not in PRESETS:
            raise ValueError(f"unknown strategy {n!r}; known: {', '.join(PRESETS)}")
    refiners = {n: Refiner(embedder, _strategy(n)) for n in names}

    # The screenful's photos as the index sees them (the grid3 tiles and their vectors), once.
    log(f"embedding the tiles of {len(pool)} photos ...")
    t = time.perf_counter()
    decoded = [load_image(p, embedder.decode_min_side(layout)) for p in pool]
    base_regions = [embedder.embed_photos([d], layout)[0] for d in decoded]
    index_s = time.perf_counter() - t

    tmp = Path(tempfile.mkdtemp(prefix="sorce-bench-refine-"))
    per: dict[str, dict[str, list]] = {
        n: {
            "hit_s": [],
            "screen_s": [],
            "first_s": [],
            "first_step_s": [],
            "iou": [],
            "tile_iou": [],
            "shrink": [],
            "rank_tile": [],
            "rank_refined": [],
            "crops": [],
        }
        for n in names
    }
    for qi, obj in enumerate(objects):
        target = qi % len(pool)
        img = decoded[target].image.copy()
        W, H = img.size
        side = max(16, int(args.patch_frac * min(W, H)))
        scale = side / max(obj.size)
        patch = obj.resize((max(1, round(obj.width * scale)), max(1, round(obj.height * scale))))
        x = int(rng.integers(0, W - patch.width))
        y = int(rng.integers(0, H - patch.height))
        img.paste(patch, (x, y))
        true_box = Box(x, y, x + patch.width, y + patch.height)
        path = tmp / f"target_{qi}.png"
        img.save(path)
        from sorce_desktop.core.images import DecodedImage

        target_regions = embedder.embed_photos([DecodedImage(img, W, H)], layout)[0]
        q = embedder.embed_image_query(patch)
        hits = []
        for i, p in enumerate(pool):
            regions = target_regions if i == target else base_regions[i]
            scores = [float(r.vector @ q) for r in regions]
            best = int(np.argmax(scores))
            d = decoded[i]
            hits.append(
                PhotoHit(
                    str(path if i == target else p),
                    scores[best],
                    regions[best].box,
                    regions[best].name,
                    i,
                    d.width,
                    d.height,
                )
            )
        hits.sort(key=lambda h: -h.score)
        rank_tile = next(k for k, h in enumerate(hits) if h.photo_id == target) + 1
        for n, refiner in refiners.items():
            detail = n == "detail"
            todo = [h for h in hits if h.photo_id == target] if detail else hits
            if detail:
                todo += [h for h in hits if h.photo_id != target][: max(0, args.detail_hits - 1)]
            todo = [replace(h, refined_box=None, refined_score=None) for h in todo]
            # The first outline the user sees tighten: the first step of the first hit, on its own.
            first_step: list[float] = []
            t1 = time.perf_counter()

            def on_step(r, t1=t1, first_step=first_step):
                if not first_step:
                    first_step.append(time.perf_counter() - t1)

            first_alone = refiner.refine(todo[0], q, on_step=on_step).seconds
            t0 = time.perf_counter()
            results = refine_hits(refiner, todo, q, cancel=threading.Event())
            wall = time.perf_counter() - t0
            m = per[n]
            m["hit_s"] += [r.seconds for r in results if r is not None]
            m["crops"] += [r.crops for r in results if r is not None]
            m["first_s"].append(first_alone)
            m["first_step_s"].append(first_step[0] if first_step else first_alone)
            if not detail:
                m["screen_s"].append(wall)
            for h, r in zip(todo, results):
                if r is None:
                    continue
                m["shrink"].append(r.shrink)
                if h.photo_id == target:
                    m["iou"].append(r.box.iou(true_box))
                    m["tile_iou"].append(r.tile_box.iou(true_box))
            if not detail:
                from sorce_desktop.core.refine import rerank_by_refined

                reranked = rerank_by_refined(todo)
                m["rank_tile"].append(rank_tile)
                m["rank_refined"].append(next(k for k, h in enumerate(reranked) if h.photo_id == target) + 1)
        log(f"query {qi + 1}/{len(objects)} done")

    def med(v):
        return round(statistics.median(v), 4) if v else None

    report = {
        "machine": f"{torch.get_num_threads()} torch threads, CPU",
        "model": f"random {spec}",
        "hits_per_screen": args.hits,
        "queries": len(objects),
        "index_crops_per_s": round(len(pool) * len(base_regions[0]) / index_s, 2),
        "strategies": {},
    }
    for n in names:
        m = per[n]
        s = refiners[n].strategy
        entry = {
            "strategy": {k: v for k, v in asdict(s).items()},
            "hit_ms_median": None if not m["hit_s"] else round(1000 * statistics.median(m["hit_s"]), 1),
            "crops_per_hit_median": med(m["crops"]),
            "screen_s_median": med(m["screen_s"]),
            "first_outline_ms_median": None
            if not m["first_step_s"]
            else round(1000 * statistics.median(m["first_step_s"]), 1),
            "first_hit_ms_median": None
            if not m["first_s"]
            else round(1000 * statistics.median(m["first_s"]), 1),
            "area_shrink_median": med(m["shrink"]),
            "target_iou_refined_median": med(m["iou"]),
            "target_iou_tile_median": med(m["tile_iou"]),
        }
        if m["rank_tile"]:
            entry.update(
                target_rank_by_tile_mean=round(float(np.mean(m["rank_tile"])), 2),
                target_rank_reranked_mean=round(float(np.mean(m["rank_refined"])), 2),
                rerank_top1_tile=sum(r == 1 for r in m["rank_tile"]),
                rerank_top1_reranked=sum(r == 1 for r in m["rank_refined"]),
            )
            entry["rerank_helps"] = bool(np.mean(m["rank_refined"]) < np.mean(m["rank_tile"]))
        entry["meets_targets"] = (
            None
            if n == "detail"
            else bool(
                entry["screen_s_median"] is not None
                and entry["screen_s_median"] <= 2.0
                and entry["first_outline_ms_median"] is not None
                and entry["first_outline_ms_median"] <= 300
            )
        )
        report["strategies"][n] = entry
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0
