"""The bridge between background work and the UI thread, used everywhere in the GUI.

- ``run_task(func, on_done, on_error, lane=...)`` runs ``func`` on a worker thread and hands its result
  (or exception) to ``on_done``/``on_error`` on the UI thread.
- ``to_main(fn, *args)`` runs ``fn`` on the UI thread; core callbacks (indexing progress, download
  progress) call it from their worker threads.
- ``Throttle`` runs a callback when a burst of triggers pauses (search-as-you-type).

Lanes are thread pools with a purpose (``Lanes``): ``folders`` and ``model`` have one thread each, so
folder adds and model loads run in the order asked; the others keep slow reads (search, thumbnails,
refinement) from queueing behind one another. What changes the index is not here: the library's indexing
service runs it, one job at a time, on its own thread.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from sorce_desktop.gui.qt import QtCore, Signal

log = logging.getLogger(__name__)


class _Poster(QtCore.QObject):
    """Lives on the UI thread; a signal emitted from any thread is delivered there (queued)."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, QtCore.Qt.ConnectionType.QueuedConnection)

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except RuntimeError as exc:
            # The widget the result was meant for was closed meanwhile: nothing left to update.
            if "already deleted" in str(exc):
                log.debug("dropped a result for a deleted object: %s", exc)
            else:
                log.exception("UI callback failed")
        except Exception:
            log.exception("UI callback failed")


_poster: _Poster | None = None
_poster_lock = threading.Lock()


def _get_poster() -> _Poster:
    global _poster
    with _poster_lock:
        if _poster is None:
            app = QtCore.QCoreApplication.instance()
            if app is None:
                raise RuntimeError("the Qt application must exist before background tasks run")
            _poster = _Poster()
            _poster.moveToThread(app.thread())
        return _poster


class _GarbageCollector(QtCore.QObject):
    """Python's cyclic garbage collector runs on whatever thread happens to allocate; if that is a worker
    and the garbage holds Qt objects of the UI thread, Qt deletes them from the wrong thread and the
    process can crash (seen: a segfault while a worker loaded the model). So automatic collection is
    off, and this timer collects on the UI thread instead, by the same generation thresholds (the
    approach qutebrowser uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.thresholds = gc.get_threshold()
        gc.disable()
        gc.freeze()  # what exists at start-up (Qt, the app's modules) lives as long as the app
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(100)

    def check(self) -> None:
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self.thresholds
        if c0 > t0:
            gc.collect(2 if c2 > t2 else 1 if c1 > t1 else 0)


_gc: _GarbageCollector | None = None


def install() -> None:
    """Create the bridge on the UI thread (called once at start-up, before any worker runs), and move
    garbage collection to the UI thread."""
    global _gc
    _get_poster()
    if _gc is None and on_main_thread():
        _gc = _GarbageCollector()


def to_main(fn: Callable, *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` on the UI thread, soon. Safe from any thread."""
    _get_poster().call.emit(partial(fn, *args, **kwargs))


def on_main_thread() -> bool:
    app = QtCore.QCoreApplication.instance()
    return app is not None and QtCore.QThread.currentThread() is app.thread()


class _Runnable(QtCore.QRunnable):
    def __init__(
        self, func: Callable[[], Any], on_done: Callable | None, on_error: Callable | None, name: str
    ):
        super().__init__()
        self.func, self.on_done, self.on_error, self.name = func, on_done, on_error, name
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            result = self.func()
        except BaseException as exc:  # reported, never lost in a worker thread
            if self.on_error is not None:
                to_main(self.on_error, exc)
            else:
                log.error("background task %s failed", self.name, exc_info=exc)
            return
        if self.on_done is not None:
            to_main(self.on_done, result)


def lower_thread_priority(nice: int = 10) -> None:
    """Make the calling thread (and the threads it starts: the indexer's decoders) yield the CPU to the
    UI thread. Linux schedules threads by their own nice value; elsewhere this is left to the OS."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except (OSError, AttributeError):
        pass


class Lanes:
    """The app's thread pools. ``shutdown`` waits for them (bounded) when the window closes."""

    def __init__(self) -> None:
        self.pools: dict[str, QtCore.QThreadPool] = {}
        for name, threads in (
            ("folders", 1),  # folder adds, in order, without waiting for an indexing job
            ("model", 1),
            ("search", 1),
            ("thumbs", 2),
            ("io", 2),
            ("refine", 1),
        ):
            pool = QtCore.QThreadPool()
            pool.setMaxThreadCount(threads)
            pool.setExpiryTimeout(30000)
            self.pools[name] = pool

    def run(
        self,
        lane: str,
        func: Callable[[], Any],
        on_done: Callable | None = None,
        on_error: Callable | None = None,
        name: str = "",
    ) -> None:
        self.pools[lane].start(_Runnable(func, on_done, on_error, name or getattr(func, "__name__", "task")))

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        ok = True
        for pool in self.pools.values():
            pool.clear()  # queued, not started: dropped
        for pool in self.pools.values():
            ok = pool.waitForDone(timeout_ms) and ok
        return ok


_lanes: Lanes | None = None


def lanes() -> Lanes:
    global _lanes
    if _lanes is None:
        _lanes = Lanes()
    return _lanes


def run_task(
    func: Callable[[], Any],
    on_done: Callable | None = None,
    on_error: Callable | None = None,
    *,
    lane: str = "io",
    name: str = "",
) -> None:
    """Run ``func()`` on ``lane``; its result goes to ``on_done`` (UI thread), an exception to ``on_error``."""
    lanes().run(lane, func, on_done, on_error, name)


class Throttle(QtCore.QObject):
    """Calls ``callback(value)`` once triggers pause for ``delay_ms``; ``flush`` calls it at once."""

    def __init__(self, delay_ms: int, callback: Callable[[Any], None], parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._callback = callback
        self._value: Any = None
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self._fire)

    def trigger(self, value: Any) -> None:
        self._value = value
        self._timer.start()  # restarts: the callback runs when typing pauses

    def flush(self, value: Any = None) -> None:
        if value is not None:
            self._value = value
        self._timer.stop()
        self._fire()

    def cancel(self) -> None:
        self._timer.stop()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def _fire(self) -> None:
        self._callback(self._value)


def on_done(future: Future, done: Callable | None = None, error: Callable | None = None) -> None:
    """When a core service's ``future`` (the indexing service's jobs) completes, post its result to
    ``done`` or its exception to ``error`` on the UI thread: the other way back onto it besides
    :func:`run_task`. A cancelled job (dropped when the service stopped) calls neither."""

    def finished(f: Future) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if exc is not None:
            if error is not None:
                to_main(error, exc)
            else:
                log.error("background job failed", exc_info=exc)
        elif done is not None:
            to_main(done, f.result())

    future.add_done_callback(finished)
