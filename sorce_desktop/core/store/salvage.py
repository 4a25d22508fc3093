"""Salvage: the catalog's statements that only repair uses, on a damaged catalog and the new one.

:mod:`sorce_desktop.core.store.repair` decides what is copied, where the damage is and what ``index`` must redo;
this module opens the damaged file read-only, reads its rows by rowid ranges, writes them into a new
catalog made with the store's own tables (:func:`sorce_desktop.core.store.catalog.create_catalog_tables`), and
settles what was lost. It works on plain SQLite connections (a damaged catalog cannot be opened as a
:class:`~sorce_desktop.core.store.catalog.Store`). Like the catalog, it is one of the store's modules: the only
places SQL is written.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from sorce_desktop.core.store.catalog import (
    INDEXED,
    PENDING,
    SCHEMA_VERSION,
    VISUAL,
    ModelBinding,
    create_catalog_tables,
    path_str,
)

#: the tables a salvage copies, in this order (a region needs its photo, a text line its region)
SALVAGED_TABLES = ("meta", "folders", "photos", "regions", "ocr_lines", "ocr_done")


def open_damaged(path: Path) -> sqlite3.Connection | None:
    """A damaged catalog opened read-only for salvage (as immutable when even that fails), or None."""
    uri = path.absolute().as_uri()
    for flags in ("mode=ro", "immutable=1"):
        try:
            db = sqlite3.connect(f"{uri}?{flags}", uri=True, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.DatabaseError:
            continue
    return None


def integrity_problem(path: Path) -> str:
    """'' when SQLite's integrity check of the catalog file passes, else its first complaint (or
    the open error)."""
    db = open_damaged(path)
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


def table_names(db: sqlite3.Connection) -> set[str]:
    """The tables a (possibly damaged) catalog lists; none when its schema cannot be read."""
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError:
        return set()


def table_columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def max_rowid(db: sqlite3.Connection, table: str) -> int | None:
    """The table's highest rowid (0 when empty); None when the page holding it cannot be read."""
    try:
        row = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()
        return int(row[0] or 0)
    except sqlite3.DatabaseError:
        return None


def sequence_value(db: sqlite3.Connection, table: str) -> int:
    """The highest id an AUTOINCREMENT table ever handed out (0 when unknown or unreadable)."""
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        return int(row[0] or 0) if row else 0
    except (sqlite3.DatabaseError, TypeError, ValueError):
        return 0


def rows_between(
    db: sqlite3.Connection, table: str, cols: Sequence[str], lo: int, hi: int
) -> list[tuple]:
    """``(rowid, *cols)`` of the rows with ``lo <= rowid <= hi``, in rowid order. Raises
    sqlite3.DatabaseError when a page they are on is damaged."""
    sql = f"SELECT rowid, {', '.join(cols)} FROM {table} WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
    return db.execute(sql, (lo, hi)).fetchall()


def create_salvage(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A new catalog at ``path`` with the store's schema, inside an open transaction (finished by
    :func:`finish_salvage`). Returns it and whether the text search index (FTS5) is available."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        return db, create_catalog_tables(db)
    except BaseException:
        db.close()
        raise


def insert_salvaged(
    db: sqlite3.Connection, table: str, cols: Sequence[str], rows: Iterable[tuple]
) -> None:
    """Write rows read from the damaged catalog. Ids are kept (photos, regions: their INTEGER
    PRIMARY KEY), so the vector index's ids still name the same regions."""
    marks = ",".join("?" * len(cols))
    db.executemany(f"INSERT OR REPLACE INTO {table}({', '.join(cols)}) VALUES ({marks})", rows)


