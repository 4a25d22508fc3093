"""Real-size randomly initialised models for the speed benchmarks, built once and cached.

Building one writes ~1.5 GB (SigLIP's 256k-token vocabulary), so the folders are kept in a cache
folder (``--cache-dir``, default ``$SORCE_BENCH_CACHE`` or ``<tmp>/sorce-bench-cache``) and reused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_SPEC = "siglip2-base-patch16-256"


def cache_dir(arg: str | os.PathLike | None = None) -> Path:
    base = arg or os.environ.get("SORCE_BENCH_CACHE") or os.path.join(tempfile.gettempdir(), "sorce-bench-cache")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthetic_model(spec: str, cache: Path, seed: int = 0) -> Path:
    """The folder of a random ``spec`` model (see ``bench.synthetic.SPECS``), built if missing."""
    from sorce_desktop.bench.synthetic import SPECS, build_dual_encoder

    if spec not in SPECS:
        raise ValueError(f"unknown model spec {spec!r}; known: {', '.join(SPECS)}")
    folder = cache / "models" / spec
    if (folder / "SYNTHETIC.txt").is_file():
        return folder
    tmp = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_dual_encoder(tmp, spec, seed=seed)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # a half-built folder is never mistaken for a finished one
    return folder
