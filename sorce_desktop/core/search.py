"""Search: a query (text, image, or a crop of an image) -> photos ranked by their best region."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from sorce_desktop.core.images import ImageError, load_image
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.regions import Box, get_layout
from sorce_desktop.core.store import Store, display_path, path_key
from sorce_desktop.core.textsearch import ParsedQuery, TextHit, TextSearcher, parse_query

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


@dataclass
class MatchedRegion:
    """One part of a photo that matched the query: a picture region or a line of text read in it."""

    kind: str  # 'picture' | 'text'
    box: Box  # upright full-resolution pixels
    score: float  # picture: the region's cosine; text: 1.0 exact letters ... 0.5 * cosine by meaning
    region: str  # the layout's region name ('cell_1_2', 'full', ...), 'text' for a line of text
    words: str | None = None  # text: the words read on that line
    match: str | None = None  # text: 'letters' | 'meaning'
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
    source: str = "visual"  # 'visual' | 'text' (words in the photo) | 'both'
    text: str | None = None  # the matched words, for text hits
    refined_box: Box | None = None
    refined_score: float | None = None
    #: every region that matched, the best first: the picture region and each line of text
    regions: list[MatchedRegion] = field(default_factory=list)
    #: the model's own probability that the picture region matches the text (None: no calibration)
    probability: float | None = None
    #: a likely match (None: the model has no calibrated probability, see :func:`mark_likely`)
    likely: bool | None = None

    @property
    def picture(self) -> MatchedRegion | None:
        """The picture region that matched (what refinement zooms into), if the picture matched."""
        return next((r for r in self.regions if r.kind == "picture"), None)

    def picture_regions(self) -> list[MatchedRegion]:
        return [r for r in self.regions if r.kind == "picture"]

    @property
    def text_regions(self) -> list[MatchedRegion]:
        return [r for r in self.regions if r.kind == "text"]

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
        return d


@dataclass
class SearchAnswer:
    """The whole answer to one query: what the window and the command line render, and nothing more."""

    hits: list[PhotoHit]
    query: ParsedQuery | None  # the text query as parsed (quoted phrases apart); None for an image query
    vector: np.ndarray | None  # the visual query vector searched with (refinement zooms with it too)
    calibrated: bool = False  # hits carry the model's match probability and are split likely / the rest


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
    return any(r.kind == "text" and r.match == "letters" and r.score >= 1.0 for r in hit.regions)


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
    return MatchedRegion("picture", h.box, float(h.score), h.region)


def _text_regions(t: TextHit) -> list[MatchedRegion]:
    return [
        MatchedRegion("text", x.box, float(x.score), "text", x.text, x.kind, x.whole_word) for x in (t.lines or [t])
    ]


def clean_query(text: str) -> str:
    """Drop control characters and excess whitespace; refuse what is empty once cleaned."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise QueryError("The query is empty: type what you are looking for.")
    return cleaned[:MAX_QUERY_CHARS]


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


