"""The indexer: bring the store in line with the folders, embedding only what changed.

Planning is plain Python and cheap, and it is the one place that decides what happened to a file:
:meth:`Indexer.plan` takes folders (a full scan) or a set of paths (what the folder watcher saw settle)
and says, through :func:`file_verdict` and :func:`match_moves`, which files are new, changed, moved,
deleted or unchanged. :meth:`Indexer.apply` records what needs no model; :meth:`Indexer.embed_rows`
embeds the rest through stages:

    read once (non-blocking, regular files only) -> decode -> picture regions -> commit -> text -> commit

Decoding runs on a small thread pool ahead of the model; what is decoded ahead is bounded by its bytes
(:class:`ByteBudget`), not by a count, so a folder of 200-megapixel PNGs cannot exhaust memory. Each
photo gets its own forward, so its vectors never depend on the photos beside it and a pause takes
effect between two photos. A batch of photos is committed in one transaction (a run killed at any
moment redoes at most that batch), pictures first: a photo is searchable by what it shows before its
text has been read. Progress goes through plain callbacks; the indexing service turns them into events.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.indexing.scanner import (
    FileEntry,
    NotRegularFile,
    bytes_hash,
    file_hash,
    open_regular,
    scan,
)
from sorce_desktop.core.memory import give_back_freed_memory
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.paths import folder_of, under_any
from sorce_desktop.core.photos.images import (
    MAX_FILE_BYTES,
    ImageError,
    check_header_file,
    decoded_size,
    load_image,
    same_decode,
)
from sorce_desktop.core.photos.whenwhere import PhotoFacts, read_facts
from sorce_desktop.core.regions import RegionLayout
from sorce_desktop.core.store.catalog import INDEXED, PENDING, IndexedPhoto, PhotoRow, Store, TextPhoto
from sorce_desktop.core.store.vectorfile import SAVE_EVERY_S, SaveClock
from sorce_desktop.core.text.ocr import OcrUnavailable, TextSource

log = logging.getLogger(__name__)

#: Bytes of decoded photos (and their file bytes) that may be held between decoding and being done with
#: at once: the photos waiting for the model and those of the batch not yet read. About 6 camera photos
#: of 18 MP with text on (each ~20 MB: its text reader's decode and the picture model's), 20 with text off,
#: 50 of 640 px: the model is never kept waiting (a photo decodes in 0.1-0.3 s, the models take ~2 s),
#: and indexing camera photos with text on peaks ~0.3 GB lower than with 768 MB here before (with the
#: other changes of that night: docs/benchmarks.md). A single larger photo still goes through, alone.
DECODE_BUDGET_BYTES = 128 * 2**20


class Phase(StrEnum):
    SCANNING = "scanning"
    EMBEDDING = "embedding"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass
class Progress:
    phase: Phase
    done: int = 0
    total: int = 0
    failed: int = 0
    rate: float = 0.0  # photos per second while embedding
    eta_s: float | None = None
    current: str | None = None


@dataclass
class IndexPlan:
    new: list[FileEntry] = field(default_factory=list)
    changed: list[FileEntry] = field(default_factory=list)
    #: files an earlier run recorded to embed and stopped before (unchanged since): embedded, not redone
    unfinished: list[FileEntry] = field(default_factory=list)
    moved: list[tuple[PhotoRow, FileEntry]] = field(default_factory=list)
    touched: list[tuple[PhotoRow, FileEntry]] = field(default_factory=list)  # same content, new mtime
    deleted: list[PhotoRow] = field(default_factory=list)
    unchanged: int = 0
    scan_errors: list[tuple[str, str]] = field(default_factory=list)
    empty: list[FileEntry] = field(default_factory=list)  # zero-byte files: failed without decoding
    offline: list[str] = field(default_factory=list)
    #: renamed folders (old, new, watched folder of new, photos under old): their rows move, vectors kept
    moved_trees: list[tuple[str, str, str, int]] = field(default_factory=list)
    #: the folders this plan scanned (only their online flags are updated); None: none (a path plan)
    folders: list[str] | None = None

    @property
    def to_embed(self) -> list[FileEntry]:
        return self.new + self.changed + self.unfinished


@dataclass
class IndexReport:
    new: int = 0
    changed: int = 0
    unfinished: int = 0  # left to embed by an earlier run that stopped (counted in neither of the above)
    moved: int = 0
    deleted: int = 0
    unchanged: int = 0
    embedded: int = 0
    failed: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    embed_seconds: float = 0.0
    offline: list[str] = field(default_factory=list)
    embedded_paths: list[str] = field(default_factory=list)
    failed_paths: list[str] = field(default_factory=list)
    deleted_paths: list[str] = field(default_factory=list)
    #: (old path, new path) of every file or folder whose rows moved
    moves: list[tuple[str, str]] = field(default_factory=list)
    text_read: int = 0  # photos read for their text (OCR)
    text_lines: int = 0  # text lines found in them
    text_seconds: float = 0.0  # time spent reading text
    text_error: str | None = None  # why text in photos was not read (package missing, ...)
    facts_read: int = 0  # photos indexed before their capture time and place were read, read now

    @property
    def photos_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def what_changed(self, unfinished: str = "left by an earlier run") -> str:
        """What the scan found, in words: "2 new, 1 changed, 0 moved, 0 removed, 12 unchanged", with the
        files embedded now though they did not change named apart (``unfinished``: why, e.g. "re-embedded
        for the new model"), never counted as changed."""
        again = f"{self.unfinished} {unfinished}, " if self.unfinished else ""
        return (
            f"{self.new} new, {self.changed} changed, {again}{self.moved} moved, {self.deleted} removed, "
            f"{self.unchanged} unchanged"
        )


ProgressCallback = Callable[[Progress], None]
#: Called on the indexing thread after each commit with the paths that just became searchable.
CommitCallback = Callable[[list[str]], None]


# -- what happened to a file: the one rule ------------------------------------------------------------
class Verdict(StrEnum):
    NEW = "new"
    UNCHANGED = "unchanged"
    TOUCHED = "touched"  # same content, new mtime: only the catalog's mtime changes
    CHANGED = "changed"
    UNFINISHED = "unfinished"  # recorded to embed by a run that stopped first (a full disk, Ctrl+C)


def file_verdict(row: PhotoRow | None, size: int, mtime_ns: int, path: str) -> Verdict:
    """Whether a file on disk is new, unchanged, touched (same bytes, new mtime) or changed against its
    catalog row. Size and mtime equal means unchanged (a failed file is not retried until it changes);
    a file never embedded is changed whatever its times; otherwise equal size and equal content hash
    means touched (a copy tool that rewrites the same bytes), so nothing is embedded again."""
    if row is None:
        return Verdict.NEW
    if row.size == size and row.mtime_ns == mtime_ns:
        return Verdict.UNFINISHED if row.status == PENDING else Verdict.UNCHANGED
    if row.status == INDEXED and row.hash and row.size == size:
        try:
            if file_hash(path) == row.hash:
                return Verdict.TOUCHED
        except OSError:
            pass
    return Verdict.CHANGED


def match_moves(
    new: list[FileEntry], gone: list[PhotoRow], renamed: dict[str, str] | None = None
) -> tuple[list[tuple[PhotoRow, FileEntry]], list[FileEntry]]:
    """Which new files are photos of ``gone`` under another name. A rename the file system reported
    (``renamed``: new path -> old path) is taken when the size and mtime still match (a rename keeps
    both); anything else must have the same size and the same content hash. Returns (moves, still new)."""
    renamed = renamed or {}
    by_path = {r.path: r for r in gone}
    by_size: dict[int, list[PhotoRow]] = {}
    for r in gone:
        if r.status == INDEXED and r.hash:
            by_size.setdefault(r.size, []).append(r)
    moves, rest = [], []
    taken: set[int] = set()
    for entry in new:
        old = by_path.get(renamed.get(entry.path, ""))
        if old is not None and old.id not in taken and (old.size, old.mtime_ns) == (entry.size, entry.mtime_ns):
            taken.add(old.id)
            moves.append((old, entry))
            continue
        candidates = [r for r in by_size.get(entry.size, ()) if r.id not in taken]
        match = None
        if candidates:
            try:
                digest = file_hash(entry.path)
            except OSError:
                digest = None
            match = next((r for r in candidates if r.hash == digest), None)
        if match is None:
            rest.append(entry)
        else:
            taken.add(match.id)
            moves.append((match, entry))
    return moves, rest


# -- memory: bytes in flight between decoding and the model --------------------------------------------
class ByteBudget:
    """Admits decoded photos by their bytes, in the order they were queued (tickets), so that whatever
    the photos' sizes at most ``limit`` bytes wait between decoding and the commit. A photo larger than
    the whole budget is admitted alone, when nothing else is held. ``peak`` is for tests and benchmarks."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.used = 0
        self.peak = 0
        self.largest = 0  # the largest single admission (the budget may be exceeded only by admitting it alone)
        self._next_ticket = 0
        self._serving = 0
        self._closed = False
        self._cond = threading.Condition()

    def ticket(self) -> int:
        with self._cond:
            t = self._next_ticket
            self._next_ticket += 1
            return t

    def acquire(self, ticket: int, n: int) -> None:
        """Wait for this ticket's turn and room for ``n`` bytes (every ticket must call this once)."""
        with self._cond:
            while not self._closed and (
                self._serving != ticket or (self.used > 0 and self.used + n > self.limit)
            ):
                self._cond.wait(0.5)
            self._serving = max(self._serving, ticket + 1)
            self._add(n)
            self._cond.notify_all()

    def adjust(self, old: int, new: int) -> None:
        """What a photo holds after decoding (usually less than its estimate)."""
        with self._cond:
            self._add(new - old)
            self._cond.notify_all()

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()

    def close(self) -> None:
        """Let every waiter through (the run ends: nothing will be consumed any more)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _add(self, n: int) -> None:
        self.used += n
        self.largest = max(self.largest, n)
        self.peak = max(self.peak, self.used)


def decode_estimate(width: int, height: int, file_bytes: int, decodes: Sequence[tuple[int, int]] = ()) -> int:
    """Bytes a photo may hold while it is decoded: its file, and for each decode it gets (``decodes``:
    their sizes, a JPEG's reduced by its draft scale; none given: one at full size) up to 4 bytes a
    pixel before conversion and the RGB copy."""
    pixels = sum(w * h for w, h in decodes) if decodes else width * height
    return file_bytes + pixels * (4 + 3)


def _image_bytes(img) -> int:
    if img is None:
        return 0
    n = len(img.image.getbands()) * img.image.width * img.image.height
    for value in img.prepared.values():
        for part in vars(value).values() if hasattr(value, "__dict__") else ():
            if isinstance(part, np.ndarray):
                n += part.nbytes
    return n


@dataclass
class _Decoded:
    row: PhotoRow
    image: object = None  # DecodedImage
    text_image: object = None  # DecodedImage at the resolution OCR needs, when the text is to be read
    error: str | None = None
    hash: str | None = None
    size: int = 0
    mtime_ns: int = 0
    gone: bool = False
    held: int = 0  # bytes accounted in the ByteBudget until this photo is committed
    facts: PhotoFacts | None = None  # when and where, read with the header


class PauseGate:
    """Whether indexing may go on. The one place a pause is kept: the indexing service owns one and hands
    it to every indexer it uses (so a pause outlives a change of model or settings); an indexer used on
    its own has its own. Every stage waits here between two photos: decoding, the picture model, and
    reading text."""

    def __init__(self):
        self._cond = threading.Condition()
        self._paused = False
        self._resumes = 0  # a Resume quickly followed by Pause still counts as one

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._resumes += 1
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def wake(self) -> None:
        """Let every waiter look again (a run was cancelled: it stops instead of waiting)."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, cancelled: threading.Event) -> None:
        """Return once not paused, or once ``cancelled`` is set (and :meth:`wake` called)."""
        with self._cond:
            while self._paused and not cancelled.is_set():
                self._cond.wait(1.0)

    def wait_for_resume(self, cancelled: threading.Event) -> None:
        """Return at the next Resume (even if Pause came again since: the caller says it is paused
        again), or once ``cancelled`` is set."""
        with self._cond:
            resumes = self._resumes
            while self._paused and self._resumes == resumes and not cancelled.is_set():
                self._cond.wait(1.0)


class Indexer:
    def __init__(
        self,
        store: Store,
        embedder: Embedder | Callable[[], Embedder] | None,
        layout: RegionLayout | None,
        *,
        skip_dirs: Sequence[str] = (),
        batch_size: int = 8,
        decode_workers: int = 2,
        on_progress: ProgressCallback | None = None,
        on_commit: CommitCallback | None = None,
        save_every_s: float = SAVE_EVERY_S,
        text_source: TextSource | None = None,
        decode_budget: int = DECODE_BUDGET_BYTES,
    ):
        self.store = store
        # Text in photos (OCR) runs beside the visual embedder; embedder None indexes text alone (no
        # visual model yet). With text_source None the indexer behaves exactly as without OCR.
        self.text_source = text_source
        self.visual = embedder is not None
        self._text_done: dict[int, tuple[str | None, str]] = {}
        self._text_engine: str | None = None
        # An embedder, or a function that loads one: loading is skipped when nothing needs embedding.
        self._embedder = embedder if isinstance(embedder, Embedder) else None
        self._embedder_factory = None if isinstance(embedder, Embedder) else embedder
        self.layout = layout
        self.skip_dirs = list(skip_dirs) + [str(store.folder)]
        self.batch_size = max(1, batch_size)
        self.decode_workers = max(1, decode_workers)
        self.on_progress = on_progress
        self.on_commit = on_commit
        #: the words read in photos already searchable by their picture were committed (their paths)
        self.on_text: CommitCallback | None = None
        self.save_clock = SaveClock(save_every_s)  # the indexing service replaces it with its own
        self.decode_budget = decode_budget
        self.last_budget: ByteBudget | None = None  # the last run's, for tests and benchmarks
        self._cancel = threading.Event()
        self.gate = PauseGate()  # the indexing service replaces it with its own

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    # -- control (thread-safe) ------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the run in progress after the photo in hand (what is done is committed)."""
        self._cancel.set()
        self.gate.wake()

    def pause(self) -> None:
        """Stop after the photo in hand (decoded, embedded or read) until :meth:`resume`."""
        self.gate.pause()

    def resume(self) -> None:
        self.gate.resume()

    @property
    def paused(self) -> bool:
        return self.gate.paused

    def _pause_or_cancel_asked(self) -> bool:
        return self.gate.paused or self._cancel.is_set()

    def _emit(self, p: Progress) -> None:
        if self.on_progress:
            try:
                self.on_progress(p)
            except Exception:  # a broken listener must not stop indexing
                log.exception("progress callback failed")

    def _committed(self, paths: list[str]) -> None:
        if self.on_commit and paths:
            try:
                self.on_commit(paths)
            except Exception:
                log.exception("commit callback failed")

    def _text_committed(self, paths: list[str]) -> None:
        if self.on_text and paths:
            try:
                self.on_text(paths)
            except Exception:
                log.exception("text commit callback failed")

    # -- planning ------------------------------------------------------------------------------------
    def plan(
        self,
        folders: Iterable[str] | None = None,
        *,
        paths: Iterable[str] | None = None,
        renamed: Sequence[tuple[str, str]] = (),
        renamed_trees: Sequence[tuple[str, str]] = (),
    ) -> IndexPlan:
        """What changed: under ``folders`` (a full scan: files missing from them are deleted) or, with
        ``paths``, for those files only (files the folder watcher saw settle, present or gone; folders
        among them that are gone stand for every photo under them). ``renamed`` / ``renamed_trees``:
        (old, new) renames the file system reported, taken as moves when the files still match."""
        if paths is not None:
            return self._plan_paths(paths, renamed, renamed_trees)
        folders = list(folders) if folders is not None else self.store.folders()
        result = scan(folders, self.skip_dirs, self.store.folder_has_photos)
        plan = IndexPlan(scan_errors=result.errors, offline=result.offline, folders=folders)
        online = [f for f in folders if f not in result.offline]
        catalog: dict[str, PhotoRow] = {}
        for f in online:
            for row in self.store.photos_under(f):
                catalog[row.path] = row
        error_paths = {p for p, _ in result.errors}
        gone = [row for path, row in catalog.items() if path not in result.files and path not in error_paths]
        self._classify(plan, list(result.files.values()), catalog, gone, {})
        return plan

    def _plan_paths(
        self, paths: Iterable[str], renamed: Sequence[tuple[str, str]], renamed_trees: Sequence[tuple[str, str]]
    ) -> IndexPlan:
        plan = IndexPlan()
        folders = self.store.folders()
        gone: list[PhotoRow] = []
        entries: list[FileEntry] = []
        catalog: dict[str, PhotoRow] = {}
        for old, new in renamed_trees:
            root = folder_of(new, folders)
            n = len(self.store.photos_in_tree(old))
            if root is not None and os.path.isdir(new) and not os.path.lexists(old) and n:
                plan.moved_trees.append((old, new, root, n))
        for path in dict.fromkeys(os.path.abspath(p) for p in paths):
            root = folder_of(path, folders)
            if root is None:
                continue
            if not os.path.isdir(root):
                # The watched folder itself is not there (unplugged, unmounted): nothing under it is gone.
                if root not in plan.offline:
                    plan.offline.append(root)
                continue
            row = self.store.photo_by_path(path)
            if row is not None:
                catalog[path] = row
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if row is not None:
                    gone.append(row)
                elif not os.path.lexists(path):
                    gone += self.store.photos_in_tree(path)  # a folder that went
                continue
            except OSError as exc:
                plan.scan_errors.append((path, f"the file cannot be read ({exc.strerror or exc})"))
                continue
            if os.path.isdir(path):
                continue
            entries.append(FileEntry(path, root, st.st_size, st.st_mtime_ns))
        # A file that reappears under a new name may have gone in an earlier hand-over: any indexed photo
        # of the same size whose file is missing from a folder that is there can be its source.
        sizes = {e.size for e in entries if e.path not in catalog}
        known = {r.id for r in gone}
        for size in sizes:
            for row in self.store.indexed_with_size(size):
                root = folder_of(row.path, folders)
                if row.id in known or root is None or not os.path.isdir(root) or os.path.lexists(row.path):
                    continue
                if not self.store.folder_online(root):
                    continue  # an unplugged drive's photos are not sources of moves
                gone.append(row)
                known.add(row.id)
        self._classify(plan, entries, catalog, gone, {new: old for old, new in renamed})
        # Only the gone photos that were handed in are deleted; the extra move sources above are not.
        handed = {os.path.abspath(p) for p in paths}
        plan.deleted = [
            r for r in plan.deleted if r.path in handed or under_any(r.path, handed)
        ]
        return plan

    def _classify(
        self,
        plan: IndexPlan,
        entries: list[FileEntry],
        catalog: dict[str, PhotoRow],
        gone: list[PhotoRow],
        renamed: dict[str, str],
    ) -> None:
        """Sort files into the plan with the one rule (:func:`file_verdict`, :func:`match_moves`)."""
        fresh: list[FileEntry] = []
        for entry in entries:
            row = catalog.get(entry.path)
            if row is None or entry.path in renamed:
                fresh.append(entry)  # new, or renamed over an existing photo: a move may explain it
            else:
                self._place(plan, row, entry)
        moves, fresh = match_moves(fresh, gone, renamed)
        plan.moved += moves
        for entry in fresh:
            row = catalog.get(entry.path)
            if row is None:
                plan.new.append(entry)
            else:  # a rename over a photo that did not match: judged as itself
                self._place(plan, row, entry)
        # Zero-byte files (a failed copy, a placeholder) fail here in bulk instead of one by one.
        plan.empty = [e for e in plan.to_embed if e.size == 0]
        if plan.empty:
            plan.new = [e for e in plan.new if e.size]
            plan.changed = [e for e in plan.changed if e.size]
            plan.unfinished = [e for e in plan.unfinished if e.size]
        moved_ids = {r.id for r, _ in plan.moved}
        plan.deleted = [r for r in gone if r.id not in moved_ids]

    @staticmethod
    def _place(plan: IndexPlan, row: PhotoRow, entry: FileEntry) -> None:
        verdict = file_verdict(row, entry.size, entry.mtime_ns, entry.path)
        if verdict is Verdict.UNCHANGED:
            plan.unchanged += 1
        elif verdict is Verdict.TOUCHED:
            plan.touched.append((row, entry))
        elif verdict is Verdict.UNFINISHED:
            plan.unfinished.append(entry)
        else:
            plan.changed.append(entry)

    def apply(self, plan: IndexPlan, report: IndexReport | None = None) -> None:
        """Record everything the plan says that needs no model: moves, deletions, touches, errors, pending."""
        report = report if report is not None else IndexReport()
        for old, new, root, _n in plan.moved_trees:
            self.store.move_tree(old, new, root)
            report.moves.append((old, new))
        for row, entry in plan.moved:
            self.store.move_photo(row.id, entry.path, entry.folder, entry.mtime_ns)
            report.moves.append((row.path, entry.path))
        for row, entry in plan.touched:
            self.store.touch(row.id, entry.size, entry.mtime_ns)
        if plan.deleted:
            self.store.delete_photos([r.id for r in plan.deleted])
            report.deleted_paths += [r.path for r in plan.deleted]
        folders = self.store.folders()
        failures = [(path, folder_of(path, folders), 0, 0, reason) for path, reason in plan.scan_errors]
        failures += [(e.path, e.folder, 0, e.mtime_ns, "the file is empty (0 bytes)") for e in plan.empty]
        self.store.record_failures(failures)
        report.failed_paths += [f[0] for f in failures if f[1] is not None]
        self.store.upsert_pending([(e.path, e.folder, e.size, e.mtime_ns, None) for e in plan.to_embed])
        # Only the folders scanned: a run over one folder must not mark another (offline) one online.
        for f in plan.folders or ():
            self.store.set_folder_online(f, f not in plan.offline)

    # -- running -------------------------------------------------------------------------------------
    def run(self, folders: Iterable[str] | None = None) -> IndexReport:
        """Scan ``folders`` (default: all of the store's), record the changes, embed what is pending."""
        self._cancel.clear()
        t0 = time.perf_counter()
        self._emit(Progress(Phase.SCANNING))
        folders = list(folders) if folders is not None else self.store.folders()
        plan = self.plan(folders)
        report = self._report_of(plan)
        self.apply(plan, report)
        offline = set(plan.offline)
        pending = [r for r in self.store.pending() if r.folder in folders and r.folder not in offline]
        if self.text_source is not None and self._text_engine_id(report):
            # Indexed photos whose text was not read yet (OCR switched on later, a new OCR engine).
            have = {r.id for r in pending}
            pending += [
                r
                for r in self.store.text_unread(self._text_engine)
                if r.id not in have and r.folder in folders and r.folder not in offline
            ]
        self.embed_rows(pending, report)
        if self.text_source is not None and self._text_engine and not report.cancelled:
            self._embed_missing_lines(report)
        if not report.cancelled:
            report.facts_read = self.backfill_facts(folders)
        report.seconds = time.perf_counter() - t0
        return report

    def index_paths(
        self,
        paths: Iterable[str],
        *,
        renamed: Sequence[tuple[str, str]] = (),
        renamed_trees: Sequence[tuple[str, str]] = (),
        save: bool = True,
    ) -> IndexReport:
        """Bring specific files up to date (what the folder watcher saw settle): new or changed ones are
        embedded, moved ones keep their vectors, vanished ones are forgotten. ``save=False`` leaves
        writing the vector index to the caller (the catalog is committed either way)."""
        self._cancel.clear()
        t0 = time.perf_counter()
        plan = self.plan(paths=paths, renamed=renamed, renamed_trees=renamed_trees)
        report = self._report_of(plan)
        self.apply(plan, report)
        rows = [r for r in (self.store.photo_by_path(e.path) for e in plan.to_embed) if r is not None]
        self.embed_rows(rows, report, save=save)
        report.seconds = time.perf_counter() - t0
        return report

    @staticmethod
    def _report_of(plan: IndexPlan) -> IndexReport:
        return IndexReport(
            new=len(plan.new),
            changed=len(plan.changed),
            unfinished=len(plan.unfinished),
            moved=len(plan.moved) + sum(n for *_, n in plan.moved_trees),
            deleted=len(plan.deleted),
            unchanged=plan.unchanged + len(plan.touched),
            offline=list(plan.offline),
        )

    # -- text in photos ------------------------------------------------------------------------------
    def _text_engine_id(self, report: IndexReport) -> str | None:
        """Load the OCR engine; without its package, index without text and say why."""
        if self._text_engine is None and self.text_source is not None:
            try:
                self._text_engine = self.text_source.engine_id
            except OcrUnavailable as exc:
                log.warning("text in photos is off: %s", exc)
                report.text_error = str(exc)
                self.text_source = None
        return self._text_engine

    def _embed_lines(self, texts: list[str], report: IndexReport) -> tuple[np.ndarray | None, str | None]:
        if not texts:
            return None, None
        try:
            emb = self.text_source.embedder
            return emb.embed(texts), emb.fingerprint
        except Exception as exc:  # lines stay searchable by their letters; meaning comes later
            log.warning("text lines could not be embedded (%s)", exc)
            report.text_error = report.text_error or f"text lines were not embedded ({exc})"
            return None, None

    def _read_text(
        self,
        jobs: list[tuple[int | None, _Decoded]],
        report: IndexReport,
        stop: Callable[[], bool] | None = None,
        between: Callable[[], None] | None = None,
        done: Callable[[_Decoded], None] | None = None,
    ) -> tuple[int, int]:
        """Read the text of decoded photos and store their lines (one commit). ``stop`` is asked before
        each photo: when it says so, reading ends there and what was read is committed, the rest left
        to the caller. ``between`` is called between the steps of reading one photo (the run waits there
        while paused, and says so); by default it waits at the pause gate. ``done`` is called with each
        photo once nothing more reads its pixels. Returns (photos failed, photos handled: ``jobs[:handled]``)."""
        if between is None:
            between = lambda: self.gate.wait(self._cancel)  # noqa: E731
        t = time.perf_counter()
        items: list[TextPhoto] = []
        gained_words: list[str] = []  # photos already searchable by their picture, now by their words too
        failed = handled = 0
        for pid, d in jobs:
            if stop is not None and stop():
                break
            handled += 1
            try:
                if d.text_image is None:
                    continue  # read before, for this very content
                try:
                    # a Pause holds between the steps of reading a photo too (its detectors, recognising)
                    lines = self.text_source.read(d.text_image, between=between)
                except Exception as exc:
                    log.warning("reading the text of %s failed: %s", d.row.path, exc)
                    if pid is None and d.row.status != INDEXED:
                        # Text alone was to be indexed: the photo has nothing else, so it failed.
                        self.store.record_failure(
                            d.row.path,
                            d.row.folder,
                            d.size,
                            d.mtime_ns,
                            f"the text reader failed on this photo ({exc})",
                        )
                        report.failed_paths.append(d.row.path)
                        failed += 1
                        continue
                    lines = []  # an embedded photo stays; recorded as read so one bad photo is not retried forever
                photo = None
                if pid is None and d.row.status != INDEXED:
                    img = d.text_image
                    photo = IndexedPhoto(
                        d.row.path, d.row.folder, d.size, d.mtime_ns, d.hash, img.width, img.height
                    )
                else:
                    gained_words.append(d.row.path)
                items.append(
                    TextPhoto(
                        pid if pid is not None else (d.row.id if photo is None else None),
                        d.hash,
                        lines,
                        None,
                        photo,
                    )
                )
            finally:
                if done is not None:
                    done(d)
        texts = [ln.text for it in items for ln in it.lines]
        vectors, model = self._embed_lines(texts, report)
        k = 0
        for it in items:
            n = len(it.lines)
            it.vectors = vectors[k : k + n] if vectors is not None else None
            k += n
        if items:
            self.store.commit_text(items, self._text_engine, model)
            report.text_read += len(items)
            report.text_lines += len(texts)
            report.embedded += sum(1 for it in items if it.photo is not None)
            paths = [it.photo.path for it in items if it.photo is not None]
            report.embedded_paths += paths
            self._committed(paths)
            self._text_committed(gained_words)
        report.text_seconds += time.perf_counter() - t
        return failed, handled

    def _embed_missing_lines(self, report: IndexReport) -> None:
        """Embed lines stored without an embedding (text model changed, or it was missing then)."""
        while True:
            todo = self.store.lines_without_embedding(512)
            if not todo:
                return
            vectors, model = self._embed_lines([t for _, t in todo], report)
            if vectors is None:
                return
            self.store.set_line_embeddings(model, [i for i, _ in todo], vectors)

    # -- the stages ----------------------------------------------------------------------------------
    def _decode(self, row: PhotoRow, budget: ByteBudget, ticket: int) -> _Decoded:
        """Read the file once (never blocking, regular files only), hash it, decode it for the picture
        model and for the text reader, and prepare its crops: everything before the model, on a decode
        thread. Every path through here takes its ticket in the budget exactly once."""
        out = _Decoded(row)
        admitted = False
        # Paused: decoding ahead stops too (after the photo in hand), so a pause frees the processor.
        self.gate.wait(self._cancel)
        try:
            try:
                fd = open_regular(row.path)
            except FileNotFoundError:
                out.gone = True
                return out
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
                decode = self.visual and row.status != INDEXED
                text = self._text_engine is not None
                if out.size > MAX_FILE_BYTES:
                    if decode or text:
                        raise ImageError(f"the file is too large ({out.size / 2**20:.0f} MB)")
                    budget.acquire(ticket, 0)
                    admitted = True
                    out.hash = file_hash(row.path)
                    return out
                if decode or text:  # the header's promise is checked before the file is read
                    check_header_file(f, out.size)
                # what the photo may hold while decoded, from its header (the pixels are not read yet)
                w, h, fmt, out.facts = self._header(f, out.mtime_ns)
                out.held = self._decode_estimate(w, h, fmt, out.size, decode, text) if decode or text else out.size
                budget.acquire(ticket, out.held)
                admitted = True
                data = f.read()
            out.hash = bytes_hash(data)
            text = text and self._text_done.get(row.id) != (out.hash, self._text_engine)
            if decode:
                # The picture is always decoded at the picture model's own size: its regions and vectors
                # must not depend on whether the text is read (a larger shared decode drafted JPEGs at
                # another scale: 78 of 80 photos got other vectors). One decode serves both when it is
                # the same decode, or when the text reader needs no more pixels than the picture.
                side = self._min_side
                shared = True
                if text and side is not None:
                    need = self.text_source.decode_min_side(w, h)
                    shared = need is not None and (need <= side or same_decode(data, side, need))
                if text and not shared:  # the larger of the two first: the smaller adds less at the peak
                    out.text_image = self.text_source.decode(row.path, data=data)
                out.image = load_image(row.path, side, data=data)
                try:
                    self._prepare(out.image, self.layout)
                except Exception as exc:  # a bug in cropping must cost this photo, not the run
                    log.exception("preparing %s for the model failed", row.path)
                    out.image = None
                    out.error = f"the photo could not be prepared for the model ({type(exc).__name__}: {exc})"
                    return out
                if text and shared:
                    out.text_image = out.image
            elif text:
                out.text_image = self.text_source.decode(row.path, data=data)
            del data
            held = _image_bytes(out.image) + (_image_bytes(out.text_image) if out.text_image is not out.image else 0)
            budget.adjust(out.held, held)
            out.held = held
        except NotRegularFile as exc:
            out.error = exc.strerror
        except ImageError as exc:
            out.error = str(exc)
        except PermissionError:
            out.error = "permission denied when reading the file"
        except OSError as exc:
            out.error = f"the file cannot be read ({exc.strerror or exc})"
        except Exception as exc:  # never let one file stop the run
            log.exception("unexpected error decoding %s", row.path)
            out.error = f"unexpected error while reading the image ({type(exc).__name__}: {exc})"
        finally:
            if not admitted:
                budget.acquire(ticket, 0)
            if out.error or out.gone:
                budget.release(out.held)
                out.held = 0
                out.image = out.text_image = None
        return out

    def _decode_estimate(self, w: int, h: int, fmt: str | None, size: int, decode: bool, text: bool) -> int:
        """:func:`decode_estimate` for the decodes this photo may get: the picture model's and the text
        reader's (one of them, where they come to the same), each at its JPEG draft scale."""
        sides = [self._min_side] if decode else []
        if text:
            sides.append(self.text_source.decode_min_side(w, h))
        sizes = {decoded_size(fmt, w, h, side) for side in sides}
        return decode_estimate(w, h, size, sorted(sizes))

    @staticmethod
    def _header(f, mtime_ns: int) -> tuple[int, int, str | None, PhotoFacts | None]:
        """(width, height, format, when and where) from the header of the open photo file, which is left
        at its start; (0, 0, None, None) where Pillow cannot tell (decoding will say why, and only the
        file's bytes count). The EXIF block is part of the header Pillow parses here: nothing more is
        read for it."""
        try:
            with Image.open(f) as probe:
                return (*probe.size, probe.format, read_facts(probe, mtime_ns))
        except Exception:
            return 0, 0, None, None
        finally:
            f.seek(0)

    def backfill_facts(self, folders: Sequence[str] | None = None, batch: int = 256) -> int:
        """Read when and where for photos indexed before they were read: headers only, nothing embedded
        again. Files that cannot be opened now are left for a later run. Returns how many were read."""
        done = 0
        skipped: set[int] = set()
        while not self._cancel.is_set():
            rows = [r for r in self.store.photos_without_facts(batch + len(skipped)) if r.id not in skipped]
            if not rows:
                break
            items: list[tuple[int, PhotoFacts]] = []
            for row in rows[:batch]:
                if self._cancel.is_set():
                    break
                if folders is not None and row.folder not in folders:
                    skipped.add(row.id)
                    continue
                try:
                    with os.fdopen(open_regular(row.path), "rb") as f:
                        _w, _h, _fmt, facts = self._header(f, os.fstat(f.fileno()).st_mtime_ns)
                except OSError:
                    facts = None
                if facts is None:
                    skipped.add(row.id)
                else:
                    items.append((row.id, facts))
            self.store.set_facts(items)
            done += len(items)
        return done

    def embed_rows(self, rows: Sequence[PhotoRow], report: IndexReport, *, save: bool = True) -> None:
        """Embed ``rows`` (pending photos, or indexed ones whose text is still to be read)."""
        run = _EmbedRun(self, rows, report)
        if not rows:
            self._emit(Progress(Phase.EMBEDDING, 0, 0))
            self._emit(Progress(Phase.DONE, 0, 0))
            return
        if self.visual and any(r.status != INDEXED for r in rows):
            embedder = self.embedder  # load the model (if lazy) before decoding starts
            self._min_side = embedder.decode_min_side(self.layout)
            # Bound here, on this thread: the decoding threads never load the model themselves.
            self._prepare = embedder.prepare
        if self.text_source is not None and self._text_engine_id(report):
            self._text_done = self.store.text_read_for([r.id for r in rows])
        run.go()
        if save:
            self.save()

    def save(self) -> None:
        """Save the vector file now (the end of a run, or :class:`SaveClock` says it is due)."""
        self.store.save()
        self.save_clock.saved()

    def _give_back_memory(self) -> None:
        """What a batch held leaves the process once it is committed: the text reader's memory arenas
        (about 0.45 GB once it has read a 640-px photo enlarged to 1920x1440) and the heap pages freed
        photos and buffers left. So the picture model's next batch runs without the reader's buffers
        beside it, the arenas never grow past what one batch needs, and a window or ``watch`` left
        open after indexing does not keep them. Their regrowth costs the next batch's first photo
        about 0.05 s."""
        if self.text_source is not None:
            try:
                self.text_source.release_memory()
            except Exception as exc:  # the memory stays held; indexing itself went well
                log.warning("the text reader's memory could not be released (%s)", exc)
        give_back_freed_memory()


class _EmbedRun:
    """One pass of :meth:`Indexer.embed_rows`: the decode queue ahead of the model, the per-photo
    forwards, the commits, and the counts its progress reports."""

    def __init__(self, indexer: Indexer, rows: Sequence[PhotoRow], report: IndexReport):
        self.ix = indexer
        self.rows = rows
        self.report = report
        self.total = len(rows)
        self.done = self.failed = 0
        self.t_start = time.perf_counter()
        self.budget = ByteBudget(indexer.decode_budget)
        indexer.last_budget = self.budget
        self.queue: deque[Future] = deque()
        self._it = iter(rows)

    # -- the decode queue ----------------------------------------------------------------------------
    def _top_up(self, pool: ThreadPoolExecutor) -> None:
        # Bytes bound the queue (the budget blocks decoding); the count keeps it to two batches ahead
        # of the model, which decoding keeps up with (a coco-small photo decodes in ~0.03 s, a batch
        # takes the models ~15 s): each photo waiting holds ~2.4 MB at 640 px, ~25 MB at 18 MP.
        while len(self.queue) < max(4, 2 * self.ix.batch_size) and self.budget.used < self.budget.limit:
            try:
                row = next(self._it)
            except StopIteration:
                return
            self.queue.append(pool.submit(self.ix._decode, row, self.budget, self.budget.ticket()))

    def _next_batch(self, pool: ThreadPoolExecutor) -> list[_Decoded]:
        """The next photos decoded; empty when a pause or cancel came while waiting for the first (its
        decoding may be waiting at the gate itself: the caller stops there and says so)."""
        batch: list[_Decoded] = []
        while self.queue and len(batch) < self.ix.batch_size:
            # Wait for the first photo only; the others join if already decoded, so the model starts
            # on the first photo while the rest decode.
            if batch and not self.queue[0].done():
                break
            if not batch and not self._wait_decoded(self.queue[0]):
                break
            batch.append(self.queue.popleft().result())
            self._top_up(pool)
        return batch

    def _wait_decoded(self, fut: Future) -> bool:
        """Wait for a photo's decoding; False as soon as a pause or cancel is asked for."""
        while not fut.done():
            if self.ix._pause_or_cancel_asked():
                return False
            wait_futures([fut], timeout=0.1)
        return True

    # -- pause and cancel, between photos -------------------------------------------------------------
    def _stop_requested(self) -> bool:
        """Wait here while paused (saying so once, with the true counts); True when cancelled."""
        ix = self.ix
        if ix.gate.paused and not ix._cancel.is_set():
            while ix.gate.paused and not ix._cancel.is_set():  # each Pause is said, with the same counts
                ix._emit(Progress(Phase.PAUSED, self.done, self.total, self.failed))
                ix.gate.wait_for_resume(ix._cancel)
            if not ix._cancel.is_set():
                ix._emit(Progress(Phase.EMBEDDING, self.done, self.total, self.failed, *self._rate()))
        return ix._cancel.is_set()

    def _rate(self) -> tuple[float, float | None]:
        elapsed = time.perf_counter() - self.t_start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return rate, ((self.total - self.done) / rate if rate > 0 else None)

    # -- the run -------------------------------------------------------------------------------------
    def go(self) -> None:
        ix, report = self.ix, self.report
        ix._emit(Progress(Phase.EMBEDDING, 0, self.total))
        with ThreadPoolExecutor(ix.decode_workers, thread_name_prefix="decode") as pool:
            try:
                self._top_up(pool)
                while self.queue:
                    if self._stop_requested():
                        report.cancelled = True
                        break
                    batch = self._next_batch(pool)
                    if not batch:
                        continue  # paused or cancelled while decoding: the loop's top stops there
                    last = batch[-1].row.path
                    try:
                        self._process(batch)
                    finally:
                        self.budget.release(sum(d.held for d in batch))
                        del batch  # its photos are freed before the memory is given back
                        ix._give_back_memory()
                    ix._emit(Progress(Phase.EMBEDDING, self.done, self.total, self.failed, *self._rate(), last))
                    if report.cancelled:
                        break
                    ix.save_clock.changed()
                    if ix.save_clock.due():
                        ix.save()
            finally:
                for fut in self.queue:
                    fut.cancel()
                self.budget.close()  # decode threads waiting for room go on and end
        report.failed += self.failed
        report.embed_seconds += time.perf_counter() - self.t_start
        rate = self.done / max(1e-9, time.perf_counter() - self.t_start)
        ix._emit(Progress(Phase.CANCELLED if report.cancelled else Phase.DONE, self.done, self.total, self.failed, rate))

    def _process(self, batch: list[_Decoded]) -> None:
        ix, report = self.ix, self.report
        good = []
        for d in batch:
            if d.gone:
                ix.store.delete_photos([d.row.id])
                report.deleted += 1
                report.deleted_paths.append(d.row.path)
                self.done += 1
            elif d.error:
                ix.store.record_failure(d.row.path, d.row.folder, d.size, d.mtime_ns, d.error)
                report.failed_paths.append(d.row.path)
                self.failed += 1
                self.done += 1
            else:
                good.append(d)
        text_jobs: list[tuple[int | None, _Decoded]] = []
        if ix.text_source is not None:
            # Photos needing their text read only (already embedded, or no visual model).
            text_jobs = [(None, d) for d in good if d.image is None]
            good = [d for d in good if d.image is not None]
        text_jobs += self._embed_pictures(good)
        if text_jobs and not report.cancelled:
            if any(d.text_image is not None for _pid, d in text_jobs):
                # the picture model's freed buffers leave before the text reader's arena grows beside
                # them (camera photos with text on: process peak -0.1 to -0.2 GB, docs/benchmarks.md)
                give_back_freed_memory()
            self._read_texts(text_jobs)

    def _done_with(self, d: _Decoded) -> None:
        """Let go of a photo's pixels once nothing more reads them and give its bytes back to the budget,
        so the next photos decode while the rest of its batch is still embedded or read (the budget bounds
        what is held, not a whole batch and the queue besides)."""
        d.image = d.text_image = None
        self.budget.release(d.held)
        d.held = 0

    def _read_texts(self, jobs: list[tuple[int | None, _Decoded]]) -> None:
        """Read the text of these photos, stopping between two of them for a pause (what was read is
        committed first, so the paused counts are the store's) or a cancel (the rest is read next run).
        A photo with text alone to read counts as done once its text is committed."""
        ix = self.ix
        while jobs:
            failed, handled = ix._read_text(
                jobs, self.report, stop=ix._pause_or_cancel_asked, between=self._stop_requested, done=self._done_with
            )
            self.failed += failed
            self.done += sum(1 for pid, _d in jobs[:handled] if pid is None)
            jobs = jobs[handled:]
            if jobs and self._stop_requested():
                self.report.cancelled = True
                return

    def _embed_pictures(self, good: list[_Decoded]) -> list[tuple[int | None, _Decoded]]:
        """One forward per photo (its vectors never depend on its batchmates, and a pause or cancel
        takes effect between two photos); the batch's pictures are committed together, before any text
        is read, so they are searchable first (and before a pause, so its counts are what the store
        holds). Returns the photos whose text is to be read next."""
        ix, report = self.ix, self.report
        commit: list[IndexedPhoto] = []
        embedded: list[_Decoded] = []
        text_jobs: list[tuple[int | None, _Decoded]] = []

        def flush() -> None:
            if commit:
                ids = ix.store.commit_photos(commit)
                report.embedded += len(commit)
                paths = [c.path for c in commit]
                report.embedded_paths += paths
                ix._committed(paths)
                text_jobs.extend(zip(ids, embedded))
                commit.clear()
                embedded.clear()

        for d in good:
            if ix._pause_or_cancel_asked():
                flush()
                if self._stop_requested():
                    report.cancelled = True
                    break
            try:
                regions = ix.embedder.embed_photos([d.image], ix.layout)[0]
            except Exception as exc:
                log.warning("the model failed on %s: %s", d.row.path, exc)
                ix.store.record_failure(
                    d.row.path, d.row.folder, d.size, d.mtime_ns, f"the model failed on this photo ({exc})"
                )
                report.failed_paths.append(d.row.path)
                self.failed += 1
                self.done += 1
                self._done_with(d)
                continue
            img = d.image
            commit.append(
                IndexedPhoto(
                    d.row.path, d.row.folder, d.size, d.mtime_ns, d.hash, img.width, img.height, regions,
                    ix.embedder.variant(), d.facts,
                )
            )
            embedded.append(d)
            self.done += 1
            if d.text_image is None:  # its text is not to be read: nothing more needs its pixels
                self._done_with(d)
        flush()
        return [] if report.cancelled else text_jobs
