"""Getting model files: a local folder, the per-user cache, or a download from the Hugging Face hub.

Downloads report progress (bytes done / total) and can be cancelled; huggingface_hub writes each file
to an ``.incomplete`` file first and resumes it next time, so an interrupted download never leaves a
half file where the loader would take it for a whole one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sorce_desktop.core.models.base import ModelError

#: Files a model folder needs, by pattern; weights in safetensors (or legacy .bin when that is all).
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",  # sentencepiece
    "*.txt",  # merges
    "*.tiktoken",
    "*.jinja",
]


class DownloadCancelled(Exception):
    pass


class DownloadFailed(ModelError):
    """A download that did not work, with why in plain words. ``reason``: 'offline' (no network),
    'disk_full', 'not_found' (no such model on the hub) or 'other'. ``problem`` says what happened and
    nothing more, for a front end that names its own remedies (the command line: ``--model DIR``,
    ``models --download``); the message adds the window's (Retry, choose a model folder)."""

    def __init__(self, message: str, reason: str, problem: str | None = None, model: str = ""):
        super().__init__(message)
        self.reason = reason
        self.problem = problem or message
        self.model = model


@dataclass
class DownloadProgress:
    model_id: str
    done_bytes: int
    total_bytes: int
    current_file: str
    bytes_per_s: float = 0.0  # this download's average so far (0: not known yet)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the average rate so far (None until there is a rate)."""
        if self.bytes_per_s <= 0 or self.total_bytes <= 0:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / self.bytes_per_s)


ProgressCallback = Callable[[DownloadProgress], None]


def downloads_switched_off() -> bool:
    """Downloads are switched off by the environment (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")


def check_model_folder(folder: Path) -> None:
    """A clear error for a folder that cannot hold a whole model (rather than a loader traceback)."""
    if not folder.is_dir():
        if folder.exists():
            raise ModelError(f"{folder} is a file; --model needs the folder that holds the model's files.")
        raise ModelError(f"The model folder {folder} does not exist.")
    if not (folder / "config.json").is_file():
        raise ModelError(f"The model folder {folder} has no config.json: it is not a model folder.")
    index_files = list(folder.glob("*.safetensors.index.json"))
    for index_file in index_files:
        import json

        shards = set(json.loads(index_file.read_text())["weight_map"].values())
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise ModelError(
                f"The model folder {folder} is incomplete: missing weight files {', '.join(missing)}."
            )
    if not index_files and not list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin")):
        raise ModelError(f"The model folder {folder} has no weights (*.safetensors).")
    for p in folder.iterdir():
        if p.name.endswith(".incomplete"):
            raise ModelError(f"The model folder {folder} holds an unfinished download ({p.name}).")
    for p in sorted(folder.iterdir()):
        # Each file is opened here, so one this user cannot read is named with its real reason (the
        # loaders would report something else, such as a missing file).
        if p.is_dir():
            continue
        if p.is_symlink() and not p.exists():
            raise ModelError(f"The model file {p} is a link to a file that does not exist.")
        try:
            with open(p, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise ModelError(f"The model file {p} cannot be read ({exc.strerror or exc}).") from None


def cached_model_path(model_id: str, cache_dir: Path) -> Path | None:
    """The local snapshot of a hub model if it is complete, else None. Never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                model_id, cache_dir=cache_dir, local_files_only=True, allow_patterns=ALLOW_PATTERNS
            )
        )
    except Exception:
        return None
    try:
        check_model_folder(path)
    except ModelError:
        return None
    return path


