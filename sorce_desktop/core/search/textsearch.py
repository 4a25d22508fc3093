"""Search over the text read in photos: by letters (tolerating OCR mistakes) and by meaning.

Letters. Query and lines are folded (lower case, letters and digits only). Candidate lines come from
the FTS5 trigram index (lines sharing trigrams with the query, most first); each candidate is scored
by the edit distance of the query to its best-matching *substring* of the line (Sellers' algorithm),
where a substitution between characters OCR commonly confuses (0/o, 1/l/i, 5/s, ...) costs half, and
so does one by a character the recogniser itself found likely at that letter (the line's alternatives,
``core/text/ocr.py``: "lizard" read "Hizara" with "d" close behind the last "a").
Allowed errors: none for 1-3 characters, 1 for 4-5, 1.5 for 6-8 (one error and one confusion, e.g.
"rattle" read "Tattie"), 2 beyond. Score = 1 - distance / length
(1.0 exact), a bonus of 0.02 when the match starts and ends on word boundaries of the line.

Meaning. The query and every line are embedded with all-MiniLM-L6-v2; lines at cosine >= ``min_cosine``
(default 0.45) are matches by meaning, scored ``0.5 * cosine`` so that a line matching by its letters
always ranks above one matching by meaning alone. Lines of fewer than 3 letters are not matched by
meaning (their embeddings are noise).

Quotes. ``"open late"`` in a query means this text must appear: only photos with a line matching each
quoted phrase by its letters (with the same OCR tolerance) are returned, by text and by picture alike.
A query of quoted words only is matched by letters alone (ParsedQuery.words_only), with no model.

A photo's text score is its best line's; a hit's box is that line's box, narrowed to the matched
letters along the line's rotated quad when the match covers only part of the line.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from sorce_desktop.core.paths import is_under
from sorce_desktop.core.regions import Box
from sorce_desktop.core.store.catalog import LineRow, Store
from sorce_desktop.core.textstore import fold, fold_with_positions

log = logging.getLogger(__name__)

#: characters OCR confuses; substituting one for another costs half an error
_CONFUSABLE = [set("0oqd"), set("1lij!|"), set("5s"), set("8b"), set("2z"), set("6g"), set("9gq"), set("uv")]
_CONF_PAIRS = {(a, b) for grp in _CONFUSABLE for a in grp for b in grp if a != b}

#: a whole-word match ranks a hair above a part of a word ("STOP" above "ISTOP" for stop)
WHOLE_WORD_BONUS = 0.02

_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')


@dataclass
class ParsedQuery:
    text: str  # the query without quote marks (what the visual model and the meaning match see)
    required: list[str] = field(default_factory=list)  # quoted phrases that must appear

    @property
    def words_only(self) -> bool:
        """Every word is quoted (``"stop"``): the query asks for text in the photos and nothing else, so
        it is answered from the words alone, with no picture model (loaded or not)."""
        return bool(self.required) and fold(self.text) == fold("".join(self.required))


def parse_query(text: str) -> ParsedQuery:
    required = [a or b for a, b in _QUOTED.findall(text)]
    required = [" ".join(r.split()) for r in required if fold(r)]
    plain = " ".join(text.replace('"', " ").replace("“", " ").replace("”", " ").split())
    return ParsedQuery(plain, required)


def allowed_errors(n: int) -> float:
    # 1.5 from 6 letters: measured on bench text's words (docs/benchmarks.md, "Text in photos"), it
    # finds misreads like "Tattie" for "rattle" while 2,000 random words absent from the photos returned
    # a photo by letters 216 times against 213 with 1; a full 2 errors ("fuzziness AUTO") doubled that.
    return 0 if n <= 3 else 1 if n <= 5 else 1.5 if n <= 8 else 2


def substring_distance(q: str, t: str, alts: list[str] | None = None) -> tuple[float, int, int]:
    """Smallest edit distance of ``q`` to any substring of ``t`` -> (distance, start, end) in ``t``.
    ``alts``: per character of ``t``, characters a substitution by which costs half."""
    m, n = len(q), len(t)
    if m == 0:
        return 0.0, 0, 0
    if n == 0:
        return float(m), 0, 0
    # prev[j]: distance of q[:i] to the best substring of t ending at j; start[j]: where it begins
    prev = [0.0] * (n + 1)
    pstart = list(range(n + 1))
    for i in range(1, m + 1):
        qc = q[i - 1]
        cur = [float(i)] + [0.0] * n
        cstart = [0] * (n + 1)
        for j in range(1, n + 1):
            tc = t[j - 1]
            if qc == tc:
                sub = prev[j - 1]
            elif (qc, tc) in _CONF_PAIRS or (alts is not None and qc in alts[j - 1]):
                sub = prev[j - 1] + 0.5
            else:
                sub = prev[j - 1] + 1.0
            dele = prev[j] + 1.0  # q char missing in t
            ins = cur[j - 1] + 1.0  # extra char in t
            best, st = sub, pstart[j - 1]
            if dele < best:
                best, st = dele, pstart[j]
            if ins < best:
                best, st = ins, cstart[j - 1]
            cur[j] = best
            cstart[j] = st
        prev, pstart = cur, cstart
    j = min(range(n + 1), key=lambda k: (prev[k], -k))
    return prev[j], pstart[j], j


def letter_score(
    folded_query: str, folded_line: str, alts: list[str] | None = None
) -> tuple[float, int, int] | None:
    """Score of a line for a query by letters, with the folded span matched; None if too far.
    ``alts``: the line's alternatives per folded character (or None)."""
    if not folded_query:
        return None
    if len(folded_line) < max(1, len(folded_query) - allowed_errors(len(folded_query))):
        return None
    idx = folded_line.find(folded_query)
    if idx >= 0:
        return 1.0, idx, idx + len(folded_query)
    if alts is not None and len(alts) != len(folded_line):
        alts = None
    d, s, e = substring_distance(folded_query, folded_line, alts)
    if d > allowed_errors(len(folded_query)):
        return None
    return 1.0 - d / len(folded_query), s, e


