"""The picture model's vision tower in onnxruntime int8: what "fast" indexing runs on a CPU.

Measured on an AVX2 CPU without VNNI (docs/history/picture-kernels-2026-12-07.md, "Revisited"): one photo
of the default layout (the whole-photo view at 256 px and 12 tiles at 176 px) took 1.64 s in PyTorch's
dynamic int8 and 1.13 s (0.69x) here, with the vectors' cosine to float32 0.9991 against 0.9996. Two things
make the difference: the weights are signed 7-bit (``reduce_range``; u8 x s8 products in ``vpmaddubsw``
cannot saturate, and onnxruntime's u8 x s8 kernel is its fast one), and GELU is one operator (ONNX opset 20)
instead of PyTorch's fused kernel against eight elementwise ONNX operators at opset 17 (0.80x then).

When a SigLIP model is loaded in full on a CPU in "fast", its vision tower is written once
(core/models/picture_export.py) into ``<models>/prepared/picture/``, keyed like the query encoder:

- ``<key>.onnx``: pixels ``(n, 3, h, w)`` (any square multiple of the patch: the whole-photo view, the
  tiles, the closer look's windows) to the pooled vector, not normalised; the position embeddings are
  interpolated inside the graph as transformers does it;
- ``<key>.json``, written last: format, key, fingerprint, precision, the file's size and CRC-32, and the
  cosine to the loaded model's vectors it was checked with.

Once it is open the loaded model gives its PyTorch vision tower back (``DualEncoderEmbedder.use_picture_encoder``):
the process holds one copy of the weights. A file that is missing, damaged or stale is never used: the
model then runs its own vision tower and writes the file again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sorce_desktop.core.models.base import ModelError
from sorce_desktop.core.models.fingerprint import crc32_of, weights_source
from sorce_desktop.core.models.query_encoder import QueryEncoderUnavailable, cpu_session, read_sidecar

#: bumped whenever what the file holds, or how, changes: older files are then stale
PICTURE_FORMAT = 2  # 2: the file recorded under "files", as the query encoder's sidecar does
#: the model families whose vision tower is exported (SigLIP: attention-pooling head, no projection)
SUPPORTED_TYPES = ("siglip",)


class PictureEncoderUnavailable(Exception):
    """No usable picture encoder for a model (not written yet, damaged or stale), with the reason."""


def picture_key(folder: Path, precision: str) -> str:
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{weights_source(folder)}|{precision}|picture|{PICTURE_FORMAT}".encode())
    return h.hexdigest()


def picture_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    """(the graph, its sidecar) of the picture encoder ``key`` in ``cache_dir`` (the prepared models' folder)."""
    base = Path(cache_dir) / "picture"
    return base / f"{key}.onnx", base / f"{key}.json"


class PictureEncoder:
    """Preprocessed pixels to the vision tower's pooled vectors, through onnxruntime."""

    def __init__(self, folder: Path, cache_dir: Path, precision: str, threads: int | None = None):
        self.precision = precision
        self.key = picture_key(Path(folder), precision)
        onnx, sidecar = picture_paths(cache_dir, self.key)
        try:
            side = read_sidecar(sidecar, {"onnx": onnx}, self.key, PICTURE_FORMAT)
        except QueryEncoderUnavailable as exc:
            raise PictureEncoderUnavailable(str(exc)) from None
        try:
            crc = int(side["files"]["onnx"]["crc32"])
            self.dim = int(side["dim"])
            self.patch = int(side["patch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PictureEncoderUnavailable(f"its sidecar is damaged ({exc})") from None
        if crc32_of(onnx) != crc:
            raise PictureEncoderUnavailable(f"{onnx.name} is damaged (checksum differs)")
        try:
            # no arena: a forward's buffers go back to the heap (trimmed per batch, core/memory.py) instead of
            # staying reserved while the text reader runs (resident after a photo 257 -> 164 MB, as fast)
            self.session = cpu_session(onnx, threads, arena=False)
        except Exception as exc:  # a file that passed its checksum and still does not open
            raise PictureEncoderUnavailable(f"it cannot be opened ({type(exc).__name__}: {exc})") from None
        self.cosine = side.get("cosine_to_loaded_model_min")

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """``(n, 3, s, s)`` float32 pixels, normalised as the model's processor does, to ``(n, dim)``."""
        if pixels.ndim != 4 or pixels.shape[-1] % self.patch or pixels.shape[-2] % self.patch:
            raise ModelError(f"pixels of shape {tuple(pixels.shape)} are not whole {self.patch}-px patches")
        try:
            return self.session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]
        except Exception as exc:
            raise ModelError(f"the picture encoder failed ({type(exc).__name__}: {exc})") from exc


def open_picture_encoder(folder: Path, cache_dir: Path, precision: str, threads: int | None = None) -> PictureEncoder:
    """The picture encoder of the model in ``folder``; :class:`PictureEncoderUnavailable` with the reason when
    none can be used."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise PictureEncoderUnavailable(f"onnxruntime is not installed ({exc})") from None
    try:
        return PictureEncoder(folder, cache_dir, precision, threads)
    except OSError as exc:
        raise PictureEncoderUnavailable(f"unreadable ({exc})") from None
