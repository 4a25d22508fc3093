"""Retrieval quality: Recall@1/5/10 and localisation on SORCE-1K or COCO-format data, per layout.

Everything goes through the product itself: for each region layout a fresh data folder (in a temporary
folder) gets the data set's images added as photo folders, the product's :class:`Indexer` embeds them,
and every query runs through the product's :class:`SearchService` (best region per photo), so the
figures are those a user of the app would get. The ``global`` layout (one embedding per photo) is
always measured in the same run with the same model, next to the others.

Data sets:

- SORCE-1K layout: ``dataset.jsonl`` (one record per query: image file name, caption, box of the small
  object) and the folders ``zoom_3x``, ``zoom_2x``, ``full_res`` holding each record's image at three
  difficulties (easy, medium, hard). All images of the three folders form one candidate pool; for a
  difficulty a query counts as found only when its own image of that difficulty is ranked.
- COCO format: ``instances.json`` and an images folder. One query per category that has a small object
  (box under ``--max-area`` of the photo), worded as the category name. ``any``: every photo holding
  the category counts as correct; ``small``: only photos where every instance of the category is small
  count (the SORCE case: the object is there, but small).

Localisation, over the queries found within the largest K: the share whose returned box (the hit's
best region, the first outline the app shows) contains the target box's centre, and the mean IoU of
returned and target box (for COCO, the best over the category's boxes in that photo).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sorce_desktop.bench import remember_folder
from sorce_desktop.core.jsonout import print_json
from sorce_desktop.core.regions import DEFAULT_LAYOUT, Box, RegionLayout, get_layout

#: SORCE-1K folders by difficulty, easiest first (the target is larger in a zoomed image).
SORCE_DIFFICULTIES = {"easy": "zoom_3x", "medium": "zoom_2x", "hard": "full_res"}
IMAGE_KEYS = ("image", "file_name", "image_path", "img", "filename", "image_name", "img_path")
CAPTION_KEYS = ("caption", "text", "query", "sentence", "description")
BOX_KEYS = ("bbox", "box")
DEFAULT_KS = (1, 5, 10)


class DatasetError(ValueError):
    """A data set that cannot be read, with the reason in words."""


@dataclass
class Target:
    """One photo that answers a query, with the object's boxes in ``frame`` coordinates (the image
    size they were given for; ``(1, 1)`` for boxes given as fractions), or no boxes if unknown."""

    path: str
    boxes: list[tuple[float, float, float, float]] | None = None
    frame: tuple[float, float] | None = None

    def boxes_in(self, width: int, height: int) -> list[Box]:
        """The boxes in the pixels of the photo as the product indexed it (``width`` x ``height``)."""
        if not self.boxes or not self.frame:
            return []
        sx, sy = width / self.frame[0], height / self.frame[1]
        return [Box.from_list((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)) for b in self.boxes]


@dataclass
class Query:
    text: str
    targets: dict[str, list[Target]]  # difficulty -> photos that count as found


@dataclass
class RetrievalSet:
    kind: str  # 'sorce' | 'coco'
    root: str
    folders: list[str]  # the photo folders that make the candidate pool
    difficulties: list[str]
    queries: list[Query]
    notes: list[str] = field(default_factory=list)


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(path)


def _first_key(record: dict, keys: Sequence[str], given: str | None, what: str, line: int) -> str:
    if given:
        if given not in record:
            raise DatasetError(f"record {line} has no {given!r} field for the {what}")
        return given
    for k in keys:
        if k in record:
            return k
    raise DatasetError(
        f"record {line} has none of the fields {', '.join(keys)} for the {what}; name it with --{what}-key"
    )


def _parse_box(value, fmt: str, line: int) -> tuple[float, float, float, float]:
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x0", "y0", "x1", "y1")] if "x0" in value else list(value.values())
    try:
        a, b, c, d = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DatasetError(f"record {line}: cannot read the box {value!r} (want 4 numbers)") from None
    if fmt == "xywh":
        c, d = a + c, b + d
    if c <= a or d <= b:
        raise DatasetError(f"record {line}: the box {value!r} is empty as {fmt}; see --box-format")
    return (a, b, c, d)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    from sorce_desktop.core.photos.images import upright_size

    with Image.open(path) as img:
        return upright_size(img)


def _read_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array instead of JSON lines
        return list(json.loads(stripped))
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise DatasetError(f"{path.name} line {i} is not JSON ({exc})") from None
    return records


def load_sorce(
    root: str | os.PathLike,
    *,
    jsonl: str | os.PathLike | None = None,
    image_key: str | None = None,
    caption_key: str | None = None,
    box_key: str | None = None,
    box_format: str = "xyxy",
    limit: int | None = None,
) -> RetrievalSet:
    """Read the SORCE-1K layout. The box is in the pixels of the ``full_res`` image (or fractions of
    it when all four numbers are at most 1). A zoomed image's box is known only when the record gives
    it as ``<box key>_<folder>`` (e.g. ``bbox_zoom_3x``); otherwise localisation is not measured for
    that difficulty (its recall still is)."""
    root = Path(root)
    path = Path(jsonl) if jsonl else root / "dataset.jsonl"
    if not path.is_file():
        raise DatasetError(f"no {path.name} in {root}: not the SORCE-1K layout")
    folders = {d: root / sub for d, sub in SORCE_DIFFICULTIES.items() if (root / sub).is_dir()}
    if not folders:
        raise DatasetError(f"none of the folders {', '.join(SORCE_DIFFICULTIES.values())} is in {root}")
    rs = RetrievalSet("sorce", str(root), [str(f) for f in folders.values()], list(folders), [])
    missing_dirs = [sub for d, sub in SORCE_DIFFICULTIES.items() if d not in folders]
    if missing_dirs:
        rs.notes.append(f"missing folders (difficulties not measured): {', '.join(missing_dirs)}")
    records = _read_records(path)
    if limit:
        records = records[:limit]
    missing = 0
    no_box = {d: 0 for d in folders}
    for i, rec in enumerate(records, 1):
        ik = _first_key(rec, IMAGE_KEYS, image_key, "image", i)
        ck = _first_key(rec, CAPTION_KEYS, caption_key, "caption", i)
        bk = box_key or next((k for k in BOX_KEYS if k in rec), None)
        name = os.path.basename(str(rec[ik]).replace("\\", "/"))
        targets: dict[str, list[Target]] = {}
        for d, folder in folders.items():
            img = folder / name
            if not img.is_file():
                missing += 1
                continue
            boxes, frame = None, None
            own = f"{bk}_{folder.name}" if bk else None
            raw = rec.get(own) if own else None
            if raw is None and bk and folder.name == SORCE_DIFFICULTIES["hard"]:
                raw = rec.get(bk)
            if raw is not None:
                box = _parse_box(raw, box_format, i)
                frame = (1.0, 1.0) if max(box) <= 1.0 else _image_size(img)
                boxes = [box]
            else:
                no_box[d] += 1
            targets[d] = [Target(_real(img), boxes, frame)]
        if targets:
            rs.queries.append(Query(str(rec[ck]), targets))
    if missing:
        rs.notes.append(f"{missing} record images not found in their folders (those pairs are skipped)")
    for d, n in no_box.items():
        if n:
            rs.notes.append(f"{d}: {n} records give no box for {folders[d].name} (no localisation for them)")
    if not rs.queries:
        raise DatasetError(
            f"no record of {path} has its image in {', '.join(str(f) for f in folders.values())}"
        )
    return rs


def load_coco_set(
    root: str | os.PathLike,
    *,
    instances: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    max_area: float = 0.01,
    limit: int | None = None,
) -> RetrievalSet:
    """Queries from a COCO ``instances.json``: one per category with a small object (see the module)."""
    root = Path(root)
    inst = Path(instances) if instances else root / "instances.json"
    if not inst.is_file():
        raise DatasetError(f"no {inst.name} in {root}: not a COCO-format folder")
    image_dir = Path(images) if images else (root / "images" if (root / "images").is_dir() else root)
    data = json.loads(inst.read_text())
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    photos = {}
    for im in data["images"]:
        p = image_dir / im["file_name"]
        if p.is_file():
            photos[im["id"]] = (p, int(im["width"]), int(im["height"]))
    by_cat: dict[int, dict[int, list]] = {}
    for a in data["annotations"]:
        if a.get("iscrowd") or a["image_id"] not in photos or a["bbox"][2] <= 0 or a["bbox"][3] <= 0:
            continue
        by_cat.setdefault(a["category_id"], {}).setdefault(a["image_id"], []).append(a["bbox"])
    rs = RetrievalSet("coco", str(root), [str(image_dir)], ["any", "small"], [])
    for cid in sorted(by_cat, key=lambda c: cats.get(c, str(c))):
        per_image = by_cat[cid]
        any_t, small_t = [], []
        for iid, boxes in per_image.items():
            p, w, h = photos[iid]
            xyxy = [(x, y, x + bw, y + bh) for x, y, bw, bh in boxes]
            t = Target(_real(p), xyxy, (float(w), float(h)))
            any_t.append(t)
            if all(bw * bh < max_area * w * h for _, _, bw, bh in boxes):
                small_t.append(t)
        if not small_t:
            continue  # no small object of this category: not a SORCE query
        rs.queries.append(Query(cats.get(cid, str(cid)), {"any": any_t, "small": small_t}))
    if limit:
        rs.queries = rs.queries[:limit]
    if len(photos) < len(data["images"]):
        rs.notes.append(f"{len(data['images']) - len(photos)} images of {inst.name} not found in {image_dir}")
    if not rs.queries:
        raise DatasetError(f"no category of {inst} has an object under {max_area * 100:g}% of its photo")
    return rs


def load_dataset(path: str | os.PathLike, fmt: str = "auto", **kw) -> RetrievalSet:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"the data set {path} does not exist")
    if fmt == "auto":
        if path.is_file() and path.suffix == ".jsonl":
            fmt, kw["jsonl"], path = "sorce", path, path.parent
        elif path.is_file() and path.suffix == ".json":
            fmt, kw["instances"], path = "coco", path, path.parent
        elif (path / "dataset.jsonl").is_file():
            fmt = "sorce"
        elif (path / "instances.json").is_file():
            fmt = "coco"
        else:
            raise DatasetError(f"{path} holds neither dataset.jsonl (SORCE-1K) nor instances.json (COCO)")
    sorce_keys = ("jsonl", "image_key", "caption_key", "box_key", "box_format", "limit")
    coco_keys = ("instances", "images", "max_area", "limit")
    if fmt == "sorce":
        return load_sorce(path, **{k: v for k, v in kw.items() if k in sorce_keys})
    if fmt == "coco":
        return load_coco_set(path, **{k: v for k, v in kw.items() if k in coco_keys})
    raise DatasetError(f"unknown data set format {fmt!r}")


def make_sorce_like(
    coco: str | os.PathLike, out: str | os.PathLike, n: int = 8, max_area: float = 0.01
) -> Path:
    """Write a small data set in the SORCE-1K layout from COCO photos, to exercise the harness where
    the real SORCE-1K is not available: the first ``n`` photos with a small object that is the only
    one of its category there; caption = the category name; ``full_res`` = the photo, ``zoom_2x`` and
    ``zoom_3x`` = a 1/2 and 1/3 crop centred on the object (clamped to the photo), enlarged back to
    the photo's size. Each record gives the box in all three (``bbox``, ``bbox_zoom_2x``, ...)."""
    from PIL import Image

    coco, out = Path(coco), Path(out)
    data = json.loads((coco / "instances.json").read_text())
    cats = {c["id"]: c["name"] for c in data["categories"]}
    images = {im["id"]: im for im in data["images"]}
    per_image: dict[int, dict[int, list]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd"):
            per_image.setdefault(a["image_id"], {}).setdefault(a["category_id"], []).append(a["bbox"])
    records = []
    for iid in sorted(per_image):
        im = images[iid]
        w, h = im["width"], im["height"]
        single = [
            (cid, boxes[0])
            for cid, boxes in sorted(per_image[iid].items())
            if len(boxes) == 1 and 0 < boxes[0][2] * boxes[0][3] < max_area * w * h
        ]
        if not single or not (coco / "images" / im["file_name"]).is_file():
            continue
        cid, (x, y, bw, bh) = single[0]
        records.append((im, cats[cid], (x, y, x + bw, y + bh)))
        if len(records) >= n:
            break
    for sub in SORCE_DIFFICULTIES.values():
        (out / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for im, caption, box in records:
        src = coco / "images" / im["file_name"]
        with Image.open(src) as img:
            photo = img.convert("RGB")
        w, h = photo.size
        rec = {"image": im["file_name"], "caption": caption, "bbox": [round(v, 2) for v in box]}
        photo.save(out / "full_res" / im["file_name"], quality=92)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        for zoom, sub in ((2, "zoom_2x"), (3, "zoom_3x")):
            cw, ch = round(w / zoom), round(h / zoom)  # whole pixels, so the box maps exactly
            x0 = int(min(max(0, round(cx - cw / 2)), w - cw))
            y0 = int(min(max(0, round(cy - ch / 2)), h - ch))
            crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
            crop.save(out / sub / im["file_name"], quality=92)
            sx, sy = w / cw, h / ch
            zb = [
                max(0.0, (box[0] - x0) * sx),
                max(0.0, (box[1] - y0) * sy),
                min(float(w), (box[2] - x0) * sx),
                min(float(h), (box[3] - y0) * sy),
            ]
            rec[f"bbox_{sub}"] = [round(v, 2) for v in zb]
        lines.append(json.dumps(rec))
    (out / "dataset.jsonl").write_text("\n".join(lines) + "\n")
    return out


# -- scoring -------------------------------------------------------------------------------------------
@dataclass
class DifficultyScore:
    queries: int = 0
    hits_at: dict[int, int] = field(default_factory=dict)
    found: int = 0  # found within the largest K
    localised: int = 0  # of those, with a target box to compare
    centre_in: int = 0
    iou_sum: float = 0.0

    def to_json(self, ks: Sequence[int]) -> dict:
        n = max(1, self.queries)
        out = {"queries": self.queries}
        for k in ks:
            out[f"recall_at_{k}"] = round(self.hits_at.get(k, 0) / n, 4) if self.queries else None
        out["found"] = self.found
        out["localised"] = self.localised
        out["centre_in_box"] = round(self.centre_in / self.localised, 4) if self.localised else None
        out["mean_iou"] = round(self.iou_sum / self.localised, 4) if self.localised else None
        return out


def score_hits(
    hits: Sequence, targets: Sequence[Target], ks: Sequence[int], score: DifficultyScore
) -> int | None:
    """Add one query's ranked hits (``PhotoHit``-like: path, box, width, height) to ``score``; returns
    the rank (0-based) of the first correct photo, or None when none is within the hits."""
    wanted = {t.path: t for t in targets}
    score.queries += 1
    rank = next((i for i, h in enumerate(hits) if _real(h.path) in wanted), None)
    if rank is None:
        return None
    for k in ks:
        if rank < k:
            score.hits_at[k] = score.hits_at.get(k, 0) + 1
    if rank < max(ks):
        score.found += 1
        hit = hits[rank]
        boxes = wanted[_real(hit.path)].boxes_in(hit.width, hit.height)
        if boxes:
            score.localised += 1
            score.centre_in += any(hit.box.contains_point(*b.center) for b in boxes)
            score.iou_sum += max(hit.box.iou(b) for b in boxes)
    return rank


# -- running -------------------------------------------------------------------------------------------
ProgressFn = Callable[[str, int, int], None]


def evaluate(
    rs: RetrievalSet,
    embedder,
    layouts: Sequence[RegionLayout],
    workdir: str | os.PathLike,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> dict:
    """Index ``rs``'s photo folders with each layout in its own data folder under ``workdir`` and run
    every query through the product's search. Returns the figures (see the module)."""
    from sorce_desktop.core.library import Library

    ks = sorted(set(ks))
    top = max(ks)
    query_vectors: dict[str, object] = {}
    out_layouts = []
    for layout in layouts:
        data_dir = Path(workdir) / f"data-{layout.name}"
        with Library(data_dir) as lib:
            for f in rs.folders:
                remember_folder(lib, f)
            lib.bind(embedder, layout)

            def on_progress(p, name=layout.name) -> None:
                if progress and p.phase in ("embedding", "done") and p.total:
                    progress(f"indexing ({name})", p.done, p.total)

            report = lib.indexer(embedder, layout, on_progress, batch_size=batch_size).run()
            counts = lib.store.counts()
            vectors = lib.store.count_vectors()
            service = lib.search_service(embedder)
            scores = {d: DifficultyScore() for d in rs.difficulties}
            ranks = []
            t0 = time.perf_counter()
            for qi, q in enumerate(rs.queries):
                if q.text not in query_vectors:
                    query_vectors[q.text] = service.query_vector(q.text)
                hits = service.search_vector(query_vectors[q.text], top=top)
                qr = {}
                for d, targets in q.targets.items():
                    qr[d] = score_hits(hits, targets, ks, scores[d])
                ranks.append(qr)
                if progress:
                    progress(f"searching ({layout.name})", qi + 1, len(rs.queries))
            search_s = time.perf_counter() - t0
        indexed = counts.get("indexed", 0)
        out_layouts.append(
            {
                "layout": layout.name,
                "photos_indexed": indexed,
                "photos_failed": counts.get("failed", 0),
                "embeddings_per_photo": round(vectors / indexed, 3) if indexed else 0.0,
                "index_seconds": round(report.seconds, 3),
                "photos_per_second": round(report.photos_per_second, 3),
                "search_ms_per_query": round(1000 * search_s / max(1, len(rs.queries)), 3),
                "difficulties": {d: s.to_json(ks) for d, s in scores.items()},
                "ranks": ranks,
            }
        )
    base = next((r for r in out_layouts if r["layout"] == "global"), None)
    for r in out_layouts:
        if base is None or r is base:
            continue
        r["vs_global"] = {
            d: {
                key: (round(v - base["difficulties"][d][key], 4) if v is not None else None)
                for key, v in s.items()
                if key.startswith("recall_at_") and base["difficulties"][d][key] is not None
            }
            for d, s in r["difficulties"].items()
        }
    return {
        "format": rs.kind,
        "dataset": rs.root,
        "photos": sum(1 for f in rs.folders for _ in _images_in(f)),
        "queries": len(rs.queries),
        "difficulties": rs.difficulties,
        "ks": list(ks),
        "notes": rs.notes,
        "layouts": out_layouts,
    }


def _images_in(folder: str):
    from sorce_desktop.core.photos.images import is_image_name

    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if is_image_name(f):
                yield os.path.join(dirpath, f)


def format_table(result: dict) -> str:
    ks = result["ks"]
    head = f"{'layout':<10} {'emb':>5} {'difficulty':<10} {'queries':>7} " + " ".join(
        f"{'R@' + str(k):>6}" for k in ks
    )
    head += f" {'vs global R@' + str(ks[-1]):>14} {'centre-in':>9} {'IoU':>6}"
    lines = [head, "-" * len(head)]
    for r in result["layouts"]:
        for d, s in r["difficulties"].items():
            rec = " ".join(
                f"{s[f'recall_at_{k}'] * 100:5.1f}%" if s[f"recall_at_{k}"] is not None else f"{'-':>6}"
                for k in ks
            )
            delta = r.get("vs_global", {}).get(d, {}).get(f"recall_at_{ks[-1]}")
            delta_s = f"{delta * 100:+13.1f}%" if delta is not None else f"{'':>14}"
            ci = f"{s['centre_in_box'] * 100:8.1f}%" if s["centre_in_box"] is not None else f"{'-':>9}"
            iou = f"{s['mean_iou']:6.3f}" if s["mean_iou"] is not None else f"{'-':>6}"
            lines.append(
                f"{r['layout']:<10} {r['embeddings_per_photo']:5.1f} {d:<10} {s['queries']:7d} {rec} {delta_s} {ci} {iou}"
            )
    lines.append("")
    lines.append(
        f"{result['format']} data set {result['dataset']}: {result['queries']} queries over a pool of "
        f"{result['photos']} photos; model {result['model']}."
    )
    lines.append(
        "centre-in / IoU: over queries found within the top "
        f"{ks[-1]}, does the returned box contain the target box's centre / mean IoU of the two."
    )
    if result.get("synthetic_model"):
        lines.append(
            "NOTE: the model has random weights (SYNTHETIC.txt): these figures say nothing about quality."
        )
    for n in result["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="SORCE-1K folder (dataset.jsonl + zoom_3x/zoom_2x/full_res) or COCO-format folder (instances.json)",
    )
    p.add_argument("--format", choices=("auto", "sorce", "coco"), default="auto")
    p.add_argument("--model", metavar="ID_OR_PATH", help="hub id or local model folder (default: the app's)")
    p.add_argument(
        "--layouts",
        metavar="A,B,...",
        default=DEFAULT_LAYOUT,
        help="region layouts to measure; 'global' is always measured too (default: %(default)s)",
    )
    p.add_argument("--ks", default="1,5,10", metavar="K,K,...", help="recall cut-offs (default: %(default)s)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N queries (records or categories)")
    p.add_argument("--batch-size", type=int, default=8, help="photos per model batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument(
        "--max-area", type=float, default=0.01, help="COCO: a small object's box share of the photo"
    )
    p.add_argument("--images", metavar="DIR", help="COCO: the images folder (default: DATASET/images)")
    p.add_argument("--image-key", help="SORCE: the record field with the image file name")
    p.add_argument("--caption-key", help="SORCE: the record field with the caption")
    p.add_argument("--box-key", help="SORCE: the record field with the target box")
    p.add_argument(
        "--box-format", choices=("xyxy", "xywh"), default="xyxy", help="SORCE: how the box's 4 numbers read"
    )
    p.add_argument("--work-dir", metavar="DIR", help="keep the indexes here instead of a temporary folder")
    p.add_argument("--ranks", action="store_true", help="include every query's rank per layout in the JSON")


def run(args) -> int:
    from sorce_desktop.core.models.loader import load_embedder
    from sorce_desktop.core.models.registry import DEFAULT_MODEL
    from sorce_desktop.core.paths import AppPaths

    ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    if not ks or ks[0] < 1:
        raise ValueError("--ks needs positive cut-offs, e.g. 1,5,10")
    names = [n.strip() for n in args.layouts.split(",") if n.strip()]
    names = ["global"] + [n for n in dict.fromkeys(names) if n != "global"]
    layouts = [get_layout(n) for n in names]
    rs = load_dataset(
        args.dataset,
        args.format,
        images=args.images,
        max_area=args.max_area,
        image_key=args.image_key,
        caption_key=args.caption_key,
        box_key=args.box_key,
        box_format=args.box_format,
        limit=args.limit,
    )
    model = args.model or DEFAULT_MODEL
    # Models the user already downloaded live in the app's own model cache; the indexes do not.
    embedder = load_embedder(model, AppPaths.resolve(args.data_dir).models, device=args.device)
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(label: str, done: int, total: int) -> None:
        bar = bars.setdefault(label, tqdm(total=total, desc=label, file=sys.stderr, ascii=True, mininterval=2.0))
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sorce-bench-retrieval-"))
    try:
        result = evaluate(rs, embedder, layouts, work, ks=ks, batch_size=args.batch_size, progress=progress)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    folder = getattr(embedder, "folder", None)
    result["model"] = model
    result["synthetic_model"] = bool(folder and (Path(folder) / "SYNTHETIC.txt").is_file())
    if not args.ranks:
        for r in result["layouts"]:
            r.pop("ranks", None)
    if args.json:
        print_json(result)
    else:
        print(format_table(result))
    if result["synthetic_model"]:
        print("note: random-weight model: the figures test the mechanics only.", file=sys.stderr)
    return 0
