"""Search: a query (text, image, or a crop of an image) -> photos ranked by their best region."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.paths import folder_of, is_under, relative_to_folder
from sorce_desktop.core.photos.images import ImageError, load_image
from sorce_desktop.core.regions import Box, get_layout
from sorce_desktop.core.search import query as query_parts
from sorce_desktop.core.search.query import ParsedSearch, QueryPart, QueryProblem
from sorce_desktop.core.search.textsearch import ParsedQuery, TextHit, TextSearcher, parse_query
from sorce_desktop.core.store.catalog import INDEXED, PhotoRow, Store, display_path
from sorce_desktop.core.textstore import fold

MAX_QUERY_CHARS = 1000


class QueryError(ValueError):
    """A query that cannot be run, with the reason in words."""


class MinScoreError(QueryError):
    """A minimum score outside the scale the scores of this search have (a usage error)."""


@dataclass(frozen=True)
class ScoreScale:
    """What a search's minimum score is compared with, and the values it can take."""

    name: str  # "probability" | "cosine" | "words"
    low: float
    high: float
    what: str  # the scale in words, for the user

    def check(self, value: float) -> None:
        inside = self.low < value < self.high if self.name == "probability" else self.low <= value <= self.high
        if not inside:
            raise MinScoreError(
                f"The minimum score is {self.what} here: give one between {self.low:g} and {self.high:g}, "
                f"not {value:g}."
            )


#: the model's own match probability (SigLIP-like models, text queries)
PROBABILITY = ScoreScale("probability", 0.0, 1.0, "a match probability")
#: the cosine of the query and the best picture region (models without a probability, image queries)
COSINE = ScoreScale("cosine", -1.0, 1.0, "a cosine of the query and the best picture region (this model has no match probability)")
#: how well the words read in a photo match (no picture model): 1 the query's letters exactly, 0.5 and below by meaning
WORDS = ScoreScale("words", 0.0, 1.0, "how well the words read in a photo match (1: the query's letters exactly; 0.5 and below: by meaning)")

#: added to the fused score of the photos people read first (the query's words read exactly as whole
#: words; with a match probability, the likely matches): more than any fused score (at most
#: 2 / (RRF_K + 1)), so an answer is always in the order of its scores
FIRST = 1.0


class RegionKind(StrEnum):
    """What part of a photo matched a query (:attr:`MatchedRegion.kind`), compared by the front ends to
    draw it."""

    PICTURE = "picture"  # a region of the picture
    TEXT = "text"  # a line of words read in it
    NAME = "name"  # the file's or a folder's name: nothing in the picture to outline


@dataclass
class MatchedRegion:
    """One part of a photo that matched the query: a picture region or a line of text read in it."""

    kind: RegionKind  # 'picture' | 'text' | 'name' (the file's or a folder's name: nothing to outline)
    box: Box  # upright full-resolution pixels
    score: float  # picture: the region's cosine; text: 1.0 exact letters ... 0.5 * cosine by meaning
    region: str  # the layout's region name ('cell_1_2', 'full', ...), 'text' for a line of text, 'name'
    words: str | None = None  # text: the words read on that line; name: the path under the watched folder
    match: str | None = None  # text: 'letters' | 'meaning'; name: 'name'
    whole_word: bool = False  # text: the query's letters read exactly, as whole words

    def to_json(self) -> dict:
        d = {"kind": self.kind, "box": self.box.as_list(), "score": round(float(self.score), 6), "region": self.region}
        if self.words is not None:
            d["words"] = self.words
            d["match"] = self.match
        return d


@dataclass
class PhotoHit:
    path: str
    score: float
    box: Box  # upright full-resolution pixels: the best matched region's
    region: str
    photo_id: int
    width: int
    height: int
    #: 'visual' | 'text' (words in the photo) | 'both' | 'name' (its file name only) | 'filter' (kept by a
    #: filter alone, "after:2023": no region matched)
    source: str = "visual"
    text: str | None = None  # the matched words, for text hits
    refined_box: Box | None = None
    refined_score: float | None = None
    #: every region that matched, the best first: the picture region and each line of text
    regions: list[MatchedRegion] = field(default_factory=list)
    #: the model's own probability that the picture region matches the text (None: no calibration)
    probability: float | None = None
    #: a likely match (None: the model has no calibrated probability, see :func:`mark_likely`)
    likely: bool | None = None
    #: when it was taken: ISO 8601 (with its UTC offset where known) and where that came from (exif | file)
    taken: str | None = None
    taken_source: str | None = None
    place: str | None = None  # where it was taken ("Lisbon, Portugal"), where its GPS says
    #: the photo's catalog row as the search read it (content hash, size, mtime: what a front end shows
    #: beside the hit, without reading the catalog again); None in a hit from another process's answer
    photo: PhotoRow | None = field(default=None, repr=False, compare=False)

    @property
    def matched(self) -> list[str]:
        """Which parts of the query matched: 'picture' (a region), 'words' (read in it), 'file_name'."""
        kinds = {r.kind for r in self.regions} or ({RegionKind.PICTURE} if self.source in ("visual", "both") else set())
        return [m for k, m in ((RegionKind.PICTURE, "picture"), (RegionKind.TEXT, "words"), (RegionKind.NAME, "file_name")) if k in kinds]

    @property
    def picture(self) -> MatchedRegion | None:
        """The picture region that matched (what refinement zooms into), if the picture matched."""
        return next((r for r in self.regions if r.kind == RegionKind.PICTURE), None)

    @property
    def shown_box(self) -> Box:
        """The outline a front end draws for this hit: a line of words as read (it is precise already), a
        picture region as refined (until then, as matched)."""
        if self.region == "text":
            return self.box
        return self.refined_box or self.box

    def outlines(self) -> list[tuple[RegionKind, Box, MatchedRegion | None]]:
        """Every matched region to outline, the best first: (kind, box, region). A match by the file or
        folder name has nothing in the picture to outline; the picture region refinement zoomed into
        shows its refined box."""
        if not self.regions:
            return [(RegionKind.PICTURE, self.shown_box, None)]
        best_picture = self.picture
        out = []
        for r in self.regions:
            if r.kind == RegionKind.NAME:
                continue
            box = (self.refined_box or r.box) if r is best_picture else r.box
            out.append((r.kind, box, r))
        return out

    def refinable(self) -> PhotoHit | None:
        """What refinement zooms into: a copy boxed on this hit's picture region, or None when it matched
        by words or name alone (a line of words is outlined precisely already)."""
        if self.picture is None:
            return None
        return replace(self, box=self.picture.box, region=self.picture.region)

    def picture_regions(self) -> list[MatchedRegion]:
        return [r for r in self.regions if r.kind == RegionKind.PICTURE]

    @property
    def text_regions(self) -> list[MatchedRegion]:
        return [r for r in self.regions if r.kind == RegionKind.TEXT]

    def to_json(self) -> dict:
        d = {
            "path": self.path,
            "score": round(float(self.score), 6),
            "box": self.box.as_list(),
            "region": self.region,
            "width": self.width,
            "height": self.height,
            "source": self.source,
        }
        if self.text is not None:
            d["text"] = self.text
        if self.refined_box is not None:
            d["refined_box"] = self.refined_box.as_list()
            d["refined_score"] = (
                round(float(self.refined_score), 6) if self.refined_score is not None else None
            )
        d["regions"] = [r.to_json() for r in self.regions]
        if self.probability is not None:
            d["probability"] = round(float(self.probability), 6)
        if self.likely is not None:
            d["likely"] = self.likely
        d["matched"] = self.matched
        if self.taken is not None:
            d["taken"] = self.taken
            d["taken_source"] = self.taken_source
        if self.place is not None:
            d["place"] = self.place
        return d


