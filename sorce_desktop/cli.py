"""Command line over the same services as the window.

``sorce-desktop`` with no command opens the window. Expected failures (a missing model or folder, a
locked or mismatched index) print one sentence to stderr and exit non-zero, without a traceback.
Bench commands live in ``sorce_desktop/bench/`` and register themselves through ``BENCHES``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable

from sorce_desktop import __version__

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: bench subcommand -> module under sorce_desktop.bench defining ``add_arguments(p)`` and ``run(args) -> int``
BENCHES: dict[str, str] = {}
BENCHES["index"] = "sorce_desktop.bench.index"
BENCHES["query"] = "sorce_desktop.bench.query"
BENCHES["soak"] = "sorce_desktop.bench.soak"
BENCHES["retrieval"] = "sorce_desktop.bench.retrieval"
BENCHES["layouts"] = "sorce_desktop.bench.layouts"
BENCHES["mllm"] = "sorce_desktop.bench.mllm"
BENCHES["watch"] = "sorce_desktop.bench.watch"
BENCHES["text"] = "sorce_desktop.bench.text"
BENCHES["refine"] = "sorce_desktop.bench.refine"


class UserError(Exception):
    """An expected failure: printed as one sentence, exit code 1."""


def prog() -> str:
    """The command as the user runs it, for hints ("./run.sh errors" when started by run.sh)."""
    name = os.environ.get("SORCE_DESKTOP_PROG")
    if name:
        return name
    if getattr(sys, "frozen", False):  # a bundle: its executable's own name
        return os.path.basename(sys.argv[0]) or "sorce-desktop"
    return "sorce-desktop"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except Exception:
        pass


# -- progress bars -------------------------------------------------------------------------------------
class ProgressBar:
    """A one-line progress bar on stderr (a line every few seconds when stderr is not a terminal)."""

    def __init__(self, label: str, stream=None, width: int = 28):
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        frac = done / total if total else 1.0
        fill = int(frac * self.width)
        bar = "#" * fill + "-" * (self.width - fill)
        line = f"{self.label} [{bar}] {done}/{total} {frac * 100:5.1f}% {extra}".rstrip()
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m left"
    return f"{seconds // 60}m{seconds % 60:02d}s left"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def download_progress() -> Callable:
    bar = ProgressBar("downloading model")

    def cb(p) -> None:
        bar.update(p.done_bytes >> 20, max(1, p.total_bytes >> 20), f"MB {p.current_file}")

    return cb


# -- commands ------------------------------------------------------------------------------------------
def _library(args, writer: bool = True):
    from sorce_desktop.core.library import Library

    return Library(args.data_dir, writer=writer)


def _load_model(lib, model: str | None, speed: str | None = None):
    from sorce_desktop.core.models.registry import model_info

    mid = model or lib.model_id()
    info = model_info(mid)
    if info and info.kind == "mllm":
        import torch

        mps = getattr(torch.backends, "mps", None)
        if not torch.cuda.is_available() and not (mps is not None and mps.is_available()):
            print(
                f"note: {mid} is an {info.params_m / 1000:.0f}B-parameter multimodal LLM; without a CUDA GPU or "
                "Apple silicon it takes minutes per photo. A dual encoder (the default) is the practical "
                "choice on a CPU.",
                file=sys.stderr,
            )
    return lib.load_embedder(mid, progress=download_progress(), speed=speed)


def cmd_index(args) -> int:
    from sorce_desktop.core.regions import get_layout
    from sorce_desktop.core.store import display_path
    from sorce_desktop.core.words import count, photos

    with _library(args) as lib:
        for n in lib.store.notices:
            print(f"note: {n}", file=sys.stderr)
        folders = []
        for f in args.folders:
            try:
                folders.append(lib.add_folder(f))
            except FileNotFoundError as exc:
                raise UserError(str(exc)) from None
        if not lib.store.folders():
            raise UserError(f"No folders to index: give one, e.g. {prog()} index ~/Pictures")
        binding = lib.store.binding()
        same_model = args.model is None or (binding is not None and args.model == binding.model_id)
        same_layout = args.layout is None or (binding is not None and args.layout == binding.layout)
        if binding is not None and same_model and same_layout and not args.reindex:
            # The index already says which model and layout: load the model only if there is work.
            layout = lib.layout()

            def embedder():
                e = _load_model(lib, binding.model_id, args.speed)
                lib.check_embedder(e)
                return e
        else:
            from sorce_desktop.core.models.base import ModelError

            try:
                embedder = _load_model(lib, args.model, args.speed)
            except ModelError as exc:
                # Out of the box with no network: the text in the photos is still indexed (its models
                # install with the package); the visual regions follow once a model is available.
                if binding is not None or args.model is not None or not lib.ocr_enabled():
                    raise
                embedder = layout = None
                print(
                    f"note: no visual model is available ({exc}); indexing only the text in the photos. "
                    f"Index again once the model is downloaded ({prog()} models --download ID) to "
                    "search by what the photos show.",
                    file=sys.stderr,
                )
            if embedder is not None:
                if args.layout:
                    layout = get_layout(args.layout)
                elif embedder.kind == "mllm":
                    layout = get_layout(embedder.layouts()[0])
                else:
                    layout = lib.layout() if binding else get_layout(lib.settings.layout)
                if layout.name not in embedder.layouts():
                    layout = get_layout(embedder.layouts()[0])
                if lib.bind(embedder, layout, reindex=args.reindex):
                    print(f"Re-indexing with {embedder.model_id} ({layout.name} layout).", file=sys.stderr)
        bar = ProgressBar("indexing")

        def on_progress(p) -> None:
            if p.phase == "scanning":
                print("scanning folders...", file=sys.stderr)
            elif p.phase in ("embedding", "done", "cancelled") and p.total:
                extra = f"{p.rate * 60:.0f} photos/min {_fmt_eta(p.eta_s)}"
                bar.update(p.done, p.total, extra, force=p.phase != "embedding" or p.done in (0, p.total))

        indexer = lib.indexer(
            embedder, layout, on_progress, batch_size=args.batch_size, text_source=lib.text_source()
        )
        try:
            report = indexer.run(folders or None)
        except KeyboardInterrupt:
            bar.close()
            print("interrupted: what was indexed so far is kept; run index again to finish.", file=sys.stderr)
            return EXIT_INTERRUPTED
        bar.close()
        for f in report.offline:
            print(
                f"warning: {display_path(f)} is not available (offline); its photos were kept.",
                file=sys.stderr,
            )
        summary = {
            "new": report.new,
            "changed": report.changed,
            "moved": report.moved,
            "deleted": report.deleted,
            "unchanged": report.unchanged,
            "embedded": report.embedded,
            "failed": report.failed,
            "seconds": round(report.seconds, 3),
            "photos_per_second": round(report.photos_per_second, 3),
            "text_read": report.text_read,
            "text_lines": report.text_lines,
        }
        if report.text_error:
            print(f"warning: text in photos was not read: {report.text_error}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary))
        else:
            print(
                f"indexed {photos(report.embedded)} ({report.new} new, {report.changed} changed), "
                f"{report.moved} moved, {report.deleted} removed, {report.unchanged} unchanged, "
                f"{report.failed} failed this run, in {report.seconds:.1f}s"
            )
        # the count of this run alone would hide files that failed before and are unchanged since
        failed = len(lib.store.errors())
        if failed and not args.json:
            print(
                f"{count(failed, 'file')} cannot be indexed; see which and why: {prog()} errors", file=sys.stderr
            )
    return 0


def cmd_search(args) -> int:
    from sorce_desktop.core.images import ImageError
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search import QueryError
    from sorce_desktop.core.store import display_path

    if args.text is None and args.image is None:
        raise UserError(f'Give a text to search for, or --image PATH, e.g. {prog()} search "a red kite"')
    with _library(args, writer=False) as lib:
        from sorce_desktop.core import textstore
        from sorce_desktop.core.models.base import ModelError

        has_text = textstore.count_read(lib.store) > 0
        if lib.store.binding() is None and not has_text:
            raise UserError(f"Nothing is indexed yet: run {prog()} index FOLDER first.")
        embedder = None
        if lib.store.binding() is None:
            print(f"note: {lib.text_only_note('none was available when indexing')}", file=sys.stderr)
        else:
            try:
                embedder = _load_model(lib, None)
            except ModelError as exc:
                if not has_text or args.image is not None:
                    raise
                print(f"note: {lib.text_only_note(str(exc))}", file=sys.stderr)
        service = lib.search_service(embedder)
        crop = Box.from_list(args.crop) if args.crop else None
        folder = os.path.abspath(args.folder) if args.folder else None
        try:
            answer = service.answer(
                args.text, image=args.image, crop=crop, top=args.top, folder=folder, min_score=args.min_score
            )
        except (QueryError, ImageError) as exc:
            raise UserError(str(exc)) from None
        hits = answer.hits
        if args.refine and embedder is not None and answer.vector is not None:
            from sorce_desktop.core.refine import Refiner, refine_pictures, rerank_by_refined

            def unreadable(i, h, why) -> None:
                print(f"note: {display_path(h.path)} was not refined: {why}", file=sys.stderr)

            # zooms with the very vector the search used (the parsed query, not the raw text)
            refine_pictures(Refiner(embedder), hits, answer.vector, on_error=unreadable)
            if lib.settings.rerank_by_zoom:
                hits = rerank_by_refined(hits)
        if args.json:
            print(json.dumps([h.to_json() for h in hits]))  # ASCII keeps undecodable name bytes exact (\udcXX)
        else:
            if not hits:
                print("nothing found")
            for i, h in enumerate(hits, 1):
                if h.likely is False and (i == 1 or hits[i - 2].likely):
                    print("     --- less likely matches ---")
                box = h.refined_box if h.refined_box is not None and h.region != "text" else h.box
                words = f'  {h.source}: "{h.text}"' if h.text is not None else ""
                print(f"{i:3d}. {h.score:.3f}  {display_path(h.path)}  [{h.region} {box.as_list()}]{words}")
                if len(h.regions) > 1:
                    for r in h.regions:
                        what = f'words "{r.words}" ({r.match})' if r.kind == "text" else f"picture {r.region}"
                        print(f"       {what} {r.box.as_list()} {r.score:.3f}")
    return 0


def cmd_status(args) -> int:
    with _library(args, writer=False) as lib:
        st = lib.store
        b = st.binding()
        folders = []
        for f in st.folders():
            c = st.counts(f)
            folders.append({"path": f, "online": st.folder_online(f) and os.path.isdir(f), **c})
        counts = st.counts()
        data = {
            "data_dir": str(lib.paths.index.parent),
            "folders": folders,
            "indexed": counts["indexed"],
            "pending": counts["pending"],
            "failed": counts["failed"],
            "model": b.model_id if b else None,
            "layout": b.layout if b else None,
            "vectors": st.vectors.count if st.vectors else 0,
            "index_bytes": st.size_on_disk(),
            "notices": st.notices,
        }
        if args.json:
            print(json.dumps(data))  # ASCII keeps undecodable name bytes exact (\udcXX)
            return 0
        from sorce_desktop.core.store import display_path

        print(f"data folder: {data['data_dir']}")
        print(f"model: {data['model'] or '(none yet)'}   layout: {data['layout'] or '-'}")
        print(
            f"photos: {data['indexed']} indexed, {data['pending']} pending, {data['failed']} failed; "
            f"{data['vectors']} region vectors; index size {_mb(data['index_bytes'])}"
        )
        for f in folders:
            state = "" if f["online"] else "  (offline)"
            print(
                f"  {display_path(f['path'])}: {f['indexed']} indexed, {f['pending']} pending, {f['failed']} failed{state}"
            )
        for n in st.notices:
            print(f"note: {n}")
    return 0


def cmd_errors(args) -> int:
    from sorce_desktop.core.store import display_path

    with _library(args, writer=False) as lib:
        errs = lib.store.errors()
        if args.json:
            print(json.dumps([{"path": p, "reason": r} for p, r in errs]))  # ASCII keeps undecodable name bytes exact (\udcXX)
        else:
            if not errs:
                print("no errors")
            for p, r in errs:
                print(f"{display_path(p)}: {r}")
    return 0


def cmd_models(args) -> int:
    from sorce_desktop.core.models.download import cached_model_path, resolve_model
    from sorce_desktop.core.models.registry import DEFAULT_MODEL, KNOWN_MODELS
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings

    paths = AppPaths.resolve(args.data_dir).ensure()
    configured = Settings.load(paths.settings).model
    if args.download:
        resolve_model(args.download, paths.models, progress=download_progress())
        print(f"{args.download} is available offline")
        return 0
    rows = []
    for m in KNOWN_MODELS.values():
        here = cached_model_path(m.id, paths.models) is not None
        rows.append(
            {
                "id": m.id,
                "kind": m.kind,
                "title": m.title,
                "download_mb": m.download_mb,
                "runs_well_on": m.speed_class,
                "offline": here,
                "default": m.id == DEFAULT_MODEL,
                "configured": m.id == configured,
            }
        )
    if configured not in KNOWN_MODELS:  # a local folder or another hub id chosen in Settings or --model
        local = os.path.isdir(configured)
        rows.append(
            {
                "id": configured,
                "kind": "dual",
                "title": "Local model folder" if local else "Hub model chosen in Settings",
                "download_mb": None,
                "runs_well_on": "-",
                "offline": local or cached_model_path(configured, paths.models) is not None,
                "default": False,
                "configured": True,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        if r["offline"]:
            flag = "available offline"
        elif r["download_mb"] is None:
            flag = "not found" if os.path.isabs(r["id"]) else "downloads on first use"
        else:
            flag = f"download {r['download_mb']} MB"
        star = " (default)" if r["default"] else ""
        star += " (configured)" if r["configured"] else ""
        print(f"{r['id']:40s} {r['kind']:5s} {r['runs_well_on']:6s} {flag}{star}\n    {r['title']}")
    print("Any transformers CLIP/SigLIP model folder also works: --model /path/to/folder")
    return 0


def cmd_bench(args) -> int:
    mod = importlib.import_module(BENCHES[args.bench])
    return int(mod.run(args) or 0)


def cmd_gui(args) -> int:
    try:
        from sorce_desktop.gui.app import run_gui
    except ImportError as exc:
        raise UserError(f"The window cannot start: {exc}") from None
    return run_gui(args.data_dir)


# -- parser --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="keep the index, thumbnails, models and settings in DIR (also: SORCE_DESKTOP_HOME)",
    )
    p = argparse.ArgumentParser(
        prog="sorce-desktop",
        description="Find photos by describing something small in them. With no command, opens the window.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"sorce-desktop {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("index", parents=[common], help="remember folders and index them now")
    s.add_argument("folders", nargs="*", metavar="FOLDER")
    s.add_argument("--model", metavar="ID_OR_PATH", help="hub id or local model folder")
    s.add_argument("--layout", metavar="NAME", help="region layout: cells4o (default), cells5o, grid3, global, ...")
    s.add_argument("--reindex", action="store_true", help="drop vectors of another model/layout and re-embed")
    s.add_argument("--batch-size", type=int, default=8, help="photos per model batch")
    s.add_argument(
        "--speed",
        choices=["fast", "thorough"],
        default=None,
        help="fast: int8 model, smaller tile input, blank tiles skipped (the default, about 4x faster than "
        "thorough in the same run); thorough: full float32 on every tile. Each photo records which one made it.",
    )
    s.add_argument("--json", action="store_true", help="print a JSON summary")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("search", parents=[common], help="search the index")
    s.add_argument("text", nargs="?")
    s.add_argument("--image", metavar="PATH", help="search by an image (or a crop of it with --crop)")
    s.add_argument("--crop", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="crop of --image")
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--folder", metavar="F", help="only photos under this folder")
    s.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="leave out weaker matches: for text searches with a model that has a match probability "
        "(SigLIP, SigLIP 2: the default) this is that probability, 0-1 (0.5: more likely than not); "
        "otherwise (CLIP, MLLMs, image searches) a cosine",
    )
    s.add_argument("--refine", action="store_true", help="tighten each hit's box by zooming in")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("status", parents=[common], help="folders, counts, model, index size")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("errors", parents=[common], help="files that could not be indexed, with reasons")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_errors)

    s = sub.add_parser("models", parents=[common], help="known models and which are available offline")
    s.add_argument("--download", metavar="ID", help="download a model now")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("gui", parents=[common], help="open the window (the default)")
    s.set_defaults(func=cmd_gui)

    try:
        from sorce_desktop.core.watcher import add_watch_command
    except ImportError:
        add_watch_command = None
    if add_watch_command is not None:
        add_watch_command(sub, common)

    b = sub.add_parser("bench", parents=[common], help="benchmarks (see docs/benchmarks.md)")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, modname in BENCHES.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        bp = bsub.add_parser(name, parents=[common], help=(mod.__doc__ or "").strip().splitlines()[0])
        bp.add_argument("--json", action="store_true", help="print one JSON object with the figures")
        mod.add_arguments(bp)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("SORCE_DESKTOP_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "data_dir"):
        args.data_dir = None
    if args.command is None:
        args.func = cmd_gui
    _quiet_libraries()
    from sorce_desktop.core.images import ImageError
    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.download import DownloadCancelled
    from sorce_desktop.core.search import QueryError
    from sorce_desktop.core.store import StoreError

    try:
        return args.func(args)
    except (UserError, ModelError, StoreError, QueryError, ImageError, DownloadCancelled, ValueError) as exc:
        print(f"sorce-desktop: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as exc:
        print(f"sorce-desktop: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
