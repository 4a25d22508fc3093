"""Where the benchmarks find coco-small: $SORCE_COCO_SMALL, else ../shared/datasets/coco-small beside the
checkout, else /work/shared/datasets/coco-small."""

from __future__ import annotations

import os
from pathlib import Path


def coco_small_dir() -> Path:
    env = os.environ.get("SORCE_COCO_SMALL")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [
        repo.parent / "shared" / "datasets" / "coco-small",
        Path("/work/shared/datasets/coco-small"),
    ]
    for c in candidates:
        if (c / "images").is_dir():
            return c
    raise FileNotFoundError(
        "coco-small not found: set SORCE_COCO_SMALL to the folder holding images/ and instances.json"
    )


def coco_images_dir() -> Path:
    return coco_small_dir() / "images"
