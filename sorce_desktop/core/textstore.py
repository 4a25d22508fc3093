"""Text lines in the store: OCR regions, their full-text index and their text embeddings.

Each text line is a row of ``regions`` (source ``'ocr'``, name ``'text'``, its box and words), so every
path that drops a photo's regions (delete, failure, folder removal, a moved file overwriting another)
drops its lines too. Beside it:

- ``ocr_lines``: the recogniser's confidence, the line's rotated quad, the alternative readings of its
  letters (``alts``: JSON, per character of the folded text the other folded characters the recogniser
  found likely there; NULL when none), and the line's sentence embedding (float32 bytes, model in meta
  ``text_model``): a blob in the catalog, so the in-memory text vector index is always rebuilt from it
  and never needs its own file. Rows go with their region (FK cascade).
- ``ocr_fts``: an FTS5 index with trigram tokenisation over the line's *folded* text (lower case, letters
  and digits only), rowid = region id; a trigger removes a line's entry when its region row goes.
- ``ocr_done``: which photos were read, for which file content (hash) and by which engine, so re-running
  the indexer or changing the visual model never reads a photo twice, and a new OCR engine reads all.

The FAISS visual index never holds text vectors.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sorce_desktop.core.regions import Box

if TYPE_CHECKING:  # pragma: no cover
    from sorce_desktop.core.ocr import TextLine
    from sorce_desktop.core.store import IndexedPhoto, PhotoRow, Store

log = logging.getLogger(__name__)

OCR = "ocr"
TEXT_REGION = "text"

def fold(text: str) -> str:
    """What text matching compares: lower case, letters and digits only (OCR often drops or adds
    spaces and punctuation, so "ESPRESSO-BAR" and "espresso bar" fold to the same string)."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def fold_with_positions(text: str) -> tuple[str, list[int]]:
    """:func:`fold` plus, per folded character, its index in ``text`` (to map a match back to a box)."""
    chars, pos = [], []
    for i, ch in enumerate(text):
        for c in ch.casefold():
            if c.isalnum():
                chars.append(c)
                pos.append(i)
    return "".join(chars), pos


def fold_alternatives(text: str, alternatives: Sequence[str]) -> list[str] | None:
    """Per-character alternatives of ``text`` (as :class:`~sorce_desktop.core.ocr.TextLine` keeps
    them) -> per character of ``fold(text)``, its alternatives folded the same way, the character
    itself left out; None when there are none (or they do not fit the text)."""
    if len(alternatives) != len(text):
        return None
    folded, pos = fold_with_positions(text)
    out = []
    for ch, i in zip(folded, pos):
        out.append("".join(dict.fromkeys(c for c in fold(alternatives[i]) if c != ch)))
    return out if any(out) else None


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


def is_ready(store: Store) -> bool:
    return bool(getattr(store, "text_search_ready", False))


