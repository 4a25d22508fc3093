"""The indexer: bring the store in line with the folders, embedding only what changed.

Planning (scan, compare with the catalog: new, changed, moved, deleted) is plain Python and cheap;
embedding runs in batches with decoding prefetched on a thread pool, and each batch is committed in
one transaction, so a run killed at any moment redoes at most its in-flight batch.
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

from sorce_desktop.core.images import ImageError, load_image
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.regions import RegionLayout
from sorce_desktop.core.scanner import FileEntry, file_hash, scan
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
    offline: list[str] = field(default_factory=list)


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

    @property
    def photos_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Decoded:
    row: PhotoRow
    image: object = None  # DecodedImage
    error: str | None = None
    hash: str | None = None
    size: int = 0
    mtime_ns: int = 0
    gone: bool = False


class Indexer:
    def __init__(
        self,
        store: Store,
        embedder: Embedder | Callable[[], Embedder],
        layout: RegionLayout,
        *,
        skip_dirs: Sequence[str] = (),
        batch_size: int = 8,
        decode_workers: int = 2,
        on_progress: ProgressCallback | None = None,
        save_every_s: float = 60.0,
    ):
        self.store = store
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
        plan = IndexPlan(scan_errors=result.errors, offline=result.offline)
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
        for path, reason in plan.scan_errors:
            folder = next((f for f in self.store.folders() if path.startswith(f)), None)
            self.store.record_failure(path, folder, 0, 0, reason)
        self.store.upsert_pending(
            [(e.path, e.folder, e.size, e.mtime_ns, None) for e in plan.new + plan.changed]
        )
        for f in self.store.folders():
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
        self.embed_rows(pending, report)
        report.seconds = time.perf_counter() - t0
        return report

    def index_paths(self, paths: Iterable[str]) -> IndexReport:
        """Bring specific files up to date (the watcher's entry point): new or changed ones are embedded,
        vanished ones forgotten."""
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
        self.embed_rows([r for r in rows if r is not None], report)
        return report

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
            out.hash = file_hash(row.path)
            out.image = load_image(row.path, self._min_side)
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

    def embed_rows(self, rows: Sequence[PhotoRow], report: IndexReport) -> None:
        total = len(rows)
        done = failed = 0
        t_start = time.perf_counter()
        last_save = time.monotonic()
        embed_time = 0.0
        self._emit(Progress("embedding", 0, total))
        if not rows:
            self._emit(Progress("done", 0, 0))
            return
        embedder = self.embedder  # load the model (if lazy) before decoding starts
        self._min_side = embedder.decode_min_side(self.layout)
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
                        self.store.commit_photos(commit)
                        report.embedded += len(commit)
                        report.embedded_paths += [c.path for c in commit]
                    done += len(good)
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
