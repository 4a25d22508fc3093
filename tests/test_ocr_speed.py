"""What makes reading text cheaper must not change what is read: the detector with its affine ops folded
computes the same probability map, and evenly sized tiles cover every pixel with enough overlap."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scene_support import scene_photos

from sorce_desktop.core.text.ocr import DET_NORMALIZE, MODEL_SETS, _even_tiles


@pytest.mark.parametrize("length", [1, 31, 500, 1920, 1921, 2000, 2121, 2309, 3000, 4000, 6001])
def test_even_tiles_cover_everything_with_the_overlap_in_windows_of_one_size(length):
    tile, overlap = 1920, 192
    starts, size = _even_tiles(length, tile, overlap)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length
    assert starts == sorted(starts)
    for a, b in zip(starts, starts[1:]):
        assert a + size - b >= overlap  # neighbours overlap by at least ``overlap``
    # no more windows than tiles of the full size would take
    n_full = 1 if length <= tile else math.ceil((length - tile) / (tile - overlap)) + 1
    assert len(starts) == n_full
    if length > tile:
        assert size % 32 == 0 and size < tile  # smaller windows, no resizing to multiples of 32


def _session(model: bytes | str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("models", ["ppocrv6tinydet", "ppocrv5det", "ppocrv4"])
def test_the_folded_detector_draws_the_same_map_as_the_original(models):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from sorce_desktop.core.text.ocr import OcrUnavailable
    from sorce_desktop.core.text.onnxfold import fold_affine

    try:
        path = MODEL_SETS[models].files().get("det_model_path")
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    if path is None:  # the detector bundled with rapidocr_onnxruntime
        rapidocr = pytest.importorskip("rapidocr_onnxruntime")
        path = str(next((Path(rapidocr.__file__).parent / "models").glob("*det*.onnx")))
    original = Path(path).read_bytes()
    folded, counts = fold_affine(original)
    assert counts["after"] > 50 and counts["scale_before"] > 10  # the network's affine blocks went
    assert len(folded) <= len(original)
    img = Image.open(scene_photos(1)[0]).convert("RGB").resize((960, 704), Image.Resampling.BICUBIC)
    from PIL import ImageDraw, ImageFont

    ImageDraw.Draw(img).text((80, 300), "HARBOR STREET 23", fill=(255, 255, 255), font=ImageFont.load_default(40))
    mean, std = (np.asarray(v, np.float32) for v in DET_NORMALIZE)
    x = ((np.asarray(img, np.float32)[:, :, ::-1] / 255 - mean) / std).transpose(2, 0, 1)[None].copy()
    a, b = (_session(m) for m in (original, folded))
    pa = a.run(None, {a.get_inputs()[0].name: x})[0]
    pb = b.run(None, {b.get_inputs()[0].name: x})[0]
    assert pa.shape == pb.shape
    assert float(np.abs(pa - pb).max()) < 1e-3
    assert int(((pa > 0.2) != (pb > 0.2)).sum()) <= 2  # a pixel at the threshold may round either way
    assert (pa > 0.2).sum() > 0  # the photo does have text-like activity to compare


def test_a_shift_before_a_padded_convolution_is_not_folded():
    """Zero padding sees 0 where the shift would have made it ``d``: that shift must stay an add."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from sorce_desktop.core.text.onnxfold import fold_affine

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")
    s = numpy_helper.from_array(np.asarray([0.5], np.float32), "s")
    d = numpy_helper.from_array(np.asarray([0.7], np.float32), "d")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Mul", ["c1", "s"], ["m1"]),  # folds after conv 1
        helper.make_node("HardSwish", ["m1"], ["h"]),
        helper.make_node("Mul", ["h", "s"], ["m2"]),  # folds into conv 2's weights
        helper.make_node("Add", ["m2", "d"], ["a2"]),  # stays: conv 2 pads
        helper.make_node("Conv", ["a2", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2, s, d],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    folded, counts = fold_affine(model.SerializeToString())
    ops = [n.op_type for n in onnx.load_from_string(folded).graph.node]
    assert ops == ["Conv", "HardSwish", "Add", "Conv"]
    assert counts == {"after": 1, "scale_before": 1, "shift_before": 0}
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ya = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    yb = ort.InferenceSession(folded, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-5)  # borders included


def test_a_line_cut_by_a_seam_is_read_from_the_tile_that_holds_it_whole():
    from sorce_desktop.core.text.ocr import _drop_cut_pieces

    def quad(x0, y0, x1, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)

    top, bottom = (0, 0, 1000, 1100), (0, 700, 1000, 1800)  # two tiles overlapping by 400 rows
    found = [
        (quad(100, 1000, 300, 1100), top),  # the upper part of a word, cut by the top tile's lower edge
        (quad(100, 1000, 300, 1150), bottom),  # the same word whole in the bottom tile
        (quad(500, 1050, 700, 1100), top),  # cut, and no tile holds it whole: kept to be joined
        (quad(10, 10, 50, 40), top),  # far from any seam
    ]
    kept = [q for q, _ in _drop_cut_pieces(found, 1000, 1800)]
    assert len(kept) == 3
    assert not any(np.array_equal(q, found[0][0]) for q in kept)
    assert any(np.array_equal(q, found[1][0]) for q in kept) and any(np.array_equal(q, found[2][0]) for q in kept)


def test_a_damaged_detector_file_is_a_clear_reason_not_a_crash(tmp_path):
    pytest.importorskip("onnx")
    from sorce_desktop.core.text.ocr import OcrUnavailable, _fold_detector

    bad = tmp_path / "det.onnx"
    bad.write_bytes(b"\x08\x07not a network")

    class _Det:  # what the engine hands over: a RapidOCR detector with an inference session
        class infer:
            session = None

    with pytest.raises(OcrUnavailable, match="could not be read"):
        _fold_detector(_Det(), str(bad), 1, True)


def test_an_overlap_over_half_the_tile_is_refused():
    from sorce_desktop.core.text.ocr import OcrConfig

    with pytest.raises(ValueError, match="overlap"):
        OcrConfig(tile=512)  # the default 384-px overlap would leave tiles advancing 128 px at a time
    assert OcrConfig(tile=768).overlap == 384


def test_the_text_readers_threads_do_not_spin_between_calls():
    """The picture model runs on the same cores between two OCR calls; onnxruntime's threads spinning
    for work took its CPU (docs/benchmarks.md). Every session the engine reads with has spinning off."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.core.text.ocr import OcrEngine

    engine = OcrEngine(threads=2)
    sessions = {
        "detector": engine._det.session,
        "recogniser": engine._ocr.text_rec.session.session,
    }
    for name, session in sessions.items():
        spinning = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        assert spinning == "0", f"the {name}'s threads spin ({spinning!r})"
