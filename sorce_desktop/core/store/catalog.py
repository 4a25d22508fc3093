"""The store: a SQLite catalog (the truth) plus a FAISS vector index (a cache of it).

- ``photos``: one row per file seen (path as bytes, size, mtime, content hash, status, error).
- ``regions``: one row per region with its box, name, source and vector (float32 bytes), so the vector
  index can always be rebuilt without re-embedding.
- ``meta``: schema version and the model/layout that made the vectors. Binding another model either
  fails with :class:`ModelMismatch` or, when asked to, drops every visual vector in the same
  transaction: the store never holds vectors of two models.
- Text lines read in photos: each is a row of ``regions`` (source ``'ocr'``, name ``'text'``, its box
  and words), so every path that drops a photo's regions drops its lines too. Beside it ``ocr_lines``
  (confidence, rotated quad, folded text, letter alternatives as JSON, the line's sentence embedding in
  float32 bytes, model in meta ``text_model``; rows go with their region), ``ocr_fts`` (FTS5 trigram
  index over the folded text, rowid = region id, emptied by a trigger) and ``ocr_done`` (which photos
  were read, for which content hash and by which engine, so nothing is read twice and a new engine
  reads all). The FAISS visual index never holds text vectors.

The store has three parts, each a module with a public interface; callers import every name from here:

- the catalog (this module): :class:`Store`, the writer lock and every SQL statement the application
  runs on a library;
- the vector file (:mod:`sorce_desktop.core.store.vectorfile`): the FAISS file kept in step with the catalog,
  saved atomically (temporary file, fsync, rename) with a checksum, checked against the catalog when
  opened; whatever differs (a crash between the two, a truncated or foreign file) is repaired from the
  catalog, which hands it its vectors (the vector file holds no SQL);
- salvage (:mod:`sorce_desktop.core.store.salvage`): the statements only ``repair`` runs, on a damaged
  catalog and the new one.

The errors all three raise, with their messages, are in :mod:`sorce_desktop.core.store.errors`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.regions import Box
from sorce_desktop.core.store import ann, vectorfile
from sorce_desktop.core.store.errors import (
    ModelMismatch,
    StoreDamaged,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreReadOnly,
    damaged_message,
    error_reason,
    full_message,
    is_damage,
    nearly_full,
    read_only_message,
    translate_os_error,
)
from sorce_desktop.core.store.vectorfile import VECTORS_META, VectorFile, VectorIndex

# Names callers import from here, kept where they were before the vector file had its own module.
from sorce_desktop.core.store.vectorfile import VECTORS_NAME as VECTORS_NAME
from sorce_desktop.core.store.vectorfile import file_checksum as file_checksum
from sorce_desktop.core.store.vectorfile import vector_save_error as vector_save_error
from sorce_desktop.core.textstore import TEXT_REGION, fold, fold_alternatives

if TYPE_CHECKING:  # pragma: no cover
    from sorce_desktop.core.photos.whenwhere import PhotoFacts
    from sorce_desktop.core.text.ocr import TextLine

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CATALOG_NAME = "catalog.sqlite3"
LOCK_NAME = "writer.lock"



class Status(StrEnum):
    """Where a photo stands in the catalog (``photos.status``)."""

    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"


class Source(StrEnum):
    """What made a region (``regions.source``): the visual model's tiles or the text reader's lines."""

    VISUAL = "visual"
    OCR = "ocr"


PENDING, INDEXED, FAILED = Status.PENDING, Status.INDEXED, Status.FAILED
VISUAL = Source.VISUAL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    path BLOB PRIMARY KEY,
    added_at REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    folder BLOB,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    hash TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    width INTEGER,
    height INTEGER,
    variant TEXT,
    indexed_at REAL
);
CREATE INDEX IF NOT EXISTS photos_status ON photos(status);
CREATE INDEX IF NOT EXISTS photos_folder ON photos(folder);
CREATE INDEX IF NOT EXISTS photos_size ON photos(size);
CREATE TABLE IF NOT EXISTS regions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    source TEXT NOT NULL DEFAULT 'visual',
    name TEXT NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    text TEXT,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS regions_photo ON regions(photo_id);
CREATE INDEX IF NOT EXISTS regions_source ON regions(source);
"""



# -- the text tables (text in photos; their statements are in Store's text section) --
_TEXT_TABLES = [
    """CREATE TABLE IF NOT EXISTS ocr_lines (
        region_id INTEGER PRIMARY KEY REFERENCES regions(id) ON DELETE CASCADE,
        photo_id INTEGER NOT NULL,
        confidence REAL NOT NULL,
        quad TEXT,
        folded TEXT NOT NULL,
        embedding BLOB,
        alts TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ocr_lines_photo ON ocr_lines(photo_id)",
    """CREATE TABLE IF NOT EXISTS ocr_done (
        photo_id INTEGER PRIMARY KEY REFERENCES photos(id) ON DELETE CASCADE,
        hash TEXT,
        engine TEXT NOT NULL,
        lines INTEGER NOT NULL,
        done_at REAL NOT NULL
    )""",
]
_TEXT_FTS = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS ocr_fts USING fts5(folded, tokenize='trigram')",
    f"""CREATE TRIGGER IF NOT EXISTS regions_ocr_fts_delete AFTER DELETE ON regions WHEN old.source='{Source.OCR.value}'
       BEGIN DELETE FROM ocr_fts WHERE rowid=old.id; END""",
]


# -- when and where each photo was taken (core/photos/whenwhere.py reads them; statements in Store's section) --
FACTS_TABLES = [
    """CREATE TABLE IF NOT EXISTS photo_facts (
        photo_id INTEGER PRIMARY KEY REFERENCES photos(id) ON DELETE CASCADE,
        taken TEXT NOT NULL,
        taken_offset TEXT,
        taken_source TEXT NOT NULL,
        lat REAL,
        lon REAL,
        city TEXT,
        region TEXT,
        country TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS photo_facts_taken ON photo_facts(taken)",
    # covering: the library's places are listed from the index alone (10x faster than from the table)
    "CREATE INDEX IF NOT EXISTS photo_facts_place ON photo_facts(city, region, country)",
]


def write_facts(db: sqlite3.Connection, photo_id: int, facts: PhotoFacts) -> None:
    """Record when and where a photo was taken (inside the caller's transaction)."""
    place = facts.place
    db.execute(
        "INSERT OR REPLACE INTO photo_facts(photo_id, taken, taken_offset, taken_source, lat, lon, city, region, "
        "country) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            photo_id, facts.taken, facts.offset, facts.source, facts.lat, facts.lon,
            place.city if place else None, place.region if place else None, place.country if place else None,
        ),
    )


