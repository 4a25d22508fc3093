"""Live folder watching: what lands in a watched folder becomes searchable seconds later.

A watchdog observer per watched folder (recursive) reports raw file system events. The observer
threads only append them to an inbox; one watcher thread turns them into settled path sets and hands
those to the library's indexing service (core/indexing/service.py), which alone decides what happened to each
file (new, changed, moved, deleted, unchanged: :meth:`Indexer.plan`) and writes the index:

- created / modified files wait until their size and mtime have been stable for ``settle_s`` (and, where
  the observer reports closes, until the writer closed the file), so nothing is indexed half-written;
  temporary and partial names (``*.part``, ``*.crdownload``, dotfiles, ``~$*``, sync tools' staging
  names, anything in a hidden folder) are ignored until they are renamed to their real name;
- settled files are handed in in batches, so a burst of a thousand files is a few dozen jobs;
- renames the observer reports (a file or a folder) are handed in at once as renames, so the planner
  moves the catalog rows and keeps the vectors; a move reported as a delete plus a create is recognised
  by the planner by size and content hash;
- deletions wait ``settle_s`` too (and while files are still settling, a little longer, so that a move
  seen as delete + create is handed in as one), and are dropped if the watched folder itself is gone by
  then: an unplugged drive or an unmounted share marks the folder *offline*, its photos stay in the
  index, and watching resumes (with a scan of that folder) when it comes back;
- a folder scan runs at start, every ``reconcile_every_s`` and when a folder comes back, catching what
  changed while the app was closed or what the observer missed;
- if native notifications fail (inotify's watch limit, an observer error) that folder is polled instead,
  with a notice for the user.

What the watcher notices (offline, online, notices, stopped) goes out as events of the service's event
stream, beside the service's own; ``on_event`` subscribes to that stream. No Qt here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat as stat_mod
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEventHandler

from sorce_desktop.core.indexing.scanner import (
    canonical_folder,
    existing_folder,
    folder_is_there,
    is_temporary_name,
    walk_images,
)
from sorce_desktop.core.indexing.service import EventCallback, EventKind, IndexEvent, IndexingService
from sorce_desktop.core.paths import folder_of, is_under
from sorce_desktop.core.photos.images import is_image_name

if TYPE_CHECKING:
    from sorce_desktop.core.store.catalog import Store

log = logging.getLogger(__name__)

#: The watcher's events are the service's (kept under these names for callers of the watcher).
WatchEvent = IndexEvent
INDEXING, INDEXED, REMOVED, MOVED = EventKind.INDEXING, EventKind.INDEXED, EventKind.REMOVED, EventKind.MOVED
OFFLINE, ONLINE, RECONCILED = EventKind.OFFLINE, EventKind.ONLINE, EventKind.RECONCILED
NOTICE, ERROR, STOPPED = EventKind.NOTICE, EventKind.ERROR, EventKind.STOPPED

#: Defaults shared by the command line and the window.
SETTLE_S = 1.0
RECONCILE_EVERY_S = 600.0
POLL_INTERVAL_S = 5.0
BATCH_FILES = 32


@dataclass
class _Raw:
    """One file system event as an observer reported it (the observer thread does nothing more)."""

    kind: str  # 'changed' | 'deleted' | 'moved' | 'closed' | 'written'
    src: str
    dest: str | None
    is_dir: bool
    folder: str


@dataclass
class _Candidate:
    """A file waiting to be indexed until it stops changing."""

    last_change: float  # monotonic time of the last event or observed size/mtime change
    stat: tuple[int, int] | None  # (size, mtime_ns) when last looked at
    open_write: bool = False  # written to and not yet closed (only where the observer reports closes)


@dataclass
class _Watch:
    observer: object
    watch: object
    native: bool
    dirs: int = 0  # folders it covers (each costs one inotify watch)


def _native_observer_class():
    """The platform's notification observer (inotify on Linux); a hook the tests replace."""
    from watchdog.observers import Observer

    return Observer


def _polling_observer_class():
    from watchdog.observers.polling import PollingObserver

    return PollingObserver