@dataclass
class SearchAnswer:
    """The whole answer to one query: what the window and the command line render, and nothing more."""

    hits: list[PhotoHit]
    query: ParsedQuery | None  # the text query as parsed (quoted phrases apart); None for an image query
    vector: np.ndarray | None  # the visual query vector searched with (refinement zooms with it too)
    calibrated: bool = False  # hits carry the model's match probability and are split likely / the rest
    #: the query's parts as understood (words, period, place, folder, not), and what was not understood
    search: ParsedSearch | None = None
    #: how many photos its period, places and ``in:`` folders keep (None: it has none of them)
    kept: int | None = None

    @property
    def parts(self) -> list[QueryPart]:
        return self.search.parts if self.search is not None else []

    def nothing_kept(self) -> str | None:
        """Why nothing was found when its filters keep no photo at all (the words are not to blame): one
        sentence for the front ends to say, else None."""
        if self.kept != 0:
            return None
        named = [f"“{p.label}”" for p in self.parts if p.kind in ("period", "place", "folder")]
        if not named:
            return None
        if len(named) == 1:
            return f"None of your photos fits {named[0]}."
        return f"None of your photos fits {', '.join(named[:-1])} and {named[-1]} together."

    @property
    def problems(self) -> list[str]:
        return self.search.problems if self.search is not None else []


#: a match is "likely" when the model's own probability says more likely than not
LIKELY = 0.5
#: picture regions listed per photo at most: its best, and others the model finds likely matches too
MAX_PICTURE_REGIONS = 4


def match_probability(cosine: float, calibration: tuple[float, float]) -> float:
    """The model's probability that a text matches an image region: sigmoid(scale * cosine + bias)."""
    scale, bias = calibration
    return float(1.0 / (1.0 + np.exp(-(scale * cosine + bias))))


def cosine_for_probability(p: float, calibration: tuple[float, float]) -> float:
    """The cosine at which the model's match probability is ``p`` (the inverse of match_probability)."""
    if not 0.0 < p < 1.0:
        raise QueryError(f"The minimum score is a match probability here: give one between 0 and 1, not {p:g}.")
    scale, bias = calibration
    return float((np.log(p / (1.0 - p)) - bias) / scale)


def read_exactly(hit: PhotoHit) -> bool:
    """The query's letters were read in the photo exactly (the words are there, as typed)."""
    return any(r.kind == RegionKind.TEXT and r.match == "letters" and r.score >= 1.0 for r in hit.regions)


def mark_likely(hits: list[PhotoHit], calibration: tuple[float, float], min_probability: float | None) -> list[PhotoHit]:
    """Give each hit its picture's match probability, mark the likely ones (probability >= LIKELY, or
    the words read exactly as typed), drop those under ``min_probability`` (words read exactly stay),
    and put the likely ones first, each group in its ranked order."""
    for h in hits:
        pic = h.picture
        h.probability = match_probability(pic.score, calibration) if pic is not None else None
        h.likely = (h.probability or 0.0) >= LIKELY or read_exactly(h)
    if min_probability is not None:
        hits = [h for h in hits if (h.probability or 0.0) >= min_probability or read_exactly(h)]
    return [h for h in hits if h.likely] + [h for h in hits if not h.likely]


def at_least(hits: list[PhotoHit], min_score: float, scale: ScoreScale) -> list[PhotoHit]:
    """The hits whose score on ``scale`` is at least ``min_score`` (a photo where the query's words are
    read exactly stays, as with a probability: :func:`mark_likely`)."""
    if scale is WORDS:
        return [h for h in hits if max((r.score for r in h.text_regions), default=h.score) >= min_score]
    return [h for h in hits if (h.picture is not None and h.picture.score >= min_score) or read_exactly(h)]


