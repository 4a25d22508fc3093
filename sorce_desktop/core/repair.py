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

This module and ``store.py`` are the only ones holding SQL (it reads tables the store defines).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sorce_desktop.core.store import (
    _SCHEMA,
    CATALOG_NAME,
    INDEXED,
    LOCK_NAME,
    PENDING,
    SCHEMA_VERSION,
    VISUAL,
    StoreError,
    WriterLock,
    _fsync_dir,
    create_text_schema,
    is_damage,
)

#: rows asked for per query while nothing fails (a region row holds its vector: ~3 KB at 768-d)
CHUNK = 4096
#: failing single-row probes after which a table is given up (its interior pages are gone)
MAX_PROBES = 2_000_000

# Copied in this order (a region needs its photo, a text line its region).
_TABLES = ("meta", "folders", "photos", "regions", "ocr_lines", "ocr_done")


@dataclass
class RepairReport:
    catalog: Path
    damaged: bool  # False: the catalog passed SQLite's integrity check and was left as it is
    kept_as: Path | None = None  # where the damaged file now is
    rows: dict[str, int] = field(default_factory=dict)  # rows salvaged per table
    lost: dict[str, int] = field(default_factory=dict)  # rowids that could not be read per table
    redo: int = 0  # photos set back to pending: index re-embeds them
    problem: str = ""  # SQLite's first complaint about the damaged file


def _open_source(path: Path) -> sqlite3.Connection | None:
    uri = path.absolute().as_uri()
    for flags in ("mode=ro", "immutable=1"):
        try:
            db = sqlite3.connect(f"{uri}?{flags}", uri=True, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.DatabaseError:
            continue
    return None


def check(path: Path) -> str:
    """'' when SQLite's integrity check passes, else its first complaint (or the open error)."""
    db = _open_source(path)
    if db is None:
        try:
            sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True).execute(
                "SELECT count(*) FROM sqlite_master"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return "the file cannot be opened"
    try:
        rows = db.execute("PRAGMA integrity_check(20)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    problems = [r[0] for r in rows if r[0] != "ok"]
    return problems[0] if problems else ""


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def _max_rowid(src: sqlite3.Connection, table: str) -> int | None:
    try:
        row = src.execute(f"SELECT max(rowid) FROM {table}").fetchone()
        return int(row[0] or 0)
    except sqlite3.DatabaseError:
        return None


def _salvage(
    src: sqlite3.Connection, table: str, cols: list[str], emit: Callable[[list[tuple]], None]
) -> tuple[int, list[tuple[int, int]]]:
    """Copy every readable row of ``table`` through ``emit`` (rows are ``(rowid, *cols)``). Returns
    (rows read, unreadable rowid ranges)."""
    select = f"SELECT rowid, {', '.join(cols)} FROM {table} WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
    top = _max_rowid(src, table)
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
                rows = src.execute(select, (a, b)).fetchall()
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
        problem = check(path)
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
    dst = sqlite3.connect(new_path, isolation_level=None)
    try:
        dst.execute("BEGIN")
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                dst.execute(stmt)
        fts = create_text_schema(dst)
        src = _open_source(path)
        lost_regions: list[tuple[int, int]] = []
        if src is not None:
            try:
                src_tables = {
                    r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
            except sqlite3.DatabaseError:
                src_tables = set()
            for table in _TABLES:
                if table not in src_tables:
                    continue
                cols = [c for c in _columns(dst, table) if c in set(_columns(src, table))]
                # Ids are kept (photos, regions: their INTEGER PRIMARY KEY), so the vector index's ids
                # still name the same regions.
                insert = f"INSERT OR REPLACE INTO {table}({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"

                def emit(rows: list[tuple], insert: str = insert) -> None:
                    dst.executemany(insert, (r[1:] for r in rows))

                say(f"reading {table}...")
                n, lost = _salvage(src, table, cols, emit)
                report.rows[table] = n
                report.lost[table] = sum(b - a + 1 for a, b in lost)
                if table == "regions":
                    lost_regions = lost
            src.close()
        _settle(dst, lost_regions, report, fts)
        dst.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=WAL")
    except BaseException:
        dst.close()
        new_path.unlink(missing_ok=True)
        raise
    dst.close()
    with open(new_path, "rb+") as f:
        os.fsync(f.fileno())
    # The damaged file (and its write-ahead log, under the matching name) stays beside the new one.
    kept = folder / f"{CATALOG_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            os.replace(side, Path(str(kept) + suffix))
    os.replace(new_path, path)
    _fsync_dir(folder)
    report.kept_as = kept
    return report


def _settle(dst: sqlite3.Connection, lost_regions: list[tuple[int, int]], report: RepairReport, fts: bool) -> None:
    """Drop rows whose parent was lost and mark what ``index`` must redo."""
    dst.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
    dst.execute("DELETE FROM regions WHERE photo_id NOT IN (SELECT id FROM photos)")
    dst.execute("DELETE FROM ocr_lines WHERE region_id NOT IN (SELECT id FROM regions)")
    dst.execute("DELETE FROM ocr_done WHERE photo_id NOT IN (SELECT id FROM photos)")
    redo: set[int] = set()
    for a, b in lost_regions:  # the photos whose regions border an unreadable range
        for sql, bound in (
            ("SELECT photo_id FROM regions WHERE id < ? ORDER BY id DESC LIMIT 1", a),
            ("SELECT photo_id FROM regions WHERE id > ? ORDER BY id LIMIT 1", b),
        ):
            row = dst.execute(sql, (bound,)).fetchone()
            if row:
                redo.add(int(row[0]))
    if dst.execute("SELECT 1 FROM meta WHERE key='model'").fetchone():
        redo.update(
            r[0]
            for r in dst.execute(
                "SELECT id FROM photos WHERE status=? AND id NOT IN (SELECT photo_id FROM regions WHERE source=?)",
                (INDEXED, VISUAL),
            )
        )
    ids = sorted(redo)
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        marks = ",".join("?" * len(chunk))
        dst.execute(
            f"UPDATE photos SET status=? WHERE status=? AND id IN ({marks})", [PENDING, INDEXED, *chunk]
        )
        dst.execute(f"DELETE FROM ocr_done WHERE photo_id IN ({marks})", chunk)
    report.redo = int(
        dst.execute(
            f"SELECT count(*) FROM photos WHERE status=? AND id IN ({','.join('?' * len(ids))})", [PENDING, *ids]
        ).fetchone()[0]
    ) if ids else 0
    # A photo whose text lines were partly lost has its text read again.
    dst.execute(
        "DELETE FROM ocr_done WHERE lines <> (SELECT count(*) FROM ocr_lines l WHERE l.photo_id = ocr_done.photo_id)"
    )
    if fts:
        dst.execute("INSERT INTO ocr_fts(rowid, folded) SELECT region_id, folded FROM ocr_lines")
