"""Writing a SigLIP model's picture encoder (core/models/picture_encoder.py) from its float weights, once, when
the model is loaded in full on a CPU in "fast".

The vision tower is rebuilt from the model folder's float weights (the loaded model holds int8 copies only),
its attention-pooling head written out so every shape stays dynamic (PyTorch's ``MultiheadAttention`` is
traced with the sequence length as a constant), exported with ``torch.onnx.export`` (opset 20: GELU is one
operator), quantised by onnxruntime as the query encoder is (``query_export.INT8_WEIGHTS``), and checked
before it is trusted: its vectors against the loaded model's own at the input sides indexing and the closer
look use (cosine at least ``MIN_COSINE``). Nothing is written when a check fails; the loaded model keeps
its own vision tower.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sorce_desktop.core.models.picture_encoder import (
    PICTURE_FORMAT,
    SUPPORTED_TYPES,
    PictureEncoder,
    PictureEncoderUnavailable,
    picture_key,
    picture_paths,
)
from sorce_desktop.core.models.query_export import (
    INT8_WEIGHTS,
    MIN_COSINE,
    OPSET,
    NotFrom,
    files_record,
    sidecar_head,
)

log = logging.getLogger(__name__)


class _Head(torch.nn.Module):
    """SigLIP's attention-pooling head (a learned probe attends to every patch) with dynamic shapes."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        a = head.attention
        d = a.embed_dim
        self.heads, self.head_dim = a.num_heads, d // a.num_heads
        w, b = a.in_proj_weight.detach(), a.in_proj_bias.detach()

        def part(i: int) -> torch.nn.Linear:
            lin = torch.nn.Linear(d, d)
            lin.weight = torch.nn.Parameter(w[i * d : (i + 1) * d].clone(), requires_grad=False)
            lin.bias = torch.nn.Parameter(b[i * d : (i + 1) * d].clone(), requires_grad=False)
            return lin

        self.q, self.k, self.v = part(0), part(1), part(2)
        self.out_proj, self.probe, self.layernorm, self.mlp = a.out_proj, head.probe, head.layernorm, head.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        q = self.q(self.probe).view(1, 1, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(n, -1, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(n, -1, self.heads, self.head_dim).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim**-0.5, dim=-1)
        o = self.out_proj((w @ v).transpose(1, 2).reshape(n, 1, self.heads * self.head_dim))
        return (o + self.mlp(self.layernorm(o)))[:, 0]


class _Vision(torch.nn.Module):
    """Pixels to the pooled vector, position embeddings interpolated for the input's size (as transformers
    does while tracing: the graph then takes any size)."""

    def __init__(self, vision_model: torch.nn.Module):
        super().__init__()
        self.embeddings = vision_model.embeddings
        self.encoder = vision_model.encoder
        self.post_layernorm = vision_model.post_layernorm
        self.head = _Head(vision_model.head)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(pixels, interpolate_pos_encoding=True)
        h = self.post_layernorm(self.encoder(inputs_embeds=h).last_hidden_state)
        return self.head(h)


def _vision_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for w in sorted(folder.glob("*.safetensors")):
        with safe_open(str(w), framework="pt") as f:
            for name in f.keys():
                if name.startswith("vision_model."):
                    out[name] = f.get_tensor(name).to(torch.float32)
    return out


#: input sides the vectors are also checked at: the closer look's windows (core/search/refine.py: 48 for a
#: screenful of results, 128 for the photo the user opened; tests/test_picture_encoder.py holds them equal)
CLOSER_LOOK_SIDES = (48, 128)


def check_sides(embedder) -> list[int]:
    """The input sides the vectors are checked at: the model's, the tiles', the closer look's."""
    patch = embedder.patch_size
    sides = {embedder.size, embedder.tile_size, *CLOSER_LOOK_SIDES}
    return sorted({max(patch, min(embedder.size, s // patch * patch)) for s in sides if s})


def _probe_pixels(embedder, side: int, n: int = 3) -> np.ndarray:
    """Photo-like inputs: smooth gradients and edges (not noise), normalised as the model's processor does."""
    rng = np.random.default_rng(side)
    yy, xx = np.mgrid[0:side, 0:side] / max(1, side - 1)
    out = []
    for _ in range(n):
        img = np.stack([np.clip(a * xx + b * yy + c, 0, 1) for a, b, c in rng.uniform(-1, 1, (3, 3))], -1)
        x0, y0 = rng.integers(0, side // 2, 2)
        img[y0 : y0 + side // 3, x0 : x0 + side // 4] = rng.uniform(0, 1, 3)
        out.append((img * 255).astype(np.uint8))
    return embedder._normalise(np.stack(out)).numpy()


def _cosines(enc: PictureEncoder, embedder) -> np.ndarray:
    cos = []
    for side in check_sides(embedder):
        px = _probe_pixels(embedder, side)
        a = enc.forward(px)
        b = embedder.forward_pixels_with_model(torch.from_numpy(px))
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        cos.append(np.sum(a * b, axis=1))
    return np.concatenate(cos)


def write_picture_encoder(embedder, cache_dir: Path) -> Path:
    """Write the picture encoder of a loaded "fast" :class:`DualEncoderEmbedder` into ``cache_dir`` (the
    prepared models' folder) unless a good one is there; returns its sidecar. Raises ValueError (or what the
    export raised) when the model cannot have one."""
    from transformers import AutoModel

    folder = Path(embedder.folder)
    if embedder.model_type not in SUPPORTED_TYPES:
        raise ValueError(f"no picture encoder for {embedder.model_type!r} models (only {', '.join(SUPPORTED_TYPES)})")
    if not embedder.int8:
        raise ValueError("the picture encoder is int8: it serves the \"fast\" speed only")
    config = embedder.model.config
    if not getattr(config.vision_config, "vision_use_head", True):
        raise ValueError("its vision tower has no attention-pooling head")
    precision = "int8"
    key = picture_key(folder, precision)
    onnx, sidecar = picture_paths(cache_dir, key)
    try:
        PictureEncoder(folder, cache_dir, precision)
        return sidecar
    except PictureEncoderUnavailable as exc:
        log.info("writing the picture encoder of %s (%s: %s)", embedder.model_id, sidecar, exc)
    t0 = time.perf_counter()
    weights = _vision_weights(folder)
    with torch.device("meta"):
        model = AutoModel.from_config(config, dtype=torch.float32)
    model.load_state_dict(weights, strict=False, assign=True)
    del weights
    tower = _Vision(model.vision_model).eval()
    emb = tower.embeddings
    if getattr(emb, "position_ids", None) is not None and emb.position_ids.is_meta:  # not in the weights: made
        emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    left = [n for n, t in (*tower.named_parameters(), *tower.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"weights missing from the model folder: {left[:3]}")
    onnx.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".writing-", dir=onnx.parent))
    try:
        plain = work / "plain.onnx"
        side_px = embedder.tile_size
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes
            torch.onnx.export(
                tower, (torch.zeros(2, 3, side_px, side_px),), str(plain), input_names=["pixels"],
                output_names=["vector"], dynamic_axes={"pixels": {0: "n", 2: "h", 3: "w"}, "vector": {0: "n"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
        del tower, model
        made, made_side = picture_paths(work, key)
        made.parent.mkdir()
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quiet = NotFrom("onnxruntime")  # its quantiser logs advice meant for its developers on the root logger
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(plain, made, **INT8_WEIGHTS, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(quiet)
        plain.unlink()
        side = {
            **sidecar_head(PICTURE_FORMAT, key, embedder, precision, folder),
            "patch": int(embedder.patch_size),
            "files": files_record({"onnx": made}),
        }
        made_side.write_text(json.dumps(side), encoding="utf-8")
        enc = PictureEncoder(folder, work, precision)  # checked from the files themselves before they are trusted
        cos = _cosines(enc, embedder)
        del enc
        if cos.min() < MIN_COSINE:
            raise ValueError(f"its vectors differ from the loaded model's (cosine {cos.min():.4f})")
        side["cosine_to_loaded_model_min"] = round(float(cos.min()), 6)
        os.replace(made, onnx)
        made_side.write_text(json.dumps(side), encoding="utf-8")
        os.replace(made_side, sidecar)  # last: a graph without its sidecar is never used
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _remove_older(sidecar, side["source"])
    log.info("picture encoder of %s written in %.1fs (%s)", embedder.model_id, time.perf_counter() - t0, sidecar)
    return sidecar


def _remove_older(sidecar: Path, source: str) -> None:
    """Picture encoders made before from the same folder (its weights replaced): never read again."""
    for other in sidecar.parent.glob("*.json"):
        if other == sidecar:
            continue
        try:
            if json.loads(other.read_text(encoding="utf-8")).get("source") != source:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        other.unlink(missing_ok=True)
        other.with_suffix(".onnx").unlink(missing_ok=True)