def settle_salvage(db: sqlite3.Connection, lost_regions: Sequence[tuple[int, int]], fts: bool) -> int:
    """Drop salvaged rows whose parent was lost and mark what ``index`` must redo: the photos whose
    regions border an unreadable range of region ids, indexed photos left with no visual region,
    and photos whose text lines were partly lost. Returns how many photos were set back to pending."""
    db.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
    db.execute("DELETE FROM regions WHERE photo_id NOT IN (SELECT id FROM photos)")
    db.execute("DELETE FROM ocr_lines WHERE region_id NOT IN (SELECT id FROM regions)")
    db.execute("DELETE FROM ocr_done WHERE photo_id NOT IN (SELECT id FROM photos)")
    redo: set[int] = set()
    for a, b in lost_regions:
        for sql, bound in (
            ("SELECT photo_id FROM regions WHERE id < ? ORDER BY id DESC LIMIT 1", a),
            ("SELECT photo_id FROM regions WHERE id > ? ORDER BY id LIMIT 1", b),
        ):
            row = db.execute(sql, (bound,)).fetchone()
            if row:
                redo.add(int(row[0]))
    if db.execute("SELECT 1 FROM meta WHERE key='model'").fetchone():
        redo.update(
            r[0]
            for r in db.execute(
                "SELECT id FROM photos WHERE status=? "
                "AND id NOT IN (SELECT photo_id FROM regions WHERE source=?)",
                (INDEXED, VISUAL),
            )
        )
    ids = sorted(redo)
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        marks = ",".join("?" * len(chunk))
        db.execute(
            f"UPDATE photos SET status=? WHERE status=? AND id IN ({marks})", [PENDING, INDEXED, *chunk]
        )
        db.execute(f"DELETE FROM ocr_done WHERE photo_id IN ({marks})", chunk)
    redone = 0
    if ids:
        redone = int(
            db.execute(
                f"SELECT count(*) FROM photos WHERE status=? AND id IN ({','.join('?' * len(ids))})",
                [PENDING, *ids],
            ).fetchone()[0]
        )
    # A photo whose text lines were partly lost has its text read again.
    db.execute(
        "DELETE FROM ocr_done WHERE lines <> "
        "(SELECT count(*) FROM ocr_lines l WHERE l.photo_id = ocr_done.photo_id)"
    )
    if fts:
        db.execute("INSERT INTO ocr_fts(rowid, folded) SELECT region_id, folded FROM ocr_lines")
    return redone


def highest_known_rowids(dst: sqlite3.Connection, src: sqlite3.Connection) -> dict[str, int]:
    """The highest rowid each salvaged table is known to have reached: its own salvaged rows, the rows
    that refer to it, and SQLite's sequence for regions. Unreadable rowid ranges are counted as lost
    rows only up to there (past it, the ids were never used)."""

    def top(db: sqlite3.Connection, sql: str) -> int:
        try:
            row = db.execute(sql).fetchone()
            return int(row[0] or 0) if row else 0
        except (sqlite3.DatabaseError, TypeError, ValueError):
            return 0

    photos = max(
        top(dst, f"SELECT max({c}) FROM {t}")
        for t, c in (
            ("photos", "id"),
            ("regions", "photo_id"),
            ("ocr_lines", "photo_id"),
            ("ocr_done", "photo_id"),
        )
    )
    regions = max(
        top(dst, "SELECT max(id) FROM regions"),
        top(dst, "SELECT max(region_id) FROM ocr_lines"),
        sequence_value(src, "regions"),
    )
    return {
        "meta": top(dst, "SELECT max(rowid) FROM meta"),
        "folders": top(dst, "SELECT max(rowid) FROM folders"),
        "photos": photos,
        "regions": regions,
        "ocr_lines": regions,
        "ocr_done": photos,
    }


def restore_folders(db: sqlite3.Connection) -> list[str]:
    """Put back in the folder list every folder a salvaged photo row names that the list lacks (its
    rows were lost). Returns those folders."""
    rows = db.execute(
        "SELECT DISTINCT folder FROM photos WHERE folder IS NOT NULL "
        "AND folder NOT IN (SELECT path FROM folders) ORDER BY folder"
    ).fetchall()
    now = time.time()
    db.executemany(
        "INSERT OR IGNORE INTO folders(path, added_at, online) VALUES (?, ?, 1)", [(r[0], now) for r in rows]
    )
    return [path_str(r[0]) for r in rows]


def salvaged_binding(db: sqlite3.Connection) -> tuple[ModelBinding | None, int, set[str]]:
    """The salvaged catalog's model binding (None when its row was lost), the size of its visual
    vectors (0: none) and the names of its visual regions."""
    row = db.execute("SELECT value FROM meta WHERE key='model'").fetchone()
    binding = None
    if row:
        try:
            d = json.loads(row[0])
            binding = ModelBinding(d["model_id"], d["fingerprint"], d["layout"], int(d["dim"]))
        except (ValueError, KeyError, TypeError):
            binding = None
    length = db.execute(
        "SELECT length(vector) FROM regions WHERE source=? AND vector IS NOT NULL LIMIT 1", (VISUAL,)
    ).fetchone()
    names = {r[0] for r in db.execute("SELECT DISTINCT name FROM regions WHERE source=?", (VISUAL,))}
    return binding, (int(length[0]) // 4 if length and length[0] else 0), names


def bind_salvage(db: sqlite3.Connection, binding: ModelBinding) -> None:
    db.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('model', ?)", (json.dumps(binding.__dict__),)
    )


def finish_salvage(db: sqlite3.Connection) -> None:
    """Commit the salvaged catalog and give it the store's journal mode."""
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
