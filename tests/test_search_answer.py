"""One search answer: every matched region with its kind and words, the parsed query, the vector used;
words ranked as people read them; the command line renders that answer (JSON regions, refinement with
the search's own vector)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from signs_support import build_signs_library

from sorce_desktop.core.regions import Box
from sorce_desktop.core.search.answer import PhotoHit, fuse
from sorce_desktop.core.search.textsearch import TextHit


@pytest.fixture(scope="module")
def signs(tmp_path_factory, tiny_clip):
    return build_signs_library(tmp_path_factory.mktemp("signs"), tiny_clip)


@pytest.fixture(scope="module")
def service(signs, tiny_clip):
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    lib = Library(signs.data, writer=False)
    yield lib.search_service(DualEncoderEmbedder(tiny_clip))
    lib.close()


def test_answer_has_every_matched_region_the_parsed_query_and_the_vector(signs, service):
    answer = service.answer('"bakery" shop front', top=20)
    assert answer.query.text == "bakery shop front" and answer.query.required == ["bakery"]
    # the visual model saw the words without the quote marks
    expected = service.query_vector("bakery shop front")
    assert np.allclose(answer.vector, expected)
    assert not np.allclose(answer.vector, service.embedder.embed_texts(['"bakery" shop front'])[0])
    by_path = {h.path: h for h in answer.hits}
    assert set(by_path) == {signs.exact["bakery"], signs.partial["bakery"]}  # quoted: the word must appear
    for path, word in ((signs.exact["bakery"], "BAKERY"), (signs.partial["bakery"], "BAKERV")):
        hit = by_path[path]
        kinds = [r.kind for r in hit.regions]
        assert sorted(kinds) == ["picture", "text"], kinds  # matched both ways: both regions listed
        text = hit.text_regions[0]
        assert text.words == word and text.match == "letters" and text.box == signs.boxes[path]
        assert hit.picture.region != "text" and hit.picture.box != text.box
        assert hit.box == hit.regions[0].box  # `box` stays the best region's
    assert by_path[signs.exact["bakery"]].text_regions[0].whole_word
    assert not by_path[signs.partial["bakery"]].text_regions[0].whole_word


def test_image_query_answer_is_picture_regions_only(signs, service):
    answer = service.answer(image=signs.exact["stop"], top=5)
    assert answer.query is None and answer.vector is not None
    assert answer.hits[0].path == signs.exact["stop"]
    assert all([r.kind for r in h.regions] == ["picture"] for h in answer.hits)


@pytest.mark.parametrize("query", ['"stop"', "stop", "bakery", '"bakery"'])
def test_exact_whole_word_ranks_above_a_partial_read(signs, service, query):
    word = query.strip('"')
    order = [h.path for h in service.search(query, top=20)]
    # the partial read is on the photo the picture model ranks first, the exact one lower down
    assert order.index(signs.exact[word]) < order.index(signs.partial[word]), order
    assert order[0] == signs.exact[word]


def test_ranking_does_not_depend_on_how_many_results_are_asked_for(signs, service):
    for query in ("stop", '"stop"', "bakery", "a red kite in the sky"):
        full = [h.path for h in service.search(query, top=500)]
        for top in (1, 3, 10):
            assert [h.path for h in service.search(query, top=top)] == full[:top], (query, top)


def _vhit(pid: int, score: float) -> PhotoHit:
    return PhotoHit(f"/p/{pid}.jpg", score, Box(0, 0, 10, 10), "cell", pid, 640, 480)


def _photos(*pids):
    return {pid: type("P", (), {"path": f"/p/{pid}.jpg", "width": 640, "height": 480})() for pid in pids}


def test_ties_go_to_the_better_word_match_then_the_better_picture():
    # photo 1: first by picture only; photo 2: first by words only -> the same fused score
    visual = [_vhit(1, 0.30)]
    text = [TextHit(2, 1.0, Box(1, 1, 5, 5), "STOPS", "letters", 12)]
    hits = fuse(visual, text, _photos(2), top=10)
    assert hits[0].score == pytest.approx(hits[1].score)
    assert [h.photo_id for h in hits] == [2, 1]  # the word match breaks the tie, not the order of arrival
    # both found both ways at mirrored ranks, same word quality: the better picture wins
    visual = [_vhit(3, 0.20), _vhit(4, 0.10)]
    text = [TextHit(4, 1.0, Box(1, 1, 5, 5), "HARB0R", "letters", 13), TextHit(3, 1.0, Box(1, 1, 5, 5), "HARB0R", "letters", 14)]
    hits = fuse(visual, text, {}, top=10)
    assert hits[0].score == pytest.approx(hits[1].score)
    assert [h.photo_id for h in hits] == [3, 4]
    text = [TextHit(3, 1.0, Box(1, 1, 5, 5), "HARB0R", "letters", 14), TextHit(4, 1.0, Box(1, 1, 5, 5), "HARB0R", "letters", 13)]
    assert [h.photo_id for h in fuse(list(reversed(visual)), text, {}, top=10)] == [3, 4]


def test_search_json_lists_regions_and_keeps_box(signs, capsys):
    from sorce_desktop.cli import main

    assert main(["search", "bakery", "--json", "--data-dir", str(signs.data)]) == 0
    hits = json.loads(capsys.readouterr().out)
    by_path = {h["path"]: h for h in hits}
    hit = by_path[signs.partial["bakery"]]
    assert hit["source"] == "both" and hit["text"] == "BAKERV"
    kinds = {r["kind"]: r for r in hit["regions"]}
    assert set(kinds) == {"picture", "text"}
    assert kinds["text"]["words"] == "BAKERV" and kinds["text"]["box"] == signs.boxes[hit["path"]].as_list()
    assert hit["box"] == hit["regions"][0]["box"]
    assert hits[0]["path"] == signs.exact["bakery"]


def test_refine_zooms_with_the_vector_the_search_used(signs, monkeypatch, capsys):
    from sorce_desktop.cli import main
    from sorce_desktop.core.search import refine
    seen = []
    real = refine.refine_pictures

    def spy(refiner, hits, q, **kw):
        # the loaded model (int8 with the default speed): what the search embedded, quotes dropped
        emb = refiner.embedder
        seen.append((np.array(q), emb.embed_texts(["stop sign"])[0], emb.embed_texts(['"stop" sign'])[0]))
        return real(refiner, hits, q, **kw)

    monkeypatch.setattr(refine, "refine_pictures", spy)
    assert main(["search", '"stop" sign', "--refine", "--top", "3", "--json", "--data-dir", str(signs.data)]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(seen) == 1
    used, parsed, raw = seen[0]
    assert np.allclose(used, parsed, atol=1e-6) and not np.allclose(used, raw, atol=1e-3)
    assert any("refined_box" in h for h in hits if h["source"] != "text")


def test_the_same_words_asked_again_reuse_their_vector(signs, tiny_clip):
    """The window asks again for the same words whenever a filter, the sort or a "not" part changes: the
    words' vector is computed once (most of a query's time on a laptop) and stays the embedder's own."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.search import answer as answer_mod

    class Counting(DualEncoderEmbedder):
        asked: list[str] = []

        def embed_texts(self, texts):
            self.asked.extend(texts)
            return super().embed_texts(texts)

    lib = Library(signs.data, writer=False)
    try:
        embedder = Counting(tiny_clip)
        service = lib.search_service(embedder)
        embedder.asked = []  # what loading asked
        first = service.answer("shop front", top=5)
        again = service.answer("shop front -bakery", top=5, folder=str(signs.photos))
        assert embedder.asked == ["shop front", "bakery"]  # "shop front" once, the "not" part once
        assert np.array_equal(first.vector, again.vector)
        assert np.allclose(first.vector, DualEncoderEmbedder.embed_texts(embedder, ["shop front"])[0])
        with pytest.raises(ValueError):
            first.vector[0] = 1.0  # read-only: no caller can change what the next query gets
        for i in range(answer_mod.TEXT_VECTORS_KEPT):  # the oldest words leave
            service.text_vector(f"thing {i}")
        embedder.asked.clear()
        service.answer("shop front", top=5)
        assert embedder.asked == ["shop front"]
    finally:
        lib.close()
