"""Salvaging a damaged catalog: every row that can still be read goes into a new catalog.

SQLite reports a damaged page only when a query touches it, so rows are read by ranges of their
rowid; a range that fails is halved until the unreadable rows are pinned down, and everything
around them is kept. The new catalog then gets the store's schema and indexes afresh (index pages
are never read from the damaged file). What was lost is left for ``index`` to redo:

- a photo row that could not be read: its file is found again and indexed as new;
- a region row that could not be read: the photos whose regions border the unreadable range (and any
  indexed photo left with no visual region) are set back to pending, and re-embedded;
- a text line that could not be read: its photo's text is read again (its ``ocr_done`` mark goes).

The damaged file is renamed beside the new one (``catalog.sqlite3.damaged-<time>``), never deleted.
The vector index needs nothing: it is synced with the catalog when the store opens.

What is read and written is the store's business (its salvage section holds the statements); this
module decides what is copied, where the damage is, and what ``index`` must redo.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sorce_desktop.core.store import (
    CATALOG_NAME,
    LOCK_NAME,
    Store,
    StoreError,
    WriterLock,
    _fsync_dir,
    is_damage,
)

#: rows asked for per query while nothing fails (a region row holds its vector: ~3 KB at 768-d)
CHUNK = 4096
#: failing single-row probes after which a table is given up (its interior pages are gone)
MAX_PROBES = 2_000_000


@dataclass
class RepairReport:
    catalog: Path
    damaged: bool  # False: the catalog passed SQLite's integrity check and was left as it is
    kept_as: Path | None = None  # where the damaged file now is
    rows: dict[str, int] = field(default_factory=dict)  # rows salvaged per table
    lost: dict[str, int] = field(default_factory=dict)  # rowids that could not be read per table
    redo: int = 0  # photos set back to pending: index re-embeds them
    problem: str = ""  # SQLite's first complaint about the damaged file


def _salvage(
    src: sqlite3.Connection, table: str, cols: list[str], emit: Callable[[list[tuple]], None]
) -> tuple[int, list[tuple[int, int]]]:
    """Copy every readable row of ``table`` through ``emit`` (rows are ``(rowid, *cols)``). Returns
    (rows read, unreadable rowid ranges)."""
    top = Store.max_rowid(src, table)
    open_ended = top is None  # the last page is unreadable: walk on until rows stop coming
    if open_ended:
        top = CHUNK * 64
    n = 0
    lost: list[tuple[int, int]] = []
    probes = 0
    lo = 1 if top >= 0 else top
    last_seen = 0
    while lo <= top:
        stack = [(lo, min(lo + CHUNK - 1, top))]
        while stack:
            a, b = stack.pop()
            try:
                rows = Store.rows_between(src, table, cols, a, b)
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                if a == b:
                    probes += 1
                    if lost and lost[-1][1] == a - 1:
                        lost[-1] = (lost[-1][0], a)
                    else:
                        lost.append((a, a))
                    if probes > MAX_PROBES:
                        lost.append((a + 1, top))
                        return n, lost
                else:
                    mid = (a + b) // 2
                    stack.append((mid + 1, b))
                    stack.append((a, mid))
                continue
            if rows:
                emit(rows)
                n += len(rows)
                last_seen = max(last_seen, rows[-1][0])
        lo += CHUNK
        if open_ended and lo > top and (last_seen > top - CHUNK * 16 or (lost and lost[-1][1] > top - CHUNK)):
            top += CHUNK * 64
    return n, lost


def repair_catalog(folder: str | os.PathLike, progress: Callable[[str], None] | None = None) -> RepairReport:
    """Salvage the catalog in ``folder`` (an index folder) into a new one; see the module doc.
    Takes the writer lock, so no other sorce-desktop process writes meanwhile."""
    folder = Path(folder)
    path = folder / CATALOG_NAME
    if not path.exists():
        raise StoreError(f"There is no catalog in {folder} to repair.")
    lock = WriterLock(folder / LOCK_NAME)
    lock.acquire()
    try:
        problem = Store.integrity_problem(path)
        report = RepairReport(path, bool(problem), problem=problem)
        if not problem:
            return report
        return _rebuild(folder, path, report, progress or (lambda _m: None))
    finally:
        lock.release()


def _rebuild(folder: Path, path: Path, report: RepairReport, say: Callable[[str], None]) -> RepairReport:
    new_path = folder / (CATALOG_NAME + ".repairing")
    for p in (new_path, Path(str(new_path) + "-journal")):
        p.unlink(missing_ok=True)
    dst = None
    try:
        dst, fts = Store.create_salvage(new_path)
        lost_regions = _copy_readable(path, dst, report, say)
        report.redo = Store.settle_salvage(dst, lost_regions, fts)
        Store.finish_salvage(dst)
    except BaseException:
        if dst is not None:
            dst.close()
        new_path.unlink(missing_ok=True)
        raise
    dst.close()
    with open(new_path, "rb+") as f:
        os.fsync(f.fileno())
    report.kept_as = _swap_in(folder, path, new_path)
    return report


def _copy_readable(
    path: Path, dst: sqlite3.Connection, report: RepairReport, say: Callable[[str], None]
) -> list[tuple[int, int]]:
    """Copy every readable row of the damaged catalog into ``dst``, counting per table what was kept
    and lost. Returns the region ids that could not be read."""
    src = Store.open_damaged(path)
    if src is None:
        return []
    lost_regions: list[tuple[int, int]] = []
    try:
        src_tables = Store.table_names(src)
        for table in Store.SALVAGED_TABLES:
            if table not in src_tables:
                continue
            cols = [c for c in Store.table_columns(dst, table) if c in set(Store.table_columns(src, table))]

            def emit(rows: list[tuple], table: str = table, cols: list[str] = cols) -> None:
                Store.insert_salvaged(dst, table, cols, (r[1:] for r in rows))

            say(f"reading {table}...")
            n, lost = _salvage(src, table, cols, emit)
            report.rows[table] = n
            report.lost[table] = sum(b - a + 1 for a, b in lost)
            if table == "regions":
                lost_regions = lost
    finally:
        src.close()
    return lost_regions


def _swap_in(folder: Path, path: Path, new_path: Path) -> Path:
    """Put the salvaged catalog in place; the damaged file (and its write-ahead log, under the
    matching name) stays beside it. Returns where the damaged file now is."""
    kept = folder / f"{CATALOG_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            os.replace(side, Path(str(kept) + suffix))
    os.replace(new_path, path)
    _fsync_dir(folder)
    return kept
