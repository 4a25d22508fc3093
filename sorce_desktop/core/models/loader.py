"""Picking the backend for a model folder and loading it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sorce_desktop.core.models.base import Embedder, ModelError
from sorce_desktop.core.models.download import ProgressCallback, resolve_model
from sorce_desktop.core.models.speed import SpeedProfile

MLLM_TYPES = {"llava_next", "qwen2_vl"}


def model_type(folder: Path) -> str:
    """The config's ``model_type``, refused in words when the config is not a model configuration or
    names a kind of model this app does not load."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"The model file {path} cannot be read ({exc.strerror or exc}).") from exc
    except ValueError as exc:
        raise ModelError(f"The model file {path} is not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise ModelError(
            f"The model file {path} is not a model configuration (a JSON object was expected, "
            f"it holds {type(config).__name__ if config is not None else 'null'})."
        )
    mtype = config.get("model_type", "")
    if not isinstance(mtype, str) or not mtype:
        raise ModelError(f"The model file {path} names no model_type: it is not a transformers model folder.")
    if mtype not in MLLM_TYPES:
        from transformers import CONFIG_MAPPING

        try:
            two_towers = hasattr(CONFIG_MAPPING[mtype](), "vision_config")
        except Exception:  # not a model type transformers knows (KeyError), or one it cannot build
            two_towers = False
        if not two_towers:
            raise ModelError(
                f"The model at {folder} is a {mtype!r} model, which this app cannot use: it needs a "
                "text-image dual encoder (CLIP, SigLIP) or a multimodal LLM (LLaVA-NeXT, Qwen2-VL)."
            )
    return mtype


def load_embedder(
    model: str,
    cache_dir: Path,
    *,
    device: str | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    speed: SpeedProfile | None = None,
) -> Embedder:
    folder = resolve_model(model, cache_dir, download=download, progress=progress, cancel=cancel)
    mtype = model_type(folder)
    if mtype in MLLM_TYPES:
        try:
            from sorce_desktop.core.models.mllm import MLLMEmbedder
        except ImportError as exc:  # pragma: no cover
            raise ModelError(
                f"{model} is a multimodal LLM, and that backend is not available ({exc})."
            ) from exc
        return MLLMEmbedder(folder, model_id=model, device=device)
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    # what quantisation produces is kept in the per-user model cache, beside the downloaded models
    return DualEncoderEmbedder(folder, model_id=model, device=device, speed=speed, prepared_dir=cache_dir / "prepared")
