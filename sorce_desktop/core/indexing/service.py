"""The indexing service: one per library, the single writer of its index.

Every change to what is indexed goes through one queue of jobs run by one worker thread: scanning
folders, indexing the paths the folder watcher saw settle, removing a folder, switching the model,
layout, speed or text settings. The front ends only hand it work and render what it reports: the
command line's ``index`` and ``watch`` print its events, the window's Session bridges them to Qt
signals, and the folder watcher (core/indexing/watcher.py) turns file-system events into path sets it hands in.
So the model never embeds for two callers at once, and no rule about files is decided twice: the
jobs call :meth:`Indexer.plan`, the one planner.

Events (:class:`IndexEvent`) are delivered on the worker thread, in order, to every subscriber. No Qt
here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.indexing.indexer import Indexer, IndexReport, PauseGate, Phase, Progress
from sorce_desktop.core.models.base import ModelError
from sorce_desktop.core.models.download import DownloadCancelled
from sorce_desktop.core.store.catalog import FAILED, Store, StoreError
from sorce_desktop.core.store.vectorfile import SAVE_EVERY_S, SaveClock
from sorce_desktop.core.words import count

log = logging.getLogger(__name__)

#: failures every front end words for the user from the job's future (expected, not bugs)
_SAID_BY_THE_CALLER = (ModelError, DownloadCancelled, StoreError)



class EventKind(StrEnum):
    PROGRESS = "progress"  # an indexing run's counts (progress)
    INDEXING = "indexing"  # settled files handed to the service (paths); 'indexed' follows
    INDEXED = "indexed"  # embedded and searchable (paths), after each commit
    TEXT = "text"  # the words read in photos already indexed were committed (paths): they rank by them now
    REMOVED = "removed"  # forgotten because the files or the folder went (paths)
    MOVED = "moved"  # moved or renamed, vectors kept (paths = new paths, old_paths = where they were)
    ERROR = "error"  # files that could not be indexed (paths, message = reason), or a job that failed
    PAUSED = "paused"  # indexing stopped between two photos (progress: the true counts)
    RESUMED = "resumed"  # indexing goes on after a pause
    IDLE = "idle"  # the queue is empty and nothing runs
    OFFLINE = "offline"  # a watched folder is not there (folder); its photos are kept
    ONLINE = "online"  # a watched folder is there again (folder), or was added
    RECONCILED = "reconciled"  # a folder scan finished (message = summary, report)
    NOTICE = "notice"  # something the user should know (fallback to polling, files left for later)
    STOPPED = "stopped"  # the folder watcher finished (message = summary)


@dataclass
class IndexEvent:
    kind: EventKind
    paths: list[str] = field(default_factory=list)
    message: str = ""
    folder: str | None = None
    old_paths: list[str] = field(default_factory=list)
    progress: Progress | None = None
    report: IndexReport | None = None


EventCallback = Callable[[IndexEvent], None]


# -- jobs ------------------------------------------------------------------------------------------------
class Job:
    """One unit of work for the worker. A job only carries out; what changed is decided in Indexer.plan."""

    name = "job"
    #: cancelled by remove_folder / configure while it runs (an indexing job; the rest are short)
    cancellable = False

    def run(self, service: IndexingService):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class ScanFolders(Job):
    """Bring the index in line with these folders (None: all of the library's)."""

    folders: list[str] | None = None
    name = "scan"
    cancellable = True

    def run(self, service: IndexingService) -> IndexReport:
        report = service.indexer.run(self.folders)
        service._report_changes(report)
        folders = self.folders if self.folders is not None else service.store.folders()
        service.emit(
            IndexEvent(
                EventKind.RECONCILED,
                message=(
                    f"checked {count(len(folders), 'folder')}: {report.what_changed()}, "
                    f"{report.failed} failed" + (" (cancelled)" if report.cancelled else "")
                ),
                report=report,
            )
        )
        return report


@dataclass
class IndexPaths(Job):
    """These files (present or gone) and reported renames: what the folder watcher saw settle."""

    paths: list[str]
    renamed: list[tuple[str, str]] = field(default_factory=list)
    renamed_trees: list[tuple[str, str]] = field(default_factory=list)
    name = "index paths"
    cancellable = True

    def run(self, service: IndexingService) -> IndexReport:
        if self.paths:
            service.emit(IndexEvent(EventKind.INDEXING, list(self.paths), f"indexing {len(self.paths)} photos"))
        report = service.indexer.index_paths(
            self.paths, renamed=self.renamed, renamed_trees=self.renamed_trees, save=False
        )
        service._clock.changed()
        service._report_changes(report)
        return report


@dataclass
class AddFolder(Job):
    """Remember a folder (its photos are indexed by the scan the caller queues). Returns it as stored."""

    folder: str
    name = "add folder"

    def run(self, service: IndexingService) -> str:
        return service.store.add_folder(self.folder)


@dataclass
class RemoveFolder(Job):
    """Forget a folder's photos (the files are never touched). Returns how many were forgotten."""

    folder: str
    name = "remove folder"

    def run(self, service: IndexingService) -> int:
        n = service.store.remove_folder(self.folder)
        service._clock.changed()
        service.emit(
            IndexEvent(EventKind.REMOVED, [], f"stopped watching {self.folder}; {n} photos forgotten", self.folder)
        )
        return n


@dataclass
class SetFolderOnline(Job):
    folder: str
    online: bool
    name = "folder online"

    def run(self, service: IndexingService) -> None:
        service.store.set_folder_online(self.folder, self.online)


@dataclass
class Configure(Job):
    """Index with another model, layout, speed or text settings from now on. ``prepare`` runs first on
    the worker (binding the store to a new model may drop the old vectors) and returns the new indexer."""

    prepare: Callable[[], Indexer]
    name = "configure"

    def run(self, service: IndexingService) -> Indexer:
        indexer = self.prepare()
        service._use_indexer(indexer)
        return indexer


@dataclass
class Call(Job):
    """Any other write to the store, in turn with the indexing jobs."""

    fn: Callable[[], object]
    name = "call"

    def run(self, service: IndexingService):
        return self.fn()


# -- the service -------------------------------------------------------------------------------------------
class IndexingService:
    """See the module docstring. Thread-safe: every public method may be called from any thread."""

    def __init__(self, store: Store, indexer: Indexer | None = None, *, save_every_s: float = SAVE_EVERY_S):
        self.store = store
        self.save_every_s = save_every_s
        self.indexer: Indexer | None = None
        self._listeners: list[EventCallback] = []
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Job, Future]] = deque()
        self._current: Job | None = None
        self._gate = PauseGate()  # the one pause: every indexer this service uses waits at it
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._clock = SaveClock(save_every_s)  # when the vector file is saved: one clock for every indexer
        self._idle_announced = True
        if indexer is not None:
            self._use_indexer(indexer)

    # -- events --------------------------------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> None:
        with self._cond:
            self._listeners.append(callback)

    def emit(self, event: IndexEvent) -> None:
        with self._cond:
            listeners = list(self._listeners)
        for cb in listeners:
            try:
                cb(event)
            except Exception:  # a broken listener must not stop indexing
                log.exception("index event listener failed")

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> IndexingService:
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._work, name="sorce-indexing", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish the job in progress (cancelled after ``timeout`` seconds; what it committed is kept),
        drop the queued ones, save, and end the worker. Safe to call twice."""
        with self._cond:
            thread = self._thread
            self._stopping = True
            dropped = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for _job, fut in dropped:
            fut.cancel()
        if thread is None:
            return
        if self.paused:
            self.cancel_current()  # a paused job would never finish
        thread.join(timeout)
        if thread.is_alive():
            self.cancel_current()
            thread.join()
        with self._cond:
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- handing in work -----------------------------------------------------------------------------
    def submit(self, job: Job, *, front: bool = False, at: int | None = None) -> Future:
        """Queue ``job`` last (``front``: first; ``at``: at that place in the queue)."""
        fut: Future = Future()
        with self._cond:
            if self._stopping:
                fut.set_exception(RuntimeError("the indexing service is stopping"))
                return fut
            if front:
                at = 0
            if at is not None:
                self._jobs.insert(min(at, len(self._jobs)), (job, fut))
            else:
                self._jobs.append((job, fut))
            self._idle_announced = False
            self._cond.notify_all()
        return fut

    def scan(self, folders: Sequence[str] | None = None) -> Future:
        """Bring ``folders`` (default: all) in line. A full scan already waiting absorbs this one."""
        with self._cond:
            for job, fut in self._jobs:
                if isinstance(job, ScanFolders) and job.folders is None:
                    return fut
        return self.submit(ScanFolders(list(folders) if folders is not None else None))

    def index_paths(
        self,
        paths: Sequence[str],
        renamed: Sequence[tuple[str, str]] = (),
        renamed_trees: Sequence[tuple[str, str]] = (),
        *,
        batch: int = 32,
    ) -> Future:
        """Index these files (present or gone). Paths handed in while an earlier hand-over still waits
        join it, up to ``batch`` paths a job, so a burst of files becomes a few jobs, not one each."""
        with self._cond:
            if self._jobs and not renamed and not renamed_trees:
                job, fut = self._jobs[-1]
                if isinstance(job, IndexPaths) and len(job.paths) + len(paths) <= batch:
                    job.paths += [p for p in paths if p not in job.paths]
                    return fut
        return self.submit(IndexPaths(list(paths), list(renamed), list(renamed_trees)))

    def remove_folder(self, folder: str) -> Future:
        """Forget a folder's photos: an indexing job in progress stops first (it could write photos of
        that folder back), the removal runs next, and a scan afterwards finishes what was stopped."""
        with self._cond:
            running = self._current
            # A queued scan of just that folder is moot.
            moot = [(j, f) for j, f in self._jobs if isinstance(j, ScanFolders) and j.folders == [folder]]
            for j, f in moot:
                self._jobs.remove((j, f))
                f.cancel()
        fut = self.submit(RemoveFolder(folder), front=True)
        if running is not None and running.cancellable:
            self.cancel_current()
            self.scan()
        return fut

    def add_folder(self, folder: str) -> Future:
        """Remember ``folder`` (an existing one, see :func:`scanner.existing_folder`): after the job in
        progress and the folders added before it, ahead of the other jobs waiting (so a scan already waiting
        covers it, and the folder list shows it soon)."""
        with self._cond:  # re-entrant: counted and queued at once
            ahead = 0
            while ahead < len(self._jobs) and isinstance(self._jobs[ahead][0], AddFolder):
                ahead += 1
            return self.submit(AddFolder(folder), at=ahead)

    def set_folder_online(self, folder: str, online: bool) -> Future:
        return self.submit(SetFolderOnline(folder, online))

    def configure(self, prepare: Callable[[], Indexer]) -> Future:
        """Switch to the indexer ``prepare`` makes (a model, layout, speed or text change); an indexing job
        in progress with the old settings stops first, and a scan afterwards redoes what they leave."""
        with self._cond:
            running = self._current
        fut = self.submit(Configure(prepare), front=True)
        if running is not None and running.cancellable:
            self.cancel_current()
        return fut

    def call(self, fn: Callable[[], object]) -> Future:
        return self.submit(Call(fn))

    def save(self) -> Future:
        return self.call(self._save)

    # -- control -------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop indexing between two photos (within a second) until :meth:`resume`. Jobs still record
        what changed (new files show as waiting); only the model work waits."""
        self._gate.pause()
        with self._cond:
            busy = self._current is not None
        if not busy:
            self.emit(IndexEvent(EventKind.PAUSED))

    def resume(self) -> None:
        self._gate.resume()
        self.emit(IndexEvent(EventKind.RESUMED))

    @property
    def paused(self) -> bool:
        return self._gate.paused

    def cancel_current(self) -> None:
        indexer = self.indexer
        if indexer is not None:
            indexer.cancel()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._current is not None or bool(self._jobs)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.busy:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- the worker ----------------------------------------------------------------------------------
    def _use_indexer(self, indexer: Indexer) -> None:
        indexer.on_progress = self._on_progress
        indexer.on_commit = self._on_commit
        indexer.on_text = self._on_text
        indexer.gate = self._gate
        indexer.save_clock = self._clock
        self.indexer = indexer

    def _on_progress(self, p: Progress) -> None:
        kind = EventKind.PAUSED if p.phase == Phase.PAUSED else EventKind.PROGRESS
        self.emit(IndexEvent(kind, progress=p))

    def _on_commit(self, paths: list[str]) -> None:
        self._clock.changed()
        self.emit(IndexEvent(EventKind.INDEXED, list(paths), f"{len(paths)} photos indexed"))

    def _on_text(self, paths: list[str]) -> None:
        self.emit(IndexEvent(EventKind.TEXT, list(paths), f"the words in {len(paths)} photos read"))

    def _report_changes(self, report: IndexReport) -> None:
        """Events for what a job changed besides the commits (those were reported as they happened)."""
        for old, new in report.moves:
            self.emit(IndexEvent(EventKind.MOVED, [new], f"{old} -> {new}", old_paths=[old]))
        if report.deleted_paths:
            n = len(report.deleted_paths)
            self.emit(IndexEvent(EventKind.REMOVED, list(report.deleted_paths), f"{n} photos removed from the index"))
        if report.failed_paths:
            rows = [self.store.photo_by_path(p) for p in report.failed_paths]
            failed = [r for r in rows if r is not None and r.status == FAILED]
            if failed:
                message = (failed[0].error or "unknown error") if len(failed) == 1 else f"{len(failed)} photos failed"
                self.emit(IndexEvent(EventKind.ERROR, [r.path for r in failed], message))

    def _save(self) -> None:
        self.store.save()
        self._clock.saved()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping and self._idle_announced:
                    self._cond.wait(1.0)
                if not self._jobs and self._stopping:
                    break
                if not self._jobs:
                    self._idle_announced = True
                    job = fut = None
                else:
                    job, fut = self._jobs.popleft()
                    self._current = job
            if job is None:  # the queue just emptied
                if self._clock.unsaved:
                    self._guarded(self._save)
                self.emit(IndexEvent(EventKind.IDLE))
                continue
            try:
                self._run(job, fut)
            finally:
                with self._cond:
                    self._current = None
        if self._clock.unsaved:
            self._guarded(self._save)

    def _run(self, job: Job, fut: Future) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            if self.indexer is None and job.cancellable:
                raise RuntimeError("no model or text reader is set up to index with")
            fut.set_result(job.run(self))
        except BaseException as exc:
            if isinstance(exc, _SAID_BY_THE_CALLER):
                # an expected failure (a model that cannot load, a full disk, a damaged catalog): its
                # sentence is the caller's to show, once; a traceback in the log would only bury it
                log.info("indexing job %s failed: %s", job.name, exc)
            else:
                log.exception("indexing job %s failed", job.name)
            self.emit(IndexEvent(EventKind.ERROR, message=f"{job.name} failed: {exc}"))
            fut.set_exception(exc)
        if self._clock.due():
            self._guarded(self._save)

    def _guarded(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            if isinstance(exc, StoreError):
                log.info("saving the index failed: %s", exc)
            else:
                log.exception("saving the index failed")
            self.emit(IndexEvent(EventKind.ERROR, message=str(exc) or type(exc).__name__))