def taken_between(db: sqlite3.Connection, start: str | None, end: str | None) -> list[int]:
    """Ids of photos taken at or after ``start`` and before ``end`` (local wall-clock ISO strings; None:
    open). What a period filter runs (bench query times this same function)."""
    sql, params = "SELECT group_concat(photo_id) FROM photo_facts WHERE 1", []
    if start is not None:
        sql += " AND taken >= ?"
        params.append(start)
    if end is not None:
        sql += " AND taken < ?"
        params.append(end)
    # one row, parsed at once: the rows one by one took 3.6 ms for 10,000 photos of 100k, this 1.7
    row = db.execute(sql, params).fetchone()
    return np.fromstring(row[0], dtype=np.int64, sep=",").tolist() if row and row[0] else []


def create_text_schema(db: sqlite3.Connection) -> bool:
    """Create the text tables (inside the store's migration transaction). Returns whether the FTS5
    trigram index is available; without it (an SQLite built without FTS5, or older than 3.34) text
    search scans the lines instead, which is correct but slower on large libraries."""
    for stmt in _TEXT_TABLES:
        db.execute(stmt)
    # catalogs from before letter alternatives were kept: add the column (their lines have none until
    # the photos are read again, which the new OCR engine id asks for)
    if "alts" not in {r[1] for r in db.execute("PRAGMA table_info(ocr_lines)")}:
        db.execute("ALTER TABLE ocr_lines ADD COLUMN alts TEXT")
    try:
        for stmt in _TEXT_FTS:
            db.execute(stmt)
        return True
    except sqlite3.OperationalError as exc:
        log.warning(
            "SQLite full-text search (FTS5 trigram) is unavailable (%s): text search scans lines", exc
        )
        return False



def create_catalog_tables(db: sqlite3.Connection) -> bool:
    """Create every table of a new catalog (inside the caller's transaction): what salvage copies into.
    Returns whether the FTS5 trigram index is available (:func:`create_text_schema`)."""
    for stmt in _SCHEMA.strip().split(";"):
        if stmt.strip():
            db.execute(stmt)
    return create_text_schema(db)


def _translate_db_error(exc: sqlite3.DatabaseError, folder: Path) -> StoreError:
    if is_damage(exc):
        return StoreDamaged(damaged_message(folder / CATALOG_NAME, exc))
    msg = str(exc).lower()
    if "full" in msg or "disk i/o" in msg:
        return StoreFull(full_message(folder))
    if "locked" in msg or "busy" in msg:
        return StoreLocked(
            f"The catalog in {folder} is locked by another process; try again when it finishes."
        )
    if "readonly" in msg or "read-only" in msg:
        return StoreReadOnly(read_only_message(folder, "it is read-only to this user"))
    return StoreError(f"The catalog in {folder} could not be written ({error_reason(exc)}).")


def path_key(path: str | os.PathLike) -> bytes:
    """Paths are stored as the file system's bytes, so names that are not valid UTF-8 survive."""
    return os.fsencode(os.path.abspath(os.fspath(path)))


def path_str(key: bytes) -> str:
    return os.fsdecode(key)


def display_path(path: str) -> str:
    """A path safe to print or show (undecodable bytes as escapes)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class PhotoRow:
    id: int
    path: str
    folder: str | None
    size: int
    mtime_ns: int
    hash: str | None
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class RegionRow:
    id: int
    photo_id: int
    name: str
    box: Box
    source: str = VISUAL
    text: str | None = None


@dataclass
class IndexedPhoto:
    """What the indexer commits for one photo: its file facts and its embedded regions."""

    path: str
    folder: str | None
    size: int
    mtime_ns: int
    hash: str | None
    width: int
    height: int
    regions: list = field(default_factory=list)  # list[RegionEmbedding]
    variant: str | None = None
    facts: PhotoFacts | None = None  # when and where, read from the header (None: left as they are)


@dataclass
class TextPhoto:
    """What the indexer commits for one photo's text: its lines and their embeddings."""

    photo_id: int | None
    hash: str | None
    lines: list[TextLine]
    vectors: np.ndarray | None = None  # (len(lines), d) or None when not embedded yet
    photo: IndexedPhoto | None = None  # text-only indexing: the photo row to record as indexed


@dataclass
class LineRow:
    region_id: int
    photo_id: int
    text: str
    box: Box
    confidence: float
    quad: list = field(default_factory=list)


@dataclass
class ModelBinding:
    model_id: str
    fingerprint: str
    layout: str
    dim: int


# -- cross-process writer lock ------------------------------------------------------------------------
class WriterLock:
    """One writer per data folder: the GUI, ``index`` and ``watch`` refuse to run against each other
    instead of interleaving writes. The OS drops the lock when the holder dies (even kill -9)."""

    #: what the window writes after its pid in the lock file, so other commands can say who holds it
    WINDOW = "window"

    def __init__(self, path: Path, holder: str = ""):
        self.path = path
        self.holder = holder
        self._fh = None

    def acquire(self) -> None:
        try:
            fh = open(self.path, "a+")
        except OSError as exc:
            raise (translate_os_error(exc, self.path.parent) or exc) from None
        try:
            if os.name == "nt":  # pragma: no cover - Windows
                import msvcrt

                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if holder.endswith(" " + self.WINDOW):
                raise StoreLocked(
                    f"The Sorce Desktop window ({holder.removesuffix(' ' + self.WINDOW)}) is open on this "
                    f"library ({self.path.parent}) and indexes it itself: photos added to its folders are "
                    "indexed while it runs. Add folders in the window, or close it to run this command. "
                    "search, status and errors work while it is open.",
                    holder,
                ) from None
            raise StoreLocked(
                f"Another sorce-desktop process ({holder}) is already indexing this data folder "
                f"({self.path.parent}). Close it first, or use another --data-dir.",
                holder,
            ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}" + (f" {self.holder}" if self.holder else ""))
            fh.flush()
        except OSError as exc:
            # The lock is held by flock, the pid is only a note for the refusal message; but a disk that
            # cannot take these few bytes cannot take a batch either: say so now, in the same words.
            try:
                fh.close()
            except OSError:
                pass
            raise (translate_os_error(exc, self.path.parent) or exc) from None
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.seek(0)
                self._fh.truncate()
            except OSError:
                pass
            self._fh.close()
            self._fh = None


_KEEP = object()


def upsert_indexed_photo(db: sqlite3.Connection, p: IndexedPhoto, now: float, *, variant=_KEEP) -> int:
    """Insert or update one photo as indexed (inside the caller's transaction); returns its id.
    ``variant`` is written when given (visual embedding), kept as it is otherwise (text only)."""
    key = path_key(p.path)
    cols = "path, folder, size, mtime_ns, hash, status, error, width, height, indexed_at"
    values = [
        key,
        path_key(p.folder) if p.folder else None,
        p.size,
        p.mtime_ns,
        p.hash,
        INDEXED,
        None,
        p.width,
        p.height,
        now,
    ]
    updates = "folder, size, mtime_ns, hash, status, error, width, height, indexed_at"
    if variant is not _KEEP:
        cols += ", variant"
        values.append(variant)
        updates += ", variant"
    db.execute(
        f"INSERT INTO photos({cols}) VALUES ({','.join('?' * len(values))}) ON CONFLICT(path) DO UPDATE SET "
        + ", ".join(f"{c}=excluded.{c}" for c in updates.split(", ")),
        values,
    )
    return db.execute("SELECT id FROM photos WHERE path=?", (key,)).fetchone()[0]


