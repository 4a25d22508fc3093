"""The indexer: bring the store in line with the folders, embedding only what changed.

Planning (scan, compare with the catalog: new, changed, moved, deleted) is plain Python and cheap;
embedding runs in batches, and each batch is committed in one transaction, so a run killed at any
moment redoes at most its in-flight batch. Everything done per photo before the model (read once,
hash, decode, EXIF transpose, the embedder's crops, resizing and tile skipping: ``Embedder.prepare``)
runs on a small thread pool ahead of the model, so it overlaps the forward of the batches before it
(PIL, numpy and torch release the GIL in their heavy work).
Progress is reported through a plain callback; the GUI bridges it to Qt signals.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sorce_desktop.core import textstore
from sorce_desktop.core.images import MAX_FILE_BYTES, ImageError, check_header, load_image
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.ocr import OcrUnavailable, TextSource
from sorce_desktop.core.regions import RegionLayout
from sorce_desktop.core.scanner import FileEntry, bytes_hash, file_hash, scan
from sorce_desktop.core.store import INDEXED, PENDING, IndexedPhoto, PhotoRow, Store

log = logging.getLogger(__name__)


@dataclass
class Progress:
    phase: str  # 'scanning' | 'embedding' | 'paused' | 'done' | 'cancelled'
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
    moved: list[tuple[PhotoRow, FileEntry]] = field(default_factory=list)
    touched: list[tuple[PhotoRow, FileEntry]] = field(default_factory=list)  # same content, new mtime
    deleted: list[PhotoRow] = field(default_factory=list)
    unchanged: int = 0
    scan_errors: list[tuple[str, str]] = field(default_factory=list)
    empty: list[FileEntry] = field(default_factory=list)  # zero-byte files: failed without decoding
    offline: list[str] = field(default_factory=list)
    #: the folders this plan scanned (only their online flags are updated); None: all of the store's
    folders: list[str] | None = None


@dataclass
class IndexReport:
    new: int = 0
    changed: int = 0
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
    text_read: int = 0  # photos read for their text (OCR)
    text_lines: int = 0  # text lines found in them
    text_seconds: float = 0.0  # time spent reading text
    text_error: str | None = None  # why text in photos was not read (package missing, ...)

    @property
    def photos_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


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
        save_every_s: float = 60.0,
        text_source: TextSource | None = None,
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
        self.save_every_s = save_every_s
        self._cancel = threading.Event()
        self._resume = threading.Event()
        self._resume.set()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    @property
    def min_side(self) -> int | None:
        return self.embedder.decode_min_side(self.layout)

    # -- control (thread-safe) ------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        self._resume.set()

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def _emit(self, p: Progress) -> None:
        if self.on_progress:
            try:
                self.on_progress(p)
            except Exception:  # a broken listener must not stop indexing
                log.exception("progress callback failed")

    # -- planning ------------------------------------------------------------------------------------
    def plan(self, folders: Iterable[str]) -> IndexPlan:
        folders = list(folders)
        result = scan(folders, self.skip_dirs)
        plan = IndexPlan(scan_errors=result.errors, offline=result.offline, folders=folders)
        online = [f for f in folders if f not in result.offline]
        catalog: dict[str, PhotoRow] = {}
        for f in online:
            for row in self.store.photos_under(f):
                catalog[row.path] = row
        seen_paths = set(result.files)
        error_paths = {p for p, _ in result.errors}
        gone = [row for path, row in catalog.items() if path not in seen_paths and path not in error_paths]
        gone_by_size: dict[int, list[PhotoRow]] = {}
        for row in gone:
            if row.status == INDEXED and row.hash:
                gone_by_size.setdefault(row.size, []).append(row)
        for path, entry in result.files.items():
            row = catalog.get(path)
            if row is None:
                candidates = gone_by_size.get(entry.size)
                if candidates:
                    try:
                        digest = file_hash(path)
                    except OSError:
                        digest = None
                    match = next((r for r in candidates if r.hash == digest), None)
                    if match is not None:
                        candidates.remove(match)
                        plan.moved.append((match, entry))
                        continue
                plan.new.append(entry)
            elif row.size == entry.size and row.mtime_ns == entry.mtime_ns:
                if row.status == PENDING:
                    plan.changed.append(entry)
                else:
                    plan.unchanged += 1
            elif row.status == INDEXED and row.hash and row.size == entry.size:
                try:
                    same = file_hash(path) == row.hash
                except OSError:
                    same = False
                if same:
                    plan.touched.append((row, entry))
                else:
                    plan.changed.append(entry)
            else:
                plan.changed.append(entry)
        # Zero-byte files (a failed copy, a placeholder) fail here in bulk instead of one by one.
        plan.empty = [e for e in plan.new + plan.changed if e.size == 0]
        if plan.empty:
            plan.new = [e for e in plan.new if e.size]
            plan.changed = [e for e in plan.changed if e.size]
        moved_ids = {r.id for r, _ in plan.moved}
        plan.deleted = [r for r in gone if r.id not in moved_ids]
        return plan

    def apply(self, plan: IndexPlan) -> None:
        """Record everything the plan says that needs no model: moves, deletions, touches, errors, pending."""
        for row, entry in plan.moved:
            self.store.move_photo(row.id, entry.path, entry.folder, entry.mtime_ns)
        for row, entry in plan.touched:
            self.store.touch(row.id, entry.size, entry.mtime_ns)
        if plan.deleted:
            self.store.delete_photos([r.id for r in plan.deleted])
        folders = self.store.folders()
        failures = [
            (path, next((f for f in folders if path.startswith(f)), None), 0, 0, reason)
            for path, reason in plan.scan_errors
        ]
        failures += [(e.path, e.folder, 0, e.mtime_ns, "the file is empty (0 bytes)") for e in plan.empty]
        self.store.record_failures(failures)
        self.store.upsert_pending(
            [(e.path, e.folder, e.size, e.mtime_ns, None) for e in plan.new + plan.changed]
        )
        # Only the folders scanned: a run over one folder must not mark another (offline) one online.
        for f in plan.folders if plan.folders is not None else self.store.folders():
            self.store.set_folder_online(f, f not in plan.offline)

    # -- running -------------------------------------------------------------------------------------
    def run(self, folders: Iterable[str] | None = None) -> IndexReport:
        """Scan ``folders`` (default: all of the store's), record the changes, embed what is pending."""
        t0 = time.perf_counter()
        self._emit(Progress("scanning"))
        folders = list(folders) if folders is not None else self.store.folders()
        plan = self.plan(folders)
        self.apply(plan)
        report = IndexReport(
            new=len(plan.new),
            changed=len(plan.changed),
            moved=len(plan.moved),
            deleted=len(plan.deleted),
            unchanged=plan.unchanged,
            offline=plan.offline,
        )
        offline = set(plan.offline)
        pending = [r for r in self.store.pending() if r.folder in folders and r.folder not in offline]
        if self.text_source is not None and self._text_engine_id(report):
            # Indexed photos whose text was not read yet (OCR switched on later, a new OCR engine).
            have = {r.id for r in pending}
            pending += [
                r
                for r in textstore.unread(self.store, self._text_engine)
                if r.id not in have and r.folder in folders and r.folder not in offline
            ]
        self.embed_rows(pending, report)
        if self.text_source is not None and self._text_engine:
            self._embed_missing_lines(report)
        report.seconds = time.perf_counter() - t0
        return report

    def index_paths(self, paths: Iterable[str], *, save: bool = True) -> IndexReport:
        """Bring specific files up to date (the watcher's entry point): new or changed ones are embedded,
        vanished ones forgotten. ``save=False`` leaves writing the vector index to the caller (the watcher
        saves every minute instead of after every few photos; the catalog is committed either way)."""
        report = IndexReport()
        folders = self.store.folders()
        rows = []
        for path in paths:
            path = os.path.abspath(path)
            folder = next((f for f in folders if path.startswith(f.rstrip(os.sep) + os.sep)), None)
            if folder is None:
                continue
            row = self.store.photo_by_path(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if row is not None:
                    self.store.delete_photos([row.id])
                    report.deleted += 1
                continue
            except OSError as exc:
                self.store.record_failure(path, folder, 0, 0, f"the file cannot be read ({exc.strerror})")
                report.failed += 1
                continue
            if (
                row is not None
                and row.status != PENDING
                and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
            ):
                report.unchanged += 1
                continue
            if row is not None and row.status == INDEXED and row.hash and row.size == st.st_size:
                try:
                    if file_hash(path) == row.hash:
                        self.store.touch(row.id, st.st_size, st.st_mtime_ns)
                        report.unchanged += 1
                        continue
                except OSError:
                    pass
            self.store.upsert_pending([(path, folder, st.st_size, st.st_mtime_ns, None)])
            rows.append(self.store.photo_by_path(path))
            if row is None:
                report.new += 1
            else:
                report.changed += 1
        self.embed_rows([r for r in rows if r is not None], report, save=save)
        return report

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

    def _read_text(self, jobs: list[tuple[int | None, _Decoded]], report: IndexReport) -> int:
        """Read the text of decoded photos and store their lines. Returns how many photos failed."""
        t = time.perf_counter()
        items: list[textstore.TextPhoto] = []
        failed = 0
        for pid, d in jobs:
            if d.text_image is None:
                continue  # read before, for this very content
            try:
                lines = self.text_source.read(d.text_image)
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
                    failed += 1
                    continue
                lines = []  # an embedded photo stays; recorded as read so one bad photo is not retried forever
            photo = None
            if pid is None and d.row.status != INDEXED:
                img = d.text_image
                photo = IndexedPhoto(
                    d.row.path, d.row.folder, d.size, d.mtime_ns, d.hash, img.width, img.height
                )
            items.append(
                textstore.TextPhoto(
                    pid if pid is not None else (d.row.id if photo is None else None),
                    d.hash,
                    lines,
                    None,
                    photo,
                )
            )
        texts = [ln.text for it in items for ln in it.lines]
        vectors, model = self._embed_lines(texts, report)
        k = 0
        for it in items:
            n = len(it.lines)
            it.vectors = vectors[k : k + n] if vectors is not None else None
            k += n
        if items:
            textstore.commit_text(self.store, items, self._text_engine, model)
            report.text_read += len(items)
            report.text_lines += len(texts)
            report.embedded += sum(1 for it in items if it.photo is not None)
            report.embedded_paths += [it.photo.path for it in items if it.photo is not None]
        report.text_seconds += time.perf_counter() - t
        return failed

    def _embed_missing_lines(self, report: IndexReport) -> None:
        """Embed lines stored without an embedding (text model changed, or it was missing then)."""
        while True:
            todo = textstore.lines_without_embedding(self.store, 512)
            if not todo:
                return
            vectors, model = self._embed_lines([t for _, t in todo], report)
            if vectors is None:
                return
            textstore.set_embeddings(self.store, model, [i for i, _ in todo], vectors)

    def _decode(self, row: PhotoRow) -> _Decoded:
        out = _Decoded(row)
        try:
            st = os.stat(row.path)
        except FileNotFoundError:
            out.gone = True
            return out
        except OSError as exc:
            out.error = f"the file cannot be read ({exc.strerror or exc})"
            return out
        out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
        try:
            decode = self.visual and row.status != INDEXED
            if decode and out.size <= MAX_FILE_BYTES:
                check_header(row.path, out.size)  # the header's promise is checked before the file is read
                # Read once: the same bytes give the content hash and the decoded image.
                with open(row.path, "rb") as f:
                    data = f.read()
                out.hash = bytes_hash(data)
                out.image = load_image(row.path, self._min_side, data=data)
            else:
                out.hash = file_hash(row.path)
                if decode:
                    out.image = load_image(row.path, self._min_side)
            if out.image is not None:
                try:
                    self._prepare(out.image, self.layout)
                except Exception as exc:  # a bug in cropping must cost this photo, not the run
                    log.exception("preparing %s for the model failed", row.path)
                    out.image = None
                    out.error = f"the photo could not be prepared for the model ({type(exc).__name__}: {exc})"
                    return out
            if self._text_engine is not None and self._text_done.get(row.id) != (out.hash, self._text_engine):
                out.text_image = self.text_source.decode(row.path)
        except ImageError as exc:
            out.error = str(exc)
        except PermissionError:
            out.error = "permission denied when reading the file"
        except OSError as exc:
            out.error = f"the file cannot be read ({exc.strerror or exc})"
        except Exception as exc:  # never let one file stop the run
            log.exception("unexpected error decoding %s", row.path)
            out.error = f"unexpected error while reading the image ({type(exc).__name__}: {exc})"
        return out

    def embed_rows(self, rows: Sequence[PhotoRow], report: IndexReport, *, save: bool = True) -> None:
        total = len(rows)
        done = failed = 0
        t_start = time.perf_counter()
        last_save = time.monotonic()
        embed_time = 0.0
        self._emit(Progress("embedding", 0, total))
        if not rows:
            self._emit(Progress("done", 0, 0))
            return
        if self.visual and any(r.status != INDEXED for r in rows):
            embedder = self.embedder  # load the model (if lazy) before decoding starts
            self._min_side = embedder.decode_min_side(self.layout)
            # Bound here, on this thread: the decoding threads never load the model themselves.
            self._prepare = embedder.prepare
        if self.text_source is not None and self._text_engine_id(report):
            self._text_done = textstore.done_for(self.store, [r.id for r in rows])
        window = self.batch_size * 3
        queue: deque[Future] = deque()
        it = iter(rows)
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as pool:

            def top_up() -> None:
                while len(queue) < window:
                    try:
                        row = next(it)
                    except StopIteration:
                        return
                    queue.append(pool.submit(self._decode, row))

            top_up()
            while queue:
                if not self._resume.is_set():
                    self._emit(Progress("paused", done, total, failed))
                    self._resume.wait()
                if self._cancel.is_set():
                    for fut in queue:
                        fut.cancel()
                    report.cancelled = True
                    break
                batch: list[_Decoded] = []
                while queue and len(batch) < self.batch_size:
                    # Wait for the first photo only; the others join if already prepared. At the start
                    # of a run (no earlier forward to hide behind) the model starts on the first photo
                    # while the rest decode; later on decoding runs ahead and batches are full.
                    if batch and not queue[0].done():
                        break
                    batch.append(queue.popleft().result())
                    top_up()
                good = []
                for d in batch:
                    if d.gone:
                        self.store.delete_photos([d.row.id])
                        report.deleted += 1
                        done += 1
                    elif d.error:
                        self.store.record_failure(d.row.path, d.row.folder, d.size, d.mtime_ns, d.error)
                        failed += 1
                        done += 1
                    else:
                        good.append(d)
                text_jobs: list[tuple[int | None, _Decoded]] = []
                if self.text_source is not None:
                    # Photos needing their text read only (already embedded, or no visual model).
                    text_jobs = [(None, d) for d in good if d.image is None]
                    good = [d for d in good if d.image is not None]
                    done += len(text_jobs)
                if good:
                    t = time.perf_counter()
                    try:
                        embedded = self.embedder.embed_photos([d.image for d in good], self.layout)
                    except Exception as exc:
                        # A model failure on one batch: retry photo by photo so one bad input costs one photo.
                        log.warning("batch embedding failed (%s); retrying one by one", exc)
                        embedded = []
                        for d in good:
                            try:
                                embedded.append(self.embedder.embed_photos([d.image], self.layout)[0])
                            except Exception as exc1:
                                embedded.append(exc1)
                    embed_time += time.perf_counter() - t
                    commit = []
                    for d, regions in zip(good, embedded):
                        if isinstance(regions, Exception):
                            self.store.record_failure(
                                d.row.path,
                                d.row.folder,
                                d.size,
                                d.mtime_ns,
                                f"the model failed on this photo ({regions})",
                            )
                            failed += 1
                            continue
                        commit.append(
                            IndexedPhoto(
                                d.row.path,
                                d.row.folder,
                                d.size,
                                d.mtime_ns,
                                d.hash,
                                d.image.width,
                                d.image.height,
                                regions,
                                self.embedder.variant(),
                            )
                        )
                    if commit:
                        ids = self.store.commit_photos(commit)
                        by_path = {d.row.path: d for d in good}
                        text_jobs += [(pid, by_path[c.path]) for pid, c in zip(ids, commit)]
                        report.embedded += len(commit)
                        report.embedded_paths += [c.path for c in commit]
                    done += len(good)
                if text_jobs:
                    failed += self._read_text(text_jobs, report)
                elapsed = time.perf_counter() - t_start
                rate = done / elapsed if elapsed > 0 else 0.0
                eta = (total - done) / rate if rate > 0 else None
                self._emit(
                    Progress(
                        "embedding", done, total, failed, rate, eta, batch[-1].row.path if batch else None
                    )
                )
                if time.monotonic() - last_save > self.save_every_s:
                    self.store.save()
                    last_save = time.monotonic()
        report.failed += failed
        report.embed_seconds += time.perf_counter() - t_start
        if save:
            self.store.save()
        self._emit(
            Progress(
                "cancelled" if report.cancelled else "done",
                done,
                total,
                failed,
                done / max(1e-9, time.perf_counter() - t_start),
            )
        )