def _picture_region(h: PhotoHit) -> MatchedRegion:
    return MatchedRegion(RegionKind.PICTURE, h.box, float(h.score), h.region)


def _text_regions(t: TextHit) -> list[MatchedRegion]:
    return [
        MatchedRegion(RegionKind.TEXT, x.box, float(x.score), "text", x.text, x.kind, x.whole_word) for x in (t.lines or [t])
    ]


def _inside(path: str, folder: str) -> bool:
    """A photo's path lies in the folder ``search --folder`` or the folder list chose (:func:`is_under`)."""
    return path != folder and is_under(path, folder)


EMPTY_QUERY = "The query is empty: type what you are looking for."
#: the source of a hit that a filter alone kept ("after:2023", "lisbon"): no region matched, no score
FILTER = "filter"


def clean_query(text: str) -> str:
    """Drop control characters and excess whitespace; refuse what is empty once cleaned."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise QueryError(EMPTY_QUERY)
    return cleaned[:MAX_QUERY_CHARS]


def refuse_empty(search: ParsedSearch) -> None:
    """The one rule for an empty query: no words left to match and no filter (a period, a place, a folder)
    to answer it by. Checked by :meth:`SearchService.answer`, and by a front end before any model loads."""
    if not fold(search.text) and not search.filtered:
        if search.negatives:
            nots = ", ".join(f"not: {n}" for n in search.negatives)
            raise QueryError(
                f"Only what to leave out is given ({nots}): add what you are looking for, or a period, a "
                f'place or a folder, e.g. "beach -{search.negatives[0]}" or "after:2023 -{search.negatives[0]}".'
            )
        raise QueryError(EMPTY_QUERY)


#: how hits may be ordered: by the ranking, or newest first (among the hits the ranking keeps)
RELEVANCE, DATE = "relevance", "date"
SORTS = (RELEVANCE, DATE)
#: a filter keeping at most this many photos is searched exactly over their own vectors (else the
#: vector index's ranking is filtered, asking it for more until enough photos are found)
EXACT_FILTER_PHOTOS = 2000

#: reciprocal-rank fusion constant (the usual 60: ranks 1 and 2 differ little, a top-10 hit counts)
RRF_K = 60
#: how deep the picture and the word rankings are fused, whatever the number of results asked for, so
#: the order of the first N results does not depend on N (the window asks for 500, the CLI for 20)
FUSE_DEPTH = 500


def rank_key(hit: PhotoHit) -> tuple:
    """How fused hits are ordered, as people read them: by the fused score (in which a photo where the
    query is read exactly, as whole words, comes first: :data:`FIRST`); ties by the quality of the word match (exact whole word,
    exact letters inside a word, a partial read, by meaning), then by the picture's score, then by the
    path, never by chance."""
    texts = hit.text_regions
    best_text = max((r.score for r in texts), default=-1.0)
    pic = hit.picture
    return (-round(hit.score, 12), -best_text, -(pic.score if pic else -2.0), hit.path)


#: a file-name match weighs a little less than words read exactly in the photo (it ranks after them)
NAME_WEIGHT = 0.9
#: words of a query a file name is not matched on
_NAME_STOPWORDS = frozenset("a an the of in on at with and or to for by from my our".split())


@dataclass
class NameHit:
    """A photo whose file name (or a folder's name under its watched folder) holds every word of the query."""

    photo_id: int
    path: str
    words: str  # the path under its watched folder, as shown ('trips/grandma-birthday-2019.jpg')


def name_words(text: str) -> list[str]:
    """The words of a file or folder name (or a query), folded: 'Grandma-Birthday_2019' -> grandma birthday 2019."""
    return [w for w in re.split(r"[\W_]+", text.casefold()) if w]


#: the file-name index is rebuilt at most this often while the library changes (indexing commits every
#: few seconds; a rebuild reads every path: ~0.3 s at 100k photos)
NAME_REFRESH_S = 5.0


class NameIndex:
    """The words of every indexed photo's path under its watched folder (its folders' names and its file
    name), for matching a query's words as prefixes of them: a sorted vocabulary and, per word, the
    photos that have it. Built from the store's paths; a query costs a few bisections."""

    def __init__(self, rows: list[tuple[int, str]], roots: list[str]):
        import bisect

        self._bisect = bisect
        roots = sorted(roots, key=len, reverse=True)
        self.rel: dict[int, str] = {}
        self.path: dict[int, str] = {}
        self.file_words: dict[int, set[str]] = {}
        postings: dict[str, set[int]] = {}
        for pid, path in rows:
            rel = relative_to_folder(path, folder_of(path, roots))
            stem = os.path.splitext(rel)[0]
            self.rel[pid], self.path[pid] = rel, path
            self.file_words[pid] = set(name_words(os.path.basename(stem)))
            for w in set(name_words(stem)):
                postings.setdefault(w, set()).add(pid)
        self.vocab = sorted(postings)
        self.postings = postings

    def with_prefix(self, word: str) -> set[int]:
        out: set[int] = set()
        i = self._bisect.bisect_left(self.vocab, word)
        while i < len(self.vocab) and self.vocab[i].startswith(word):
            out |= self.postings[self.vocab[i]]
            i += 1
        return out

    def find(self, words: list[str], limit: int = 2000) -> list[tuple[bool, str, int, str]]:
        """(matched in a folder's name rather than the file's, relative path, id, path), sorted. Words
        that name more than ``limit`` photos (a folder holding most of the library, 'img') do not single
        any out: no name match then."""
        ids: set[int] | None = None
        for w in words:
            got = self.with_prefix(w)
            ids = got if ids is None else ids & got
            if not ids:
                return []
        if ids is not None and len(ids) > limit:
            return []
        found = []
        for pid in ids or ():
            own = self.file_words[pid]
            in_file = all(any(h.startswith(w) for h in own) for w in words)
            found.append((not in_file, self.rel[pid], pid, self.path[pid]))
        found.sort()
        return found


def _name_region(n: NameHit, width: int, height: int) -> MatchedRegion:
    return MatchedRegion(RegionKind.NAME, Box(0, 0, width, height), NAME_WEIGHT, "name", n.words, "name")


def fuse(
    visual: list[PhotoHit], text: list[TextHit], photos: dict, top: int, names: list[NameHit] | None = None
) -> list[PhotoHit]:
    """Merge visual region hits and text-in-photo hits into one ranking (weighted reciprocal-rank fusion).

    score(photo) = 1 / (RRF_K + visual rank) + w / (RRF_K + text rank), ranks from 1, a missing term 0,
    where w is the text hit's own score: ~1.0 for the query's letters found in the photo (a one-letter
    OCR slip costs a little), at most 0.5 for a line matching by meaning only. So an exact text match
    ranks level with the best visual match, a photo found both ways ranks above either, and matches by
    meaning weigh half; a file-name match weighs ``NAME_WEIGHT`` (after words read in the photo, shown
    without an outline). The order is :func:`rank_key`'s. A hit found both ways is ``source='both'``;
    its ``box`` is the text line's when the letters matched (words are outlined precisely), else the
    visual region's; ``regions`` holds both (every matched line and the picture region).
    """
    scores: dict[int, float] = {}
    vis = {h.photo_id: h for h in visual}
    txt = {h.photo_id: h for h in text}
    for rank, h in enumerate(visual, 1):
        scores[h.photo_id] = scores.get(h.photo_id, 0.0) + 1.0 / (RRF_K + rank)
    for rank, t in enumerate(text, 1):
        scores[t.photo_id] = scores.get(t.photo_id, 0.0) + min(1.0, t.score) / (RRF_K + rank)
    nam = {n.photo_id: n for n in names or ()}
    for rank, n in enumerate(names or (), 1):
        scores[n.photo_id] = scores.get(n.photo_id, 0.0) + NAME_WEIGHT / (RRF_K + rank)
    out = []
    for pid, s in scores.items():
        v, t, n = vis.get(pid), txt.get(pid), nam.get(pid)
        if t is None and v is None:
            p = photos.get(pid)
            if p is None:
                continue
            w, h = p.width or 0, p.height or 0
            out.append(
                PhotoHit(p.path, s, Box(0, 0, w, h), "name", pid, w, h, "name", regions=[_name_region(n, w, h)], photo=p)
            )
            continue
        if t is None:
            hit = replace(v, score=s, regions=v.regions or [_picture_region(v)])
        else:
            p = photos.get(pid)
            if p is None and v is None:
                continue
            lines = _text_regions(t)
            if v is None:
                hit = PhotoHit(
                    p.path, s, t.box, "text", pid, p.width or 0, p.height or 0, "text", t.text, regions=lines, photo=p
                )
            else:
                pics = v.regions or [_picture_region(v)]
                letters = t.kind == "letters"
                box = t.box if letters else v.box
                region = "text" if letters else v.region
                regions = [*lines, *pics] if letters else [*pics, *lines]
                hit = PhotoHit(
                    v.path, s, box, region, pid, v.width, v.height, "both", t.text, regions=regions, photo=v.photo
                )
        if n is not None:
            hit.regions = [*hit.regions, _name_region(n, hit.width, hit.height)]
        if any(r.whole_word for r in hit.text_regions):
            hit.score += FIRST  # exact whole words first, in the score itself: the answer is in score order
        out.append(hit)
    out.sort(key=rank_key)
    return out[:top]


#: text queries' vectors a search service keeps, the last used: the window asks again for the same words
#: each time the period, the folder, the sort or a "not" part changes, and their vector is most of such a
#: query's time (~40 ms on an AVX2 laptop; the search after it ~10 ms at 100k photos)
TEXT_VECTORS_KEPT = 64


class SearchService:
    """Search one store. ``embedder`` None: no visual model (text in photos only); ``text``: the
    search over text read in photos (None: off, visual only, exactly as without OCR)."""

    def __init__(self, store: Store, embedder: Embedder | None, text: TextSearcher | None = None):
        self.store = store
        self.embedder = embedder
        self.text = text
        self._names: tuple[int, float, NameIndex] | None = None  # (store generation, built at, index)
        self._text_vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # see TEXT_VECTORS_KEPT
        self._text_vectors_lock = threading.Lock()

    @property
    def text_only(self) -> bool:
        return self.embedder is None

    @staticmethod
    def check_crop(crop: Box, width: int, height: int) -> None:
        """Refuse a crop that is not a part of the image (``width`` x ``height``, upright pixels)."""
        if not (0 <= crop.x0 < crop.x1 <= width and 0 <= crop.y0 < crop.y1 <= height):
            raise QueryError(
                f"The crop {crop.as_list()} is not inside the image ({width}x{height} pixels): give X0 Y0 X1 Y1 "
                f"with 0 <= X0 < X1 <= {width} and 0 <= Y0 < Y1 <= {height}."
            )

    def query_vector(
        self,
        text: str | None = None,
        image: str | os.PathLike | Image.Image | None = None,
        crop: Box | None = None,
    ) -> np.ndarray:
        if image is not None:
            if isinstance(image, Image.Image):
                img = image.convert("RGB")
                if crop is not None:
                    self.check_crop(crop, img.width, img.height)
                    img = img.crop(tuple(crop.as_list()))
            else:
                # Decode like the indexer does, so a crop of an indexed region matches it exactly.
                binding = self.store.binding()
                min_side = self.embedder.decode_min_side(get_layout(binding.layout)) if binding else None
                try:
                    decoded = load_image(image, min_side)
                except ImageError as exc:  # say which file: the query names it, not the index
                    raise ImageError(f"{display_path(os.fspath(image))}: {exc}") from None
                if crop is not None:
                    self.check_crop(crop, decoded.width, decoded.height)
                img = decoded.crop(crop) if crop is not None else decoded.image
            return self.embedder.embed_image_query(img)
        if text is None:
            raise QueryError("Give a text or an image to search for.")
        return self.text_vector(text)

    def text_vector(self, text: str) -> np.ndarray:
        """The embedder's vector for the words ``text`` (read-only), kept for the next query that asks
        for the same words (:data:`TEXT_VECTORS_KEPT`)."""
        key = clean_query(text)
        with self._text_vectors_lock:
            kept = self._text_vectors.get(key)
            if kept is not None:
                self._text_vectors.move_to_end(key)
                return kept
        vector = self.embedder.embed_texts([key])[0]
        vector.setflags(write=False)
        with self._text_vectors_lock:
            self._text_vectors[key] = vector
            while len(self._text_vectors) > TEXT_VECTORS_KEPT:
                self._text_vectors.popitem(last=False)
        return vector

    def search(
        self,
        text: str | None = None,
        *,
        image: str | os.PathLike | Image.Image | None = None,
        crop: Box | None = None,
        top: int = 20,
        folder: str | None = None,
        min_score: float | None = None,
        vector: np.ndarray | None = None,
    ) -> list[PhotoHit]:
        """The ranked photos of :meth:`answer`."""
        return self.answer(
            text, image=image, crop=crop, top=top, folder=folder, min_score=min_score, vector=vector
        ).hits

    def answer(
        self,
        text: str | None = None,
        *,
        image: str | os.PathLike | Image.Image | None = None,
        crop: Box | None = None,
        top: int = 20,
        folder: str | None = None,
        min_score: float | None = None,
        vector: np.ndarray | None = None,
        after: str | None = None,
        before: str | None = None,
        sort: str = RELEVANCE,
    ) -> SearchAnswer:
        """The whole answer to a query: ranked photos, each with every region that matched, the parsed
        query and the visual query vector used. Text is parsed once here ("quoted" phrases must appear;
        the visual model sees the words without the quote marks; when, where, which folder and "not
        this" are taken out first, core/search/query.py), so every front end searches, ranks and refines alike.
        ``vector``: a visual query already embedded (the text still searches the words). ``after`` /
        ``before``: a period, as after:/before: in the text. A part that is not understood is named in
        ``answer.problems`` and left out; the rest runs. ``sort``: 'relevance' or 'date' (newest first)."""
        if sort not in SORTS:
            raise QueryError(f"Sort by {' or '.join(SORTS)}, not {sort!r}.")
        # filters given apart, alone (`search --after 2023`, `--folder DIR`): as "after:2023" typed alone
        filters_alone = image is None and vector is None and text is None and bool(after or before or folder)
        search = self.understand(text if image is None else None, after=after, before=before)
        allowed = self.allowed_photos(search)
        matched = search.text if text is not None and image is None else None
        if filters_alone or (matched is not None and not fold(matched)):
            if not filters_alone:
                refuse_empty(search)
            hits = self._filtered_only(allowed, folder, top, search)  # "after:2023", "lisbon": by date
            if search.negatives:  # "lisbon -birthday": the newest photos kept, judged as any hits
                cal = self.embedder.match_calibration() if self.embedder is not None else None
                hits = self.without(hits, search.negatives, cal)
            return SearchAnswer(hits[:top], None, None, False, search, _count(allowed))
        parsed = parse_query(matched) if matched is not None else None
        use_text = self.text is not None and parsed is not None
        # a query of quoted words only is answered from the words, the same with or without a picture
        # model (so the command line need not load one for it)
        picture = (self.embedder is not None or vector is not None) and not (use_text and parsed.words_only)
        if self.embedder is None and vector is None:
            if image is not None:
                raise QueryError(
                    "Searching by a photo needs the visual model, which is not available yet: only the text "
                    "in your photos can be searched now."
                )
            if not use_text and parsed is None:
                raise QueryError("Give a text to search for.")
            if not use_text and not self._names_searchable(parsed):
                raise QueryError("No visual model is available and text in photos is not indexed.")
        if parsed is not None and not parsed.text and not parsed.required:
            raise QueryError(EMPTY_QUERY)
        names = self.name_hits(parsed.text, allowed, folder) if parsed is not None and not parsed.required else []
        # Fused rankings (and a ranking that "not this" reorders) are computed to a fixed depth, cut to
        # ``top`` at the end: see FUSE_DEPTH.
        depth = max(top, FUSE_DEPTH) if use_text or names or search.negatives else top
        # The model's own match probability, for text queries where the checkpoint has one: then
        # ``min_score`` is a probability too (else, and for image queries, a cosine; with no picture
        # model, the words' match score). Checked against that scale before any work.
        cal = None
        if parsed is not None and self.embedder is not None and picture:
            cal = self.embedder.match_calibration()
        scale = self.score_scale(parsed is not None, vector is not None)
        if min_score is not None:
            scale.check(min_score)
        min_cos = cosine_for_probability(min_score, cal) if cal is not None and min_score is not None else min_score
        visual: list[PhotoHit] = []
        q = vector if picture else None
        if picture:
            if q is None:
                q = self.query_vector(parsed.text if parsed is not None else None, image, crop)
            fetch = depth if not use_text or not parsed.required else max(depth * 4, 80)
            visual = self.search_vector(q, top=fetch, folder=folder, min_score=min_cos, allowed=allowed)
            for h in visual:
                # the best picture region always; others only where the model says they match too
                h.regions = [
                    r
                    for i, r in enumerate(h.regions or [_picture_region(h)])
                    if i == 0 or (cal is not None and match_probability(r.score, cal) >= LIKELY)
                ]
        texts: list[TextHit] = []
        if use_text:
            texts = self.text.search(parsed.text, top=depth, folder=folder, required=parsed.required)
            if allowed is not None:
                texts = [t for t in texts if t.photo_id in allowed]
            if parsed.required:
                keep = self.text.photos_with(parsed.required)
                visual = [h for h in visual if h.photo_id in keep]
        fused = False
        if not texts and not names:
            hits = visual
        else:
            photos = self.store.photos_by_ids([t.photo_id for t in texts] + [n.photo_id for n in names])
            if not picture:  # words read (their own scores), then names
                hits = [
                    PhotoHit(
                        p.path, t.score, t.box, "text", t.photo_id, p.width or 0, p.height or 0, "text",
                        t.text, regions=_text_regions(t), photo=p,
                    )
                    for t in texts
                    if (p := photos.get(t.photo_id)) is not None
                ]
                seen = {h.photo_id for h in hits}
                for n in names:
                    if n.photo_id not in seen and (p := photos.get(n.photo_id)) is not None:
                        w, h = p.width or 0, p.height or 0
                        box = Box(0, 0, w, h)
                        hits.append(
                            PhotoHit(p.path, NAME_WEIGHT / 2, box, "name", n.photo_id, w, h, "name",
                                     regions=[_name_region(n, w, h)], photo=p)
                        )  # fmt: skip
                if min_score is not None:
                    hits = at_least(hits, min_score, scale)
            else:
                hits = fuse(visual[:depth], texts, photos, depth, names)
                fused = True
                if cal is None and min_score is not None:
                    # photos found by their words alone have no cosine: only words read exactly stay
                    hits = at_least(hits, min_score, scale)
        if search.negatives:
            hits = self.without(hits, search.negatives, cal)
        if cal is not None:
            hits = mark_likely(hits, cal, min_score)
            if fused:
                for h in hits:
                    if h.likely:
                        h.score += FIRST  # likely ones first (mark_likely's order), in the score itself
        hits = hits[:top]
        self.attach_facts(hits)
        if sort == DATE:
            hits.sort(key=lambda h: h.taken or "", reverse=True)
        return SearchAnswer(hits, parsed, q, cal is not None, search, _count(allowed))

    def score_scale(self, text_query: bool = True, has_vector: bool = False) -> ScoreScale:
        """The scale this service's scores (and a minimum score) are on for a text or an image query:
        the model's match probability where it has one (text queries), else a cosine; with no picture
        model, how well the words match."""
        if self.embedder is None and not has_vector:
            return WORDS
        if text_query and self.embedder is not None and self.embedder.match_calibration() is not None:
            return PROBABILITY
        return COSINE


    # -- when, where, which folder, not this ---------------------------------------------------------
    def understand(self, text: str | None, *, after: str | None = None, before: str | None = None) -> ParsedSearch:
        """The query's parts (core/search/query.py), with ``after``/``before`` given apart (command-line flags)
        added as if typed. Place words count where some photo of the library was taken there."""
        search = query_parts.parse(clean_query(text), self.place_names()) if text is not None else ParsedSearch("")
        flags: list[query_parts.Period] = []
        for flag, value, make in (("--after", after, query_parts.after), ("--before", before, query_parts.before)):
            if value is None:
                continue
            try:
                flags.append(make(str(value)))
            except QueryProblem as exc:
                search.problems.append(f"{flag} {value}: {exc}")
        if flags:  # one part, removable as one (the window's period filter)
            p = flags[0] if len(flags) == 1 else flags[0] & flags[1]
            if p.start is not None and p.end is not None:
                year = query_parts.within(p.start[:4])
                label = year.label if (year.start, year.end) == (p.start, p.end) else query_parts.span_label(p)
                p = query_parts.Period(p.start, p.end, label)
            search.period = p if search.period is None else search.period & p
            search.parts.append(QueryPart("period", p.label, []))
        period = search.period
        if period is not None and period.start is not None and period.end is not None and period.start >= period.end:
            several = ", " in period.label  # periods typed and chosen together
            why = "these periods have no day in common" if several else "that period ends before it starts"
            search.problems.append(f"{period.label}: {why}")
        return search

    def place_names(self) -> set[str]:
        return {fold(n) for row in self.store.places() for n in row[:3] if n}

    def allowed_photos(self, search: ParsedSearch) -> set[int] | None:
        """The photos the query's period, places and folders keep (None: all). A place or a folder this
        library does not have is named in ``search.problems``: an unknown place is left out, a known
        place where no photo was taken keeps nothing."""
        allowed: set[int] | None = None

        def keep(ids: set[int]) -> None:
            nonlocal allowed
            allowed = ids if allowed is None else allowed & ids

        if search.period is not None and not self.store.facts_ready:
            search.problems.append(
                f"{search.period.label}: this index was made before capture times were read: run index once"
            )
        elif search.period is not None:
            keep(self.store.taken_between(search.period.start, search.period.end))
        if search.places:
            rows = self.store.places()
            for folded, typed in search.places:
                ids: set[int] = set()
                for city, region, country, _n in rows:
                    if folded == fold(city or ""):
                        ids |= self.store.photos_at(city, region, country)
                    elif folded == fold(region or ""):
                        ids |= self.store.photos_at(None, region, country)
                    elif folded == fold(country or ""):
                        ids |= self.store.photos_at(None, None, country)
                if not ids:
                    if self._gazetteer_knows(folded):
                        search.problems.append(
                            f"place:{typed}: no photo here was taken there (as far as their GPS positions say)"
                        )
                        keep(set())
                    else:
                        search.problems.append(f"place:{typed}: not a place the gazetteer knows")
                    continue
                keep(ids)
        for name in search.folders:
            ids = self.photos_in_folder_named(name)
            if not ids:
                search.problems.append(f"in:{name}: no watched folder or subfolder of that name in the library")
                continue
            keep(ids)
        return allowed

    @staticmethod
    def _gazetteer_knows(folded: str) -> bool:
        from sorce_desktop.core.photos.whenwhere import GazetteerMissing, default_gazetteer

        try:
            return default_gazetteer().knows(folded)
        except (GazetteerMissing, OSError):
            return False

    def photos_in_folder_named(self, name: str) -> set[int]:
        """Photos in a watched folder or a subfolder (at any depth) named ``name`` (or at that path)."""
        if os.path.isabs(name):
            return self.store.photos_in_trees([name])
        want = fold(name)
        roots = self.store.folders()
        ids = self.store.photos_in_trees([r for r in roots if fold(os.path.basename(r.rstrip(os.sep))) == want])
        for pid, path in self.store.photos_with_path_part(name.split()[0] if name.split() else name, limit=10**9):
            root = folder_of(path, roots)
            rel = relative_to_folder(path, root) if root else path
            if any(fold(part) == want for part in rel.split(os.sep)[:-1]):
                ids.add(pid)
        return ids

    def name_hits(self, text: str, allowed: set[int] | None = None, folder: str | None = None) -> list[NameHit]:
        """Photos whose file name, or a folder name under its watched folder, holds every word of
        ``text`` (a word of the name starting with it): file names first, then folders, then by path."""
        words = [w for w in name_words(text) if w not in _NAME_STOPWORDS and len(w) >= 2]
        if not words:
            return []
        within = os.path.abspath(folder) if folder else None
        return [
            NameHit(pid, path, rel)
            for _, rel, pid, path in self.name_index().find(words)
            if (allowed is None or pid in allowed) and (within is None or _inside(path, within))
        ]

    def name_index(self) -> NameIndex:
        """The file-name index, rebuilt when the store has changed (at most every ``NAME_REFRESH_S``)."""
        import time

        gen, now = self.store.generation, time.monotonic()
        cached = self._names
        if cached is None or (cached[0] != gen and now - cached[1] >= NAME_REFRESH_S):
            cached = (gen, now, NameIndex(self.store.indexed_paths(), self.store.folders()))
            self._names = cached
        return cached[2]

    def _names_searchable(self, parsed: ParsedQuery) -> bool:
        return bool(self.name_hits(parsed.text)) if not parsed.required else False

    def without(self, hits: list[PhotoHit], negatives: list[str], cal: tuple[float, float] | None) -> list[PhotoHit]:
        """"Not this": photos whose words (read in them, or their file name) match a negative go; photos
        whose picture matches one are pushed down (:func:`push_down`)."""
        gone: set[int] = set()
        for neg in negatives:
            if self.text is not None:
                gone |= self.text.photos_with([neg])
            gone |= {n.photo_id for n in self.name_hits(neg)}
        hits = [h for h in hits if h.photo_id not in gone]
        if self.embedder is None or not hits:
            return hits
        pictured = [h.photo_id for h in hits if _judged_by_picture(h)]
        rids, pids, vecs = self.store.visual_vectors_of(pictured)
        if not len(vecs):
            return hits
        negs = np.stack([self.text_vector(n) for n in negatives]).astype(np.float32)
        per_region = (vecs @ negs.T).max(axis=1)
        neg_best: dict[int, float] = {}
        for pid, sc in zip(pids.tolist(), per_region.tolist()):
            neg_best[pid] = max(sc, neg_best.get(pid, -2.0))
        return push_down(hits, neg_best, cal)

    def attach_facts(self, hits: list[PhotoHit]) -> None:
        """Give each hit when and where it was taken."""
        from sorce_desktop.core.photos.whenwhere import Place

        facts = self.store.facts_of([h.photo_id for h in hits])
        for h in hits:
            f = facts.get(h.photo_id)
            if f is None:
                continue
            taken, offset, source, _lat, _lon, city, region, country = f
            h.taken, h.taken_source = taken + (offset or ""), source
            if country:
                h.place = Place(city or "", region, country).describe()

    def _filtered_only(self, allowed: set[int] | None, folder: str | None, top: int, search: ParsedSearch) -> list[PhotoHit]:
        """A query of filters only ("after:2023", "in lisbon"): the photos they keep, newest first."""
        if allowed is None:
            allowed = {p.id for p in self.store.photos_under() if p.status == INDEXED}
        photos = self.store.photos_by_ids(sorted(allowed))
        if folder:
            within = os.path.abspath(folder)
            photos = {pid: p for pid, p in photos.items() if _inside(p.path, within)}
        hits = [
            PhotoHit(p.path, 0.0, Box(0, 0, p.width or 0, p.height or 0), "full", pid, p.width or 0, p.height or 0,
                     FILTER, regions=[], photo=p)
            for pid, p in photos.items()
            if p.status == INDEXED
        ]  # fmt: skip
        self.attach_facts(hits)
        hits.sort(key=lambda h: (h.taken or "", h.path), reverse=True)
        # enough for "not this" to leave out or push down some and still fill the page
        return hits[: max(top, FUSE_DEPTH) if search.negatives else top]

    # -- pictures ------------------------------------------------------------------------------------
    def search_vector(
        self,
        q: np.ndarray,
        *,
        top: int = 20,
        folder: str | None = None,
        min_score: float | None = None,
        allowed: set[int] | None = None,
    ) -> list[PhotoHit]:
        """Photos ranked by their best region for ``q``. ``allowed``: only these photos (a period, a
        place): a few (up to ``EXACT_FILTER_PHOTOS``) are scored exactly from their own vectors, more are
        taken from the vector index's ranking, which is asked for more until enough of them are found."""
        vectors = self.store.vectors
        if vectors is None or vectors.count == 0 or top <= 0:
            return []
        within = os.path.abspath(folder) if folder else None
        if allowed is not None and len(allowed) <= EXACT_FILTER_PHOTOS:
            return self._search_among(q, allowed, top, within, min_score)
        k = min(vectors.count, max(64, top * 16))
        while True:
            scores, ids = self.store.search_vectors(q[None, :], k)
            best: dict[int, tuple[float, int]] = {}
            more: dict[int, list[tuple[float, int]]] = {}  # a photo's other regions among the candidates
            regions = self.store.regions_by_ids([int(i) for i in ids[0] if i >= 0])
            for s, rid in zip(scores[0], ids[0]):
                if rid < 0 or rid not in regions:
                    continue
                if min_score is not None and s < min_score:
                    break
                pid = regions[rid].photo_id
                if allowed is not None and pid not in allowed:
                    continue
                if pid not in best:
                    best[pid] = (float(s), int(rid))
                elif len(more.setdefault(pid, [])) < MAX_PICTURE_REGIONS - 1:
                    more[pid].append((float(s), int(rid)))
            photos = self.store.photos_by_ids(list(best))
            if within is not None:
                best = {pid: v for pid, v in best.items() if pid in photos and _inside(photos[pid].path, within)}
            exhausted = k >= vectors.count or (
                min_score is not None and len(scores[0]) and scores[0][-1] < min_score
            )
            if len(best) >= top or exhausted:
                break
            k = min(vectors.count, k * 4)
        return self._photo_hits(best, more, regions, photos, top)

    def _search_among(
        self, q: np.ndarray, allowed: set[int], top: int, within: str | None, min_score: float | None
    ) -> list[PhotoHit]:
        """Exact scores over the regions of a few photos (a selective filter): every one of them is
        ranked, however far down the whole library's ranking it would be."""
        rids, pids, vecs = self.store.visual_vectors_of(sorted(allowed))
        if not len(vecs) or vecs.shape[1] != q.shape[-1]:
            return []
        scores = vecs @ q.astype(np.float32)
        best: dict[int, tuple[float, int]] = {}
        more: dict[int, list[tuple[float, int]]] = {}
        for i in np.argsort(-scores, kind="stable"):
            s, pid, rid = float(scores[i]), int(pids[i]), int(rids[i])
            if min_score is not None and s < min_score:
                break
            if pid not in best:
                best[pid] = (s, rid)
            elif len(more.setdefault(pid, [])) < MAX_PICTURE_REGIONS - 1:
                more[pid].append((s, rid))
        photos = self.store.photos_by_ids(list(best))
        if within is not None:
            best = {pid: v for pid, v in best.items() if pid in photos and _inside(photos[pid].path, within)}
        keep = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
        used = [rid for _, (_, rid) in keep] + [o for pid, _ in keep for _, o in more.get(pid, [])]
        return self._photo_hits(dict(keep), more, self.store.regions_by_ids(used), photos, top)

    @staticmethod
    def _photo_hits(best: dict, more: dict, regions: dict, photos: dict, top: int) -> list[PhotoHit]:
        hits = []
        # ties in score go by photo id: the same store answers the same query in the same order
        for pid, (s, rid) in sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]:
            p = photos.get(pid)
            if p is None:
                continue
            r = regions[rid]
            hit = PhotoHit(p.path, s, r.box, r.name, pid, p.width or 0, p.height or 0, photo=p)
            # every candidate region of the photo, best first: answer() keeps those that matched
            hit.regions = [MatchedRegion(RegionKind.PICTURE, r.box, s, r.name)] + [
                MatchedRegion(RegionKind.PICTURE, regions[o].box, os_, regions[o].name)
                for os_, o in more.get(pid, [])
                if o in regions
            ]
            hits.append(hit)
        return hits