def fetch_region_vectors(db: sqlite3.Connection, ids: Sequence[int], dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 vectors of the ``regions`` rows ``ids`` (those that exist and have one): ``(ids, (n, dim))``.
    What re-scoring a compressed index's candidates reads (bench query times this same function)."""
    ids = [int(i) for i in ids]
    found: list[int] = []
    parts: list[bytes] = []
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        for rid, blob in db.execute(
            f"SELECT id, vector FROM regions WHERE id IN ({','.join('?' * len(chunk))}) AND vector IS NOT NULL",
            chunk,
        ):
            found.append(rid)
            parts.append(blob)
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.asarray(found, np.int64), np.frombuffer(b"".join(parts), dtype=np.float32).reshape(len(parts), -1)


def _bind_text_model(db: sqlite3.Connection, text_model: str) -> None:
    """Line embeddings of another text model are cleared (the texts stay; they are embedded again)."""
    row = db.execute("SELECT value FROM meta WHERE key='text_model'").fetchone()
    if row is None or row[0] != text_model:
        db.execute("UPDATE ocr_lines SET embedding=NULL")
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('text_model', ?)", (text_model,))


def _load_alts(raw: str | None, folded: str | None) -> list[str] | None:
    if not raw:
        return None
    try:
        alts = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(alts, list) or len(alts) != len(folded or ""):
        return None  # written for another folding of the text: ignore rather than misalign
    return [str(a) for a in alts]


_PHOTO_COLS = "id, path, folder, size, mtime_ns, hash, status, error, width, height"


def _photo(r: tuple) -> PhotoRow:
    return PhotoRow(r[0], path_str(r[1]), path_str(r[2]) if r[2] is not None else None, *r[3:])


class Store:
    """Catalog + vector index under one folder. Thread-safe: one connection behind a lock."""

    def __init__(
        self, folder: str | os.PathLike, *, writer: bool = True, busy_timeout_s: float = 10.0, holder: str = ""
    ):
        """``holder``: who writes (``WriterLock.WINDOW`` for the window), told to others refused the lock."""
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (translate_os_error(exc, self.folder) or exc) from None
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._writer_lock: WriterLock | None = None
        self.writable = writer
        if writer:
            self._writer_lock = WriterLock(self.folder / LOCK_NAME, holder)
            self._writer_lock.acquire()
        self.notices: list[str] = []  # what was repaired or migrated on open, for the user
        self._places: list[tuple] | None = None  # the library's places, until photos are recorded or forgotten
        self.generation = 0  # write transactions committed by this store (what caches of it compare)
        try:
            self.db = self._connect()
            self._migrate()
            self.vectors: VectorIndex | None = None
            self.vector_file = VectorFile(self.folder)
            self._dirty = False
            self._open_vectors()
        except sqlite3.DatabaseError as exc:
            self._dirty = False  # nothing read from a damaged catalog is saved over a good vector file
            self.close()
            if is_damage(exc):  # found while reading the catalog to rebuild or check the vector index
                raise StoreDamaged(damaged_message(self.folder / CATALOG_NAME, exc)) from exc
            raise
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        path = self.folder / CATALOG_NAME
        #: opened with SQLite's read-only flags: a reader never takes a write lock or changes the file
        self.opened_read_only = not self.writable and path.exists()
        try:
            if self.opened_read_only:
                return self._connect_read_only(path)
            # A reader of a library that has no catalog yet reads an empty one, in memory: it never
            # creates files (the folder may be read-only).
            target = path if self.writable else ":memory:"
            db = sqlite3.connect(
                target, timeout=self.busy_timeout_s, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._open_error(path, exc) from exc
        return db

    def _open_error(self, path: Path, exc: sqlite3.DatabaseError) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return StoreLocked(f"The catalog {path} is locked by another process.")
        if is_damage(exc):
            return StoreDamaged(damaged_message(path, exc))
        msg = str(exc).lower()
        if "full" in msg or ("disk i/o" in msg and nearly_full(self.folder)):
            return StoreFull(full_message(self.folder))
        if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
            return StoreReadOnly(read_only_message(self.folder, error_reason(exc)))
        return StoreError(f"The catalog {path} cannot be opened ({error_reason(exc)}).")

    def _connect_read_only(self, path: Path) -> sqlite3.Connection:
        """Open the catalog for reading only (``mode=ro``). On a read-only mount, or in a folder this user
        cannot write, SQLite cannot create the write-ahead log's shared-memory file; if no log is left
        over, every committed page is in the main file and it is read as immutable instead."""
        uri = path.absolute().as_uri()

        def connect(flags: str) -> sqlite3.Connection:
            db = sqlite3.connect(
                f"{uri}?{flags}",
                uri=True,
                timeout=self.busy_timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
            try:
                db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except BaseException:
                db.close()
                raise
            return db

        try:
            return connect("mode=ro")
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if "unable to open" not in msg and "readonly" not in msg:
                raise
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise
            return connect("immutable=1")

    def _lost_log(self) -> str:
        """What to say about a catalog that holds no table at all: '' when nothing was ever committed to
        it (made on a full disk, say: an empty library), else why what was indexed is gone. A library
        whose model was bound has a vector file beside the catalog; its catalog cannot be empty unless
        the write-ahead log that held everything since the last checkpoint was deleted or damaged."""
        meta_path = self.folder / VECTORS_META
        if not meta_path.is_file():
            return ""
        try:
            count = int(json.loads(meta_path.read_text()).get("count", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            count = 0
        path = self.folder / CATALOG_NAME
        held = f" (the vector file beside it held {count} vectors)" if count else ""
        return (
            f"The catalog {path} is empty although this library was indexed{held}: its write-ahead log "
            f"({path.name}-wal) is missing or damaged, so what was indexed since the catalog was last "
            "checkpointed is lost. Index your folders again (sorce-desktop index FOLDER ...)."
        )

    def _blank(self) -> bool:
        return not self.query("SELECT 1 FROM sqlite_master LIMIT 1")

    def _check_schema_read_only(self) -> None:
        """What :meth:`_migrate` checks, without writing: a reader refuses a catalog it would have to
        change rather than changing it."""
        if self._blank():
            lost = self._lost_log()
            if lost:
                raise StoreError(lost)
            # Nothing was ever committed (a catalog created on a full disk): an empty library, read from
            # an empty catalog in memory, as when there is no catalog yet.
            self.db.close()
            self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self.opened_read_only = False
            self._migrate()
            return
        tables = {r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        version = SCHEMA_VERSION  # a catalog that lost its version row is not an older one
        if "meta" in tables:
            row = self.query("SELECT value FROM meta WHERE key='schema_version'")
            version = int(row[0][0]) if row else SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The index in {self.folder} was written by a newer version of sorce-desktop "
                f"(schema {version}); update the app or use another --data-dir."
            )
        needed = {"meta", "folders", "photos", "regions", "ocr_lines", "ocr_done"}
        if version < SCHEMA_VERSION or not needed <= tables or "alts" not in {
            r[1] for r in self.query("PRAGMA table_info(ocr_lines)")
        }:
            raise StoreError(
                f"The index in {self.folder} was made by an older version of sorce-desktop and must be "
                "updated before it can be read: run sorce-desktop index once."
            )
        self.text_search_ready = "ocr_fts" in tables
        self.facts_ready = "photo_facts" in tables

    def _migrate(self) -> None:
        if self.opened_read_only:
            self._check_schema_read_only()
            return
        if self.writable and self._blank():
            lost = self._lost_log()
            if lost:
                self.notices.append(lost)
        with self.transaction() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                # a catalog that lost its version row (a salvage, say) is not an older one: no reset
                version = int(row[0]) if row else SCHEMA_VERSION
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"The index in {self.folder} was written by a newer version of sorce-desktop "
                        f"(schema {version}); update the app or use another --data-dir."
                    )
                if version < SCHEMA_VERSION:
                    # No older schema has shipped; an unknown older catalog is rebuilt from the folders.
                    for t in ("regions", "photos", "folders", "meta"):
                        db.execute(f"DROP TABLE IF EXISTS {t}")
                    self.notices.append(
                        f"The index was from an older version (schema {version}) and was reset; "
                        "photos will be indexed again."
                    )
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            # Text in photos (OCR lines): side table, FTS5 trigram index, triggers (Store's text section).
            self.text_search_ready = create_text_schema(db)
            for stmt in FACTS_TABLES:  # when and where (added beside schema 1: no reset, backfilled)
                db.execute(stmt)
            self.facts_ready = True
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def _open_vectors(self) -> None:
        binding = self.binding()
        if binding is None:
            self.vectors = None
            return
        index = None
        reason = None
        if self.vector_file.exists():
            index, reason, unchecked = self.vector_file.read(binding)
            if unchecked and self.writable:
                self._dirty = True  # written before checksums: the next save adds one
        elif self.count_vectors():
            reason = "the vector index file is missing"
        if index is None:
            index = VectorIndex(binding.dim)
        self.vectors = index
        if index.count == 0:
            # Rebuilding a large library goes straight into the kind its size calls for (a flat index
            # of a million photos would not fit in memory).
            self._rekind(self.count_vectors())
        changed = self._sync_vectors()
        if reason:
            self.notices.append(f"{reason[0].upper()}{reason[1:]}; it was rebuilt from the catalog.")
            log.info("%s; rebuilt from the catalog", reason)  # the user reads it in the notices
        if (changed or reason) and self.writable:
            self.save()

    def _visual_vector_ids(self) -> list[int]:
        """The ids of the visual regions that have a vector (what the vector file must hold)."""
        return [
            r[0] for r in self.db.execute("SELECT id FROM regions WHERE source=? AND vector IS NOT NULL", (VISUAL,))
        ]

    def _catalog_vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        assert self.vectors is not None
        return fetch_region_vectors(self.db, ids, self.vectors.dim)

    def _rekind(self, n: int | None = None) -> bool:
        """Give the vector index the kind the library's size calls for (``ann.spec_for``), rebuilt
        from the catalog (compressed kinds are trained on a sample of the catalog's own vectors).
        Returns True when it was rebuilt."""
        assert self.vectors is not None
        with self._lock:
            n = self.vectors.count if n is None else n
            rebuilt = vectorfile.rekinded(self.vectors, n, self._visual_vector_ids, self._catalog_vectors)
            if rebuilt is None:
                return False
            self.vectors = rebuilt
            self._sync_vectors()
            self._dirty = True
            return True

    def _sync_vectors(self) -> int:
        """Make the vector index hold exactly the catalog's visual vectors. Returns how many changed."""
        assert self.vectors is not None
        with self._lock:
            changed = vectorfile.sync_with_catalog(self.vectors, self._visual_vector_ids, self._catalog_vectors)
            if changed:
                self._dirty = True
            return changed

    # -- plumbing ------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
                else:
                    self.db.execute("COMMIT")
                    self.generation += 1
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as exc:
                try:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    pass  # SQLite rolls back itself when the connection closes
                raise _translate_db_error(exc, self.folder) from exc

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if is_damage(exc):
                    raise StoreDamaged(damaged_message(self.folder / CATALOG_NAME, exc)) from exc
                raise

    def close(self) -> None:
        with self._lock:
            try:
                if getattr(self, "_dirty", False) and self.writable and getattr(self, "db", None) is not None:
                    self.save()
            finally:
                db = getattr(self, "db", None)
                if db is not None:
                    db.close()
                    self.db = None
                if self._writer_lock is not None:
                    self._writer_lock.release()
                    self._writer_lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self) -> None:
        """Write the vector index atomically. The catalog is already durable (committed per batch)."""
        with self._lock:
            binding = self.binding()
            if self.vectors is None or binding is None:
                return
            self._rekind()
            self.vector_file.write(self.vectors, binding)
            self._dirty = False

    # -- model binding -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.query("SELECT value FROM meta WHERE key=?", (key,))
        return row[0][0] if row else None

    def binding(self) -> ModelBinding | None:
        raw = self.get_meta("model")
        if not raw:
            return None
        d = json.loads(raw)
        return ModelBinding(d["model_id"], d["fingerprint"], d["layout"], int(d["dim"]))

    def bind_model(self, binding: ModelBinding, *, reindex: bool = False) -> bool:
        """Record the model and layout that make this store's vectors.

        Returns True when existing vectors were dropped (photos set back to pending)."""
        current = self.binding()
        if current == binding:
            return False
        dropped = False
        with self.transaction() as db:
            has_vectors = db.execute("SELECT 1 FROM regions WHERE source=? LIMIT 1", (VISUAL,)).fetchone()
            if (
                current is not None
                and has_vectors
                and (current.fingerprint != binding.fingerprint or current.layout != binding.layout)
            ):
                if not reindex:
                    n = db.execute("SELECT count(*) FROM photos WHERE status=?", (INDEXED,)).fetchone()[0]
                    what = (
                        f"{current.model_id} ({current.layout} layout)"
                        if current.layout != binding.layout
                        else current.model_id
                    )
                    raise ModelMismatch(what, f"{binding.model_id} ({binding.layout} layout)", n)
                db.execute("DELETE FROM regions WHERE source=?", (VISUAL,))
                db.execute("UPDATE photos SET status=?, variant=NULL WHERE status=?", (PENDING, INDEXED))
                dropped = True
            if current is None:
                # Photos indexed for their text alone (no visual model yet) now get their visual regions.
                db.execute(
                    "UPDATE photos SET status=? WHERE status=? AND id NOT IN "
                    "(SELECT photo_id FROM regions WHERE source=?)",
                    (PENDING, INDEXED, VISUAL),
                )
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('model', ?)",
                (json.dumps(binding.__dict__),),
            )
        # Vectors of the old model are gone from the catalog; start a fresh index of the right size.
        if dropped or self.vectors is None or self.vectors.dim != binding.dim:
            self.vectors = VectorIndex(binding.dim)
            self._sync_vectors()
            self._dirty = True
            if self.writable:
                self.save()
        return dropped

    # -- folders -------------------------------------------------------------------------------------
    def add_folder(self, folder: str | os.PathLike) -> str:
        key = path_key(folder)
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO folders(path, added_at, online) VALUES (?, ?, 1)", (key, time.time())
            )
        return path_str(key)

    def folders(self) -> list[str]:
        return [path_str(r[0]) for r in self.query("SELECT path FROM folders ORDER BY added_at")]

    def set_folder_online(self, folder: str, online: bool) -> None:
        with self.transaction() as db:
            db.execute("UPDATE folders SET online=? WHERE path=?", (int(online), path_key(folder)))

    def folder_online(self, folder: str) -> bool:
        row = self.query("SELECT online FROM folders WHERE path=?", (path_key(folder),))
        return bool(row[0][0]) if row else False

    def remove_folder(self, folder: str) -> int:
        """Forget a folder and every photo under it (the files are not touched). Returns photos forgotten."""
        key = path_key(folder)
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM photos WHERE folder=?", (key,))]
            region_ids = self._region_ids_of(db, ids)
            self._delete_photos(db, ids)
            db.execute("DELETE FROM folders WHERE path=?", (key,))
        self._places = None
        self._drop_vectors(region_ids)
        return len(ids)

    # -- photos --------------------------------------------------------------------------------------
    def photos_under(self, folder: str | None = None) -> list[PhotoRow]:
        if folder is None:
            rows = self.query(f"SELECT {_PHOTO_COLS} FROM photos")
        else:
            rows = self.query(f"SELECT {_PHOTO_COLS} FROM photos WHERE folder=?", (path_key(folder),))
        return [_photo(r) for r in rows]

    def photo_by_path(self, path: str) -> PhotoRow | None:
        rows = self.query(f"SELECT {_PHOTO_COLS} FROM photos WHERE path=?", (path_key(path),))
        return _photo(rows[0]) if rows else None

    def photos_by_ids(self, ids: Sequence[int]) -> dict[int, PhotoRow]:
        out: dict[int, PhotoRow] = {}
        ids = list(ids)
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for r in self.query(
                f"SELECT {_PHOTO_COLS} FROM photos WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ):
                out[r[0]] = _photo(r)
        return out

    def pending(self) -> list[PhotoRow]:
        return [
            _photo(r)
            for r in self.query(
                f"SELECT {_PHOTO_COLS} FROM photos WHERE status=? ORDER BY id", (PENDING,)
            )
        ]

    def upsert_pending(self, entries: Sequence[tuple[str, str | None, int, int, str | None]]) -> None:
        """Record files to embed (path, folder, size, mtime_ns, hash) as pending, before embedding them,
        so that a run killed half-way knows what is left."""
        with self.transaction() as db:
            for path, folder, size, mtime_ns, digest in entries:
                db.execute(
                    "INSERT INTO photos(path, folder, size, mtime_ns, hash, status) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                    "hash=excluded.hash, status=excluded.status, error=NULL, folder=excluded.folder",
                    (path_key(path), path_key(folder) if folder else None, size, mtime_ns, digest, PENDING),
                )

    def touch(self, photo_id: int, size: int, mtime_ns: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE photos SET size=?, mtime_ns=? WHERE id=?", (size, mtime_ns, photo_id))

    def move_photo(
        self, photo_id: int, new_path: str, folder: str | None, mtime_ns: int | None = None
    ) -> None:
        """A renamed or moved file keeps its regions and vectors."""
        with self.transaction() as db:
            # A photo it replaces (renamed over it) goes, with its vectors.
            displaced = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM photos WHERE path=? AND id<>?", (path_key(new_path), photo_id)
                )
            ]
            stale = self._region_ids_of(db, displaced)
            self._delete_photos(db, displaced)
            if mtime_ns is None:
                db.execute(
                    "UPDATE photos SET path=?, folder=? WHERE id=?",
                    (path_key(new_path), path_key(folder) if folder else None, photo_id),
                )
            else:
                db.execute(
                    "UPDATE photos SET path=?, folder=?, mtime_ns=? WHERE id=?",
                    (path_key(new_path), path_key(folder) if folder else None, mtime_ns, photo_id),
                )
        self._drop_vectors(stale)

    def move_tree(self, old_dir: str, new_dir: str, folder: str | None) -> int:
        """A renamed folder: every photo under it gets the new path prefix, vectors untouched."""
        old = path_key(old_dir).rstrip(os.sep.encode()) + os.sep.encode()
        new = path_key(new_dir).rstrip(os.sep.encode()) + os.sep.encode()
        stale: list[int] = []
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, path FROM photos WHERE substr(path, 1, ?) = ?", (len(old), old)
            ).fetchall()
            for pid, p in rows:
                target = new + bytes(p)[len(old) :]
                displaced = [
                    r[0] for r in db.execute("SELECT id FROM photos WHERE path=? AND id<>?", (target, pid))
                ]
                stale += self._region_ids_of(db, displaced)
                self._delete_photos(db, displaced)
                db.execute(
                    "UPDATE photos SET path=?, folder=? WHERE id=?",
                    (target, path_key(folder) if folder else None, pid),
                )
        self._drop_vectors(stale)
        return len(rows)

    def folder_has_photos(self, folder: str) -> bool:
        return bool(self.query("SELECT 1 FROM photos WHERE folder=? LIMIT 1", (path_key(folder),)))

    def indexed_with_size(self, size: int) -> list[PhotoRow]:
        """Indexed photos of this file size with a content hash: the candidates a new file may be a move of."""
        rows = self.query(
            f"SELECT {_PHOTO_COLS} FROM photos WHERE size=? AND status=? AND hash IS NOT NULL", (size, INDEXED)
        )
        return [_photo(r) for r in rows]

    def photos_in_tree(self, directory: str) -> list[PhotoRow]:
        """Every photo whose file is under ``directory`` (at any depth)."""
        prefix = path_key(directory).rstrip(os.sep.encode()) + os.sep.encode()
        rows = self.query(
            f"SELECT {_PHOTO_COLS} FROM photos WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
        )
        return [_photo(r) for r in rows]

    def record_failure(self, path: str, folder: str | None, size: int, mtime_ns: int, reason: str) -> None:
        self.record_failures([(path, folder, size, mtime_ns, reason)])

    def record_failures(self, rows: Sequence[tuple[str, str | None, int, int, str]]) -> None:
        """Mark files as failed with their reasons, in one transaction (any old vectors are dropped)."""
        if not rows:
            return
        region_ids: list[int] = []
        with self.transaction() as db:
            for path, folder, size, mtime_ns, reason in rows:
                key = path_key(path)
                pid_row = db.execute("SELECT id FROM photos WHERE path=?", (key,)).fetchone()
                if pid_row:
                    region_ids += self._region_ids_of(db, [pid_row[0]])
                    db.execute("DELETE FROM regions WHERE photo_id=?", (pid_row[0],))
                    db.execute("DELETE FROM ocr_done WHERE photo_id=?", (pid_row[0],))
                db.execute(
                    "INSERT INTO photos(path, folder, size, mtime_ns, status, error) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                    "status=excluded.status, error=excluded.error, hash=NULL",
                    (key, path_key(folder) if folder else None, size, mtime_ns, FAILED, reason),
                )
        self._drop_vectors(region_ids)

    def delete_photos(self, ids: Sequence[int]) -> None:
        with self.transaction() as db:
            region_ids = self._region_ids_of(db, ids)
            self._delete_photos(db, ids)
        self._places = None
        self._drop_vectors(region_ids)

    def _region_ids_of(self, db, photo_ids: Sequence[int]) -> list[int]:
        out: list[int] = []
        photo_ids = list(photo_ids)
        for i in range(0, len(photo_ids), 900):
            chunk = photo_ids[i : i + 900]
            out += [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM regions WHERE source=? AND photo_id IN ({','.join('?' * len(chunk))})",
                    [VISUAL, *chunk],
                )
            ]
        return out

    def _delete_photos(self, db, ids: Sequence[int]) -> None:
        ids = list(ids)
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            marks = ",".join("?" * len(chunk))
            db.execute(f"DELETE FROM regions WHERE photo_id IN ({marks})", chunk)
            db.execute(f"DELETE FROM photos WHERE id IN ({marks})", chunk)

    def _drop_vectors(self, region_ids: Sequence[int]) -> None:
        if self.vectors is not None and region_ids:
            with self._lock:
                self.vectors.remove(region_ids)
                self._dirty = True

    def commit_photos(self, photos: Sequence[IndexedPhoto]) -> list[int]:
        """Store embedded photos with their regions in one transaction; returns their photo ids."""
        binding = self.binding()
        if binding is None:
            raise StoreError("no model is bound to this store")
        new_ids: list[int] = []
        new_vecs: list[np.ndarray] = []
        stale: list[int] = []
        photo_ids: list[int] = []
        now = time.time()
        with self.transaction() as db:
            for p in photos:
                pid = upsert_indexed_photo(db, p, now, variant=p.variant)
                photo_ids.append(pid)
                stale += self._region_ids_of(db, [pid])
                db.execute("DELETE FROM regions WHERE photo_id=? AND source=?", (pid, VISUAL))
                # Text lines read from other content of this file go too (the indexer reads it again).
                db.execute(
                    "DELETE FROM regions WHERE photo_id=? AND source=? AND NOT EXISTS "
                    "(SELECT 1 FROM ocr_done WHERE photo_id=? AND hash IS ?)",
                    (pid, Source.OCR, pid, p.hash),
                )
                db.execute("DELETE FROM ocr_done WHERE photo_id=? AND hash IS NOT ?", (pid, p.hash))
                if p.facts is not None:
                    write_facts(db, pid, p.facts)
                    self._places = None
                for r in p.regions:
                    vec = np.ascontiguousarray(r.vector, dtype=np.float32)
                    if vec.shape != (binding.dim,):
                        raise StoreError(f"vector of size {vec.shape} for a {binding.dim}-d index")
                    cur = db.execute(
                        "INSERT INTO regions(photo_id, source, name, x0, y0, x1, y1, vector) VALUES (?,?,?,?,?,?,?,?)",
                        (pid, VISUAL, r.name, r.box.x0, r.box.y0, r.box.x1, r.box.y1, vec.tobytes()),
                    )
                    new_ids.append(cur.lastrowid)
                    new_vecs.append(vec)
        with self._lock:
            assert self.vectors is not None
            self.vectors.remove(stale)
            if new_ids:
                self.vectors.add(new_ids, np.stack(new_vecs))
            self._dirty = True
        return photo_ids

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` (or more) regions per query, best first, exact scores. From any thread. Under the lock: a FAISS index must not be read
        while another thread adds to or removes from it (the GUI searches while a batch commits)."""
        with self._lock:
            if self.vectors is None or self.vectors.count == 0:
                n = len(queries)
                return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
            if not self.vectors.spec.compressed:
                return self.vectors.search(queries, k)
            # The compressed index proposes candidates; their exact scores come from the catalog. All
            # of them come back ranked (at least k): a caller that groups regions by photo then rarely
            # has to ask again for more.
            kc = ann.rescore_candidates(k, self.vectors.count)
            _approx, cand = self.vectors.search(queries, kc)
            return ann.rescore(queries, cand, self.region_vectors_by_ids, kc)

    def region_vectors_by_ids(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The catalog's float32 vectors of the regions ``ids`` that still exist: ``(ids, (n, dim))``."""
        with self._lock:
            return fetch_region_vectors(self.db, ids, self.vectors.dim if self.vectors is not None else 0)

    # -- regions -------------------------------------------------------------------------------------
    def regions_by_ids(self, ids: Sequence[int]) -> dict[int, RegionRow]:
        out: dict[int, RegionRow] = {}
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for r in self.query(
                f"SELECT id, photo_id, name, x0, y0, x1, y1, source, text FROM regions WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[r[0]] = RegionRow(r[0], r[1], r[2], Box(r[3], r[4], r[5], r[6]), r[7], r[8])
        return out

    def regions_of(self, photo_id: int, source: str | None = VISUAL) -> list[RegionRow]:
        sql = "SELECT id, photo_id, name, x0, y0, x1, y1, source, text FROM regions WHERE photo_id=?"
        params: list = [photo_id]
        if source:
            sql += " AND source=?"
            params.append(source)
        return [
            RegionRow(r[0], r[1], r[2], Box(r[3], r[4], r[5], r[6]), r[7], r[8])
            for r in self.query(sql + " ORDER BY id", params)
        ]

    def count_vectors(self) -> int:
        return self.query("SELECT count(*) FROM regions WHERE source=? AND vector IS NOT NULL", (VISUAL,))[0][
            0
        ]

    # -- status --------------------------------------------------------------------------------------
    def counts(self, folder: str | None = None) -> dict[str, int]:
        if folder is None:
            rows = self.query("SELECT status, count(*) FROM photos GROUP BY status")
        else:
            rows = self.query(
                "SELECT status, count(*) FROM photos WHERE folder=? GROUP BY status", (path_key(folder),)
            )
        out = {PENDING: 0, INDEXED: 0, FAILED: 0}
        out.update({s: n for s, n in rows})
        return out

    def visual_variants(self) -> dict[str | None, int]:
        """Indexed photos with visual vectors, counted by the variant (speed profile) that made them."""
        rows = self.query(
            "SELECT variant, count(*) FROM photos WHERE status=? AND id IN "
            "(SELECT photo_id FROM regions WHERE source=?) GROUP BY variant",
            (INDEXED, VISUAL),
        )
        return {v: n for v, n in rows}

    def requeue_variants(self, variants: list[str | None]) -> int:
        """Set photos whose vectors these variants made back to pending, so the next index run embeds
        them again (their text is kept: it is read again only when the file changes). Returns how many."""
        n = 0
        with self.transaction() as db:
            for v in variants:
                cond = "variant IS NULL" if v is None else "variant=?"
                n += db.execute(
                    f"UPDATE photos SET status=? WHERE status=? AND {cond} AND id IN "
                    "(SELECT photo_id FROM regions WHERE source=?)",
                    (PENDING, INDEXED, VISUAL) if v is None else (PENDING, INDEXED, v, VISUAL),
                ).rowcount
        return n

    def errors(self, folder: str | None = None) -> list[tuple[str, str]]:
        if folder is None:
            rows = self.query("SELECT path, error FROM photos WHERE status=? ORDER BY path", (FAILED,))
        else:
            rows = self.query(
                "SELECT path, error FROM photos WHERE status=? AND folder=? ORDER BY path",
                (FAILED, path_key(folder)),
            )
        return [(path_str(p), e or "unknown error") for p, e in rows]

    def size_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    # -- text lines (text in photos; the records and folding live in core/textstore.py) ---------------
    def text_read_for(self, photo_ids: Sequence[int]) -> dict[int, tuple[str | None, str]]:
        """photo id -> (hash, engine) of its last reading."""
        out: dict[int, tuple[str | None, str]] = {}
        ids = list(photo_ids)
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for pid, h, engine in self.query(
                f"SELECT photo_id, hash, engine FROM ocr_done WHERE photo_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[pid] = (h, engine)
        return out

    def text_unread(self, engine: str) -> list[PhotoRow]:
        """Indexed photos not read (or read by another engine, or for other content): the text backlog."""
        rows = self.query(
            f"SELECT {_PHOTO_COLS} FROM photos p WHERE status=? AND NOT EXISTS "
            "(SELECT 1 FROM ocr_done d WHERE d.photo_id=p.id AND d.engine=? AND d.hash IS p.hash) ORDER BY id",
            (INDEXED, engine),
        )
        return [_photo(r) for r in rows]

    def commit_text(self, items: Sequence[TextPhoto], engine: str, text_model: str | None) -> list[int]:
        """Replace the text lines of each photo (one transaction). Returns the photo ids."""
        ready = self.text_search_ready
        now = time.time()
        photo_ids = []
        with self.transaction() as db:
            if text_model is not None:
                _bind_text_model(db, text_model)
            for it in items:
                pid = it.photo_id
                if it.photo is not None:
                    pid = upsert_indexed_photo(db, it.photo, now)
                if pid is None or db.execute("SELECT 1 FROM photos WHERE id=?", (pid,)).fetchone() is None:
                    continue  # the photo was forgotten meanwhile (deleted by the watcher)
                photo_ids.append(pid)
                db.execute("DELETE FROM regions WHERE photo_id=? AND source=?", (pid, Source.OCR))
                vecs = it.vectors
                for k, line in enumerate(it.lines):
                    b = line.box
                    cur = db.execute(
                        "INSERT INTO regions(photo_id, source, name, x0, y0, x1, y1, text) VALUES (?,?,?,?,?,?,?,?)",
                        (pid, Source.OCR, TEXT_REGION, b.x0, b.y0, b.x1, b.y1, line.text),
                    )
                    rid = cur.lastrowid
                    folded = fold(line.text)
                    alts = fold_alternatives(line.text, getattr(line, "alternatives", None) or [])
                    emb = None
                    if vecs is not None and text_model is not None:
                        emb = np.ascontiguousarray(vecs[k], dtype=np.float32).tobytes()
                    db.execute(
                        "INSERT INTO ocr_lines(region_id, photo_id, confidence, quad, folded, embedding, alts) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (
                            rid,
                            pid,
                            float(line.confidence),
                            json.dumps([list(map(float, q)) for q in line.quad]),
                            folded,
                            emb,
                            json.dumps(alts) if alts else None,
                        ),
                    )
                    if ready:
                        db.execute("INSERT INTO ocr_fts(rowid, folded) VALUES (?, ?)", (rid, folded))
                db.execute(
                    "INSERT OR REPLACE INTO ocr_done(photo_id, hash, engine, lines, done_at) VALUES (?,?,?,?,?)",
                    (pid, it.hash, engine, len(it.lines), now),
                )
        return photo_ids

    def text_model(self) -> str | None:
        return self.get_meta("text_model")

    def lines_without_embedding(self, limit: int = 512) -> list[tuple[int, str]]:
        return [
            (r[0], r[1])
            for r in self.query(
                "SELECT l.region_id, r.text FROM ocr_lines l JOIN regions r ON r.id=l.region_id "
                "WHERE l.embedding IS NULL ORDER BY l.region_id LIMIT ?",
                (limit,),
            )
        ]

    def set_line_embeddings(self, text_model: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        with self.transaction() as db:
            _bind_text_model(db, text_model)
            for rid, v in zip(ids, vectors):
                db.execute(
                    "UPDATE ocr_lines SET embedding=? WHERE region_id=?",
                    (np.ascontiguousarray(v, dtype=np.float32).tobytes(), int(rid)),
                )

    def line_rows(self, region_ids: Sequence[int]) -> dict[int, LineRow]:
        out: dict[int, LineRow] = {}
        ids = [int(i) for i in region_ids]
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for rid, pid, x0, y0, x1, y1, text, conf, quad in self.query(
                "SELECT r.id, r.photo_id, r.x0, r.y0, r.x1, r.y1, r.text, l.confidence, l.quad FROM regions r "
                f"JOIN ocr_lines l ON l.region_id=r.id WHERE r.id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[rid] = LineRow(
                    rid, pid, text or "", Box(x0, y0, x1, y1), conf, json.loads(quad) if quad else []
                )
        return out

    def count_lines(self) -> int:
        return self.query("SELECT count(*) FROM ocr_lines")[0][0]

    def count_read(self) -> int:
        return self.query("SELECT count(*) FROM ocr_done")[0][0]

    def line_candidates(self, folded_query: str, limit: int) -> list[tuple[int, str, list[str] | None]]:
        """Lines that may contain ``folded_query`` with a few characters wrong: (region id, folded text,
        its letters' alternatives or None).

        With the trigram index: lines sharing any trigram of the query, most shared first (bm25), so a
        one-character OCR error (which spoils at most three of the query's trigrams) still finds the line.
        Queries shorter than a trigram, or no FTS5: a scan of the folded texts (substring)."""
        if len(folded_query) >= 3 and self.text_search_ready:
            grams = sorted({folded_query[i : i + 3] for i in range(len(folded_query) - 2)})
            expr = " OR ".join('"' + g.replace('"', '""') + '"' for g in grams)
            rows = self.query(
                "SELECT f.rowid, l.folded, l.alts FROM ocr_fts f JOIN ocr_lines l ON l.region_id=f.rowid "
                "WHERE ocr_fts MATCH ? ORDER BY rank LIMIT ?",
                (expr, limit),
            )
        elif len(folded_query) >= 3:
            # no FTS5: compare against every line (correct, linear in the number of lines)
            rows = self.query("SELECT region_id, folded, alts FROM ocr_lines")
        else:
            like = "%" + folded_query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self.query(
                "SELECT region_id, folded, alts FROM ocr_lines WHERE folded LIKE ? ESCAPE '\\' LIMIT ?",
                (like, limit),
            )
        return [(r[0], r[1], _load_alts(r[2], r[1])) for r in rows]

    def text_vectors_key(self) -> tuple:
        """What changes whenever the line embeddings do (to know when to reload them)."""
        n, top, tot = self.query("SELECT count(embedding), max(region_id), count(*) FROM ocr_lines")[0]
        return (n, top, tot, self.text_model())

    def text_embeddings(self) -> list[tuple[int, bytes]]:
        return self.query(
            "SELECT region_id, embedding FROM ocr_lines WHERE embedding IS NOT NULL ORDER BY region_id"
        )

    # -- when and where (the records and their reading live in core/photos/whenwhere.py) --------------------
    def set_facts(self, items: Sequence[tuple[int, PhotoFacts]]) -> None:
        """Record when and where photos were taken (the backfill of photos indexed before they were read)."""
        with self.transaction() as db:
            for pid, facts in items:
                if db.execute("SELECT 1 FROM photos WHERE id=?", (pid,)).fetchone():
                    write_facts(db, pid, facts)
        self._places = None

    def photos_without_facts(self, limit: int = 1000) -> list[PhotoRow]:
        """Indexed photos whose capture time is not recorded yet (indexed before it was read)."""
        if not self.facts_ready:
            return []
        rows = self.query(
            f"SELECT {_PHOTO_COLS} FROM photos WHERE status=? AND id NOT IN (SELECT photo_id FROM photo_facts) "
            "ORDER BY id LIMIT ?",
            (INDEXED, limit),
        )
        return [_photo(r) for r in rows]

    def facts_of(self, ids: Sequence[int]) -> dict[int, tuple]:
        """photo id -> (taken, offset, source, lat, lon, city, region, country)."""
        out: dict[int, tuple] = {}
        if not self.facts_ready:
            return out
        ids = list(ids)
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for r in self.query(
                "SELECT photo_id, taken, taken_offset, taken_source, lat, lon, city, region, country FROM photo_facts "
                f"WHERE photo_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[r[0]] = r[1:]
        return out

    def taken_between(self, start: str | None, end: str | None) -> set[int]:
        if not self.facts_ready:
            return set()
        with self._lock:
            return set(taken_between(self.db, start, end))

    def places(self) -> list[tuple[str | None, str | None, str | None, int]]:
        """(city, region, country, photos) of every place the library's photos were taken in. Kept until
        this store records or forgets photos (every query reads it: 70+ ms at 100k photos)."""
        if not self.facts_ready:
            return []
        with self._lock:
            if self._places is None:
                self._places = self.query(
                    "SELECT city, region, country, count(*) FROM photo_facts WHERE country IS NOT NULL "
                    "GROUP BY city, region, country"
                )
            return list(self._places)

    def photos_at(self, city: str | None, region: str | None, country: str | None) -> set[int]:
        """Photos taken at this place (None parts: any)."""
        if not self.facts_ready:
            return set()
        sql, params = "SELECT photo_id FROM photo_facts WHERE country IS NOT NULL", []
        for col, value in (("city", city), ("region", region), ("country", country)):
            if value is not None:
                sql += f" AND {col}=?"
                params.append(value)
        return {r[0] for r in self.query(sql, params)}

    def count_placed(self) -> int:
        if not self.facts_ready:
            return 0
        return self.query("SELECT count(*) FROM photo_facts WHERE country IS NOT NULL")[0][0]

    def photos_with_path_part(self, needle: str, limit: int = 5000) -> list[tuple[int, str]]:
        """(id, path) of indexed photos whose path holds ``needle`` (lower case ASCII letters compare
        without case): the candidates of a file-name or folder-name match, checked word by word after."""
        rows = self.query(
            "SELECT id, path FROM photos WHERE status=? AND instr(lower(CAST(path AS TEXT)), ?) > 0 LIMIT ?",
            (INDEXED, needle.lower(), limit),
        )
        return [(r[0], path_str(r[1])) for r in rows]

    def indexed_paths(self) -> list[tuple[int, str]]:
        """(id, path) of every indexed photo (what the file-name index is built from)."""
        return [(r[0], path_str(r[1])) for r in self.query("SELECT id, path FROM photos WHERE status=?", (INDEXED,))]

    def photos_in_trees(self, directories: Sequence[str]) -> set[int]:
        """Ids of the photos under any of these directories."""
        out: set[int] = set()
        for d in directories:
            prefix = path_key(d).rstrip(os.sep.encode()) + os.sep.encode()
            out |= {
                r[0] for r in self.query("SELECT id FROM photos WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))
            }
        return out

    def visual_vectors_of(self, photo_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(region ids, their photo ids, (n, dim) float32 vectors) of these photos' visual regions."""
        rids: list[int] = []
        pids: list[int] = []
        parts: list[bytes] = []
        photo_ids = [int(i) for i in photo_ids]
        for i in range(0, len(photo_ids), 900):
            chunk = photo_ids[i : i + 900]
            for rid, pid, blob in self.query(
                f"SELECT id, photo_id, vector FROM regions WHERE source=? AND vector IS NOT NULL AND photo_id IN "
                f"({','.join('?' * len(chunk))})",
                [VISUAL, *chunk],
            ):
                rids.append(rid)
                pids.append(pid)
                parts.append(blob)
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        vecs = np.frombuffer(b"".join(parts), dtype=np.float32).reshape(len(parts), -1)
        return np.asarray(rids, np.int64), np.asarray(pids, np.int64), vecs
