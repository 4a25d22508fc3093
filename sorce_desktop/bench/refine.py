"""Refinement: added latency per hit and per screenful, box shrink, and whether re-ranking helps.

Real photos from coco-small, a randomly initialised model of the default's real size (a random model
costs what the trained one costs). Quality is measured where the answer is known: a crop of a real
object from another photo is pasted into one photo of a screenful at a random place and searched for
as an image query; the bench reports how well each strategy's refined box outlines it (IoU) and
whether ranking by the refined score puts that photo higher than ranking by the tile score.
Random weights say little about retrieval quality, so the quality figures are for this protocol only.

Each strategy is timed with every indexing speed profile asked for (``--speeds``; refinement runs
through the embedder the app loaded, so with the app's default profile, "fast", the vision tower is
int8) and every screenful schedule (``--schedules``): one hit after another, all hits level by level
in shared batches, or the top hit alone first and then the others level by level.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sorce_desktop.core.jsonout import print_json

if TYPE_CHECKING:
    from sorce_desktop.core.regions import Box

#: Strategies compared (RefineStrategy fields). "screen" is the default the GUI uses for a screenful.
PRESETS: dict[str, dict | str] = {
    "screen": {},  # RefineStrategy() defaults
    "screen-g2-32": dict(grid=2, zoom=0.6, margin=0.15, max_steps=2, polish=0, input_side=32),
    "screen-g2-48": dict(grid=2, zoom=0.6, margin=0.15, max_steps=2, polish=0, input_side=48),
    "screen-g2-64": dict(grid=2, zoom=0.6, margin=0.15, max_steps=2, polish=0, input_side=64),
    "screen-g3-64": dict(grid=3, zoom=0.6, margin=0.25, max_steps=3, polish=2, input_side=64),
    "detail": "DETAIL",  # DETAIL_STRATEGY: one photo opened
}


def _sequential(refiner, hits, q, **kw) -> list:
    """One hit after another, in list order, each hit's steps its own batches."""
    from sorce_desktop.core.search.refine import RefineRun

    with RefineRun(refiner, hits, q, **kw) as run:
        run.one_by_one(run.from_cache())
        return run.out


def _together(refiner, hits, q, **kw) -> list:
    """Every hit level by level in shared batches, the top hit too."""
    from sorce_desktop.core.search.refine import RefineRun

    with RefineRun(refiner, hits, q, **kw) as run:
        run.level_by_level(run.from_cache())
        return run.out


def _lead1(refiner, hits, q, **kw) -> list:
    """The product's (core.refine.refine_hits): the top hit alone first, then the others level by level."""
    from sorce_desktop.core.search.refine import refine_hits

    return refine_hits(refiner, hits, q, **kw)


