"""Region-layout analysis: how much of the model input a small object fills, per layout (no model).

For every small object of a COCO-format data set (box under ``--max-area`` of the photo, 1 % by
default) and every layout, find the region that holds it best: among the regions holding at least
half of the object's box, the one where the object fills the largest share of the region's *model
input*. The product feeds each region crop to the model letterboxed into a square (``dual.letterbox``:
scaled so its longest side fits, padded, never squashed), so an object part of area ``a`` inside a
region whose longest side is ``L`` fills ``a / L**2`` of the model input, whatever the input size.
The global view is the whole photo fed the same way. The gain of a layout for an object is its best
fill over its global fill: the effect the SORCE paper relies on (a 0.3 % object may fill 3 % of a
tile). Per layout we report the median and 10th-percentile gain, the share of small objects that
reach ``--reach`` (2 %) of some region's input, the embeddings per photo (the cost), and the share of
small objects that no tile holds whole (cut by tile borders).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sorce_desktop.core.jsonout import print_json
from sorce_desktop.core.regions import LAYOUTS, Box, GridScale, RegionLayout, get_layout

#: Sizes at which the cost of a layout is also given: 4:3 and 3:2 cameras, a 16:9 frame.
CAMERA_SIZES = {"4:3": (4000, 3000), "3:2": (6000, 4000), "16:9": (1920, 1080)}


def _candidate(name: str, *scales: GridScale) -> RegionLayout:
    return RegionLayout(name, "exploration candidate (bench layouts --candidates)", tuple(scales))


#: Layouts explored with ``--candidates`` beside the product's own: other overlaps, finer grids, square
#: tiles counted along the short side, two scales. Kept out of ``regions.LAYOUTS`` so the user's list
#: holds only the layouts worth choosing; the measurements that decided this are in docs/benchmarks.md.
CANDIDATES: dict[str, RegionLayout] = {
    c.name: c
    for c in (
        _candidate("grid5", GridScale(5)),
        _candidate("sq3", GridScale(3, square=True)),
        _candidate("sq3o10", GridScale(3, overlap=0.1, square=True)),
        _candidate("sq4", GridScale(4, square=True)),
        _candidate("cells3o10", GridScale(3, overlap=0.1, long=True)),
        _candidate("cells4o5", GridScale(4, overlap=0.05, long=True)),
        _candidate("cells4o15", GridScale(4, overlap=0.15, long=True)),
        _candidate("cells4o20", GridScale(4, overlap=0.2, long=True)),
        _candidate("cells4o25", GridScale(4, overlap=0.25, long=True)),
        _candidate("cells5", GridScale(5, long=True)),
        _candidate("cells5o10", GridScale(5, overlap=0.1, long=True)),
        _candidate("cells6", GridScale(6, long=True)),
        _candidate("c2+c3", GridScale(2, overlap=0.1, long=True), GridScale(3, long=True)),
        _candidate("c2+c4o10", GridScale(2, overlap=0.1, long=True), GridScale(4, overlap=0.1, long=True)),
        _candidate("c3+c4", GridScale(3, long=True), GridScale(4, long=True)),
        _candidate(
            "t2+t3o10", GridScale(2, overlap=0.1, square=True), GridScale(3, overlap=0.1, square=True)
        ),
        _candidate(
            "t2+t3o50", GridScale(2, overlap=0.5, square=True), GridScale(3, overlap=0.5, square=True)
        ),
    )
}


def find_layout(name: str) -> RegionLayout:
    return CANDIDATES[name] if name in CANDIDATES else get_layout(name)


def default_coco_small() -> Path | None:
    """../shared/datasets/coco-small beside the checkout (or $SORCE_COCO_SMALL), if it is there."""
    env = os.environ.get("SORCE_COCO_SMALL")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "datasets" / "coco-small")
    return next((c for c in candidates if (c / "instances.json").is_file()), None)


@dataclass(frozen=True)
class SmallObject:
    image_id: int
    width: int  # of the photo
    height: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels
    category: str

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass
class CocoSet:
    photos: dict[int, tuple[int, int]]  # image id -> (width, height)
    small: list[SmallObject]
    annotations: int
    max_area: float = 0.01


def load_coco(instances: str | os.PathLike, max_area: float = 0.01) -> CocoSet:
    """Photos and the small objects of a COCO ``instances.json`` (crowd and empty boxes skipped)."""
    data = json.loads(Path(instances).read_text())
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    photos = {int(im["id"]): (int(im["width"]), int(im["height"])) for im in data["images"]}
    small = []
    for a in data["annotations"]:
        if a.get("iscrowd") or a["image_id"] not in photos:
            continue
        w, h = photos[a["image_id"]]
        x, y, bw, bh = (float(v) for v in a["bbox"])
        if bw <= 0 or bh <= 0:
            continue
        if bw * bh < max_area * w * h:
            box = (max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh))
            small.append(SmallObject(int(a["image_id"]), w, h, box, cats.get(a["category_id"], "?")))
    return CocoSet(photos, small, len(data["annotations"]), max_area)


# -- the geometry --------------------------------------------------------------------------------------
def inside_area(box: Sequence[float], region: Box) -> float:
    """Area of ``box`` (floats, x0 y0 x1 y1) that lies inside ``region``."""
    w = min(box[2], region.x1) - max(box[0], region.x0)
    h = min(box[3], region.y1) - max(box[1], region.y0)
    return max(0.0, w) * max(0.0, h)


def input_fill(area_inside: float, region: Box) -> float:
    """Share of the letterboxed square model input that ``area_inside`` pixels of ``region`` cover:
    the crop is scaled by ``side / max(w, h)``, so the share is ``area / max(w, h)**2`` at any side."""
    longest = max(region.width, region.height)
    return area_inside / float(longest * longest)


def holds_whole(box: Sequence[float], region: Box) -> bool:
    return region.x0 <= box[0] and region.y0 <= box[1] and box[2] <= region.x1 and box[3] <= region.y1


@dataclass
class ObjectResult:
    global_fill: float
    best_fill: float
    best_region: int  # index into the layout's regions (0 = global)
    best_inside: float  # area of the object inside the best region, pixels
    best_longest: int  # longest side of the best region, pixels
    whole_in_a_tile: bool  # some region other than the whole photo holds the box entirely

    @property
    def gain(self) -> float:
        return self.best_fill / self.global_fill if self.global_fill > 0 else 1.0


def best_region(obj: SmallObject, regions: Sequence[Box], min_inside: float = 0.5) -> ObjectResult:
    """The region where ``obj`` fills the most of the model input, among those holding at least
    ``min_inside`` of it. ``regions[0]`` must be the whole photo (it always qualifies)."""
    area = obj.area
    g = input_fill(area, regions[0])
    best = (g, 0, area, max(regions[0].width, regions[0].height))
    whole = False
    for i, r in enumerate(regions[1:], start=1):
        inside = inside_area(obj.box, r)
        if inside <= 0:
            continue
        if holds_whole(obj.box, r):
            whole = True
        if inside < min_inside * area:
            continue
        f = input_fill(inside, r)
        if f > best[0]:
            best = (f, i, inside, max(r.width, r.height))
    return ObjectResult(g, best[0], best[1], best[2], best[3], whole)


@dataclass
class LayoutStats:
    layout: str
    description: str
    embeddings_per_photo: float  # mean over the data set's photos
    embeddings_by_camera: dict[str, int]
    objects: int
    median_gain: float
    p10_gain: float
    mean_gain: float
    reach_share: float  # share of small objects filling >= reach of some region's input
    global_reach_share: float  # the same with the whole photo only
    cut_share: float | None  # share of small objects no tile holds whole (None: no tiles)
    median_input_px: float  # the object's side in the model input at input_size, median
    median_detail_px: float  # the same, capped by the source pixels (upscaling adds no detail)
    qualifies: bool = False
    gain_per_embedding: float = 0.0
    extra: dict = field(default_factory=dict)


def analyse_layout(
    layout: RegionLayout,
    data: CocoSet,
    *,
    reach: float = 0.02,
    min_inside: float = 0.5,
    input_size: int = 256,
) -> LayoutStats:
    cache: dict[tuple[int, int], list[Box]] = {}

    def regions_of(w: int, h: int) -> list[Box]:
        if (w, h) not in cache:
            cache[(w, h)] = [r.box for r in layout.regions(w, h)]
        return cache[(w, h)]

    counts = [len(regions_of(w, h)) for w, h in data.photos.values()]
    results = [best_region(o, regions_of(o.width, o.height), min_inside) for o in data.small]
    gains = np.array([r.gain for r in results]) if results else np.zeros(1)
    has_tiles = any(n > 1 for n in counts)
    input_px = np.array([math.sqrt(r.best_fill) * input_size for r in results] or [0.0])
    # Real detail: a region smaller than the input is upscaled, which magnifies but adds nothing.
    detail_px = np.array(
        [math.sqrt(r.best_inside) * min(1.0, input_size / r.best_longest) for r in results] or [0.0]
    )
    n = max(1, len(results))
    return LayoutStats(
        layout=layout.name,
        description=layout.description,
        embeddings_per_photo=float(np.mean(counts)) if counts else 0.0,
        embeddings_by_camera={k: layout.count(w, h) for k, (w, h) in CAMERA_SIZES.items()},
        objects=len(results),
        median_gain=float(np.median(gains)),
        p10_gain=float(np.percentile(gains, 10)),
        mean_gain=float(np.mean(gains)),
        reach_share=sum(r.best_fill >= reach for r in results) / n,
        global_reach_share=sum(r.global_fill >= reach for r in results) / n,
        cut_share=(sum(not r.whole_in_a_tile for r in results) / n) if has_tiles else None,
        median_input_px=float(np.median(input_px)),
        median_detail_px=float(np.median(detail_px)),
    )


def analyse(
    layouts: Sequence[RegionLayout],
    data: CocoSet,
    *,
    min_gain: float = 9.0,
    reach: float = 0.02,
    min_inside: float = 0.5,
    input_size: int = 256,
) -> dict:
    stats = [
        analyse_layout(lay, data, reach=reach, min_inside=min_inside, input_size=input_size)
        for lay in layouts
    ]
    for s in stats:
        s.qualifies = s.median_gain >= min_gain
        s.gain_per_embedding = s.median_gain / s.embeddings_per_photo if s.embeddings_per_photo else 0.0
    qualifying = [s for s in stats if s.qualifies]
    # Cheapest: fewest embeddings per photo on the data set (rounded to 0.01, so layouts that differ
    # only in overlap tie); a tie goes to the higher 10th-percentile gain, the worst-served decile
    # (objects cut by tile borders land there), then to the higher median.
    cheapest = min(
        qualifying,
        key=lambda s: (round(s.embeddings_per_photo, 2), -s.p10_gain, -s.median_gain),
        default=None,
    )
    return {
        "photos": len(data.photos),
        "annotations": data.annotations,
        "small_objects": len(data.small),
        "max_area": data.max_area,
        "min_gain": min_gain,
        "reach": reach,
        "min_inside": min_inside,
        "input_size": input_size,
        "layouts": [asdict(s) for s in stats],
        "qualifying": [s.layout for s in qualifying],
        "cheapest_qualifying": cheapest.layout if cheapest else None,
    }


# -- output --------------------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    head = (
        f"{'layout':<10} {'emb/photo':>9} {'4:3':>4} {'3:2':>4} {'16:9':>5} {'median':>7} {'p10':>6} "
        f"{'reach':>6} {'cut':>6} {'px@in':>6} {'detail':>6}  ok"
    )
    lines = [head, "-" * len(head)]
    for s in result["layouts"]:
        cam = s["embeddings_by_camera"]
        cut = "-" if s["cut_share"] is None else f"{s['cut_share'] * 100:5.1f}%"
        mark = "yes" if s["qualifies"] else ""
        if s["layout"] == result["cheapest_qualifying"]:
            mark = "yes, cheapest"
        lines.append(
            f"{s['layout']:<10} {s['embeddings_per_photo']:9.2f} {cam['4:3']:4d} {cam['3:2']:4d} "
            f"{cam['16:9']:5d} {s['median_gain']:6.2f}x {s['p10_gain']:5.2f}x "
            f"{s['reach_share'] * 100:5.1f}% {cut:>6} {s['median_input_px']:6.1f} "
            f"{s['median_detail_px']:6.1f}  {mark}"
        )
    lines.append("")
    lines.append(
        f"{result['small_objects']} small objects (box < {result['max_area'] * 100:g}% of the photo) in "
        f"{result['photos']} photos. gain = best region's input fill / global view's input fill; "
        f"reach = share reaching {result['reach'] * 100:g}% of some region's input; "
        f"cut = share no tile holds whole; px@in / detail = median object side in model-input pixels "
        f"at {result['input_size']} px / the same capped by the source's pixels. "
        f"ok = median gain >= {result['min_gain']:g}x."
    )
    return "\n".join(lines)


def plot(result: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    rows = sorted(result["layouts"], key=lambda s: (round(s["embeddings_per_photo"], 1), -s["median_gain"]))
    column: dict[float, int] = {}
    for s in rows:
        x, y, lo = s["embeddings_per_photo"], s["median_gain"], s["p10_gain"]
        colour = "tab:green" if s["qualifies"] else "tab:blue"
        if s["layout"] == result["cheapest_qualifying"]:
            colour = "tab:red"
        candidate = s["layout"] in CANDIDATES
        ax.errorbar(
            x, y, yerr=[[y - lo], [0]], fmt="o", color=colour, capsize=3, mfc="white" if candidate else colour
        )
        # Layouts of equal cost share a column: alternate their labels left and right of it.
        k = column.get(round(x, 1), 0)
        column[round(x, 1)] = k + 1
        right = k % 2 == 0
        ax.annotate(
            s["layout"],
            (x, y),
            textcoords="offset points",
            xytext=(6 if right else -6, 2),
            ha="left" if right else "right",
            fontsize=7 if candidate else 8.5,
            fontweight="normal" if candidate else "bold",
        )
    ax.axhline(result["min_gain"], color="grey", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], result["min_gain"], f" {result['min_gain']:g}x goal", va="bottom", fontsize=8)
    ax.set_xlabel("embeddings per photo (cost), mean over the data set")
    ax.set_ylabel("small-object gain over the global view (median; bar down to p10)")
    ax.set_yscale("log")
    ax.set_title(
        f"Region layouts on {result['photos']} photos, {result['small_objects']} objects under "
        f"{result['max_area'] * 100:g}% of the photo",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.text(
        0.99,
        0.02,
        "red: cheapest layout reaching the goal; green: reaches it; blue: below it\n"
        "filled, bold: product layouts; hollow: exploration candidates (--candidates)",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=7.5,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- command -------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument(
        "--dataset",
        metavar="DIR",
        help="COCO-format folder with instances.json (default: ../shared/datasets/coco-small "
        "beside the checkout, or $SORCE_COCO_SMALL)",
    )
    p.add_argument("--layouts", metavar="A,B,...", help="layouts to compare (default: all known layouts)")
    p.add_argument(
        "--candidates",
        action="store_true",
        help="also measure the exploration candidates (other overlaps, finer and two-scale tilings)",
    )
    p.add_argument("--max-area", type=float, default=0.01, help="small object: box under this share")
    p.add_argument("--reach", type=float, default=0.02, help="input share an object should reach")
    p.add_argument("--min-gain", type=float, default=9.0, help="median gain a layout must reach")
    p.add_argument("--min-inside", type=float, default=0.5, help="share of the object a region must hold")
    p.add_argument("--input-size", type=int, default=256, help="model input side for the pixel columns")
    p.add_argument(
        "--plot",
        metavar="PNG",
        default="layouts-gain-vs-cost.png",
        help="where to write the gain-against-cost plot (default: %(default)s; '' for none)",
    )


def run(args) -> int:
    folder = Path(args.dataset) if args.dataset else default_coco_small()
    if folder is None or not (folder / "instances.json").is_file():
        raise ValueError(
            "no COCO-format data set found: give --dataset DIR (a folder with instances.json), "
            "e.g. ../shared/datasets/coco-small"
        )
    names = [n.strip() for n in args.layouts.split(",") if n.strip()] if args.layouts else list(LAYOUTS)
    if args.candidates:
        names += [n for n in CANDIDATES if n not in names]
    # The global view is the baseline every gain is measured against: always the first row.
    names = ["global"] + [n for n in dict.fromkeys(names) if n != "global"]
    layouts = [find_layout(n) for n in names]
    data = load_coco(folder / "instances.json", args.max_area)
    if not data.small:
        raise ValueError(f"no objects under {args.max_area * 100:g}% of the photo in {folder}")
    result = analyse(
        layouts,
        data,
        min_gain=args.min_gain,
        reach=args.reach,
        min_inside=args.min_inside,
        input_size=args.input_size,
    )
    result["dataset"] = str(folder)
    if args.plot:
        plot(result, args.plot)
        result["plot"] = str(args.plot)
    if args.json:
        print_json(result)
    else:
        print(format_table(result))
        if args.plot:
            print(f"plot: {args.plot}", file=sys.stderr)
    return 0