def _inotify_watch_limit() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _count_dirs(root: str, limit: int) -> int:
    """Folders under ``root`` (itself included), counting no further than ``limit + 1``."""
    n = 0
    stack = [root]
    while stack and n <= limit:
        d = stack.pop()
        n += 1
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                    except OSError:
                        pass
        except OSError:
            pass
    return n


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, folder: str):
        super().__init__()
        self._watcher = watcher
        self._folder = folder

    def dispatch(self, event) -> None:  # called on the observer thread: only queue it
        self._watcher._on_fs_event(self._folder, event)


class Watcher:
    """Keeps the store in line with the watched folders while running. See the module docstring."""

    def __init__(
        self,
        service: IndexingService,
        *,
        on_event: EventCallback | None = None,
        settle_s: float = SETTLE_S,
        reconcile_every_s: float = RECONCILE_EVERY_S,
        folders: Iterable[str] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        force_polling: bool = False,
        batch_files: int = BATCH_FILES,
        root_check_s: float = 1.0,
        reconcile_at_start: bool = True,
    ):
        self.service = service
        self.store: Store = service.store  # read only: the service writes
        self.on_event = on_event
        if on_event is not None:
            service.subscribe(on_event)
        service.subscribe(self._count)
        self.settle_s = max(0.05, float(settle_s))
        self.reconcile_every_s = reconcile_every_s
        self.poll_interval_s = poll_interval_s
        self.force_polling = force_polling
        self.batch_files = max(1, batch_files)
        self.root_check_s = root_check_s
        self.reconcile_at_start = reconcile_at_start
        # Which folders to watch: the given ones, else every folder of the store (read at start()).
        self._only = [canonical_folder(f) for f in folders] if folders is not None else None
        indexer = service.indexer
        self._skip = [os.path.realpath(s) for s in (indexer.skip_dirs if indexer is not None else [])]

        # Shared with the observer threads and callers: guarded by _cond.
        self._cond = threading.Condition()
        self._inbox: deque[_Raw] = deque()
        self._commands: deque[tuple[str, str, bool]] = deque()
        self._stopping = False
        self._observers_stopped = False
        self._last_raw = 0.0  # monotonic time of the last queued raw event
        self._busy = False

        # Worker-only state.
        self._folders: list[str] = []
        self._offline: set[str] = set()
        self._watches: dict[str, _Watch] = {}
        self._native_obs = None
        self._polling_obs = None
        self._native_failed: set[str] = set()  # folders that fell back to polling
        self._candidates: dict[str, _Candidate] = {}
        self._gone: dict[str, float] = {}  # file path -> when its deletion was seen
        self._gone_trees: dict[str, float] = {}  # folder path -> when its deletion was seen
        self._closes: set[str] = set()  # folders whose observer reports close-after-write
        self._identity: dict[str, tuple[int, int]] = {}  # folder -> (st_dev, st_ino) while watched
        self._seen_gone: dict[str, float] = {}  # deleted path -> when first seen gone (hold-back limit)
        self._handed: list = []  # futures of the work handed to the service, not yet done

        self._thread: threading.Thread | None = None
        self.ready = threading.Event()  # set once watching has started and the first reconciliation ran
        self.stopped = threading.Event()
        self.stats = {"indexed": 0, "removed": 0, "moved": 0, "failed": 0, "batches": 0}

    # -- public API (any thread) ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sorce-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching. Changes already seen are handed in and finished first (files still being
        written get a short grace period); after ``timeout`` seconds the indexing job in progress is
        cancelled (what it committed is kept, the rest is found by the next start's scan). Safe to call
        twice and from any thread. The service goes on (its owner stops it)."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for obs in self._observers():
            try:
                obs.stop()
            except Exception:  # an observer that already died
                log.debug("observer stop failed", exc_info=True)
        for obs in self._observers():
            try:
                obs.join(5)
            except RuntimeError:
                pass
        with self._cond:
            self._observers_stopped = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.service.cancel_current()
            self._thread.join()

    def add_folder(self, path: str | os.PathLike, *, reconcile: bool = True) -> str:
        """Watch one more folder: the indexing service remembers it (a job: the watcher writes nothing),
        watching and indexing it start on the worker (``reconcile=False`` when the caller indexes it
        itself). Returns the folder as stored. Raises FileNotFoundError if it does not exist or is a file
        (:func:`scanner.existing_folder`)."""
        folder = existing_folder(path)
        self.service.add_folder(folder)
        self.watch(folder, reconcile=reconcile)
        return folder

    def watch(self, folder: str, *, reconcile: bool = True) -> None:
        """Watch a folder the library already has (or the service is adding): on the worker."""
        with self._cond:
            self._commands.append(("add", folder, reconcile))
            self._cond.notify_all()
        return folder

    def remove_folder(self, path: str | os.PathLike, *, forget: bool = True) -> None:
        """Stop watching a folder; with ``forget`` (the default) its photos leave the index too (the files
        are never touched)."""
        folder = os.path.abspath(os.fspath(path))
        with self._cond:
            self._commands.append(("remove", folder, forget))
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def folders(self) -> list[str]:
        return list(self._folders)

    def offline_folders(self) -> list[str]:
        return sorted(self._offline)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def wait_idle(self, timeout: float = 30.0, quiet: float = 0.8) -> bool:
        """Block until nothing is waiting or being worked on and no file system event arrived for
        ``quiet`` seconds, counting from the call too: an event may still be on its way from the kernel
        (watchdog holds an unpaired move for half a second). For tests and tools."""
        called = time.monotonic()
        deadline = called + timeout
        while time.monotonic() < deadline:
            with self._cond:
                idle = (
                    not self._inbox
                    and not self._candidates
                    and not self._gone
                    and not self._gone_trees
                    and not self._commands
                    and not self._busy
                    and time.monotonic() - max(self._last_raw, called) >= quiet
                )
            if idle and self.ready.is_set() and not self.service.busy:
                return True
            time.sleep(0.02)
        return False

    # -- observer side (observer threads) ------------------------------------------------------------
    def _on_fs_event(self, folder: str, event) -> None:
        etype = event.event_type
        if etype in ("opened", "closed_no_write"):
            return  # reading (our own decoding included) changes nothing
        is_dir = bool(event.is_directory)
        if is_dir and etype in ("modified", "attrib", "closed", "created"):
            return  # a new folder's files are reported one by one
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", None) else None
        if etype == "moved":
            kind = "moved"
        elif etype == "deleted":
            kind = "deleted"
        elif etype == "closed":
            kind = "closed"
        elif etype == "modified":
            kind = "written"
        else:
            kind = "changed"
        if not is_dir:
            # Cheap filter here so writes of non-photos (a catalog in a watched folder) never wake the worker.
            names = [os.path.basename(src)] + ([os.path.basename(dest)] if dest else [])
            if not any(is_image_name(n) for n in names):
                return
        with self._cond:
            self._inbox.append(_Raw(kind, src, dest, is_dir, folder))
            self._last_raw = time.monotonic()
            self._cond.notify_all()

    # -- the worker ----------------------------------------------------------------------------------
    def _emit(self, kind: EventKind, paths: list[str] | None = None, message: str = "", **kw) -> None:
        self.service.emit(IndexEvent(kind, list(paths or []), message, **kw))

    def _count(self, ev: IndexEvent) -> None:
        """Tally what the service did (for the summary when watching stops)."""
        if ev.kind == EventKind.INDEXED:
            self.stats["indexed"] += len(ev.paths)
        elif ev.kind == EventKind.MOVED:
            self.stats["moved"] += 1
        elif ev.kind == EventKind.REMOVED:
            self.stats["removed"] += len(ev.paths)
        elif ev.kind == EventKind.ERROR:
            self.stats["failed"] += len(ev.paths)

    def _run(self) -> None:
        try:
            self._startup()
        except Exception as exc:
            log.exception("watcher start-up failed")
            self._emit(ERROR, message=f"watching could not start ({type(exc).__name__}: {exc})")
        finally:
            self.ready.set()
        now = time.monotonic()
        next_check = now + self.root_check_s
        next_reconcile = now + self.reconcile_every_s if self.reconcile_every_s else float("inf")
        stop_deadline: float | None = None
        while True:
            with self._cond:
                if not self._inbox and not self._commands:
                    wait = self._next_wake(next_check, next_reconcile, stop_deadline)
                    if wait > 0:
                        self._cond.wait(wait)
                raws = list(self._inbox)
                self._inbox.clear()
                commands = list(self._commands)
                self._commands.clear()
                stopping = self._stopping
                observers_stopped = self._observers_stopped
                self._busy = True
            try:
                now = time.monotonic()
                if stopping and stop_deadline is None:
                    # Files still being written get a grace period; after it they are left for the next start.
                    stop_deadline = now + max(3 * self.settle_s, 2.0)
                for cmd, folder, flag in commands:
                    self._guard(self._command, cmd, folder, flag)
                for raw in raws:
                    self._guard(self._apply_raw, raw)
                if not stopping:
                    if now >= next_check:
                        self._guard(self._check_roots)
                        next_check = now + self.root_check_s
                    if now >= next_reconcile:
                        self._guard(self._reconcile, None)
                        next_reconcile = time.monotonic() + (self.reconcile_every_s or float("inf"))
                self._guard(self._process_ready, stopping and stop_deadline is not None and now >= stop_deadline)
            finally:
                with self._cond:
                    self._busy = False
            if stopping and observers_stopped:
                with self._cond:
                    inbox_empty = not self._inbox
                if inbox_empty and not self._candidates and not self._gone and not self._gone_trees:
                    break
        # What was handed in is finished before watching counts as stopped (stop() cancels it after its timeout).
        for fut in self._handed:
            try:
                fut.result()
            except BaseException:  # reported as an event by the service
                pass
        for obs in self._observers():  # one made while stop() was already under way
            with contextlib.suppress(Exception):
                obs.stop()
        self._emit(
            STOPPED,
            message=(
                f"stopped: {self.stats['indexed']} indexed, {self.stats['moved']} moved, "
                f"{self.stats['removed']} removed, {self.stats['failed']} failed"
            ),
        )
        self.stopped.set()

    def _guard(self, fn, *args) -> None:
        """Run one step; an error becomes an event and the watcher goes on."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("watcher step %s failed", getattr(fn, "__name__", fn))
            self._emit(ERROR, message=str(exc) or type(exc).__name__)

    def _next_wake(self, next_check: float, next_reconcile: float, stop_deadline: float | None) -> float:
        now = time.monotonic()
        times = [next_check, next_reconcile]
        times += [self._ready_at(c) for c in self._candidates.values()]
        times += [t + self.settle_s for t in self._gone.values()]
        times += [t + self.settle_s for t in self._gone_trees.values()]
        if stop_deadline is not None:
            times.append(stop_deadline)
        if self._stopping and self._observers_stopped:
            return 0.0 if not self._candidates and not self._gone and not self._gone_trees else min(
                0.05, max(0.0, min(times) - now)
            )
        return min(1.0, max(0.005, min(times) - now + 0.002))

    # -- start-up, folders and observers -------------------------------------------------------------
    def _startup(self) -> None:
        known = self.store.folders()
        folders = known if self._only is None else [f for f in known if f in self._only]
        if self._only is not None:
            for f in self._only:
                if f not in known:  # the service remembers it: the watcher only reports
                    self._hand(self.service.add_folder(f))
                    folders.append(f)
        self._folders = folders
        for f in folders:
            if self._available(f):
                self._schedule(f)
            else:
                self._set_offline(f)
        if self.reconcile_at_start:
            self._reconcile(None)
            self._wait_handed()  # ready means: the folders were checked once

    def _command(self, cmd: str, folder: str, flag: bool) -> None:
        if cmd == "add":
            if folder not in self._folders:
                self._folders.append(folder)
            if self._available(folder):
                self._schedule(folder)
                self._offline.discard(folder)
                self._emit(ONLINE, [folder], f"watching {folder}", folder=folder)
                if flag:
                    self._reconcile([folder])
            else:
                self._set_offline(folder)
        elif cmd == "remove":
            self._unschedule(folder)
            if folder in self._folders:
                self._folders.remove(folder)
            self._offline.discard(folder)
            self._drop_pending_under(folder)
            if flag:
                self._hand(self.service.remove_folder(folder))

    def _observers(self) -> list:
        return [o for o in (self._native_obs, self._polling_obs) if o is not None]

    def _schedule(self, folder: str) -> None:
        """Start watching ``folder`` natively, or by polling where native notifications fail."""
        self._unschedule(folder)
        try:
            st = os.stat(folder)
            self._identity[folder] = (st.st_dev, st.st_ino)
        except OSError:
            pass
        if any(is_under(folder, f) for f in self._watches):
            return  # inside a folder already watched recursively
        handler = _Handler(self, folder)
        if not self.force_polling and folder not in self._native_failed:
            try:
                cls = _native_observer_class()
                if self._native_obs is None:
                    self._native_obs = cls()
                    self._native_obs.start()
                dirs = self._check_watch_limit(folder)
                watch = self._native_obs.schedule(handler, folder, recursive=True)
            except OSError as exc:
                self._native_failed.add(folder)
                self._emit(
                    NOTICE,
                    [folder],
                    f"Live changes in {folder} are checked every {self.poll_interval_s:g} s instead of instantly: "
                    f"{self._explain(exc)}",
                    folder=folder,
                )
            else:
                self._watches[folder] = _Watch(self._native_obs, watch, True, dirs)
                if "inotify" in type(self._native_obs).__module__:
                    self._closes.add(folder)
                return
        if self._polling_obs is None:
            self._polling_obs = _polling_observer_class()(timeout=self.poll_interval_s)
            self._polling_obs.start()
        watch = self._polling_obs.schedule(handler, folder, recursive=True)
        self._watches[folder] = _Watch(self._polling_obs, watch, False)
        self._closes.discard(folder)

    @staticmethod
    def _explain(exc: OSError) -> str:
        if exc.errno == errno.ENOSPC:
            return (
                "the system's limit on watched folders (inotify max_user_watches) is reached; raise it "
                "(e.g. sysctl fs.inotify.max_user_watches=524288) to see changes instantly."
            )
        if exc.errno == errno.EMFILE:
            return "the system's limit on file-change listeners (inotify max_user_instances) is reached."
        return f"file-change notifications failed ({exc.strerror or exc})."

    def _check_watch_limit(self, folder: str) -> int:
        """inotify silently skips sub-folders past its watch limit: refuse (and poll) instead when the
        folder has more folders than the limit leaves for it. Returns how many folders it has."""
        if "inotify" not in type(self._native_obs).__module__:
            return 0
        limit = _inotify_watch_limit()
        if limit is None:
            return 0
        used = sum(w.dirs for w in self._watches.values() if w.native)
        n = _count_dirs(folder, limit)
        if n > limit - used:
            raise OSError(errno.ENOSPC, f"{folder} has more folders than inotify's watch limit ({limit})")
        return n

    def _unschedule(self, folder: str) -> None:
        w = self._watches.pop(folder, None)
        if w is None:
            return
        try:
            w.observer.unschedule(w.watch)
        except Exception:  # its emitter may already have stopped (the folder vanished)
            log.debug("unschedule failed", exc_info=True)

    def _emitter_alive(self, w: _Watch) -> bool:
        for em in getattr(w.observer, "emitters", ()):
            if getattr(em, "watch", None) == w.watch:
                return em.is_alive()
        return False

    def _available(self, folder: str) -> bool:
        """Whether a watched folder is really there. The very folder being watched is, whatever it holds
        (its files may all have been deleted while watched); otherwise the library's one rule
        (:func:`folder_is_there`: an empty folder where the catalog has photos is offline)."""
        try:
            st = os.stat(folder)
        except OSError:
            return False
        if not stat_mod.S_ISDIR(st.st_mode):
            return False
        if folder in self._watches and self._identity.get(folder) == (st.st_dev, st.st_ino):
            return True
        return folder_is_there(folder, self.store.folder_has_photos)

    def _set_offline(self, folder: str) -> None:
        self._unschedule(folder)
        self._identity.pop(folder, None)
        self._drop_pending_under(folder)
        was = folder in self._offline
        self._offline.add(folder)
        self._hand(self.service.set_folder_online(folder, False))
        if not was:
            self._emit(
                OFFLINE,
                [folder],
                f"{folder} is not available (unplugged or unmounted?); its photos stay in the index and "
                "watching resumes when it is back.",
                folder=folder,
            )

    def _check_roots(self) -> None:
        for folder in list(self._folders):
            ok = self._available(folder)
            if folder in self._offline:
                if ok:
                    self._schedule(folder)
                    self._offline.discard(folder)
                    self._reconcile([folder])
                    self._emit(ONLINE, [folder], f"{folder} is back; watching it again.", folder=folder)
            elif not ok:
                self._set_offline(folder)
            else:
                w = self._watches.get(folder)
                if w is not None and not self._emitter_alive(w):
                    # The observer died under us (an error in its thread): poll this folder from now on.
                    self._native_failed.add(folder)
                    self._emit(
                        NOTICE,
                        [folder],
                        f"File-change notifications for {folder} stopped working; its changes are checked "
                        f"every {self.poll_interval_s:g} s instead.",
                        folder=folder,
                    )
                    self._schedule(folder)
                    self._reconcile([folder])

    # -- what belongs to the index -------------------------------------------------------------------
    def _root_of(self, path: str) -> str | None:
        return folder_of(path, self._folders)

    def _tracked_dir(self, path: str) -> str | None:
        """The watched folder that a folder belongs to, if its photos are indexed (not hidden, not ours)."""
        root = self._root_of(path)
        if root is None or root in self._offline:
            return None
        rel = os.path.relpath(path, root)
        if rel != "." and any(part.startswith(".") for part in rel.split(os.sep)):
            return None
        if any(is_under(os.path.realpath(path), s) for s in self._skip):
            return None
        return root

    def _tracked_file(self, path: str) -> str | None:
        name = os.path.basename(path)
        if not is_image_name(name) or is_temporary_name(name):
            return None
        return self._tracked_dir(os.path.dirname(path))

    # -- turning raw events into pending work ----------------------------------------------------------
    def _apply_raw(self, r: _Raw) -> None:
        if r.folder in self._offline:
            return
        now = time.monotonic()
        if r.kind == "moved" and r.dest:
            if r.is_dir:
                src_ok, dest_ok = self._tracked_dir(r.src), self._tracked_dir(r.dest)
                if src_ok and dest_ok:
                    self._move_tree(r.src, r.dest)
                elif src_ok:
                    self._forget_tree_later(r.src, now)
                elif dest_ok:
                    self._add_tree(r.dest, now)
            else:
                src_ok, dest_ok = self._tracked_file(r.src), self._tracked_file(r.dest)
                if src_ok and dest_ok:
                    self._move_file(r.src, r.dest, now)
                elif src_ok:
                    self._forget_later(r.src, now)
                elif dest_ok:
                    self._candidate(r.dest, now)
        elif r.kind == "deleted":
            if r.is_dir:
                if r.src in self._folders:
                    self._check_roots()  # the watched folder itself: offline, never a mass deletion
                elif self._tracked_dir(r.src):
                    self._forget_tree_later(r.src, now)
            elif self._tracked_file(r.src):
                self._forget_later(r.src, now)
        elif not r.is_dir and self._tracked_file(r.src):
            c = self._candidate(r.src, now)
            if r.folder in self._closes:
                if r.kind == "written":
                    c.open_write = True
                elif r.kind == "closed":
                    c.open_write = False

    def _stat(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return (st.st_size, st.st_mtime_ns)

    def _candidate(self, path: str, now: float) -> _Candidate:
        self._gone.pop(path, None)
        c = self._candidates.get(path)
        if c is None:
            c = self._candidates[path] = _Candidate(now, self._stat(path))
        else:
            c.last_change = now
            c.stat = self._stat(path)
        return c

    def _forget_later(self, path: str, now: float) -> None:
        self._candidates.pop(path, None)
        self._gone[path] = now
        self._seen_gone.setdefault(path, now)

    def _forget_tree_later(self, path: str, now: float) -> None:
        prefix = path.rstrip(os.sep) + os.sep
        for p in [p for p in self._candidates if p.startswith(prefix)]:
            del self._candidates[p]
        for p in [p for p in self._gone if p.startswith(prefix)]:
            del self._gone[p]
        self._gone_trees[path] = now
        self._seen_gone.setdefault(path, now)

    def _add_tree(self, path: str, now: float) -> None:
        root = self._tracked_dir(path)
        if root is None:
            return
        for entry in walk_images(path, self._skip):
            self._candidate(os.path.abspath(entry.path), now)

    def _drop_pending_under(self, folder: str) -> None:
        for d in (self._candidates, self._gone, self._gone_trees):
            for p in [p for p in d if is_under(p, folder)]:
                del d[p]

    def _move_file(self, src: str, dest: str, now: float) -> None:
        pending = self._candidates.pop(src, None)
        self._gone.pop(src, None)
        self._gone.pop(dest, None)
        if pending is not None:
            # Still being written under its old name: the new name settles in its place.
            self._candidate(dest, now)
            return
        # A finished file renamed: handed in at once, so the planner moves its row (vectors kept) if it
        # matches, or indexes it as a new file if it does not (never seen, or changed meanwhile).
        self._hand(self.service.index_paths([src, dest], renamed=[(src, dest)]))

    def _move_tree(self, src: str, dest: str) -> None:
        old_prefix, new_prefix = src.rstrip(os.sep) + os.sep, dest.rstrip(os.sep) + os.sep
        for d in (self._candidates, self._gone):
            for p in [p for p in d if p.startswith(old_prefix)]:
                d[new_prefix + p[len(old_prefix) :]] = d.pop(p)
        self._hand(self.service.index_paths([], renamed_trees=[(src, dest)]))

    # -- doing the work ------------------------------------------------------------------------------
    def _ready_at(self, c: _Candidate) -> float:
        # A file written to and not closed may be a writer pausing mid-file: give it longer.
        return c.last_change + (max(30.0, 10 * self.settle_s) if c.open_write else self.settle_s)

    def _process_ready(self, flush: bool) -> None:
        """Index what has settled, forget what is really gone. ``flush``: stopping and the grace period is
        over, so whatever is still being written is left for the next start's reconciliation."""
        now = time.monotonic()
        ready: list[str] = []
        for path, c in list(self._candidates.items()):
            if now - c.last_change < self.settle_s:
                continue
            st = self._stat(path)
            if st is None:
                del self._candidates[path]  # vanished; its deletion event does the rest
                continue
            if st != c.stat:
                c.stat, c.last_change = st, now  # still being written
                continue
            if now < self._ready_at(c):
                continue  # written and not closed yet: a writer pausing mid-file
            ready.append(path)
        if flush and len(ready) < len(self._candidates):
            left = [p for p in self._candidates if p not in set(ready)]
            for p in left:
                del self._candidates[p]
            self._emit(
                NOTICE,
                left,
                f"{len(left)} files were still being written when watching stopped; they are indexed at the "
                "next start.",
            )
        gone_ready = [p for p, t in self._gone.items() if now - t >= self.settle_s or flush]
        trees_ready = [p for p, t in self._gone_trees.items() if now - t >= self.settle_s or flush]
        if not ready and not gone_ready and not trees_ready:
            return
        for p in ready:
            del self._candidates[p]

        # Deletions: only while the watched folder is there (a vanished drive is offline, not empty).
        gone: list[str] = []
        for p in gone_ready + trees_ready:
            is_tree = p in self._gone_trees
            (self._gone_trees if is_tree else self._gone).pop(p, None)
            root = self._root_of(p)
            if root is None or root in self._offline:
                continue
            if not self._available(root):
                self._set_offline(root)
                continue
            if is_tree and os.path.isdir(p):
                self._add_tree(p, now)  # it came back
                continue
            if not is_tree and os.path.lexists(p):
                if p not in self._candidates and p not in ready:
                    ready.append(p)
                continue
            gone.append(p)
        # A move seen as a delete plus a create: keep deletions back while files are still settling
        # (a few rounds at most), so both halves reach the planner together and it sees the move.
        if gone and self._candidates and not flush:
            held = [p for p in gone if now - self._seen_gone.get(p, now) < 4 * self.settle_s]
            for p in held:
                self._gone[p] = now - self.settle_s  # ready again next round
            gone = [p for p in gone if p not in held]
        for p in gone:
            self._seen_gone.pop(p, None)
        todo = sorted(ready) + gone
        for i in range(0, len(todo), self.batch_files):
            fut = self.service.index_paths(todo[i : i + self.batch_files], batch=self.batch_files)
            if fut not in self._handed:
                self.stats["batches"] += 1
            self._hand(fut)

    def _hand(self, fut) -> None:
        """Remember what was handed to the service (stopping waits for it)."""
        self._handed = [f for f in self._handed if not f.done()]
        if fut not in self._handed:
            self._handed.append(fut)

    def _wait_handed(self) -> None:
        for fut in list(self._handed):
            while not fut.done():
                if self._stopping:
                    self.service.cancel_current()
                try:
                    fut.exception(timeout=0.2)
                except Exception:  # TimeoutError; a cancelled future
                    pass

    def _reconcile(self, folders: list[str] | None) -> None:
        targets = [f for f in (folders or self._folders) if f in self._folders]
        avail = []
        for f in targets:
            if self._available(f):
                avail.append(f)
                self._offline.discard(f)
            else:
                self._set_offline(f)
        if avail and not self._stopping:
            self._hand(self.service.scan(avail))