#: How a screenful is scheduled: each takes refine_hits' arguments.
SCHEDULES: dict[str, Callable[..., list]] = {
    "sequential": _sequential,
    "together": _together,
    "lead1": _lead1,
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
    p.add_argument(
        "--speeds",
        default="fast,thorough",
        help="indexing speed profiles the embedder is loaded with (the app's default first: 'fast' = int8)",
    )
    p.add_argument(
        "--schedules",
        default="sequential,together,lead1",
        help=f"how a screenful is scheduled, comma-separated, from: {', '.join(SCHEDULES)}",
    )
    p.add_argument("--detail-hits", type=int, default=1, help="hits refined with 'detail' per query (slow)")
    p.add_argument("--patch-frac", type=float, default=0.15, help="pasted object side / photo short side")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def _strategy(name: str):
    from sorce_desktop.core.search.refine import DETAIL_STRATEGY, RefineStrategy

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


def _names(arg: str, known: dict, what: str) -> list[str]:
    names = [s.strip() for s in arg.split(",") if s.strip()]
    for n in names:
        if n not in known:
            raise ValueError(f"unknown {what} {n!r}; known: {', '.join(known)}")
    return names


#: What is measured per (strategy, schedule), one value per query or per hit.
_KEYS = ("screen_s", "first_s", "hit_s", "iou", "tile_iou", "shrink", "rank_tile", "rank_refined", "crops")


@dataclass
class _Query:
    """One screenful searched for a pasted object: the hits as the index ranks them."""

    target: int  # the photo the object was pasted into (its photo_id)
    true_box: Box  # where the object was pasted
    vector: np.ndarray
    hits: list
    rank_tile: int  # the target's rank by tile score (1 = first)


def _index_screenful(embedder, pool: list[Path], layout) -> tuple[list, list, float]:
    """The screenful's photos as the index sees them (decoded, their tiles' regions), and the rate."""
    from sorce_desktop.core.photos.images import load_image

    t = time.perf_counter()
    decoded = [load_image(p, embedder.decode_min_side(layout)) for p in pool]
    regions = [embedder.embed_photos([d], layout)[0] for d in decoded]
    return decoded, regions, round(sum(len(r) for r in regions) / (time.perf_counter() - t), 2)


def _warm_up(refiners: dict, pool: list[Path], decoded: list, regions: list) -> None:
    """The first forward at a new input side costs more: run one refinement per strategy first."""
    from sorce_desktop.core.search.answer import PhotoHit

    d = decoded[0]
    for refiner in refiners.values():
        refiner.refine(
            PhotoHit(str(pool[0]), 0.0, regions[0][1].box, "warm", 0, d.width, d.height), regions[0][0].vector
        )


def _pasted_query(embedder, layout, obj, place, target: int, path: Path, pool, decoded, regions) -> _Query:
    """Paste ``obj`` at ``place`` (width, height, x, y) into the target photo, save it to ``path``,
    and rank the screenful for the object as an image query, the target with its new tiles."""
    from sorce_desktop.core.photos.images import DecodedImage
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import PhotoHit

    img = decoded[target].image.copy()
    W, H = img.size
    pw, ph, x, y = place
    patch = obj.resize((pw, ph))
    img.paste(patch, (x, y))
    img.save(path)
    target_regions = embedder.embed_photos([DecodedImage(img, W, H)], layout)[0]
    q = embedder.embed_image_query(patch)
    hits = []
    for i, p in enumerate(pool):
        rs = target_regions if i == target else regions[i]
        scores = [float(r.vector @ q) for r in rs]
        best = int(np.argmax(scores))
        d = decoded[i]
        hits.append(
            PhotoHit(
                str(path if i == target else p),
                scores[best],
                rs[best].box,
                rs[best].name,
                i,
                d.width,
                d.height,
            )
        )
    hits.sort(key=lambda h: -h.score)
    rank_tile = next(k for k, h in enumerate(hits) if h.photo_id == target) + 1
    return _Query(target, Box(x, y, x + pw, y + ph), q, hits, rank_tile)


def _place(obj, size: tuple[int, int], patch_frac: float, rng) -> tuple[int, int, int, int]:
    """Where an object goes in a photo of ``size``: (width, height, x, y), its side a share of the
    photo's short side."""
    W, H = size
    side = max(16, int(patch_frac * min(W, H)))
    scale = side / max(obj.size)
    pw, ph = max(1, round(obj.width * scale)), max(1, round(obj.height * scale))
    return (pw, ph, int(rng.integers(0, W - pw)), int(rng.integers(0, H - ph)))


def _measure(refiner, schedule: str, hits: list, query: _Query, m: dict[str, list], rerank: bool) -> None:
    """Refine ``hits`` with one schedule and add its timings and quality to ``m``."""
    from sorce_desktop.core.search.refine import rerank_by_refined

    mine = [replace(h, refined_box=None, refined_score=None) for h in hits]
    # The first outline the user sees tighten: the top hit's first step (or its final box when the
    # tile was already the best), timed inside the screenful run.
    first: list[float] = []
    t0 = time.perf_counter()

    def seen(i, _h, _r) -> None:
        if i == 0 and not first:
            first.append(time.perf_counter() - t0)

    results = SCHEDULES[schedule](
        refiner, mine, query.vector, cancel=threading.Event(), on_step=seen, on_result=seen
    )
    wall = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    m["screen_s"].append(wall)
    m["hit_s"].append(wall / max(1, len(done)))
    m["crops"] += [r.crops for r in done]
    m["first_s"].append(first[0] if first else wall)
    for h, r in zip(mine, results):
        if r is None:
            continue
        m["shrink"].append(r.shrink)
        if h.photo_id == query.target:
            m["iou"].append(r.box.iou(query.true_box))
            m["tile_iou"].append(r.tile_box.iou(query.true_box))
    if rerank:
        reranked = rerank_by_refined(mine)
        m["rank_tile"].append(query.rank_tile)
        m["rank_refined"].append(next(k for k, h in enumerate(reranked) if h.photo_id == query.target) + 1)


def _refine_query(refiners: dict, schedules: list[str], query: _Query, per: dict, detail_hits: int) -> None:
    """Every strategy with every schedule on one query ("detail": the target and a few others, one by one)."""
    hits = query.hits
    for n, refiner in refiners.items():
        detail = n == "detail"
        todo = hits
        if detail:
            todo = [h for h in hits if h.photo_id == query.target]
            todo += [h for h in hits if h.photo_id != query.target][: max(0, detail_hits - 1)]
        for sched in ["alone"] if detail else schedules:
            m = per.setdefault((n, sched), {k: [] for k in _KEYS})
            _measure(refiner, "sequential" if detail else sched, todo, query, m, rerank=not detail)


def _med(v, scale=1.0, nd=4):
    return round(scale * statistics.median(v), nd) if v else None


def _row(speed: str, variant: str, name: str, schedule: str, strategy, m: dict[str, list]) -> dict:
    """One report row: a strategy with a schedule, at one speed profile."""
    from sorce_desktop.core.models.speed import DEFAULT_SPEED

    detail = name == "detail"
    entry = {
        "speed": speed,
        "variant": variant,
        "app_default_speed": speed == DEFAULT_SPEED,
        "strategy_name": name,
        "schedule": schedule,
        "strategy": dict(asdict(strategy)),
        "per_hit_ms_median": _med(m["hit_s"], 1000, 1),
        "crops_per_hit_median": _med(m["crops"]),
        "screen_s_median": None if detail else _med(m["screen_s"]),
        "first_outline_ms_median": _med(m["first_s"], 1000, 1),
        "area_shrink_median": _med(m["shrink"]),
        "target_iou_refined_median": _med(m["iou"]),
        "target_iou_tile_median": _med(m["tile_iou"]),
    }
    if m["rank_tile"]:
        entry.update(
            target_rank_by_tile_mean=round(float(np.mean(m["rank_tile"])), 2),
            target_rank_reranked_mean=round(float(np.mean(m["rank_refined"])), 2),
            rerank_top1_tile=sum(r == 1 for r in m["rank_tile"]),
            rerank_top1_reranked=sum(r == 1 for r in m["rank_refined"]),
            rerank_helps=bool(np.mean(m["rank_refined"]) < np.mean(m["rank_tile"])),
        )
    entry["meets_targets"] = (
        None
        if detail
        else bool(
            entry["screen_s_median"] is not None
            and entry["screen_s_median"] <= 2.0
            and entry["first_outline_ms_median"] is not None
            and entry["first_outline_ms_median"] <= 300
        )
    )
    return entry


def run(args) -> int:
    import torch

    from sorce_desktop.bench.datasets import coco_small_dir
    from sorce_desktop.bench.synthetic_models import DEFAULT_SPEC, cache_dir, synthetic_model
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.models.speed import DEFAULT_SPEED, get_speed
    from sorce_desktop.core.regions import get_layout
    from sorce_desktop.core.search.refine import Refiner

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    spec = args.spec or DEFAULT_SPEC
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"model: random {spec} (building it the first time writes ~1.5 GB)")
    folder = synthetic_model(spec, cache_dir(args.cache_dir))
    names = _names(args.strategies, PRESETS, "strategy")
    schedules = _names(args.schedules, SCHEDULES, "schedule")
    speeds = [s.strip() for s in args.speeds.split(",") if s.strip()]
    for sp in speeds:
        get_speed(sp)  # unknown names fail here, before any work
    layout = get_layout("grid3")
    coco = coco_small_dir()
    photos = sorted((coco / "images").glob("*.jpg"))
    pool = [photos[int(i)] for i in rng.choice(len(photos), size=args.hits, replace=False)]
    objects = _object_crops(coco, {p.name for p in pool}, args.queries, rng)
    places: dict[int, tuple[int, int, int, int]] = {}  # where each object goes (same for every profile)
    tmp = Path(tempfile.mkdtemp(prefix="sorce-bench-refine-"))
    rows: list[dict] = []
    index_rates: dict[str, float] = {}

    for sp in speeds:
        embedder = DualEncoderEmbedder(folder, model_id=spec, speed=get_speed(sp))
        refiners = {n: Refiner(embedder, _strategy(n)) for n in names}
        log(f"[{sp}: {embedder.variant()}] embedding the tiles of {len(pool)} photos ...")
        decoded, regions, index_rates[sp] = _index_screenful(embedder, pool, layout)
        _warm_up(refiners, pool, decoded, regions)
        per: dict[tuple[str, str], dict[str, list]] = {}
        for qi, obj in enumerate(objects):
            target = qi % len(pool)
            if qi not in places:
                places[qi] = _place(obj, decoded[target].image.size, args.patch_frac, rng)
            path = tmp / f"target_{sp}_{qi}.png"
            query = _pasted_query(embedder, layout, obj, places[qi], target, path, pool, decoded, regions)
            _refine_query(refiners, schedules, query, per, args.detail_hits)
            log(f"[{sp}] query {qi + 1}/{len(objects)} done")
        for (n, sched), m in per.items():
            rows.append(_row(sp, embedder.variant(), n, sched, refiners[n].strategy, m))
        del embedder, refiners

    report = {
        "machine": f"{torch.get_num_threads()} torch threads, CPU",
        "model": f"random {spec}",
        "app_default_speed": DEFAULT_SPEED,
        "hits_per_screen": args.hits,
        "queries": len(objects),
        "index_crops_per_s": index_rates,
        "rows": rows,
    }
    if args.json:
        print_json(report)
    else:
        print(json.dumps(report, indent=2))
    return 0
