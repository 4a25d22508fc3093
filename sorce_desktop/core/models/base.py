"""The one interface every embedding backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sorce_desktop.core.photos.images import DecodedImage
from sorce_desktop.core.regions import Box, RegionLayout


@dataclass
class RegionEmbedding:
    """One region of one photo: its name, its box (upright full-resolution pixels) and unit vector."""

    name: str
    box: Box
    vector: np.ndarray


class ModelError(Exception):
    """A model that cannot be used (missing, incomplete, incompatible), with the reason in words."""


class Embedder(ABC):
    """Turns photos, crops and text into unit vectors in one shared space."""

    #: hub id or local folder the model came from
    model_id: str
    #: vector size
    dim: int
    #: 'dual' or 'mllm'
    kind: str = "dual"

    @property
    def fingerprint(self) -> str:
        """Identifies the vectors' space: two embedders with equal fingerprints make comparable vectors."""
        return self.model_id

    def variant(self) -> str:
        """How the vectors were computed (precision, quantisation): kept per vector for re-indexing."""
        return "fp32"

    def match_calibration(self) -> tuple[float, float] | None:
        """``(scale, bias)`` of the model's own probability that a text matches an image region,
        ``sigmoid(scale * cosine + bias)``, where the checkpoint has one; None where it has not (then
        scores are cosines and no probability is claimed)."""
        return None

    @abstractmethod
    def layouts(self) -> list[str]:
        """Names of the region layouts this backend supports."""

    def decode_min_side(self, layout: RegionLayout) -> int | None:
        """The short side a photo must keep when decoded at reduced size for ``layout``."""
        return None

    def prepare(self, photo: DecodedImage, layout: RegionLayout) -> DecodedImage:
        """Do the per-photo work that comes before the model (regions, crops, resizing), keeping it
        in ``photo.prepared`` for :meth:`embed_photos`; returns ``photo``.

        Called by the indexer on its decoding threads while the model runs on the previous batch, so
        it must be thread-safe and must not touch the model (nor torch: a second thread entering
        torch's intra-op pool competes with the model's own threads). Backends without such work
        keep this no-op.
        """
        return photo

    @abstractmethod
    def embed_photos(
        self, photos: Sequence[DecodedImage], layout: RegionLayout
    ) -> list[list[RegionEmbedding]]:
        """Embed every region of every photo; returns, per photo, its regions with unit vectors."""

    @abstractmethod
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed whole images (or crops) as they are: ``(n, dim)`` unit vectors, one batched forward."""

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed text queries: ``(n, dim)`` unit vectors."""

    def embed_image_query(self, image: Image.Image) -> np.ndarray:
        return self.embed_images([image])[0]

    def embed_images_at(self, images: Sequence[Image.Image], side: int | None) -> np.ndarray:
        """Like :meth:`embed_images`, at a smaller square input side where the backend can do that.

        Query-time refinement embeds many small crops; a vision transformer's cost grows with its
        number of patches, so a reduced input is what makes refining a screenful affordable on a CPU.
        Backends that cannot change their input size embed at their own (the default here).
        """
        return self.embed_images(images)

    def input_size(self) -> int:
        """The model's square input side in pixels (the floor below which zooming adds nothing)."""
        return 224


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
