"""Indexing speed profiles: how much arithmetic each photo gets ("fast" and "thorough" indexing).

Region embeddings multiply the work per photo (13 crops with the default layout), and on a CPU that
work is matrix arithmetic, so the levers cut operations, not overhead. Each lever was measured by
``sorce-desktop bench index`` against the plain float32 path in the same run (docs/benchmarks.md):

- ``int8``: the vision tower's linear layers in int8 (PyTorch dynamic quantisation).
- ``tile_size``: the tiles (not the whole-photo view) go through the model at a smaller square input.
  The share of the input a small object fills does not change with the input side (the tile is
  letterboxed the same way), and in a 640-px photo a 4-per-long-side tile is only ~176 px wide, so
  a 256-px input mostly upsamples it.
- ``min_detail``: tiles with almost no detail (clear sky, a blank wall) get no embedding of their own
  (the whole-photo view still covers them).

The profile is recorded with every photo (``Embedder.variant()``, the ``photos.variant`` column), so a
library indexed "fast" can be re-indexed "thorough" later.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpeedProfile:
    name: str
    int8: bool = False
    tile_size: int | None = None  # square input side for the tiles; None: the model's own
    min_detail: float = 0.0  # tiles whose detail (core.detail) is below this are skipped

    def tag(self, precision: str, int8_applied: bool, tile_size_applied: int | None = None) -> str:
        """The variant string stored with every photo: precision, then what was reduced or left out."""
        parts = ["int8" if int8_applied else precision]
        if tile_size_applied:
            parts.append(f"tiles{tile_size_applied}")
        if self.min_detail > 0:
            parts.append(f"skip{self.min_detail:g}")
        return "+".join(parts)


THOROUGH = SpeedProfile("thorough")
FAST = SpeedProfile("fast", int8=True, tile_size=176, min_detail=6.0)

SPEEDS: dict[str, SpeedProfile] = {p.name: p for p in (FAST, THOROUGH)}
DEFAULT_SPEED = "fast"


def get_speed(name: str | None) -> SpeedProfile:
    if not name:
        return SPEEDS[DEFAULT_SPEED]
    try:
        return SPEEDS[name]
    except KeyError:
        raise ValueError(f"unknown indexing speed {name!r}; choose one of: {', '.join(SPEEDS)}") from None


#: how many times faster "fast" indexes than "thorough" in the same run (README, "Indexing speed";
#: figures: docs/benchmarks.md): re-index estimates that change the speed scale the last rate by it
FAST_OVER_THOROUGH = 4.0


def speed_factor(old: str, new: str) -> float:
    """The new speed's indexing rate over the old one's (measured in one run: FAST_OVER_THOROUGH), for a
    re-index estimate from the last rate."""
    if old == new:
        return 1.0
    return FAST_OVER_THOROUGH if new == FAST.name else 1.0 / FAST_OVER_THOROUGH


def speed_of_variant(variant: str | None) -> str | None:
    """Which speed profile made a photo's vectors, from the variant tag stored with it (None: unknown).
    "fast" always leaves out blank tiles (its tag has "skip"); "thorough" never does."""
    if not variant:
        return None
    return FAST.name if any(p.startswith("skip") for p in variant.split("+")) else THOROUGH.name
