"""User settings (JSON in the per-user settings folder), saved atomically."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sorce_desktop.core.models.registry import DEFAULT_MODEL
from sorce_desktop.core.models.speed import DEFAULT_SPEED
from sorce_desktop.core.regions import DEFAULT_LAYOUT


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    layout: str = DEFAULT_LAYOUT
    speed: str = DEFAULT_SPEED  # indexing: "fast" (int8, smaller tiles, skips blank tiles) | "thorough"
    device: str = "auto"  # auto | cpu | cuda | mps
    thumbnail_cache_mb: int = 512
    rerank_by_zoom: bool = False  # re-rank by the refined (zoomed) score
    refine: bool = True
    ocr: bool = True
    # read text with a second detector too (core.ocr.THOROUGH_READING): for about 2x the reading time of a
    # photo; what it finds: docs/benchmarks.md, "Text in photos"
    ocr_thorough: bool = False
    first_run_done: bool = False

    @classmethod
    def load(cls, folder: Path) -> Settings:
        path = folder / "settings.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "settings.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, folder / "settings.json")
