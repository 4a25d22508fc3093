"""A first look before the detector (measured with ``bench text``, not chosen).

The detector looks at the whole photo shrunk to ``first_look`` px on its long side, and at the
working scale only in windows around the regions of that look's probability map over ``activity``
(each with a margin of its own height), instead of over the whole working-scale image: a fraction of
the detector's pixels when a photo has little text. ``bench text --engine "look:first_look=960,
activity=0.05"`` runs it. Measured on 40 photos at 1920x1440 (docs/benchmarks.md, "Text in photos"):
the small look does not show the small words (PP-OCRv5's detector responds to text of about the
size it was trained on, not to smaller), so recall fell from 0.94 to 0.55 for a third of the OCR time.
"""

from __future__ import annotations

import math
import time

import numpy as np

from sorce_desktop.bench.ocr_variants import VariantOcrEngine


class FirstLookOcrEngine(VariantOcrEngine):
    """An OcrEngine whose detector looks at the working scale only where a small first look saw activity."""

    def __init__(self, *, first_look: int = 960, activity: float = 0.1, **kw):
        if not 160 <= first_look <= 4096:
            raise ValueError("first_look must be 160-4096 px")
        if not 0 < activity < 1:
            raise ValueError("activity must be a probability in (0, 1)")
        super().__init__(**kw)
        self.first_look = int(first_look)
        self.activity = float(activity)
        self.engine_id += f" look{self.first_look}/{self.activity:g}"
        self.stats.update(first_look=0.0, first_look_px=0.0)
        self._look: list[tuple[int, int, int, int]] | None = None

    def _detect(self, bgr: np.ndarray, both: bool = False) -> list[np.ndarray]:
        # the first look narrows the first detector's pass at the working scale (the closer look and the
        # second detector look everywhere, as in the app)
        self._look = self._windows(bgr) if both else None
        try:
            return super()._detect(bgr, both)
        finally:
            self._look = None

    def _detect_tiles(self, bgr: np.ndarray, detect_tile, windows=None) -> list[np.ndarray]:
        look, self._look = self._look, None  # the first call of a _detect is the first detector's
        return super()._detect_tiles(bgr, detect_tile, windows if windows is not None else look)

    def _windows(self, bgr: np.ndarray) -> list[tuple[int, int, int, int]] | None:
        """Where in the working-scale image the detector must look (x0, y0, x1, y1), from a first
        look at the whole image shrunk to ``first_look`` px on its long side: the windows around every
        region of that look's probability map over ``activity`` (see the module docstring). None: look everywhere (the image is hardly larger than the look)."""
        h, w = bgr.shape[:2]
        if max(h, w) <= self.first_look * 1.25:
            return None
        import cv2

        t = time.perf_counter()
        c = self.first_look / max(h, w)
        small = cv2.resize(bgr, (max(1, round(w * c)), max(1, round(h * c))), interpolation=cv2.INTER_AREA)
        prob = self._det.prob(small)[0, 0]
        # the map is at the (32-rounded) input's size: back to the small image's
        sy, sx = small.shape[0] / prob.shape[0], small.shape[1] / prob.shape[1]
        active = (prob > self.activity).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(active, connectivity=8)
        boxes = []
        for x, y, bw, bh, _area in stats[1:n]:
            # a margin of the region's own height (at least 8 px of the small image) around it, at
            # the working scale: the detector needs the text's surroundings to tell it from them
            m = max(8.0, 1.0 * bh * sy)
            boxes.append(
                (
                    max(0, int((x * sx - m) / c)),
                    max(0, int((y * sy - m) / c)),
                    min(w, int(math.ceil(((x + bw) * sx + m) / c))),
                    min(h, int(math.ceil(((y + bh) * sy + m) / c))),
                )
            )
        windows = _merge_windows(boxes, gap=32)
        self.stats["first_look"] += time.perf_counter() - t
        self.stats["first_look_px"] += small.shape[0] * small.shape[1]
        return windows


def _merge_windows(boxes: list[tuple[int, int, int, int]], gap: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) that overlap or lie within ``gap`` px of each other joined into their
    bounding boxes, until none do: fewer, larger detector calls instead of many small ones."""
    out = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        keep: list[list[int]] = []
        for b in out:
            for k in keep:
                if b[0] <= k[2] + gap and k[0] <= b[2] + gap and b[1] <= k[3] + gap and k[1] <= b[3] + gap:
                    k[:] = [min(k[0], b[0]), min(k[1], b[1]), max(k[2], b[2]), max(k[3], b[3])]
                    merged = True
                    break
            else:
                keep.append(b)
        out = keep
    return [tuple(b) for b in out if b[2] > b[0] and b[3] > b[1]]
