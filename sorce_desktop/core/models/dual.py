"""Dual-encoder backend: any transformers CLIP-like model (CLIP, SigLIP, SigLIP 2 fixed-resolution)
embedding region crops.

We preprocess ourselves instead of calling the model's image processor: its centre crop would drop
the edges of every non-square region, and one letterboxed tensor per crop lets all regions of a batch
of photos go through the vision tower in a single forward.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sorce_desktop.core.models.base import Embedder, ModelError, RegionEmbedding, normalize
from sorce_desktop.core.models.fingerprint import folder_fingerprint, weights_source
from sorce_desktop.core.models.lean import halve_token_tables, own_memory, prepared_int8_model
from sorce_desktop.core.models.quant import int8_available, quantize_linear_int8
from sorce_desktop.core.models.registry import model_info
from sorce_desktop.core.models.speed import THOROUGH, SpeedProfile
from sorce_desktop.core.photos.detail import region_details
from sorce_desktop.core.photos.images import DecodedImage
from sorce_desktop.core.regions import LAYOUTS, RegionLayout, RegionSpec

_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC}
_TEMPLATES = {"siglip": "this is a photo of {}.", "clip": "a photo of {}."}


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def letterbox(img: Image.Image, size: int, fill: tuple[int, int, int], resample) -> Image.Image:
    """Fit ``img`` in a ``size`` square without squashing it, padding the rest with ``fill``."""
    w, h = img.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    if (nw, nh) == (size, size):
        return img.resize((size, size), resample, reducing_gap=3.0) if (w, h) != (size, size) else img
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(img.resize((nw, nh), resample, reducing_gap=3.0), ((size - nw) // 2, (size - nh) // 2))
    return canvas


@dataclass
class _Prepared:
    """One photo ready for the vision tower: its regions (after skipping) and their letterboxed pixels."""

    specs: list[RegionSpec]
    whole: np.ndarray  # (1, size, size, 3) uint8: the whole-photo view at the model's size
    tiles: np.ndarray  # (len(specs) - 1, tile, tile, 3) uint8: the other regions at the tile size


class DualEncoderEmbedder(Embedder):
    kind = "dual"

    def __init__(
        self,
        folder: str | Path,
        model_id: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        speed: SpeedProfile | None = None,
        prepared_dir: str | Path | None = None,
    ):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(folder)
        self.folder = folder
        self.model_id = model_id or str(folder)
        if threads:
            torch.set_num_threads(threads)
        try:
            config = AutoConfig.from_pretrained(folder)
        except Exception as exc:
            raise ModelError(f"The model at {folder} cannot be read: {exc}") from exc
        self.model_type = config.model_type
        if self.model_type == "siglip2":
            raise ModelError(
                f"{self.model_id} is a SigLIP 2 NaFlex model (variable resolution); choose a fixed-resolution "
                "one such as google/siglip2-base-patch16-256."
            )
        vision = getattr(config, "vision_config", None)
        if vision is None or not hasattr(config, "text_config"):
            raise ModelError(f"{self.model_id} is not a text-image dual encoder (no vision and text towers).")
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        self._fingerprint = f"{self.model_id}@{folder_fingerprint(folder)}"
        self.speed = speed or THOROUGH
        # int8 only where fbgemm/oneDNN run it (CPU). The text tower too: a query's latency is its text
        # embedding plus the search, and on a laptop CPU the float32 text tower alone (SigLIP pads to 64
        # tokens) takes longer than a search of 100k photos (bench query: 91 vs 25 ms p50 here).
        self.int8 = bool(self.speed.int8 and self.device.type == "cpu" and int8_available())
        try:
            if self.int8:
                # quantised once, then loaded from what that produced (core/models/lean.py)
                self.model = prepared_int8_model(
                    folder, config, weights_source(folder), Path(prepared_dir or folder / ".prepared"),
                    quantize_linear_int8,
                )
            else:
                self.model = AutoModel.from_pretrained(folder, dtype=self.dtype).to(self.device).eval()
                if self.device.type == "cpu":
                    halve_token_tables(self.model, int(getattr(config.text_config, "vocab_size", 0) or 0))
                    own_memory(self.model)
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as exc:
            raise ModelError(f"The model at {folder} cannot be loaded: {exc}") from exc
        self.size = int(vision.image_size)
        pre = {}
        if (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text())
        self.mean = np.asarray(pre.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32)
        self.std = np.asarray(pre.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32)
        self.rescale = float(pre.get("rescale_factor", 1 / 255))
        self.resample = _RESAMPLE.get(int(pre.get("resample", 3)), Image.BICUBIC)
        # Pad with the mean colour: after normalisation the padding is exactly zero.
        self.fill = tuple(int(round(v)) for v in (self.mean / self.rescale).clip(0, 255))
        self.text_max_length = int(getattr(config.text_config, "max_position_embeddings", 77))
        self.pad_to_max = self.model_type == "siglip"
        info = model_info(self.model_id)
        self.template = info.text_template if info else _TEMPLATES.get(self.model_type, "{}")
        self.batch_size = batch_size
        patch = self.patch_size = int(getattr(vision, "patch_size", 1) or 1)
        self.tile_size = (
            max(patch, min(self.size, self.speed.tile_size // patch * patch)) if self.speed.tile_size else self.size
        )
        #: the model's query encoder (core/models/query_encoder.py) once the loader has written and opened it:
        #: text queries then go through it, so every front end embeds a query alike, and 2.5x faster
        self.query_encoder: Embedder | None = None
        #: how to open it, called at the first text query (``index`` never asks one: it does not hold it)
        self.open_query_encoder: Callable[[], Embedder | None] | None = None
        self._opening = threading.Lock()
        #: the vision tower in onnxruntime int8 (core/models/picture_encoder.py) once the loader has written and
        #: opened it ("fast" on a CPU): pictures then go through it, and the PyTorch vision tower is given back
        self.picture_encoder = None
        self.dim = int(self.embed_texts(["x"]).shape[1])

    # -- interface -----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def match_calibration(self) -> tuple[float, float] | None:
        # SigLIP and SigLIP 2 are trained with a sigmoid over exp(logit_scale) * cosine + logit_bias, both
        # learned and kept in the checkpoint: a per-pair match probability. CLIP's softmax over a batch
        # has a scale and no bias, so its cosines are not probabilities (no calibration).
        bias = getattr(self.model, "logit_bias", None)
        scale = getattr(self.model, "logit_scale", None)
        if not isinstance(bias, torch.Tensor) or not isinstance(scale, torch.Tensor):
            return None
        return float(scale.detach().float().exp().reshape(-1)[0]), float(bias.detach().float().reshape(-1)[0])

    def variant(self) -> str:
        tiles = self.tile_size if self.tile_size != self.size else None
        return self.speed.tag(str(self.dtype).replace("torch.", ""), self.int8, tiles)

    def layouts(self) -> list[str]:
        return [name for name in LAYOUTS]

    def input_size(self) -> int:
        return self.size

    def decode_min_side(self, layout: RegionLayout) -> int | None:
        # The finest tile along the short side must still fill the input the tiles go through (the
        # smaller tile input of "fast" needs fewer decoded pixels: less to decode, crop and resize),
        # and the whole photo must still fill the model's own input.
        return max(self.size, self.tile_size * layout.max_cells())

    def _letterboxed(self, crops: Sequence[Image.Image], size: int) -> np.ndarray:
        """``(n, size, size, 3)`` uint8; PIL and numpy only, so it can run on a decoding thread."""
        if not crops:
            return np.zeros((0, size, size, 3), np.uint8)
        return np.stack([np.asarray(letterbox(c, size, self.fill, self.resample)) for c in crops])

    def _normalise(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(arr).to(torch.float32).permute(0, 3, 1, 2)
        mean = torch.from_numpy(self.mean / self.rescale).view(1, 3, 1, 1)
        std = torch.from_numpy(self.std / self.rescale).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def preprocess(self, crops: Sequence[Image.Image], size: int | None = None) -> torch.Tensor:
        return self._normalise(self._letterboxed(crops, size or self.size))

    def use_picture_encoder(self, encoder) -> None:
        """Run pictures through ``encoder`` from now on, and give the PyTorch vision tower's memory back (the
        process then holds one copy of its weights)."""
        self.picture_encoder = encoder
        if getattr(self.model, "vision_model", None) is not None:
            self.model.vision_model = None
            from sorce_desktop.core.memory import give_back_freed_memory

            give_back_freed_memory()

    def give_back_text_tower(self) -> None:
        """Once the query encoder is written and checked, text queries go through it: the PyTorch text tower
        (its int8 weights, its mapped token table) is given back."""
        if getattr(self.model, "text_model", None) is not None:
            self.model.text_model = None
            from sorce_desktop.core.memory import give_back_freed_memory

            give_back_freed_memory()

    def forward_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """The vision tower on preprocessed pixels, in chunks of ``batch_size``: the picture encoder where one
        is open, else the loaded model's own."""
        if self.picture_encoder is None:
            return self.forward_pixels_with_model(pixels)
        arr = pixels.numpy()
        out = [self.picture_encoder.forward(arr[i : i + self.batch_size]) for i in range(0, len(arr), self.batch_size)]
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def forward_pixels_with_model(self, pixels: torch.Tensor) -> np.ndarray:
        """The loaded model's own vision tower on preprocessed pixels, in chunks of ``batch_size``."""
        out = []
        # Another input size than the model's needs its position embeddings interpolated.
        extra = {"interpolate_pos_encoding": True} if pixels.shape[-1] != self.size else {}
        for i in range(0, pixels.shape[0], self.batch_size):
            chunk = pixels[i : i + self.batch_size].to(self.device, self.dtype)
            feats = self.model.get_image_features(pixel_values=chunk, **extra)
            feats = getattr(feats, "pooler_output", feats)
            out.append(feats.float().cpu().numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.forward_pixels(self.preprocess([im.convert("RGB") for im in images]))

    def embed_images_at(self, images: Sequence[Image.Image], side: int | None) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        # Whole patches only, and never above the model's own size (that would cost more, not less).
        patch = self.patch_size
        size = self.size if not side else max(patch, min(self.size, side // patch * patch))
        return self.forward_pixels(self.preprocess([im.convert("RGB") for im in images], size))

    def _prep_key(self, layout: RegionLayout) -> tuple:
        # Everything the preparation depends on, so a photo prepared for another layout or speed is
        # never mistaken for this one.
        return ("dual", layout, self.size, self.tile_size, self.speed.min_detail, self.fill, self.resample)

    def _prepare(self, photo: DecodedImage, layout: RegionLayout) -> _Prepared:
        specs = layout.regions(photo.width, photo.height)
        if self.speed.min_detail > 0 and len(specs) > 1:
            # Tiles with almost no detail get no embedding; the whole-photo view (first) always stays.
            details = region_details(photo, [s.box for s in specs[1:]])
            specs = [specs[0]] + [s for s, d in zip(specs[1:], details) if d >= self.speed.min_detail]
        crops = [photo.crop(s.box) for s in specs]
        crops = [c if c.mode == "RGB" else c.convert("RGB") for c in crops]
        return _Prepared(specs, self._letterboxed(crops[:1], self.size), self._letterboxed(crops[1:], self.tile_size))

    def prepare(self, photo: DecodedImage, layout: RegionLayout) -> DecodedImage:
        key = self._prep_key(layout)
        if key not in photo.prepared:
            photo.prepared[key] = self._prepare(photo, layout)
        return photo

    def embed_photos(
        self, photos: Sequence[DecodedImage], layout: RegionLayout
    ) -> list[list[RegionEmbedding]]:
        key = self._prep_key(layout)
        preps = [p.prepared[key] if key in p.prepared else self._prepare(p, layout) for p in photos]
        if not preps:
            return []
        if self.int8:
            # Dynamic int8 quantisation picks its activation scales from everything in one forward:
            # batched with other photos, a photo's vectors would depend on them (up to 0.02 per
            # component). One photo per forward keeps them its own (bench index: the cost).
            return [regions for p in preps for regions in self._embed_prepared([p])]
        return self._embed_prepared(preps)

    def _embed_prepared(self, preps: list[_Prepared]) -> list[list[RegionEmbedding]]:
        if self.tile_size == self.size:
            # One input size: every region of every photo in one batched forward, in photo order.
            vectors = self.forward_pixels(
                self._normalise(np.concatenate([a for p in preps for a in (p.whole, p.tiles)]))
            )
        else:
            # The whole-photo views at the model's size, the tiles at the smaller tile size.
            first = np.cumsum([0] + [len(p.specs) for p in preps[:-1]])
            is_whole = np.zeros(sum(len(p.specs) for p in preps), bool)
            is_whole[first] = True
            vectors = np.zeros((len(is_whole), self.dim), np.float32)
            vectors[is_whole] = self.forward_pixels(self._normalise(np.concatenate([p.whole for p in preps])))
            tiles = np.concatenate([p.tiles for p in preps])
            if len(tiles):
                vectors[~is_whole] = self.forward_pixels(self._normalise(tiles))
        out, k = [], 0
        for p in preps:
            out.append([RegionEmbedding(s.name, s.box, vectors[k + i]) for i, s in enumerate(p.specs)])
            k += len(p.specs)
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.query_encoder is None and self.open_query_encoder is not None:
            with self._opening:
                opener, self.open_query_encoder = self.open_query_encoder, None
                if opener is not None:
                    self.query_encoder = opener()
        if self.query_encoder is not None:
            return self.query_encoder.embed_texts(texts)
        return self.embed_texts_with_model(texts)

    @torch.inference_mode()
    def embed_texts_with_model(self, texts: Sequence[str]) -> np.ndarray:
        """Text queries through the loaded model's own text tower."""
        if getattr(self.model, "text_model", "") is None:
            raise ModelError(
                f"The query encoder of {self.model_id} cannot be opened any more (see the log), and the model's "
                "own text tower was given back when it was written: load the model again."
            )
        prompts = [self.template.format(t.strip()) for t in texts]
        enc = self.tokenizer(
            prompts,
            padding="max_length" if self.pad_to_max else True,
            truncation=True,
            max_length=self.text_max_length,
            return_tensors="pt",
        )
        kwargs = {"input_ids": enc["input_ids"].to(self.device)}
        if "attention_mask" in enc and not self.pad_to_max:
            kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
        feats = self.model.get_text_features(**kwargs)
        feats = getattr(feats, "pooler_output", feats)
        return normalize(feats.float().cpu().numpy())