def narrow_box(line: LineRow, span: tuple[int, int] | None) -> Box:
    """The part of the line's box holding the matched letters (proportional along the quad)."""
    if span is None or len(line.quad) != 4:
        return line.box
    folded, pos = fold_with_positions(line.text)
    if not folded or (span[0] <= 0 and span[1] >= len(folded)):
        return line.box
    n = max(1, len(line.text))
    a = pos[span[0]] / n
    b = (pos[span[1] - 1] + 1) / n
    tl, tr, br, bl = (np.asarray(p, dtype=np.float64) for p in line.quad)
    top_a, top_b = tl + (tr - tl) * a, tl + (tr - tl) * b
    bot_a, bot_b = bl + (br - bl) * a, bl + (br - bl) * b
    pts = np.stack([top_a, top_b, bot_a, bot_b])
    # widen by half a character each side: glyph widths vary, a tight cut would clip letters
    pad = np.linalg.norm(tr - tl) / n * 0.5
    x0 = max(line.box.x0, int(pts[:, 0].min() - pad))
    x1 = min(line.box.x1, int(np.ceil(pts[:, 0].max() + pad)))
    y0 = max(line.box.y0, int(pts[:, 1].min()))
    y1 = min(line.box.y1, int(np.ceil(pts[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return line.box
    return Box(x0, y0, x1, y1)


#: a photo's matched lines kept beside its best one (outlines: more than this is clutter, not information)
MAX_LINES_PER_PHOTO = 8


@dataclass
class TextHit:
    photo_id: int
    score: float  # 1.0 exact letters ... 0.5 * cosine for meaning
    box: Box
    text: str  # the line's words
    kind: str  # 'letters' | 'meaning'
    region_id: int
    whole_word: bool = False  # every letter of the query read exactly, starting and ending on word bounds
    lines: list[TextHit] = field(default_factory=list)  # every matched line of the photo, best first


class TextSearcher:
    """Text search over one store. ``embedder``: a TextEmbedder, or a function returning one (loaded on
    the first search that needs meaning), or None for letters only."""

    def __init__(
        self,
        store,
        embedder=None,
        *,
        min_cosine: float = 0.45,
        candidates: int = 2000,
    ):
        self.store = store
        self._embedder = embedder if not callable(embedder) or hasattr(embedder, "embed") else None
        self._factory: Callable | None = (
            embedder if callable(embedder) and not hasattr(embedder, "embed") else None
        )
        self.min_cosine = min_cosine
        self.candidates = candidates
        self.vectors = TextVectors(store)
        self._lock = threading.Lock()
        self.meaning_error: str | None = None

    def has_text(self) -> bool:
        return self.store.count_lines() > 0

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None and self._factory is not None:
                try:
                    self._embedder = self._factory()
                except Exception as exc:
                    self.meaning_error = str(exc)
                    log.warning("text meaning search is off: %s", exc)
                    self._factory = None
            return self._embedder

    # -- by letters ----------------------------------------------------------------------------------
    def letters(self, phrase: str) -> dict[int, tuple[float, int, tuple[int, int]]]:
        """region id -> (score, photo id, folded span) for lines matching ``phrase`` by letters.
        An exact whole-word read scores ``1.0 + WHOLE_WORD_BONUS``."""
        q = fold(phrase)
        out: dict[int, tuple[float, int, tuple[int, int]]] = {}
        if not q:
            return out
        cands = self.store.line_candidates(q, self.candidates)
        scored = {}
        for rid, folded, alts in cands:
            m = letter_score(q, folded or "", alts)
            if m is not None:
                scored[rid] = m
        if not scored:
            return out
        rows = self.store.line_rows(list(scored))
        for rid, (s, a, b) in scored.items():
            row = rows.get(rid)
            if row is None:
                continue
            folded = fold(row.text)
            # boundaries of words in the line: a whole-word match ranks a hair above a part of a word
            _, pos = fold_with_positions(row.text)
            start_ok = a == 0 or (pos[a] - pos[a - 1] > 1)
            end_ok = b >= len(folded) or (pos[b] - pos[b - 1] > 1)
            bonus = WHOLE_WORD_BONUS if (start_ok and end_ok) else 0.0
            out[rid] = (s + bonus, row.photo_id, (a, b))
        return out

    # -- by meaning ----------------------------------------------------------------------------------
    def meaning(self, text: str, k: int = 200) -> list[tuple[int, float]]:
        if len(fold(text)) < 2:
            return []
        self.vectors.refresh()
        if not len(self.vectors.ids):
            return []  # no line embeddings: do not load the text model for nothing
        emb = self.embedder
        if emb is None:
            return []
        model = self.store.text_model()
        if model is not None and model != emb.fingerprint:
            return []  # stored embeddings are another model's; the indexer re-embeds them
        q = emb.embed([text])[0]
        return [(rid, s) for rid, s in self.vectors.search(q, k) if s >= self.min_cosine]

    # -- both ----------------------------------------------------------------------------------------
    def search(
        self, query: str, *, top: int = 20, folder: str | None = None, required: list[str] | None = None
    ) -> list[TextHit]:
        """Photos ranked by their best line for ``query`` (required phrases, if any, must all appear)."""
        if top <= 0:
            return []
        parsed = parse_query(query) if required is None else ParsedQuery(query, required)
        required = parsed.required
        text = parsed.text
        # line candidates: (score, kind, span)
        best: dict[int, tuple[float, int, str, tuple[int, int] | None]] = {}  # rid -> (s, pid, kind, span)

        def offer(rid: int, s: float, pid: int, kind: str, span) -> None:
            if rid not in best or best[rid][0] < s:
                best[rid] = (s, pid, kind, span)

        allowed_photos: set[int] | None = None
        for phrase in required:
            m = self.letters(phrase)
            pids = {pid for _, pid, _ in m.values()}
            allowed_photos = pids if allowed_photos is None else allowed_photos & pids
            for rid, (s, pid, span) in m.items():
                offer(rid, s, pid, "letters", span)
        if not required:
            for rid, (s, pid, span) in self.letters(text).items():
                offer(rid, s, pid, "letters", span)
        # Quoted words only: by letters alone. Every photo kept matches each phrase by its letters (at
        # least 0.75) and a match by meaning scores at most 0.5, so meaning could only list more lines;
        # leaving it out spares loading the text model for such a query.
        sem = [] if parsed.words_only else self.meaning(text)
        if sem:
            rows = self.store.line_rows([rid for rid, _ in sem])
            for rid, cos in sem:
                row = rows.get(rid)
                if row is None or len(fold(row.text)) < 3:
                    continue
                offer(rid, 0.5 * cos, row.photo_id, "meaning", None)
        if allowed_photos is not None:
            best = {rid: v for rid, v in best.items() if v[1] in allowed_photos}
        if not best:
            return []
        per_photo: dict[int, tuple[float, int, str, tuple[int, int] | None]] = {}
        for rid, (s, pid, kind, span) in best.items():
            if pid not in per_photo or per_photo[pid][0] < s:
                per_photo[pid] = (s, rid, kind, span)
        if folder:
            within = os.path.abspath(folder)
            photos = self.store.photos_by_ids(list(per_photo))
            per_photo = {
                pid: v
                for pid, v in per_photo.items()
                if pid in photos and is_under(photos[pid].path, within) and photos[pid].path != within
            }
        ranked = sorted(per_photo.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
        # every matched line of the ranked photos, so each one can be outlined
        keep = {pid for pid, _ in ranked}
        by_photo: dict[int, list[tuple[float, int, str, tuple[int, int] | None]]] = {}
        for rid, (s, pid, kind, span) in best.items():
            if pid in keep:
                by_photo.setdefault(pid, []).append((s, rid, kind, span))
        for lines in by_photo.values():
            lines.sort(key=lambda v: (-v[0], v[1]))
            del lines[MAX_LINES_PER_PHOTO:]
        rows = self.store.line_rows([v[1] for lines in by_photo.values() for v in lines])

        def line_hit(pid: int, s: float, rid: int, kind: str, span) -> TextHit | None:
            row = rows.get(rid)
            if row is None:
                return None
            whole = kind == "letters" and s >= 1.0 + WHOLE_WORD_BONUS
            return TextHit(pid, s, narrow_box(row, span), row.text, kind, rid, whole)

        hits = []
        for pid, _best in ranked:
            lines = [h for v in by_photo.get(pid, []) if (h := line_hit(pid, *v)) is not None]
            if not lines:
                continue
            hit = replace(lines[0], lines=lines)
            hits.append(hit)
        return hits

    def photos_with(self, phrases: list[str]) -> set[int]:
        """Photos in which every phrase appears (by letters, with OCR tolerance)."""
        allowed: set[int] | None = None
        for phrase in phrases:
            pids = {pid for _, pid, _ in self.letters(phrase).values()}
            allowed = pids if allowed is None else allowed & pids
        return allowed or set()


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
        return self.store.text_vectors_key()

    def refresh(self) -> None:
        with self._lock:
            key = self._current_key()
            if key == self._key:
                return
            rows = self.store.text_embeddings()
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
