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
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise ModelError(f"The model at {folder} has no readable config.json ({exc}).") from exc


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

    return DualEncoderEmbedder(folder, model_id=model, device=device, speed=speed)
