"""A tiny SigLIP whose checkpoint's logit scale and bias put the model's own match probability around
0.5 for one query over drawn photos, so some regions are likely matches and some are not."""

from __future__ import annotations

from pathlib import Path

QUERY = "a red kite in the sky"


def calibrated_siglip(tiny_siglip: Path, dest: Path, photos: list[Path], scale: float = 40.0) -> Path:
    from sorce_desktop.bench.synthetic import calibrate_siglip

    return calibrate_siglip(tiny_siglip, dest, photos, QUERY, scale)
