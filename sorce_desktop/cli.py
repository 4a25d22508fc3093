"""Command line over the same services as the window.

``sorce-desktop`` with no command opens the window. Expected failures (a missing model or folder, a
locked or mismatched index) print one sentence to stderr and exit non-zero, without a traceback.
Bench commands live in ``sorce_desktop/bench/`` and register themselves through ``BENCHES``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable

from sorce_desktop import __version__
from sorce_desktop.core.jsonout import print_json
from sorce_desktop.core.quiet import quiet_third_party_loggers
from sorce_desktop.core.words import human_size, time_left

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
BENCHES["startup"] = "sorce_desktop.bench.startup"
BENCHES["ui"] = "sorce_desktop.bench.ui"
BENCHES["tiny-model"] = "sorce_desktop.bench.tiny_model"


class UserError(Exception):
    """An expected failure: printed as one sentence, exit code 1."""


# -- values on the command line: each checked where it is parsed, refused in one line ---------------------
def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def model_value(text: str) -> str:
    """--model: a hub id as typed; a model folder as an absolute path, so the library remembers the
    folder itself (a relative one would name another folder, or none, from another directory)."""
    return os.path.abspath(text) if os.path.isdir(text) else text


def crop_value(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative (crop corners are pixels of the image)")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with a refused value reported in one line (not the whole usage) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def prog() -> str:
    """The command as the user runs it, for hints ("./run.sh errors" when started by run.sh)."""
    name = os.environ.get("SORCE_DESKTOP_PROG")
    if name:
        return name
    if getattr(sys, "frozen", False):  # a bundle: its executable's own name
        return os.path.basename(sys.argv[0]) or "sorce-desktop"
    return "sorce-desktop"


# -- the terminal ----------------------------------------------------------------------------------------
_GONE_ERRNOS = {errno.EPIPE, errno.ECONNRESET, errno.EIO, errno.EBADF, errno.ENXIO}


class GoneSafeStream:
    """stdout or stderr that never raises when its reader has gone (``index ... 2>&1 | head -1``, a closed
    terminal): what is written after that is dropped. tqdm leaves its write lock held when a write raises
    inside a redraw, so a later redraw or close would wait for it for ever; and a command must not stop
    half-way because nobody reads its output any more."""

    def __init__(self, stream) -> None:
        self.gone = stream is None  # started without the stream at all (its descriptor was closed)
        self._stream = open(os.devnull, "w") if stream is None else stream  # noqa: SIM115 (lives as long)

    def _went(self) -> None:
        self.gone = True
        try:  # what the stream still buffers (and anything else writing to its fd) goes nowhere, quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except OSError as exc:
                if exc.errno not in _GONE_ERRNOS:
                    raise
                self._went()
            except ValueError:  # the stream object itself was closed
                self._went()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except OSError as exc:
                if exc.errno not in _GONE_ERRNOS:
                    raise
                self._went()
            except ValueError:
                self._went()

    def isatty(self) -> bool:
        return not self.gone and self._stream.isatty()

    def __getattr__(self, name):
        return getattr(self._stream, name)


#: characters that would act on a terminal instead of showing: C0 and C1 controls (newline, tab, ESC
#: starting a colour or cursor sequence), DEL, line and paragraph separators, bidirectional overrides
_ACTIVE_CHARS = {
    **{c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]},
    **{c: f"\\u{c:04x}" for c in [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]},
    ord("\n"): "\\n",
    ord("\t"): "\\t",
    ord("\r"): "\\r",
}


def shown(text: str) -> str:
    """A file name (or anything that holds one) as plain output writes it to a terminal: every character
    that would move the cursor, colour the terminal or reorder the line made visible as an escape, and
    bytes that are not UTF-8 as \\xNN (--json keeps the names exact, escaped as JSON)."""
    from sorce_desktop.core.controller import display_path

    return display_path(text).translate(_ACTIVE_CHARS)


# -- progress bars -------------------------------------------------------------------------------------
class ProgressLine:
    """A one-line progress bar on stderr: tqdm, redrawn in a terminal, a line every few seconds in a log.
    Fed absolute counts (the core reports how far it is, not steps)."""

    def __init__(self, label: str, unit: str = "") -> None:
        self.label = label
        self.unit = unit
        self._bar = None

    def update(self, done: int, total: int, extra: str = "") -> None:
        from tqdm import tqdm

        class Line(tqdm):
            def __init__(self, *args, extra: str = "", **kwargs) -> None:
                self.extra = extra  # before tqdm draws its first line
                super().__init__(*args, **kwargs)

            @property
            def format_dict(self):  # the rate and time left as the core measured them, after the count
                return {**super().format_dict, "extra": self.extra}

        if self._bar is None or self._bar.total != total:
            self.close()
            tty = sys.stderr.isatty()
            self._bar = Line(
                total=total,
                desc=self.label,
                file=sys.stderr,
                ascii=True,
                mininterval=0.1 if tty else 2.0,
                bar_format="{desc} [{bar:28}] {n_fmt}/{total_fmt}" + self.unit + " {percentage:3.0f}% {extra}",
                dynamic_ncols=tty,
                extra=extra,
            )
        self._bar.n = done
        self._bar.extra = extra
        if done in (0, total):
            self._bar.refresh()  # the first and the last state always show
        else:
            self._bar.update(0)  # redraws when mininterval has passed

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def download_progress() -> Callable:
    bar = ProgressLine("downloading model", " MB")

    def cb(p) -> None:
        bar.update(p.done_bytes >> 20, max(1, p.total_bytes >> 20), p.current_file)

    return cb


# -- what went wrong, in the command line's words ---------------------------------------------------
def model_problem(exc: Exception) -> str:
    """A model that cannot be had, with the command line's own remedies (``--model DIR``,
    ``models --download``): a failed download's message in the core names the window's buttons."""
    from sorce_desktop.core.models.download import DownloadFailed, downloads_switched_off

    if not isinstance(exc, DownloadFailed):
        return str(exc)
    get = f"{prog()} models --download {exc.model}".rstrip()
    folder = "or give a model folder you already have: --model DIR"
    if exc.reason == "offline" and downloads_switched_off():
        remedy = f"Unset HF_HUB_OFFLINE and run {get}, {folder}."
    elif exc.reason == "offline":
        remedy = f"Connect to the internet and run {get}, {folder}."
    elif exc.reason == "disk_full":
        remedy = "Free some space and run the command again; what was downloaded already is kept."
    elif exc.reason == "not_found":
        remedy = f"Check the name ({prog()} models lists the known ones), {folder}."
    else:
        remedy = f"Run {get} again, {folder}."
    return f"{exc.problem} {remedy}"


def _index_text_only(controller, request, exc: Exception):
    """No picture model: go on indexing the text in the photos alone where the controller's rule allows it
    (else ``exc`` stands), and say so once. Shared by `index` and `watch`. Returns what is settled."""
    if not controller.text_only_allowed(request):
        raise exc
    print(
        f"note: no picture model is available: {shown(model_problem(exc))} Meanwhile, indexing only the text in the "
        "photos; once the model is there, index again to search by what the photos show too.",
        file=sys.stderr,
    )
    return controller.text_only(str(exc))


# -- commands ------------------------------------------------------------------------------------------
def _library(args, writer: bool = True):
    from sorce_desktop.core.library import Library

    lib = Library(args.data_dir, writer=writer)
    _say_settings_problems(lib.settings_problems)
    return lib


def _reader(args):
    """The library opened to answer queries and report on it (no writer: a window or `watch` may be
    writing to it)."""
    from sorce_desktop.core.controller import LibraryReader

    reader = LibraryReader.open_reader(args.data_dir)
    _say_settings_problems(reader.lib.settings_problems)
    return reader


def _say_settings_problems(problems: list[str]) -> None:
    """Each setting that could not be used, once, in one line (the command goes on with the default)."""
    while problems:
        print(f"note: {shown(problems.pop(0))}.", file=sys.stderr)


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (a service manager, a logout, ``timeout``) stops a command the way Ctrl+C does: the photo in
    hand is finished and what was done is said."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        old, routed = signal.signal(signal.SIGTERM, on_term), True
    except ValueError:  # not the main thread (a test calling main() from a thread): nothing to route
        old, routed = None, False
    try:
        yield
    finally:
        if routed:
            signal.signal(signal.SIGTERM, old)


def _mllm_note(lib, model: str | None) -> None:
    """Say once that a multimodal LLM is slow without a GPU (before it loads)."""
    from sorce_desktop.core.models.registry import model_info

    mid = model or lib.model_id()
    info = model_info(mid)
    if info and info.kind == "mllm":
        from sorce_desktop.core.models.advice import detect_hardware

        if detect_hardware().device == "cpu":
            print(
                f"note: {mid} is an {info.params_m / 1000:.0f}B-parameter multimodal LLM; without a CUDA GPU or "
                "Apple silicon it takes minutes per photo. A dual encoder (the default) is the practical "
                "choice on a CPU.",
                file=sys.stderr,
            )


def _settle(controller, request, *, lazy: bool = False):
    """The model and layout to index with, as the controller settles them (core/controller.py), with the
    command line's progress bar and notes; no picture model on a first run: the text alone."""
    from sorce_desktop.core.controller import ModelMismatch
    from sorce_desktop.core.models.base import ModelError

    lib = controller.lib
    try:
        return controller.settle(
            request, progress=download_progress(), lazy=lazy, before_load=lambda model: _mllm_note(lib, model)
        )
    except ModelMismatch:  # another model without --reindex: said by the caller
        raise
    except ModelError as exc:
        # Out of the box with no network: the text in the photos is still indexed (its models install
        # with the package); the visual regions follow once a model is available.
        return _index_text_only(controller, request, exc)
    finally:
        _say_settings_problems(lib.settings_problems)  # the device setting is checked as the model loads