def _count(allowed: set[int] | None) -> int | None:
    return None if allowed is None else len(allowed)


def _judged_by_picture(h: PhotoHit) -> bool:
    """Whether "not this" judges a hit by its picture: one its picture matched, or one a filter alone kept
    ("lisbon -car"); not one found by its words or file name alone."""
    return h.picture is not None or h.source == FILTER


#: without the model's calibration, a photo is pushed down when its score for a negative is this many
#: robust standard deviations (median absolute deviation x 1.4826) above the median of the candidates':
#: the photos that show the unwanted thing stand out from the rest (tests/test_query.py measured 2 to 6)
NEGATIVE_Z = 3.0


def push_down(
    hits: list[PhotoHit], neg_best: dict[int, float], cal: tuple[float, float] | None
) -> list[PhotoHit]:
    """Photos whose best region for a negative ("-string") matches it go after the others, each group in
    its order. With the model's calibration: where that region is more likely than not a match; without:
    where its score stands out among the candidates' (``NEGATIVE_Z``). The query vector itself is left
    alone: subtracting the negative from it (rclip) kept fewer of the wanted photos in the test set of
    tests/test_query.py (its figures in docs/benchmarks.md)."""
    scores = np.array([neg_best[h.photo_id] for h in hits if h.photo_id in neg_best and _judged_by_picture(h)])
    if cal is None:
        if len(scores) < 3:
            return hits
        med = float(np.median(scores))
        spread = float(np.median(np.abs(scores - med))) * 1.4826
        if spread <= 0:
            return hits
    keep, pushed = [], []
    for h in hits:
        neg = neg_best.get(h.photo_id)
        if neg is None or not _judged_by_picture(h):
            keep.append(h)
            continue
        hit_neg = match_probability(neg, cal) >= LIKELY if cal is not None else (neg - med) / spread >= NEGATIVE_Z
        (pushed if hit_neg else keep).append(h)
    return keep + pushed
