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


class SearchService:
    def __init__(self, store: Store, embedder: Embedder):
        self.store = store
        self.embedder = embedder

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
                    img = img.crop(tuple(crop.as_list()))
            else:
                # Decode like the indexer does, so a crop of an indexed region matches it exactly.
                binding = self.store.binding()
                min_side = self.embedder.decode_min_side(get_layout(binding.layout)) if binding else None
                decoded = load_image(image, min_side)
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
        q = vector if vector is not None else self.query_vector(text, image, crop)
        return self.search_vector(q, top=top, folder=folder, min_score=min_score)

    def search_vector(
        self, q: np.ndarray, *, top: int = 20, folder: str | None = None, min_score: float | None = None
    ) -> list[PhotoHit]:
        vectors = self.store.vectors
        if vectors is None or vectors.count == 0 or top <= 0:
            return []
        folder_key = path_key(folder).rstrip(os.sep.encode()) + os.sep.encode() if folder else None
        k = min(vectors.count, max(64, top * 16))
        while True:
            scores, ids = vectors.search(q[None, :], k)
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