def _wait(fut):
    """A service job's result, waiting in short steps so Ctrl+C reaches the main thread at once."""
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        try:
            return fut.result(timeout=0.25)
        except FutureTimeout:
            continue


def _index_folders(lib, args) -> list[str]:
    """The folders named on the command line, checked but not yet remembered (a command that fails on its
    model must not leave them in the library); with none named, the library must have at least one."""
    from sorce_desktop.core.indexing.scanner import existing_folder

    try:
        folders = [existing_folder(f) for f in args.folders]
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    if not folders and not lib.store.folders():
        raise UserError(f"No folders to index: give one, e.g. {prog()} index ~/Pictures")
    return folders


def _index_progress(bar: ProgressLine) -> Callable:
    """The indexing service's listener that draws its progress on ``bar`` (runs on the indexing thread)."""
    from sorce_desktop.core.controller import EventKind
    from sorce_desktop.core.indexing.indexer import Phase

    def on_event(ev) -> None:
        p = ev.progress
        if ev.kind != EventKind.PROGRESS or p is None:
            return
        if p.phase == Phase.SCANNING:
            print("scanning folders...", file=sys.stderr)
        elif p.total:
            bar.update(p.done, p.total, f"{p.rate * 60:.0f} photos/min {time_left(p.eta_s)}".rstrip())

    return on_event