def fuse(visual: list[PhotoHit], text: list[TextHit], photos: dict, top: int) -> list[PhotoHit]:
    """Merge visual region hits and text-in-photo hits into one ranking (weighted reciprocal-rank fusion).

    score(photo) = 1 / (RRF_K + visual rank) + w / (RRF_K + text rank), ranks from 1, a missing term 0,
    where w is the text hit's own score: ~1.0 for the query's letters found in the photo (a one-letter
    OCR slip costs a little), at most 0.5 for a line matching by meaning only. So an exact text match
    ranks level with the best visual match, a photo found both ways ranks above either, and matches by
    meaning weigh half. The order is :func:`rank_key`'s. A hit found both ways is ``source='both'``;
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
    out = []
    for pid, s in scores.items():
        v, t = vis.get(pid), txt.get(pid)
        if t is None:
            hit = replace(v, score=s, regions=v.regions or [_picture_region(v)])
        else:
            p = photos.get(pid)
            if p is None and v is None:
                continue
            lines = _text_regions(t)
            if v is None:
                hit = PhotoHit(
                    p.path, s, t.box, "text", pid, p.width or 0, p.height or 0, "text", t.text, regions=lines
                )
            else:
                pics = v.regions or [_picture_region(v)]
                letters = t.kind == "letters"
                box = t.box if letters else v.box
                region = "text" if letters else v.region
                regions = [*lines, *pics] if letters else [*pics, *lines]
                hit = PhotoHit(v.path, s, box, region, pid, v.width, v.height, "both", t.text, regions=regions)
        if any(r.whole_word for r in hit.text_regions):
            hit.score += FIRST  # exact whole words first, in the score itself: the answer is in score order
        out.append(hit)
    out.sort(key=rank_key)
    return out[:top]


class SearchService:
    """Search one store. ``embedder`` None: no visual model (text in photos only); ``text``: the
    search over text read in photos (None: off, visual only, exactly as without OCR)."""

    def __init__(self, store: Store, embedder: Embedder | None, text: TextSearcher | None = None):
        self.store = store
        self.embedder = embedder
        self.text = text

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
        return self.embedder.embed_texts([clean_query(text)])[0]

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
    ) -> SearchAnswer:
        """The whole answer to a query: ranked photos, each with every region that matched, the parsed
        query and the visual query vector used. Text is parsed once here ("quoted" phrases must appear;
        the visual model sees the words without the quote marks), so every front end searches, ranks and
        refines alike. ``vector``: a visual query already embedded (the text still searches the words)."""
        parsed = parse_query(clean_query(text)) if text is not None and image is None else None
        use_text = self.text is not None and parsed is not None
        # a query of quoted words only is answered from the words, the same with or without a picture
        # model (so the command line need not load one for it)
        picture = (self.embedder is not None or vector is not None) and not (use_text and parsed.words_only)
        if self.embedder is None and vector is None:
            if image is not None:
                raise QueryError(
                    "Searching by an image needs a visual model; none is available yet (only text in photos "
                    "can be searched)."
                )
            if not use_text:
                if text is None:
                    raise QueryError("Give a text to search for.")
                raise QueryError("No visual model is available and text in photos is not indexed.")
        if parsed is not None and not parsed.text and not parsed.required:
            raise QueryError("The query is empty: type what you are looking for.")
        # Fused rankings are computed to a fixed depth, cut to ``top`` at the end: see FUSE_DEPTH.
        depth = max(top, FUSE_DEPTH) if use_text else top
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
            visual = self.search_vector(q, top=fetch, folder=folder, min_score=min_cos)
            for h in visual:
                # the best picture region always; others only where the model says they match too
                h.regions = [
                    r
                    for i, r in enumerate(h.regions or [_picture_region(h)])
                    if i == 0 or (cal is not None and match_probability(r.score, cal) >= LIKELY)
                ]
        if not use_text:
            hits = visual
        else:
            texts = self.text.search(parsed.text, top=depth, folder=folder, required=parsed.required)
            if parsed.required:
                allowed = self.text.photos_with(parsed.required)
                visual = [h for h in visual if h.photo_id in allowed]
            if not texts:
                hits = visual
            else:
                photos = self.store.photos_by_ids([t.photo_id for t in texts])
                if not picture:
                    hits = [
                        PhotoHit(
                            p.path, t.score, t.box, "text", t.photo_id, p.width or 0, p.height or 0, "text",
                            t.text, regions=_text_regions(t),
                        )
                        for t in texts
                        if (p := photos.get(t.photo_id)) is not None
                    ]
                    if min_score is not None:
                        hits = at_least(hits, min_score, scale)
                    return SearchAnswer(hits[:top], parsed, None)
                hits = fuse(visual[:depth], texts, photos, depth)
                if cal is None and min_score is not None:
                    # photos found by their words alone have no cosine: only words read exactly stay
                    hits = at_least(hits, min_score, scale)
                if cal is not None:
                    hits = mark_likely(hits, cal, min_score)
                    for h in hits:
                        if h.likely:
                            h.score += FIRST  # likely ones first (mark_likely's order), in the score itself
                    return SearchAnswer(hits[:top], parsed, q, True)
        if cal is not None:
            hits = mark_likely(hits, cal, min_score)
        return SearchAnswer(hits[:top], parsed, q, cal is not None)

    def score_scale(self, text_query: bool = True, has_vector: bool = False) -> ScoreScale:
        """The scale this service's scores (and a minimum score) are on for a text or an image query:
        the model's match probability where it has one (text queries), else a cosine; with no picture
        model, how well the words match."""
        if self.embedder is None and not has_vector:
            return WORDS
        if text_query and self.embedder is not None and self.embedder.match_calibration() is not None:
            return PROBABILITY
        return COSINE

    def search_vector(
        self, q: np.ndarray, *, top: int = 20, folder: str | None = None, min_score: float | None = None
    ) -> list[PhotoHit]:
        vectors = self.store.vectors
        if vectors is None or vectors.count == 0 or top <= 0:
            return []
        folder_key = path_key(folder).rstrip(os.sep.encode()) + os.sep.encode() if folder else None
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
                if pid not in best:
                    best[pid] = (float(s), int(rid))
                elif len(more.setdefault(pid, [])) < MAX_PICTURE_REGIONS - 1:
                    more[pid].append((float(s), int(rid)))
            photos = self.store.photos_by_ids(list(best))
            if folder_key is not None:
                best = {
                    pid: v
                    for pid, v in best.items()
                    if pid in photos and os.fsencode(photos[pid].path).startswith(folder_key)
                }
            exhausted = k >= vectors.count or (
                min_score is not None and len(scores[0]) and scores[0][-1] < min_score
            )
            if len(best) >= top or exhausted:
                break
            k = min(vectors.count, k * 4)
        hits = []
        # ties in score go by photo id: the same store answers the same query in the same order
        for pid, (s, rid) in sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]:
            p = photos.get(pid)
            if p is None:
                continue
            r = regions[rid]
            hit = PhotoHit(p.path, s, r.box, r.name, pid, p.width or 0, p.height or 0)
            # every candidate region of the photo, best first: answer() keeps those that matched
            hit.regions = [MatchedRegion("picture", r.box, s, r.name)] + [
                MatchedRegion("picture", regions[o].box, os_, regions[o].name) for os_, o in more.get(pid, [])
            ]
            hits.append(hit)
        return hits