def resolve_model(
    model: str,
    cache_dir: Path,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """A folder holding the whole model: ``model`` itself if it is a folder, else the cached or
    freshly downloaded hub snapshot. Raises :class:`ModelError` with what to do when it cannot."""
    as_path = Path(model).expanduser()
    looks_like_path = (
        model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model or ":" in model
    )
    if as_path.exists() or looks_like_path:
        check_model_folder(as_path)
        return as_path.resolve()
    cached = cached_model_path(model, cache_dir)
    if cached is not None:
        return cached
    how = (
        f"Connect to the internet and start the app again (it downloads {model} once), or download it "
        f"elsewhere and choose its folder (command line: --model /path/to/folder)."
    )
    if not download:
        raise ModelError(f"The model {model} is not downloaded yet. {how}")
    if downloads_switched_off():
        problem = f"The model {model} is not downloaded yet, and downloads are switched off (HF_HUB_OFFLINE)."
        raise DownloadFailed(f"{problem} {how}", "offline", problem, model)
    try:
        return download_model(model, cache_dir, progress=progress, cancel=cancel)
    except DownloadCancelled:
        raise
    except ModelError:
        raise
    except Exception as exc:
        raise download_failure(model, cache_dir, exc) from exc


#: exception class names (anywhere in the chain) that mean the network is not there; by name, since
#: huggingface_hub's HTTP stack changes between versions (requests, httpx, a vendored httpx)
_OFFLINE_NAMES = ("ConnectError", "ConnectTimeout", "ConnectionError", "NetworkError", "Timeout", "gaierror",
                  "OfflineModeIsEnabled", "ProxyError")
_NOT_FOUND_NAMES = ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "HFValidationError")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def failure_reason(exc: BaseException) -> str:
    """'offline', 'disk_full', 'not_found' or 'other', from the exception and what caused it."""
    import errno

    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return "disk_full"
    for e in _chain(exc):
        names = {t.__name__ for t in type(e).__mro__}
        if "GatedRepoError" in names or "DisabledRepoError" in names:
            return "other"  # it is there, but not for everyone: its own message says why
        if names & set(_NOT_FOUND_NAMES):
            return "not_found"
        if any(n.endswith(k) for n in names for k in _OFFLINE_NAMES):
            return "offline"
    return "other"


def download_failure(model: str, cache_dir: Path, exc: BaseException) -> DownloadFailed:
    """The failed download of ``model`` in plain words: what went wrong and what to do."""
    from sorce_desktop.core.models.registry import model_info

    info = model_info(model)
    size = f" (about {info.download_mb:,} MB)" if info else ""
    reason = failure_reason(exc)
    if reason == "offline":
        problem = f"No internet connection: {model}{size} could not be downloaded."
        remedy = "Connect to the internet and press Retry, or choose a model folder on this computer."
    elif reason == "disk_full":
        problem = f"The disk is full: {model}{size} does not fit in {cache_dir}."
        remedy = "Free some space and press Retry; what was downloaded already is kept."
    elif reason == "not_found":
        problem = f"There is no model called {model} on the Hugging Face hub."
        remedy = "Check its name in Settings, or choose a model folder on this computer."
    else:
        problem = f"{model} could not be downloaded ({_short(exc)})."
        remedy = "Press Retry, or choose a model folder."
    return DownloadFailed(f"{problem} {remedy}", reason, problem, model)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def download_model(
    model_id: str,
    cache_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    cache_dir.mkdir(parents=True, exist_ok=True)
    plan = snapshot_download(model_id, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS, dry_run=True)
    files = [f for f in plan if not _is_legacy_duplicate(f.filename, plan)]
    total = sum(f.file_size or 0 for f in files)
    done = sum(f.file_size or 0 for f in files if not f.will_download)
    state = {"done": done}
    start_done, t0 = done, time.monotonic()

    def rate() -> float:
        elapsed = time.monotonic() - t0
        return (state["done"] - start_done) / elapsed if elapsed > 0.5 else 0.0

    def make_tqdm(filename: str):
        from tqdm.auto import tqdm

        class _Progress(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

            def update(self, n=1):
                if cancel is not None and cancel.is_set():
                    raise DownloadCancelled(f"download of {model_id} cancelled")
                state["done"] += n or 0
                if progress:
                    progress(DownloadProgress(model_id, state["done"], total, filename, rate()))
                return super().update(n)

        return _Progress

    for f in files:
        if not f.will_download:
            continue
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"download of {model_id} cancelled")
        base = done
        hf_hub_download(model_id, f.filename, cache_dir=cache_dir, tqdm_class=make_tqdm(f.filename))
        # The file is whole now: count its real size (tqdm may have reported less, or nothing).
        done = base + (f.file_size or 0)
        state["done"] = done
        if progress:
            progress(DownloadProgress(model_id, done, total, f.filename, rate()))
    path = cached_model_path(model_id, cache_dir)
    if path is None:
        raise ModelError(f"The download of {model_id} finished but the model folder is incomplete.")
    return path


def _is_legacy_duplicate(filename: str, plan) -> bool:
    # Some repos ship the same weights for other frameworks; we only need the safetensors.
    return (
        filename.startswith(("flax_", "tf_", "onnx/"))
        or "/" in filename
        and filename.split("/")[0]
        in {
            "onnx",
            "openvino",
            "coreml",
        }
    )
