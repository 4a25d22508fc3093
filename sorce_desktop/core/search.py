"""Search: a query (text, image, or a crop of an image) -> photos ranked by their best region."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sorce_desktop.core.images import load_image
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.regions import Box, get_layout
from sorce_desktop.core.store import Store, path_key
from sorce_desktop.core.textsearch import TextHit, TextSearcher, parse_query

MAX_QUERY_CHARS = 1000


class QueryError(ValueError):
    """A query that cannot be run, with the reason in words."""


@dataclass
class PhotoHit:
    path: str
    score: float
    box: Box  # upright full-resolution pixels
    region: str
    photo_id: int
    width: int
    height: int
    source: str = "visual"  # 'visual' | 'text' (words in the photo) | 'both'
    text: str | None = None  # the matched words, for text hits
    refined_box: Box | None = None
    refined_score: float | None = None

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
        return d


def clean_query(text: str) -> str:
    """Drop control characters and excess whitespace; refuse what is empty once cleaned."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise QueryError("The query is empty: type what you are looking for.")
    return cleaned[:MAX_QUERY_CHARS]


#: reciprocal-rank fusion constant (the usual 60: ranks 1 and 2 differ little, a top-10 hit counts)
RRF_K = 60


def fuse(visual: list[PhotoHit], text: list[TextHit], photos: dict, top: int) -> list[PhotoHit]:
    """Merge visual region hits and text-in-photo hits into one ranking (weighted reciprocal-rank fusion).

    score(photo) = 1 / (RRF_K + visual rank) + w / (RRF_K + text rank), ranks from 1, a missing term 0,
    where w is the text hit's own score: ~1.0 for the query's letters found in the photo (a one-letter
    OCR slip costs a little), at most 0.5 for a line matching by meaning only. So an exact text match
    ranks level with the best visual match, a photo found both ways ranks above either, and matches by
    meaning weigh half. A hit found both ways is ``source='both'``; its box is the text line's when the
    letters matched (words are outlined precisely), else the visual region's.
    """
    scores: dict[int, float] = {}
    vis = {h.photo_id: h for h in visual}
    txt = {h.photo_id: h for h in text}
    for rank, h in enumerate(visual, 1):
        scores[h.photo_id] = scores.get(h.photo_id, 0.0) + 1.0 / (RRF_K + rank)
    for rank, t in enumerate(text, 1):
        scores[t.photo_id] = scores.get(t.photo_id, 0.0) + min(1.0, t.score) / (RRF_K + rank)
    out = []
    for pid, s in sorted(scores.items(), key=lambda kv: -kv[1]):
        v, t = vis.get(pid), txt.get(pid)
        if t is None:
            hit = v
            hit.score = s
        else:
            p = photos.get(pid)
            if p is None and v is None:
                continue
            if v is None:
                hit = PhotoHit(p.path, s, t.box, "text", pid, p.width or 0, p.height or 0, "text", t.text)
            else:
                box = t.box if t.kind == "letters" else v.box
                region = "text" if t.kind == "letters" else v.region
                hit = PhotoHit(v.path, s, box, region, pid, v.width, v.height, "both", t.text)
        out.append(hit)
        if len(out) >= top:
            break
    return out


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
                decoded = load_image(image, min_side)
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
        # ``vector`` with ``text``: the visual query already embedded (the GUI keeps it for refinement);
        # the text still searches the words in photos.
        use_text = self.text is not None and text is not None and image is None
        parsed = parse_query(clean_query(text)) if use_text else None
        if self.embedder is None and vector is None:
            if image is not None:
                raise QueryError(
                    "Searching by an image needs a visual model; none is available yet (only text in photos "
                    "can be searched)."
                )
            if parsed is None:
                if text is None:
                    raise QueryError("Give a text to search for.")
                raise QueryError("No visual model is available and text in photos is not indexed.")
        visual: list[PhotoHit] = []
        if self.embedder is not None or vector is not None:
            if parsed is not None and not parsed.text and not parsed.required:
                raise QueryError("The query is empty: type what you are looking for.")
            q = vector if vector is not None else self.query_vector(parsed.text if parsed else text, image, crop)
            fetch = top if parsed is None or not parsed.required else max(top * 4, 80)
            visual = self.search_vector(q, top=fetch, folder=folder, min_score=min_score)
        if parsed is None:
            return visual
        texts = self.text.search(parsed.text, top=top, folder=folder, required=parsed.required)
        if parsed.required:
            allowed = self.text.photos_with(parsed.required)
            visual = [h for h in visual if h.photo_id in allowed]
        if not texts:
            return visual[:top]
        if self.embedder is None and vector is None:
            photos = self.store.photos_by_ids([t.photo_id for t in texts])
            return [
                PhotoHit(p.path, t.score, t.box, "text", t.photo_id, p.width or 0, p.height or 0, "text", t.text)
                for t in texts
                if (p := photos.get(t.photo_id)) is not None
            ]
        photos = self.store.photos_by_ids([t.photo_id for t in texts])
        return fuse(visual[:top], texts, photos, top)

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
            regions = self.store.regions_by_ids([int(i) for i in ids[0] if i >= 0])
            for s, rid in zip(scores[0], ids[0]):
                if rid < 0 or rid not in regions:
                    continue
                if min_score is not None and s < min_score:
                    break
                pid = regions[rid].photo_id
                if pid not in best:
                    best[pid] = (float(s), int(rid))
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
        for pid, (s, rid) in sorted(best.items(), key=lambda kv: -kv[1][0])[:top]:
            p = photos.get(pid)
            if p is None:
                continue
            r = regions[rid]
            hits.append(PhotoHit(p.path, s, r.box, r.name, pid, p.width or 0, p.height or 0))
        return hits


def rank_regions(query: np.ndarray, vectors: np.ndarray) -> Sequence[int]:
    return list(np.argsort(-(vectors @ query)))
