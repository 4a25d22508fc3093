"""Live watching: time from a photo file closed in a watched folder to the photo returned by a search.

Each photo is written (open, write, close) into a watched folder, one at a time; the clock starts when the
file is closed and stops when a search returns it. The total is split into the detection delay (closed ->
the watcher hands it to the indexer: event delivery plus waiting for the file to stay unchanged for the
settle time) and the embedding time (decode + every region through the model + commit). The model is a
randomly initialised one of the default's real architecture and size (it costs what the trained one
costs), built once into a cache folder. Photos: coco-small.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from sorce_desktop.bench import remember_folder
from sorce_desktop.core.jsonout import print_json


def add_arguments(p) -> None:
    p.add_argument("--photos", type=int, default=50, help="photos to time (default 50)")
    p.add_argument("--spec", default=None, help="random model architecture (default: the default model's)")
    p.add_argument("--layout", default=None, help="region layout (default: the app's default)")
    p.add_argument("--settle", type=float, default=None, help="watcher settle time (default: the watcher's)")
    p.add_argument("--polling", action="store_true", help="time the polling fallback instead")
    p.add_argument("--dataset", metavar="DIR", help="photo folder (default: ../shared/datasets/coco-small)")
    p.add_argument("--cache-dir", metavar="DIR", help="where random real-size models are built and kept")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def _coco_images(arg: str | None) -> list[Path]:
    candidates = [Path(arg)] if arg else []
    if os.environ.get("SORCE_COCO_SMALL"):
        candidates.append(Path(os.environ["SORCE_COCO_SMALL"]))
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "datasets" / "coco-small")
    candidates.append(Path("/work/shared/datasets/coco-small"))
    for c in candidates:
        for d in (c / "images", c):
            photos = sorted(d.glob("*.jpg"))
            if photos:
                return photos
    raise SystemExit("coco-small not found: give --dataset DIR (e.g. ../shared/datasets/coco-small)")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class _EventTimes:
    """When the watcher handed each path to the indexer, and when it reported it indexed."""

    def __init__(self) -> None:
        self.handed: dict[str, float] = {}
        self.indexed: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_event(self, ev) -> None:
        from sorce_desktop.core.indexing.watcher import INDEXED, INDEXING

        now = time.monotonic()
        with self._lock:
            if ev.kind == INDEXING:
                for p in ev.paths:
                    self.handed.setdefault(p, now)
            elif ev.kind == INDEXED:
                for p in ev.paths:
                    self.indexed.setdefault(p, now)

    def of(self, path: str) -> tuple[float, float]:
        """(handed, indexed) of ``path``. A search can see the commit a moment before the 'indexed'
        event is reported: waits for both (up to 30 s)."""
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until:
            with self._lock:
                t_handed, t_indexed = self.handed.get(path), self.indexed.get(path)
            if t_handed is not None and t_indexed is not None:
                return t_handed, t_indexed
            time.sleep(0.005)
        raise SystemExit(f"{path} was found but the watcher never reported indexing it")


def _time_photo(src: Path, dest: str, query, service, events: _EventTimes) -> dict:
    """Write ``src`` to ``dest`` in the watched folder and time it until a search returns it."""
    data = src.read_bytes()
    with open(dest, "wb") as f:
        f.write(data)
    t_closed = time.monotonic()
    rank = None
    deadline = t_closed + 300
    while time.monotonic() < deadline:
        paths = [h.path for h in service.search_vector(query, top=10)]
        if dest in paths:
            rank = paths.index(dest) + 1
            break
        time.sleep(0.01)
    t_found = time.monotonic()
    if rank is None:
        raise SystemExit(f"{dest} was not returned by a search within 300 s")
    t_handed, t_indexed = events.of(dest)
    return {
        "detect_s": t_handed - t_closed,
        "embed_s": min(t_indexed, t_found) - t_handed,
        "total_s": t_found - t_closed,
        "rank": rank,
    }


def _time_photos(args, embedder, layout, photos: list[Path], settle: float) -> list[dict]:
    """A library watching an empty folder; each photo written into it in turn and timed (the first
    one warms up and is not counted)."""
    from sorce_desktop.core.indexing.watcher import Watcher
    from sorce_desktop.core.library import Library

    events = _EventTimes()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sorce-bench-watch-") as tmp:
        watched = Path(tmp) / "photos"
        watched.mkdir()
        with Library(Path(tmp) / "data") as lib:
            remember_folder(lib, watched)
            lib.bind(embedder, layout)
            service = lib.search_service(embedder)
            # Query vectors first (the photo itself as an image query), outside the timing.
            queries = [service.query_vector(image=str(p)) for p in photos]
            indexing = lib.indexing_service(lib.indexer(embedder, layout)).start()
            watcher = Watcher(
                indexing,
                on_event=events.on_event,
                settle_s=settle,
                reconcile_every_s=0,
                force_polling=args.polling,
            )
            watcher.start()
            watcher.wait_ready(120)
            try:
                for i, src in enumerate(photos):
                    row = _time_photo(
                        src, str(watched / f"w{i:03d}{src.suffix}"), queries[i], service, events
                    )
                    if i > 0:
                        rows.append(row)
            finally:
                watcher.stop()
                indexing.stop()
    return rows


def _print_result(result: dict) -> None:
    print(
        f"watch latency over {result['photos']} photos ({result['model']}, {result['layout']} layout, "
        f"{result['regions_per_photo']} regions/photo, settle {result['settle_s']:g} s, "
        f"{result['observer']} observer)"
    )
    print(
        f"  detection (closed -> handed to the indexer): median {result['detection_median_s']:.3f} s, "
        f"p90 {result['detection_p90_s']:.3f} s, max {result['detection_max_s']:.3f} s "
        f"(target < 2 s: {'met' if result['detection_under_target'] else 'NOT met'})"
    )
    print(
        f"  embedding (decode + model + commit):          median {result['embedding_median_s']:.3f} s, "
        f"p90 {result['embedding_p90_s']:.3f} s"
    )
    print(
        f"  closed -> returned by a search:               median {result['total_median_s']:.3f} s, "
        f"p90 {result['total_p90_s']:.3f} s"
    )


def run(args) -> int:
    import torch

    from sorce_desktop.bench.synthetic_models import DEFAULT_SPEC, cache_dir, synthetic_model
    from sorce_desktop.core.indexing.watcher import SETTLE_S
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import DEFAULT_LAYOUT, get_layout

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = args.spec or DEFAULT_SPEC
    photos = _coco_images(args.dataset)
    n = min(args.photos, len(photos) - 1)
    t = time.perf_counter()
    model_dir = synthetic_model(spec, cache_dir(args.cache_dir))
    build_s = time.perf_counter() - t
    embedder = DualEncoderEmbedder(model_dir)
    layout = get_layout(args.layout or DEFAULT_LAYOUT)
    settle = args.settle if args.settle is not None else SETTLE_S
    rows = _time_photos(args, embedder, layout, photos[: n + 1], settle)
    det = [r["detect_s"] for r in rows]
    emb = [r["embed_s"] for r in rows]
    tot = [r["total_s"] for r in rows]
    result = {
        "photos": len(rows),
        "model": f"random {spec} (real size)",
        "layout": layout.name,
        "regions_per_photo": layout.count(),
        "settle_s": settle,
        "observer": "polling" if args.polling else "native",
        "detection_median_s": round(statistics.median(det), 3),
        "detection_p90_s": round(_pct(det, 0.9), 3),
        "detection_max_s": round(max(det), 3),
        "embedding_median_s": round(statistics.median(emb), 3),
        "embedding_p90_s": round(_pct(emb, 0.9), 3),
        "total_median_s": round(statistics.median(tot), 3),
        "total_p90_s": round(_pct(tot, 0.9), 3),
        "found_rank1": sum(1 for r in rows if r["rank"] == 1),
        "target_detection_s": 2.0,
        "detection_under_target": statistics.median(det) < 2.0,
        "model_ready_s": round(build_s, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()}",
        "python": sys.version.split()[0],
    }
    if getattr(args, "json", False):
        print_json(result)
    else:
        _print_result(result)
    return 0 if result["detection_under_target"] else 1
