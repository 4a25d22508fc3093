"""How long the UI thread goes without running while the window indexes: the largest gap of a 5 ms timer.

The figure `sorce-desktop bench ui` reports (sorce_desktop/bench/ui.py runs this module in a process of its
own, with photos and a model it prepared). It is a figure, not a test: a gap depends on the machine's
load as much as on the app; the test (tests/test_gui_indexing.py) checks the structure instead, that no
indexing, decoding, embedding or SQL runs on the UI thread.

    python -m sorce_desktop.gui.uistall --data DIR --folder PHOTOS --photos N
prints one JSON object: largest gap and 99th percentile in ms, the number of ticks, the seconds indexed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def spin(app, cond, timeout_s: float) -> bool:
    """Run the event loop until ``cond()`` holds or ``timeout_s`` passes; whether it held."""
    from sorce_desktop.gui.qt import QtCore

    deadline = time.monotonic() + timeout_s
    loop = QtCore.QEventLoop()
    while not cond():
        if time.monotonic() > deadline:
            return False
        # a short nested loop, as a test's wait does (processEvents(flags, ms) leaks a reference to None
        # in PySide6 on Python 3.11 and aborts the process after some thousand calls)
        QtCore.QTimer.singleShot(20, loop.quit)
        loop.exec()
    return True


def largest_gaps(win, app, folder: str, n: int, timeout_s: float = 600.0) -> dict:
    """Add ``folder`` (``n`` photos) to the window and time a 5 ms timer on the UI thread from the first
    embedding batch to the end of the run."""
    from sorce_desktop.gui.qt import QtCore

    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    progress: list[tuple[float, str]] = []

    def record(p) -> None:
        progress.append((time.perf_counter(), p.phase))

    win.session.index_progress.connect(record)
    timer.start()
    win.add_folder(folder)
    s = win.session
    done = spin(app, lambda: not s.indexing and s.status.indexed == n and s.status.pending == 0, timeout_s)
    timer.stop()
    win.session.index_progress.disconnect(record)
    if not done:
        raise RuntimeError(f"{n} photos were not indexed within {timeout_s:.0f} s")
    from sorce_desktop.core.indexing.indexer import Phase

    start = next(t for t, phase in progress if phase == Phase.EMBEDDING)
    end = next(t for t, phase in reversed(progress) if phase == Phase.DONE)
    inside = [t for t in ticks if start <= t <= end]
    gaps = sorted(b - a for a, b in zip(inside, inside[1:]))
    if len(gaps) < 20:
        raise RuntimeError("indexing was too short to measure")
    return {
        "largest_gap_ms": round(gaps[-1] * 1000, 1),
        "p99_gap_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 1),
        "ticks": len(gaps),
        "indexing_s": round(end - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data folder, its settings naming the model")
    p.add_argument("--folder", required=True, help="the photos to index")
    p.add_argument("--photos", type=int, required=True, help="how many photos the folder holds")
    args = p.parse_args(argv)
    from sorce_desktop.gui.app import make_app, open_window

    app = make_app(["sorce-desktop"])
    win = open_window(args.data)
    try:
        if not spin(app, lambda: win.session.ready and not win.session.indexing, 120):
            raise RuntimeError("the window did not get ready")
        win.search.setText("a person")  # the results are live while indexing, as a user has them
        spin(app, lambda: win.result is not None, 60)
        print(json.dumps(largest_gaps(win, app, args.folder, args.photos)), flush=True)
    finally:
        win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