def _print_index_report(lib, report, as_json: bool, new_model: bool = False) -> None:
    from sorce_desktop.core.words import count, photos

    for f in report.offline:
        print(
            f"warning: {shown(f)} is not available (missing, or empty where its photos were: an "
            "unplugged drive or an unmounted share?); it is marked offline and its photos were kept.",
            file=sys.stderr,
        )
    if report.text_error:
        print(f"warning: text in photos was not read: {shown(report.text_error)}", file=sys.stderr)
    if as_json:
        print_json(
            {
                "new": report.new,
                "changed": report.changed,
                "unfinished": report.unfinished,
                "moved": report.moved,
                "deleted": report.deleted,
                "unchanged": report.unchanged,
                "embedded": report.embedded,
                "failed": report.failed,
                "seconds": round(report.seconds, 3),
                "photos_per_second": round(report.photos_per_second, 3),
                "text_read": report.text_read,
                "text_lines": report.text_lines,
                "offline": report.offline,
            }
        )
        return
    redo = "re-embedded for the new model" if new_model else "left by an earlier run"
    print(
        f"indexed {photos(report.embedded)}, {report.failed} failed this run, in {report.seconds:.1f}s: "
        f"{report.what_changed(redo)}"
    )
    # the count of this run alone would hide files that failed before and are unchanged since
    failed = len(lib.store.errors())
    if failed:
        print(
            f"{count(failed, 'file')} cannot be indexed; see which and why: {prog()} errors", file=sys.stderr
        )


