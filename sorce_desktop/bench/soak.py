"""Soak: watch + index + search for a long time while files come and go; memory must stay flat.

A temporary photo folder (copies of coco-small photos) is watched by the real Watcher; every cycle
copies photos in, renames some, deletes some, while a second thread searches without pause. Resident
memory is sampled throughout; at the end the catalog must match the folder tree exactly. Not part of
CI: `sorce-desktop bench soak --minutes 60`.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sorce_desktop.bench import remember_folder
from sorce_desktop.core.jsonout import print_json


def add_arguments(p) -> None:
    p.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    p.add_argument("--photos", type=str, default=None, help="folder of source photos (default: coco-small)")
    p.add_argument(
        "--model", default=None, help="model folder (default: a tiny random one built for the run)"
    )
    p.add_argument("--sample-s", type=float, default=5.0, help="memory sampling interval")
    p.add_argument("--work-dir", default=None, help="where to put the temporary photos and index")


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return 0.0
    ts = [t for t, _ in samples]
    ms = [m for _, m in samples]
    tm, mm = statistics.fmean(ts), statistics.fmean(ms)
    var = sum((t - tm) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - tm) * (m - mm) for t, m in samples) / var * 3600


def run(args) -> int:
    from sorce_desktop.bench.datasets import coco_images_dir
    from sorce_desktop.bench.synthetic import build_dual_encoder
    from sorce_desktop.core.indexing.watcher import Watcher
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import get_layout

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sorce-soak-"))
    src = sorted(Path(args.photos or coco_images_dir()).glob("*.jpg"))
    if not src:
        print("no source photos found")
        return 1
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    model = args.model or str(build_dual_encoder(work / "model", "tiny-clip"))
    rng = random.Random(0)
    for p in src[:40]:
        shutil.copy2(p, photos / p.name)

    lib = Library(work / "data")
    remember_folder(lib, photos)
    embedder = DualEncoderEmbedder(model)
    layout = get_layout("grid3")
    lib.bind(embedder, layout, reindex=True)
    events = {"error": 0}

    def on_event(ev) -> None:
        if ev.kind == "error":
            events["error"] += 1

    indexing = lib.indexing_service(lib.indexer(embedder, layout)).start()
    watcher = Watcher(indexing, on_event=on_event, settle_s=0.5)
    watcher.start()
    watcher.wait_ready(120)
    service = lib.search_service(embedder)
    stop = threading.Event()
    latencies: list[float] = []
    search_errors: list[str] = []

    def searcher() -> None:
        queries = ["a dog", "a red car", "people on a street", "a cup on a shelf", "a kite"]
        while not stop.is_set():
            t = time.perf_counter()
            try:
                service.search(rng.choice(queries), top=24)
            except Exception as exc:  # recorded, the soak goes on
                search_errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - t)
            time.sleep(0.05)

    th = threading.Thread(target=searcher, daemon=True)
    th.start()
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    last_sample = 0.0
    cycles = 0
    n = 0
    while time.monotonic() < end:
        n += 1
        present = sorted(photos.glob("*.jpg"))
        # copy a few in, rename one, delete one: the library churns but stays about the same size
        for p in rng.sample(src, 3):
            shutil.copy2(p, photos / f"soak{n}_{p.name}")
        if present:
            victim = rng.choice(present)
            os.rename(victim, photos / f"renamed{n}_{victim.name}")
        present = sorted(photos.glob("*.jpg"))
        for p in rng.sample(present, min(3, max(0, len(present) - 40))):
            p.unlink()
        cycles += 1
        time.sleep(2.0)
        now = time.monotonic()
        if now - last_sample >= args.sample_s:
            samples.append((now - t0, rss_mb()))
            last_sample = now
    time.sleep(2.0)  # let the kernel deliver the last cycle's events
    idle = watcher.wait_idle(120)
    stop.set()
    th.join(10)
    watcher.stop()
    indexing.stop()
    on_disk = {str(p) for p in photos.rglob("*.jpg")}
    indexed = {p.path for p in lib.store.photos_under(str(photos)) if p.status == "indexed"}
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    result = {
        "minutes": args.minutes,
        "cycles": cycles,
        "searches": len(latencies),
        "search_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "search_errors": len(search_errors),
        "watch_errors": events["error"],
        "rss_start_mb": round(samples[0][1], 1) if samples else None,
        "rss_end_mb": round(samples[-1][1], 1) if samples else None,
        "rss_max_mb": round(max(m for _, m in samples), 1) if samples else None,
        "rss_slope_second_half_mb_per_hour": round(_slope_mb_per_hour(half), 2),
        "catalog_matches_folder": on_disk == indexed,
        "not_indexed": len(on_disk - indexed),
        "stale_in_catalog": len(indexed - on_disk),
        "watcher_idle_at_end": idle,
        "photos": len(on_disk),
    }
    lib.close()
    if args.json:
        print_json(result)
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    ok = result["catalog_matches_folder"] and not search_errors
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1
