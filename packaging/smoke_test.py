"""Run a built bundle end to end: frozen-app checks, index + search through the bundled CLI, the window.

    python packaging/smoke_test.py                 # the bundle in dist/ (after packaging/build.py)
    python packaging/smoke_test.py --source        # the same steps from the source tree (tests the harness)

Steps, each failing the run with what went wrong:
1. ``--bundle-check``: resources, CA certificates, multiprocessing, thread pools, Qt plugins, lazy transformers
   architectures, optional pieces (see bundle_check.py);
2. ``index PHOTOS --model TINY --json`` with a tiny random CLIP built here (no download, HF offline), then
   ``status --json`` and ``search TEXT --json``; a search by one of the photos must find that photo first;
3. ``--smoke-test``: the real window opens offscreen on the indexed library; the time from process start to a
   shown window is measured (median of --starts runs).
Photos: --photos, else ../shared/datasets/coco-small/images beside the checkout, else (CI) generated ones.
Writes a JSON report (default build/packaging/smoke-report.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from build import bundle_paths  # noqa: E402

COCO = ROOT.parent / "shared" / "datasets" / "coco-small" / "images"
if not COCO.is_dir():  # a clone elsewhere (same rule as tests/conftest.py)
    COCO = Path(os.environ.get("SORCE_COCO_SMALL", "/work/shared/datasets/coco-small")) / "images"


class SmokeError(Exception):
    pass


def pick_photos(src: Path | None, n: int, dest: Path) -> tuple[list[Path], str]:
    """Copy n photos into a scratch folder (the photo folder must be read-only to the app anyway)."""
    dest.mkdir(parents=True, exist_ok=True)
    for cand in [src, COCO]:
        if cand and cand.is_dir():
            photos = sorted(p for p in cand.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
            if photos:
                for p in photos:
                    shutil.copy2(p, dest / p.name)
                return sorted(dest.iterdir()), str(cand)
    # CI has no dataset: draw photos with distinct shapes and colours.
    from PIL import Image, ImageDraw

    for i in range(n):
        img = Image.new("RGB", (640, 480), ((i * 53) % 256, (i * 97) % 256, (i * 151) % 256))
        d = ImageDraw.Draw(img)
        d.ellipse((40 + i * 17, 60, 240 + i * 17, 260), fill=((i * 31) % 256, 200, 90))
        d.rectangle((380, 200 + i * 9, 600, 440), fill=(230, (i * 71) % 256, 40))
        img.save(dest / f"generated_{i:03d}.jpg", quality=90)
    return sorted(dest.iterdir()), "generated"


class Runner:
    """Runs the bundle's executables (or the source entry point) with a scratch data folder."""

    def __init__(self, args, env: dict[str, str]):
        self.env = env
        if args.source:
            entry = [sys.executable, str(HERE / "entry.py")]
            self.cli, self.window = entry, entry
        else:
            paths = bundle_paths(args.dist)
            for key in ("main", "cli"):
                if not paths[key].is_file():
                    raise SmokeError(f"no bundle at {paths[key]}: run packaging/build.py first")
            self.cli, self.window = [str(paths["cli"])], [str(paths["main"])]
        self.timeout = args.timeout

    def run(self, argv: list[str], exe: list[str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
        cmd = (exe or self.cli) + argv
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise SmokeError(f"timed out after {self.timeout}s: {' '.join(cmd)}") from exc
        return proc, time.perf_counter() - t

    def window_start(self, argv: list[str]) -> tuple[dict, float, int, str]:
        """Start the window; seconds from process start until it reports the window shown (read live)."""
        cmd = self.window + argv
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        shown_at, out = None, {}
        try:
            for line in proc.stdout:
                if line.lstrip().startswith("{") and '"shown"' in line:
                    shown_at = time.perf_counter() - t
                    out = json.loads(line)
            _, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise SmokeError(f"timed out after {self.timeout}s: {' '.join(cmd)}") from exc
        return out, (shown_at if shown_at is not None else float("nan")), proc.returncode, err

    def json(self, argv: list[str], exe: list[str] | None = None, allow_fail: bool = False):
        proc, seconds = self.run(argv, exe)
        if proc.returncode != 0 and not allow_fail:
            raise SmokeError(
                f"exit {proc.returncode}: {' '.join(argv)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
            )
        text = proc.stdout.strip()
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start < 0:
            raise SmokeError(f"no JSON from {' '.join(argv)}: {text[-2000:]}\n{proc.stderr[-2000:]}")
        return json.loads(text[start:]), seconds, proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, default=ROOT / "dist")
    p.add_argument("--source", action="store_true", help="run from the source tree instead of a bundle")
    p.add_argument("--photos", type=Path, default=None)
    p.add_argument("--count", type=int, default=24, help="photos to index")
    p.add_argument("--starts", type=int, default=3, help="window starts to time (median reported)")
    p.add_argument("--no-window", action="store_true", help="skip the window step")
    p.add_argument("--online", metavar="URL", help="bundle check: one HTTPS request through the download client")
    p.add_argument("--timeout", type=float, default=300.0, help="per command")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--report", type=Path, default=ROOT / "build" / "packaging" / "smoke-report.json")
    args = p.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="sorce-smoke-"))
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        HF_HUB_OFFLINE="1",  # a tiny local model: nothing may be downloaded
        TRANSFORMERS_OFFLINE="1",
        SORCE_DESKTOP_HOME=str(scratch / "data"),
        PYTHONUNBUFFERED="1",
    )
    if args.source:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    report: dict = {"mode": "source" if args.source else "bundle", "steps": {}}
    steps = report["steps"]
    try:
        runner = Runner(args, env)
        report["executables"] = {"cli": runner.cli, "window": runner.window}
        photos, origin = pick_photos(args.photos, args.count, scratch / "photos")
        report["photos"] = {"count": len(photos), "from": origin}
        print(f"{len(photos)} photos from {origin}", flush=True)

        # 1. frozen-app checks
        check_args = ["--bundle-check", "--photo", str(photos[0])]
        if not args.source:
            check_args.append("--require-frozen")
        if args.online:
            check_args += ["--online", args.online]
        checks, seconds, proc = runner.json(check_args, allow_fail=True)
        steps["bundle_check"] = {"seconds": round(seconds, 2), "results": {k: v.get("ok") for k, v in checks.items()}}
        failed = {k: v for k, v in checks.items() if not v.get("ok")}
        if failed or proc.returncode != 0:
            raise SmokeError(f"bundle checks failed: {json.dumps(failed, indent=1)[:6000]}")
        print(f"bundle checks passed ({seconds:.1f}s): {', '.join(checks)}", flush=True)

        # 2. index + search through the bundled CLI, with a tiny random model built here
        from sorce_desktop.bench.synthetic import build_dual_encoder

        model = build_dual_encoder(scratch / "tiny-clip", "tiny-clip")
        data = ["--data-dir", str(scratch / "data")]
        summary, seconds, _ = runner.json(["index", str(scratch / "photos"), "--model", str(model), "--json", *data])
        steps["index"] = {"seconds": round(seconds, 2), "summary": summary}
        if summary.get("embedded") != len(photos) or summary.get("failed") != 0:
            raise SmokeError(f"index: expected {len(photos)} embedded and 0 failed, got {summary}")
        print(f"index: {summary['embedded']} photos in {seconds:.1f}s", flush=True)

        status, _, _ = runner.json(["status", "--json", *data])
        if status.get("indexed") != len(photos) or not status.get("vectors"):
            raise SmokeError(f"status after index: {status}")
        steps["status"] = {"indexed": status["indexed"], "vectors": status["vectors"], "model": status["model"]}

        hits, seconds, _ = runner.json(["search", "a red kite in the sky", "--top", "5", "--json", *data])
        photo_names = {p.name for p in photos}
        if not hits or any(Path(h["path"]).name not in photo_names for h in hits):
            raise SmokeError(f"text search returned no or unknown photos: {hits}")
        steps["search_text"] = {"seconds": round(seconds, 2), "hits": len(hits), "top": Path(hits[0]["path"]).name}
        print(f"search: {len(hits)} hits in {seconds:.1f}s, top {steps['search_text']['top']}", flush=True)

        probe = photos[len(photos) // 2]
        hits, seconds, _ = runner.json(["search", "--image", str(probe), "--top", "3", "--json", *data])
        if not hits or Path(hits[0]["path"]).name != probe.name:
            raise SmokeError(f"searching by {probe.name} should find it first, got {[h['path'] for h in hits]}")
        steps["search_image"] = {"seconds": round(seconds, 2), "query": probe.name, "top_score": hits[0]["score"]}
        print(f"image search finds its own photo first (score {hits[0]['score']:.3f})", flush=True)

        # 3. the window, offscreen, on the indexed library
        if not args.no_window:
            starts = []
            shot = scratch / "window.png"
            for i in range(max(1, args.starts)):
                out, seconds, rc, err = runner.window_start(["--smoke-test", "--screenshot", str(shot), *data])
                if rc != 0 or not out.get("shown"):
                    raise SmokeError(f"window start {i + 1}: exit {rc}, {out}\n{err[-3000:]}")
                starts.append({"seconds_to_shown": round(seconds, 3), "in_process": out})
            steps["window"] = {
                "starts": starts,
                # from launching the executable to Qt exposing the main window (what a user waits for)
                "median_seconds_to_shown": round(statistics.median(s["seconds_to_shown"] for s in starts), 3),
                # the part of it after the entry point started running Python (bundle unpack/import excluded)
                "median_seconds_in_process": round(
                    statistics.median(s["in_process"]["seconds_to_shown"] for s in starts), 3
                ),
            }
            if shot.is_file():
                keep = args.report.parent / f"window-{report['mode']}.png"
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(shot, keep)
                steps["window"]["screenshot"] = str(keep)
            print(
                f"window shown: {starts[-1]['in_process']['title']!r} {starts[-1]['in_process']['size']}, "
                f"start-up to shown window: median {steps['window']['median_seconds_to_shown']:.2f}s",
                flush=True,
            )
        report["ok"] = True
    except SmokeError as exc:
        report["ok"] = False
        report["error"] = str(exc)
        print(f"SMOKE TEST FAILED: {exc}", file=sys.stderr)
    finally:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1, default=str))
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"scratch kept: {scratch}")
    print(f"report: {args.report}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
