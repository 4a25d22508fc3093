"""Picking the backend for a model folder and loading it."""

from __future__ import annotations

import errno
import json
import logging
import threading
from pathlib import Path

from sorce_desktop.core.models.base import Embedder, ModelError
from sorce_desktop.core.models.download import ProgressCallback, resolve_model
from sorce_desktop.core.models.speed import SpeedProfile

MLLM_TYPES = {"llava_next", "qwen2_vl"}

log = logging.getLogger(__name__)


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
    embedder = DualEncoderEmbedder(
        folder, model_id=model, device=device, speed=speed, prepared_dir=cache_dir / "prepared"
    )
    if embedder.device.type == "cpu":
        written = write_query_encoder(embedder, cache_dir / "prepared")
        # text queries go through it here too: the same vector for a query whichever front end asks. It is
        # opened at the first query, so indexing, which asks none, does not hold it (~65 MB resident)
        embedder.open_query_encoder = lambda: load_query_encoder(model, cache_dir, speed=embedder.speed)
        if written:  # checked just now: the model's own text tower (~85 MB in int8) is not needed any more
            embedder.give_back_text_tower()
        if embedder.int8:
            use_picture_encoder(embedder, cache_dir / "prepared")
    return embedder


def use_picture_encoder(embedder, prepared_dir: Path) -> None:
    """Write the picture encoder of a model loaded in full in "fast", unless a good one is there, and run
    pictures through it (core/models/picture_encoder.py). One that cannot be written or opened is said in the
    log: the loaded model keeps its own vision tower, and the next full load tries again."""
    from sorce_desktop.core.models.picture_encoder import (
        SUPPORTED_TYPES,
        PictureEncoderUnavailable,
        open_picture_encoder,
    )

    if embedder.model_type not in SUPPORTED_TYPES:
        return
    try:
        import torch

        threads = torch.get_num_threads()
        try:  # opened once (its checksum read once) where a good one is there
            encoder = open_picture_encoder(embedder.folder, prepared_dir, "int8", threads=threads)
        except PictureEncoderUnavailable:
            from sorce_desktop.core.models.picture_export import write_picture_encoder

            write_picture_encoder(embedder, prepared_dir)
            encoder = open_picture_encoder(embedder.folder, prepared_dir, "int8", threads=threads)
    except Exception as exc:  # the loaded model keeps its own vision tower; said once
        _say_not_written(f"no picture encoder for {embedder.model_id}", exc, prepared_dir)
        return
    embedder.use_picture_encoder(encoder)


def write_query_encoder(embedder, prepared_dir: Path) -> bool:
    """Write the query encoder of a model loaded in full, unless a good one is there (see
    core/models/query_encoder.py); True when a checked one is there. One that cannot be written is said in
    the log: the loaded model keeps embedding queries, and the next full load tries again."""
    from sorce_desktop.core.models.query_export import write_query_encoder as write

    try:
        write(embedder, prepared_dir)
        return True
    except Exception as exc:  # any failure of the export leaves today's path in use, said once
        _say_not_written(f"no query encoder for {embedder.model_id}", exc, prepared_dir)
        return False


def _say_not_written(what: str, exc: BaseException, folder: Path) -> None:
    """A full disk is said once, by the store, when it next writes (as core/models/lean.py does); a file
    written short on a full disk fails later, when it is read back, hence the free-space check too."""
    full = getattr(exc, "errno", None) == errno.ENOSPC or "os error 28" in str(exc) or _nearly_full(folder)
    (log.info if full else log.warning)("%s (%s: %s)", what, type(exc).__name__, exc)


def _nearly_full(folder: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(folder if folder.exists() else folder.parent).free < 256 << 20
    except OSError:
        return False


def load_query_encoder(model: str, cache_dir: Path, *, speed: SpeedProfile) -> Embedder | None:
    """The query encoder of ``model`` (text queries embedded without torch or transformers) where a good
    one was written when the model was last loaded in full; None where none can be used (the reason is
    logged), and then the model itself is loaded."""
    from sorce_desktop.core.models.query_encoder import (
        SUPPORTED_TYPES,
        QueryEncoderUnavailable,
        open_query_encoder,
    )

    try:
        folder = resolve_model(model, cache_dir, download=False)
        mtype = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (ModelError, OSError, ValueError, AttributeError):
        return None  # the full load says what is wrong with the model
    if mtype not in SUPPORTED_TYPES:
        return None
    try:
        return open_query_encoder(folder, model, cache_dir / "prepared", bool(speed.int8))
    except QueryEncoderUnavailable as exc:
        log.info("the query encoder of %s cannot be used (%s): loading the model", model, exc)
        return None


def load_sentence_embedder(cache_dir: Path):
    """What matches a query against the words read in photos by meaning: the sentence query encoder
    (onnxruntime, no torch or transformers) where one was written; else the model itself (core/text/ocr.py
    ``TextEmbedder``), which writes it for the next start."""
    from sorce_desktop.core.models.query_encoder import QueryEncoderUnavailable, open_sentence_encoder
    from sorce_desktop.core.text.ocr import TextEmbedder, minilm_folder

    folder = minilm_folder()
    try:
        return open_sentence_encoder(folder, cache_dir / "prepared", TextEmbedder.model_id)
    except QueryEncoderUnavailable as exc:
        log.info("the sentence query encoder cannot be used (%s): loading the model", exc)
    model = TextEmbedder(folder)
    try:
        from sorce_desktop.core.models.query_export import write_sentence_encoder

        write_sentence_encoder(model, cache_dir / "prepared")
        return open_sentence_encoder(folder, cache_dir / "prepared", TextEmbedder.model_id)
    except Exception as exc:  # the loaded model keeps matching by meaning; said once
        _say_not_written("no sentence query encoder", exc, cache_dir / "prepared")
        return model


def write_sentence_query_encoder(model, cache_dir: Path) -> None:
    """Write the sentence query encoder of a ``TextEmbedder`` loaded anyway (indexing embeds the lines it reads
    with it), unless a good one is there: the first search after indexing then matches words by meaning
    without loading the model (about 10 s on a 2-core laptop otherwise). A failure is said in the log."""
    try:
        from sorce_desktop.core.models.query_export import write_sentence_encoder

        write_sentence_encoder(model, cache_dir / "prepared")
    except Exception as exc:  # the first search loads the model instead, and tries again
        _say_not_written("no sentence query encoder", exc, cache_dir / "prepared")