def cmd_index(args) -> int:
    from sorce_desktop.core.controller import LibraryController, ModelRequest

    with _sigterm_as_ctrl_c(), _library(args) as lib:
        for n in lib.store.notices:
            print(f"note: {shown(n)}", file=sys.stderr)
        folders = _index_folders(lib, args)
        controller = LibraryController(lib)
        bar = ProgressLine("indexing")
        try:
            # the index's own model loads only if there is work; another one is bound (and its photos
            # embedded again) only with --reindex
            settled = _settle(controller, ModelRequest(args.model, args.layout, args.reindex, args.speed), lazy=True)
            if settled.rebound:
                print(f"Re-indexing with {settled.model_id} ({settled.layout.name} layout).", file=sys.stderr)
            # remembered once the model is settled (a command that fails on its model leaves none behind)
            folders = [_wait(controller.add_folder(f)[1]) for f in folders]
            controller.subscribe(_index_progress(bar))
            _wait(controller.use(settled, batch_size=args.batch_size))
            report = _wait(controller.scan(folders or None))
        except KeyboardInterrupt:
            print("\nstopping after the photo being indexed (Ctrl+C again to stop now)...", file=sys.stderr)
            controller.stop(timeout=0)
            bar.close()
            print("interrupted: what was indexed so far is kept; run index again to finish.", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            controller.stop()
            bar.close()
            _say_settings_problems(lib.settings_problems)  # the device setting is checked as the model loads
        _print_index_report(lib, report, args.json, settled.rebound)
    return 0


def cmd_search(args) -> int:
    from sorce_desktop.core.photos.images import ImageError
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import MinScoreError, QueryError

    filters = bool(args.after or args.before or args.folder)
    if args.text is not None and not args.text.strip() and args.image is None and filters:
        args.text = None  # `search "" --after 2023`: the filters alone, as `search --after 2023`
    if args.text is None and args.image is None and not filters:
        raise UserError(
            f'Give a text to search for, e.g. {prog()} search "a red kite"; or --image PATH; or a period or a '
            "folder alone (--after 2023, --folder DIR) to list its photos, newest first."
        )
    if args.image is not None and not os.path.exists(args.image):
        raise UserError(f"The image {args.image} does not exist.")
    if args.crop and args.image is None:
        raise UserError("--crop needs --image: it is the part of that image to search with.")
    crop = Box.from_list(args.crop) if args.crop else None
    if crop is not None and (crop.x1 <= crop.x0 or crop.y1 <= crop.y0):
        raise UserError(
            f"--crop {' '.join(f'{v:g}' for v in args.crop)} has no area: give X0 Y0 X1 Y1 with X1 > X0 and Y1 > Y0."
        )
    if args.text is not None and args.image is None:
        from sorce_desktop.core.search.answer import clean_query, refuse_empty
        from sorce_desktop.core.search.query import parse

        # Before the model loads: an empty query needs no model to be refused (a part not understood is
        # said first, and --after/--before are filters too).
        parsed = parse(clean_query(args.text))
        if not parsed.problems and not (args.after or args.before):
            refuse_empty(parsed)
    # a running window is asked only what its request can carry (no --after/--before/--sort) and what
    # needs no check against the library first (place: and in: names, dates that do not parse)
    own = args.after or args.before or args.sort != "relevance" or (args.text is None and args.image is None)
    if args.text is not None and args.image is None:
        own = own or bool(parsed.problems or parsed.places or parsed.folders)
    hits = None if args.refine or own else _ask_running(args, crop)
    if hits is not None:  # the window or `watch` running for this library answered, with its models
        _print_hits(hits, args.json)
        return 0
    from sorce_desktop.core.controller import NothingIndexed

    with _reader(args) as reader:
        if _query_not_understood(reader, args):
            return EXIT_USAGE
        try:
            folder = reader.search_folder(args.folder) if args.folder else None
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
        embedder = None  # filters alone (`search --after 2023`) need no model
        if args.text is None and args.image is None and not reader.store.counts().get("indexed"):
            raise UserError(f"Nothing is indexed yet: run {prog()} index FOLDER first.")
        if args.text is not None or args.image is not None:
            try:
                model = reader.search_model(
                    args.text, args.image, refine=args.refine, progress=download_progress(),
                    before_load=lambda m: _mllm_note(reader.lib, m),
                )  # fmt: skip
            except NothingIndexed:
                raise UserError(f"Nothing is indexed yet: run {prog()} index FOLDER first.") from None
            finally:
                _say_settings_problems(reader.lib.settings_problems)  # the device setting is checked as it loads
            if model.note:
                print(f"note: {shown(model.note)}", file=sys.stderr)
            embedder = model.embedder
        service = reader.search_service(embedder)
        try:
            answer = service.answer(
                args.text, image=args.image, crop=crop, top=args.top, folder=folder, min_score=args.min_score,
                after=args.after, before=args.before, sort=args.sort,
            )  # fmt: skip
        except ImageError as exc:
            raise UserError(f"The query image cannot be used: {exc}.") from None  # exc names the file
        except MinScoreError as exc:  # a value the scale of this search cannot take: a usage error
            print(f"sorce-desktop: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except QueryError as exc:
            raise UserError(str(exc)) from None
        hits = answer.hits
        if not hits and (why := answer.nothing_kept()):
            print(f"note: {shown(why)}", file=sys.stderr)
        if args.refine and embedder is not None and answer.vector is not None:
            from sorce_desktop.core.search.refine import Refiner, refine_pictures, rerank_by_refined

            def unreadable(i, h, why) -> None:
                print(f"note: {shown(h.path)} was not refined: {shown(str(why))}", file=sys.stderr)

            # zooms with the very vector the search used (the parsed query, not the raw text)
            refine_pictures(Refiner(embedder), hits, answer.vector, on_error=unreadable)
            if reader.settings.rerank_by_zoom and args.sort != "date":
                hits = rerank_by_refined(hits)
        _print_hits(hits, args.json)
    return 0


def _ask_running(args, crop):
    """The hits from the window or `watch` running for this library (None: none runs, or it cannot answer
    yet); its refusal of the query in the command's own words."""
    from sorce_desktop.core import running
    from sorce_desktop.core.paths import AppPaths

    try:
        name = running.server_name(AppPaths.resolve(args.data_dir).index)
    except Exception:  # an unusable data folder: the command says why when it opens it
        return None
    request = running.search_request(args.text, args.image, crop, args.top, args.folder, args.min_score)
    reply = running.ask_search(name, request)
    if reply is None or "busy" in reply:
        return None
    if "error" in reply:
        if reply.get("kind") == "image":
            raise UserError(f"The query image cannot be used: {reply['error']}.")
        raise UserError(reply["error"])
    return running.hits_from_reply(reply)


def _print_hits(hits, as_json: bool) -> None:
    from sorce_desktop.core.search.answer import RegionKind

    if as_json:
        print_json([h.to_json() for h in hits])
        return
    if not hits:
        print("nothing found")
    for i, h in enumerate(hits, 1):
        if h.likely is False and (i == 1 or hits[i - 2].likely):
            print("     --- less likely matches ---")
        box = h.shown_box
        words = f'  {h.source}: "{shown(h.text)}"' if h.text is not None else ""
        print(f"{i:3d}. {h.score:.3f}  {shown(h.path)}  [{h.region} {box.as_list()}]{words}")
        if h.taken is not None or h.place is not None:
            when = f"taken {h.taken} ({h.taken_source})" if h.taken is not None else ""
            print(f"       {'  '.join(x for x in (when, shown(h.place) if h.place else '') if x)}")
        if len(h.regions) > 1 or h.source == "name":
            for r in h.regions:
                if r.kind == RegionKind.NAME:
                    print(f'       file name "{shown(r.words or "")}"')
                    continue
                what = f'words "{shown(r.words)}" ({r.match})' if r.kind == RegionKind.TEXT else f"picture {r.region}"
                print(f"       {what} {r.box.as_list()} {r.score:.3f}")


def _query_not_understood(reader, args) -> bool:
    """Say in one line each what the query (or --after/--before) holds that cannot be understood (the
    controller says what: core/controller.py). Checked before the model loads; True when there was any (the
    command exits 2)."""
    problems = reader.not_understood(args.text if args.image is None else None, after=args.after, before=args.before)
    for problem in problems:
        print(f"sorce-desktop: not understood: {problem}", file=sys.stderr)
    return bool(problems)


def _watch_kinds():
    """The events `watch` prints: what changed in the index and what the watcher noticed (progress counts,
    idle and pause are the window's business)."""
    from sorce_desktop.core.controller import EventKind as K

    return {K.INDEXING, K.INDEXED, K.REMOVED, K.MOVED, K.OFFLINE, K.ONLINE, K.RECONCILED, K.NOTICE, K.ERROR, K.STOPPED}


def _print_event(ev, as_json: bool) -> None:
    from sorce_desktop.core.controller import EventKind as K

    if ev.kind not in _watch_kinds():
        return
    if as_json:
        d = {"kind": ev.kind, "paths": ev.paths, "message": ev.message}
        if ev.folder:
            d["folder"] = ev.folder
        if ev.old_paths:
            d["old_paths"] = ev.old_paths
        print_json(d, flush=True)
        return
    if ev.kind in (K.INDEXED, K.REMOVED):
        for p in ev.paths:
            print(f"{ev.kind} {shown(p)}", flush=True)
        if not ev.paths:
            print(f"{ev.kind}: {shown(ev.message)}", flush=True)
    elif ev.kind == K.MOVED:
        print(f"moved {shown(ev.message)}", flush=True)
    elif ev.kind == K.INDEXING:
        return
    elif ev.kind == K.ERROR:
        if ev.paths:
            for p in ev.paths:
                print(f"failed {shown(p)}: {shown(ev.message)}", file=sys.stderr, flush=True)
        else:
            print(f"error: {shown(ev.message)}", file=sys.stderr, flush=True)
    elif ev.kind in (K.OFFLINE, K.NOTICE):
        print(f"note: {shown(ev.message)}", file=sys.stderr, flush=True)
    elif ev.kind == K.STOPPED:
        print(shown(ev.message), flush=True)
    else:
        print(f"{ev.kind}: {shown(ev.message)}", flush=True)


def cmd_watch(args) -> int:
    from sorce_desktop.core.controller import LibraryController

    with _sigterm_as_ctrl_c(), _library(args) as lib:
        for n in lib.store.notices:
            print(f"note: {shown(n)}", file=sys.stderr)
        controller = LibraryController(lib)
        try:
            return _watch(controller, args)
        finally:
            controller.stop()


def _watch(controller, args) -> int:
    from sorce_desktop.core import running
    from sorce_desktop.core.controller import ModelMismatch, ModelRequest
    from sorce_desktop.core.words import count, photos

    lib = controller.lib
    try:
        added = [controller.add_folder(f)[1] for f in args.folders]
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    for fut in added:
        _wait(fut)
    if not lib.store.folders():
        raise UserError(f"No folders to watch: give one, e.g. {prog()} watch ~/Pictures")
    try:
        # the index's own model; a first one on a first run; another one only through `index --reindex`
        settled = _settle(controller, ModelRequest(args.model, args.layout))
    except ModelMismatch as exc:  # the controller says what differs: the model, else the layout
        if exc.models:
            raise UserError(
                f"The index was made with {exc.models[0]}; run {prog()} index --model "
                f"{exc.models[1]} --reindex first to change the model."
            ) from None
        raise UserError(
            f"The index was made with the {exc.layouts[0]} layout; run {prog()} index --layout "
            f"{exc.layouts[1]} --reindex first to change the layout."
        ) from None
    _wait(controller.use(settled, batch_size=args.batch_size))
    embedder, layout = settled.embedder, settled.layout
    # `search` asks this process while it runs, instead of loading the models again (core/running.py)
    searching = controller.search_service(embedder)
    listener = running.SearchListener(
        running.server_name(lib.paths.index), lambda request: running.answer_request(searching, request)
    )
    listener.start()
    try:
        watcher = controller.watch(
            on_event=lambda ev: _print_event(ev, args.json),
            settle_s=args.settle,
            reconcile_every_s=args.reconcile_every,
            folders=[os.path.abspath(f) for f in args.folders] or None,
            force_polling=args.polling,
            poll_interval_s=args.poll_interval,
        )
        try:
            watcher.wait_ready()
            what = f"with {shown(embedder.model_id)} ({layout.name} layout)" if embedder else "for the text in the photos"
            print(
                f"watching {count(len(watcher.folders()), 'folder')} {what}; Ctrl+C stops",
                file=sys.stderr,
                flush=True,
            )
            while watcher.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopping: finishing the changes already seen (Ctrl+C again to stop now)...", file=sys.stderr)
            try:
                controller.stop()
            except KeyboardInterrupt:
                controller.cancel_current()
                controller.stop()
                print(
                    "interrupted: what was indexed so far is kept; the rest is indexed at the next start.",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
    finally:
        listener.close()
        controller.stop()
    counts = lib.store.counts()
    if counts["pending"]:
        print(f"{photos(counts['pending'])} left pending, to be indexed at the next start.", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    from sorce_desktop.core.words import count, photos

    with _reader(args) as reader:
        data = reader.report()
        folders = data["folders"]
        if args.json:
            print_json(data)
            return 0
        print(f"data folder: {shown(data['data_dir'])}")
        print(
            f"model: {shown(data['model'] or '(none yet)')}   layout: {data['layout'] or '-'}   "
            f"speed: {data['speed']}"
        )
        print(
            f"photos: {data['indexed']} indexed, {data['pending']} pending, {data['failed']} failed; "
            f"{count(data['vectors'], 'region vector')}; index size {human_size(data['index_bytes'])}"
        )
        reading = "" if data["reads_text"] else " (reading text is switched off in Settings)"
        print(f"text read in {photos(data['text_read'])}{reading}")
        print(f"photos with a place (from their GPS position): {data['with_place']}")
        for f in folders:
            state = "" if f["online"] else "  (offline)"
            print(
                f"  {shown(f['path'])}: {f['indexed']} indexed, {f['pending']} pending, {f['failed']} failed{state}"
            )
        for n in data["notices"]:
            print(f"note: {shown(n)}")
    return 0


def cmd_errors(args) -> int:

    with _reader(args) as reader:
        errs = reader.errors()
        if args.json:
            print_json([{"path": p, "reason": r} for p, r in errs])
        else:
            if not errs:
                print("no errors")
            for p, r in errs:
                print(f"{shown(p)}: {shown(r)}")
    return 0


def cmd_repair(args) -> int:
    from sorce_desktop.core.controller import CATALOG_NAME
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.core.store.repair import repair_catalog, repair_summary

    index = AppPaths.resolve(args.data_dir).index
    if not (index / CATALOG_NAME).exists():
        raise UserError(f"There is no catalog in {index} to repair.")
    settings = Settings.load(AppPaths.resolve(args.data_dir).settings)
    _say_settings_problems(list(settings.problems))
    report = repair_catalog(
        index, progress=lambda m: print(shown(m), file=sys.stderr), layout=settings.layout
    )
    if args.json:
        print_json(
            {
                "catalog": str(report.catalog),
                "damaged": report.damaged,
                "problem": report.problem or None,
                "kept_as": str(report.kept_as) if report.kept_as else None,
                "rows": report.rows,
                "lost": report.lost,
                "redo": report.redo,
                "salvaged_nothing": report.salvaged_nothing,
                "folders_recovered": report.folders_recovered,
                "binding_restored": report.binding_restored.__dict__ if report.binding_restored else None,
            }
        )
        return 0
    if not report.damaged:
        print(f"The catalog {report.catalog} is not damaged (SQLite's integrity check passed); nothing was changed.")
        return 0
    print(shown(repair_summary(report)))
    return 0


def cmd_models(args) -> int:
    from sorce_desktop.core.models.download import cached_model_path, resolve_model
    from sorce_desktop.core.models.registry import DEFAULT_MODEL, KNOWN_MODELS
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings

    paths = AppPaths.resolve(args.data_dir).ensure()
    settings = Settings.load(paths.settings)
    _say_settings_problems(list(settings.problems))
    configured = settings.model
    if args.download:
        resolve_model(args.download, paths.models, progress=download_progress())
        print(f"{args.download} is available offline")
        return 0
    in_use = _index_model(args.data_dir, paths)
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
                "in_use": m.id == in_use,
            }
        )
    # a local folder or another hub id chosen in Settings, or the one the index was made with (`index --model`)
    for other in dict.fromkeys(x for x in (configured, in_use) if x and x not in KNOWN_MODELS):
        local = os.path.isdir(other)
        rows.append(
            {
                "id": other,
                "kind": "dual",
                "title": "Local model folder" if local else "Hub model chosen in Settings",
                "download_mb": None,
                "runs_well_on": "-",
                "offline": local or cached_model_path(other, paths.models) is not None,
                "default": False,
                "configured": other == configured,
                "in_use": other == in_use,
            }
        )
    if args.json:
        print_json(rows)
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
        star += " (this library's index)" if r["in_use"] else ""
        print(f"{r['id']:40s} {r['kind']:5s} {r['runs_well_on']:6s} {flag}{star}\n    {r['title']}")
    print("Any transformers CLIP/SigLIP model folder also works: --model /path/to/folder")
    return 0


def _index_model(data_dir, paths) -> str | None:
    """The model the library's index is made with (None: no index yet, or it cannot be read here)."""
    from sorce_desktop.core.controller import CATALOG_NAME, LibraryReader

    if not (paths.index / CATALOG_NAME).exists():
        return None
    try:
        with LibraryReader.open_reader(data_dir) as reader:
            binding = reader.store.binding()
    except Exception:  # a damaged or locked catalog: `status` and `repair` say why; the list stands
        return None
    return binding.model_id if binding is not None else None


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
    from sorce_desktop.core import controller as watching  # the watcher's defaults
    from sorce_desktop.core.regions import DEFAULT_LAYOUT, LAYOUTS, PROMPT_LAYOUTS

    layouts = [*LAYOUTS, *PROMPT_LAYOUTS]
    common = Parser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="keep the index, thumbnails, models and settings in DIR (also: SORCE_DESKTOP_HOME)",
    )
    p = Parser(
        prog="sorce-desktop",
        description="Find photos by describing something small in them. With no command, opens the window.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"sorce-desktop {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    s = sub.add_parser("index", parents=[common], help="remember folders and index them now")
    s.add_argument("folders", nargs="*", metavar="FOLDER")
    s.add_argument("--model", type=model_value, metavar="ID_OR_PATH", help="hub id or local model folder")
    s.add_argument(
        "--layout", choices=layouts, metavar="NAME", help=f"region layout: {DEFAULT_LAYOUT} (default), {', '.join(layouts)}"
    )
    s.add_argument("--reindex", action="store_true", help="drop vectors of another model/layout and re-embed")
    s.add_argument("--batch-size", type=positive_int, default=8, help="photos per model batch")
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
    s.add_argument(
        "--crop", type=crop_value, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="crop of --image, in its pixels"
    )
    s.add_argument("--top", type=positive_int, default=20)
    s.add_argument("--folder", metavar="F", help="only photos under this folder")
    s.add_argument(
        "--after", metavar="DATE", help="only photos taken on or after the start of DATE: 2023, 2023-07 or 2023-07-14"
    )
    s.add_argument("--before", metavar="DATE", help="only photos taken before the start of DATE (as --after)")
    s.add_argument(
        "--sort",
        choices=("relevance", "date"),
        default="relevance",
        help="order of the results: relevance (default) or date (newest first, among the matches)",
    )
    s.add_argument(
        "--min-score",
        type=finite_float,
        default=None,
        help="leave out weaker matches, on the scale the search's scores have: for text searches with a model "
        "that has a match probability (SigLIP, SigLIP 2: the default) that probability, between 0 and 1 "
        "(0.5: more likely than not); otherwise (CLIP, MLLMs, image searches) the cosine of the best picture "
        "region, -1 to 1; with no picture model, how well the words read match, 0 to 1 (1: exactly). "
        "Photos where the query's words are read exactly stay. A value the scale cannot take is refused",
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

    s = sub.add_parser(
        "repair",
        parents=[common],
        help="salvage a damaged catalog into a new one (the damaged file is kept beside it)",
        description="Copy every readable photo and region of a damaged catalog into a new catalog, keep the "
        "damaged file beside it (catalog.sqlite3.damaged-TIME), and leave what was lost for index to redo. "
        "A catalog that is not damaged is left as it is.",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_repair)

    s = sub.add_parser("models", parents=[common], help="known models and which are available offline")
    s.add_argument("--download", metavar="ID", help="download a model now")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("gui", parents=[common], help="open the window (the default)")
    s.set_defaults(func=cmd_gui)

    s = sub.add_parser(
        "watch",
        parents=[common],
        help="watch folders and index what changes, in the foreground (Ctrl+C stops)",
        description="Watch folders (the given ones are remembered; default: all remembered folders) and "
        "index new, changed, moved and deleted photos as they happen. Ctrl+C stops cleanly.",
    )
    s.add_argument("folders", nargs="*", metavar="FOLDER")
    s.add_argument("--model", type=model_value, metavar="ID_OR_PATH", help="model for a new index (hub id or local folder)")
    s.add_argument("--layout", choices=layouts, metavar="NAME", help="region layout for a new index")
    s.add_argument("--batch-size", type=positive_int, default=8, help="photos per model batch")
    s.add_argument(
        "--settle",
        type=non_negative_float,
        default=watching.SETTLE_S,
        metavar="S",
        help=f"seconds a file must stay unchanged (default {watching.SETTLE_S:g})",
    )
    s.add_argument(
        "--reconcile-every",
        type=non_negative_float,
        default=watching.RECONCILE_EVERY_S,
        metavar="S",
        help=f"full check of the folders every S seconds (default {watching.RECONCILE_EVERY_S:g}; 0: only at start)",
    )
    s.add_argument(
        "--polling",
        action="store_true",
        help="check folders periodically instead of file-change notifications (network shares)",
    )
    s.add_argument(
        "--poll-interval", type=positive_float, default=watching.POLL_INTERVAL_S, metavar="S", help="seconds between polls"
    )
    s.add_argument("--json", action="store_true", help="print one JSON object per event")
    s.set_defaults(func=cmd_watch)



    b = sub.add_parser("bench", parents=[common], help="benchmarks (see docs/benchmarks.md)")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH", required=True, parser_class=Parser)
    for name, modname in BENCHES.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        bp = bsub.add_parser(name, parents=[common], help=(mod.__doc__ or "").strip().splitlines()[0])
        bp.add_argument("--json", action="store_true", help="print one JSON object with the figures")
        mod.add_arguments(bp)
    b.set_defaults(func=cmd_bench)
    # Any other number on the command line (the benchmarks' many) is at least a finite one.
    for parser in [*sub.choices.values(), *bsub.choices.values()]:
        for action in parser._actions:
            if action.type is float:
                action.type = finite_float
    return p


def main(argv: list[str] | None = None) -> int:
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, GoneSafeStream) else GoneSafeStream(s) for s in streams)
    try:
        return _main(argv)
    finally:
        for safe in (sys.stdout, sys.stderr):  # what is still buffered, while a gone reader is still quiet
            with contextlib.suppress(Exception):
                safe.flush()
        sys.stdout, sys.stderr = streams


def _is_not_part(arg: str) -> bool:
    """A "not this" word of a query (``-string``) rather than an option (``--folder``)."""
    return len(arg) > 1 and arg.startswith("-") and not arg.startswith("--")


def _main(argv: list[str] | None) -> int:
    logging.basicConfig(
        level=os.environ.get("SORCE_DESKTOP_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "search" and all(map(_is_not_part, extra)):
        # `search kite -string`: a word with one dash is the query's "not this", not an option (search
        # has none of one dash but -h), so the shell's quoting need not hide it behind `--`
        args.text = " ".join(x for x in (args.text, *extra) if x is not None)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "data_dir"):
        args.data_dir = None
    if args.command is None:
        args.func = cmd_gui
    quiet_third_party_loggers()
    import sqlite3

    from sorce_desktop.core.controller import StoreError
    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.download import DownloadCancelled
    from sorce_desktop.core.paths import DataDirError
    from sorce_desktop.core.photos.images import ImageError
    from sorce_desktop.core.search.answer import QueryError

    try:
        return args.func(args)
    except (
        UserError,
        ModelError,
        StoreError,
        QueryError,
        ImageError,
        DownloadCancelled,
        DataDirError,
        ValueError,
    ) as exc:
        print(f"sorce-desktop: {shown(model_problem(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.DatabaseError as exc:
        # Damage found by a query outside the store's own wrappers: the same one line, naming the file.
        from sorce_desktop.core.controller import CATALOG_NAME, damaged_message, is_damage
        from sorce_desktop.core.paths import AppPaths

        if not is_damage(exc):
            raise
        catalog = AppPaths.resolve(args.data_dir).index / CATALOG_NAME
        print(f"sorce-desktop: {shown(damaged_message(catalog, exc))}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as exc:
        print(f"sorce-desktop: {shown(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