def done_for(store: Store, photo_ids: Sequence[int]) -> dict[int, tuple[str | None, str]]:
    """photo id -> (hash, engine) of its last reading."""
    out: dict[int, tuple[str | None, str]] = {}
    ids = list(photo_ids)
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        for pid, h, engine in store.query(
            f"SELECT photo_id, hash, engine FROM ocr_done WHERE photo_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            out[pid] = (h, engine)
    return out


def unread(store: Store, engine: str) -> list[PhotoRow]:
    """Indexed photos not read (or read by another engine, or for other content): the text backlog."""
    from sorce_desktop.core.store import INDEXED

    rows = store.query(
        f"SELECT {store._PHOTO_COLS} FROM photos p WHERE status=? AND NOT EXISTS "
        "(SELECT 1 FROM ocr_done d WHERE d.photo_id=p.id AND d.engine=? AND d.hash IS p.hash) ORDER BY id",
        (INDEXED, engine),
    )
    return [store._photo(r) for r in rows]


def commit_text(store: Store, items: Sequence[TextPhoto], engine: str, text_model: str | None) -> list[int]:
    """Replace the text lines of each photo (one transaction). Returns the photo ids."""
    from sorce_desktop.core.store import upsert_indexed_photo

    ready = is_ready(store)
    now = time.time()
    photo_ids = []
    with store.transaction() as db:
        if text_model is not None:
            _bind_text_model(db, text_model)
        for it in items:
            pid = it.photo_id
            if it.photo is not None:
                pid = upsert_indexed_photo(db, it.photo, now)
            if pid is None or db.execute("SELECT 1 FROM photos WHERE id=?", (pid,)).fetchone() is None:
                continue  # the photo was forgotten meanwhile (deleted by the watcher)
            photo_ids.append(pid)
            db.execute("DELETE FROM regions WHERE photo_id=? AND source=?", (pid, OCR))
            vecs = it.vectors
            for k, line in enumerate(it.lines):
                b = line.box
                cur = db.execute(
                    "INSERT INTO regions(photo_id, source, name, x0, y0, x1, y1, text) VALUES (?,?,?,?,?,?,?,?)",
                    (pid, OCR, TEXT_REGION, b.x0, b.y0, b.x1, b.y1, line.text),
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


def _bind_text_model(db: sqlite3.Connection, text_model: str) -> None:
    """Line embeddings of another text model are cleared (the texts stay; they are embedded again)."""
    row = db.execute("SELECT value FROM meta WHERE key='text_model'").fetchone()
    if row is None or row[0] != text_model:
        db.execute("UPDATE ocr_lines SET embedding=NULL")
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('text_model', ?)", (text_model,))


def text_model(store: Store) -> str | None:
    return store.get_meta("text_model")


def lines_without_embedding(store: Store, limit: int = 512) -> list[tuple[int, str]]:
    return [
        (r[0], r[1])
        for r in store.query(
            "SELECT l.region_id, r.text FROM ocr_lines l JOIN regions r ON r.id=l.region_id "
            "WHERE l.embedding IS NULL ORDER BY l.region_id LIMIT ?",
            (limit,),
        )
    ]


def set_embeddings(store: Store, text_model: str, ids: Sequence[int], vectors: np.ndarray) -> None:
    with store.transaction() as db:
        _bind_text_model(db, text_model)
        for rid, v in zip(ids, vectors):
            db.execute(
                "UPDATE ocr_lines SET embedding=? WHERE region_id=?",
                (np.ascontiguousarray(v, dtype=np.float32).tobytes(), int(rid)),
            )


def line_rows(store: Store, region_ids: Sequence[int]) -> dict[int, LineRow]:
    out: dict[int, LineRow] = {}
    ids = [int(i) for i in region_ids]
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        for rid, pid, x0, y0, x1, y1, text, conf, quad in store.query(
            "SELECT r.id, r.photo_id, r.x0, r.y0, r.x1, r.y1, r.text, l.confidence, l.quad FROM regions r "
            f"JOIN ocr_lines l ON l.region_id=r.id WHERE r.id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            out[rid] = LineRow(
                rid, pid, text or "", Box(x0, y0, x1, y1), conf, json.loads(quad) if quad else []
            )
    return out


def lines_of(store: Store, photo_id: int) -> list[LineRow]:
    ids = [
        r[0]
        for r in store.query(
            "SELECT id FROM regions WHERE photo_id=? AND source=? ORDER BY id", (photo_id, OCR)
        )
    ]
    rows = line_rows(store, ids)
    return [rows[i] for i in ids if i in rows]


def count_lines(store: Store) -> int:
    return store.query("SELECT count(*) FROM ocr_lines")[0][0]


def count_read(store: Store) -> int:
    return store.query("SELECT count(*) FROM ocr_done")[0][0]


def candidates(store: Store, folded_query: str, limit: int) -> list[tuple[int, str, list[str] | None]]:
    """Lines that may contain ``folded_query`` with a few characters wrong: (region id, folded text,
    its letters' alternatives or None).

    With the trigram index: lines sharing any trigram of the query, most shared first (bm25), so a
    one-character OCR error (which spoils at most three of the query's trigrams) still finds the line.
    Queries shorter than a trigram, or no FTS5: a scan of the folded texts (substring)."""
    if len(folded_query) >= 3 and is_ready(store):
        grams = sorted({folded_query[i : i + 3] for i in range(len(folded_query) - 2)})
        expr = " OR ".join('"' + g.replace('"', '""') + '"' for g in grams)
        rows = store.query(
            "SELECT f.rowid, l.folded, l.alts FROM ocr_fts f JOIN ocr_lines l ON l.region_id=f.rowid "
            "WHERE ocr_fts MATCH ? ORDER BY rank LIMIT ?",
            (expr, limit),
        )
    elif len(folded_query) >= 3:
        # no FTS5: compare against every line (correct, linear in the number of lines)
        rows = store.query("SELECT region_id, folded, alts FROM ocr_lines")
    else:
        like = "%" + folded_query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = store.query(
            "SELECT region_id, folded, alts FROM ocr_lines WHERE folded LIKE ? ESCAPE '\\' LIMIT ?",
            (like, limit),
        )
    return [(r[0], r[1], _load_alts(r[2], r[1])) for r in rows]


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


class TextVectors:
    """Line embeddings of one store in memory (brute-force inner product), rebuilt from the catalog
    whenever its lines changed. A library of 50k lines x 384 floats is 77 MB and a query is ~5 ms."""

    def __init__(self, store: Store):
        self.store = store
        self._key: tuple | None = None
        self.ids = np.zeros(0, np.int64)
        self.matrix = np.zeros((0, 0), np.float32)
        self._lock = threading.Lock()

    def _current_key(self) -> tuple:
        n, top, tot = self.store.query("SELECT count(embedding), max(region_id), count(*) FROM ocr_lines")[0]
        return (n, top, tot, text_model(self.store))

    def refresh(self) -> None:
        with self._lock:
            key = self._current_key()
            if key == self._key:
                return
            rows = self.store.query(
                "SELECT region_id, embedding FROM ocr_lines WHERE embedding IS NOT NULL ORDER BY region_id"
            )
            if rows:
                self.ids = np.array([r[0] for r in rows], dtype=np.int64)
                self.matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            else:
                self.ids = np.zeros(0, np.int64)
                self.matrix = np.zeros((0, 0), np.float32)
            self._key = key

    def search(self, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        self.refresh()
        if not len(self.ids) or self.matrix.shape[1] != q.shape[-1]:
            return []
        scores = self.matrix @ q.astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(self.ids[i]), float(scores[i])) for i in top]
