"""Search by when, where, which folder, file names and "not this", combined with the region match."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import remember_folder
from signs_support import line
from whenwhere_support import LISBON, PARIS, write_photo

from sorce_desktop.core.regions import Box
from sorce_desktop.core.search import query
from sorce_desktop.core.search.answer import MatchedRegion, PhotoHit, push_down
from sorce_desktop.core.store.catalog import TextPhoto


# -- the parser ------------------------------------------------------------------------------------------
def test_periods():
    p = query.parse("kite after:2023")
    assert p.text == "kite" and (p.period.start, p.period.end) == ("2023-01-01T00:00:00", None)
    assert [(x.kind, x.label) for x in p.parts] == [("words", "kite"), ("period", "after 2023")]
    p = query.parse("after:2023-07 before:2024-01-15 kite")
    assert (p.period.start, p.period.end) == ("2023-07-01T00:00:00", "2024-01-15T00:00:00")
    assert [x.label for x in p.parts[1:]] == ["after July 2023", "before 15 Jan 2024"]
    p = query.parse("beach 2023")
    assert p.text == "beach" and (p.period.start, p.period.end) == ("2023-01-01T00:00:00", "2024-01-01T00:00:00")
    p = query.parse("july 2023 beach")
    assert p.text == "beach" and (p.period.start, p.period.end) == ("2023-07-01T00:00:00", "2023-08-01T00:00:00")
    assert p.parts[1].label == "July 2023" and p.parts[1].tokens == ["july", "2023"]
    p = query.parse("Dec 2023")
    assert (p.period.start, p.period.end) == ("2023-12-01T00:00:00", "2024-01-01T00:00:00") and p.text == ""
    # a month alone, a number that is no year: words
    assert query.parse("july fourth").period is None and query.parse("route 66").text == "route 66"
    assert query.parse("3000 km").period is None


@pytest.mark.parametrize(
    "text, words, start, end, label, tokens",
    [
        ("photos in 2023", "photos", "2023-01-01", "2024-01-01", "2023", ["in", "2023"]),
        ("beach in july 2023", "beach", "2023-07-01", "2023-08-01", "July 2023", ["in", "july", "2023"]),
        ("kite from 2019", "kite", "2019-01-01", "2020-01-01", "2019", ["from", "2019"]),
        ("kite since 2020", "kite", "2020-01-01", None, "since 2020", ["since", "2020"]),
        ("tree 25 dec 2022", "tree", "2022-12-25", "2022-12-26", "25 Dec 2022", ["25", "dec", "2022"]),
        ("December 25, 2022 tree", "tree", "2022-12-25", "2022-12-26", "25 Dec 2022", ["December", "25,", "2022"]),
        ("tree on 2022-12-25", "tree", "2022-12-25", "2022-12-26", "25 Dec 2022", ["on", "2022-12-25"]),
        ("beach 2023-07", "beach", "2023-07-01", "2023-08-01", "July 2023", ["2023-07"]),
        ("2019-2021 beach", "beach", "2019-01-01", "2022-01-01", "2019 – 2021", ["2019-2021"]),
    ],
)
def test_periods_written_as_people_write_them(text, words, start, end, label, tokens):
    p = query.parse(text)
    assert p.text == words
    assert (p.period.start, p.period.end) == (f"{start}T00:00:00", f"{end}T00:00:00" if end else None)
    period = next(x for x in p.parts if x.kind == "period")
    assert (period.label, period.tokens) == (label, tokens)


@pytest.mark.parametrize("text", ["beach 2023-13", "2021-2019 beach", "route 2023-7-45", "july fourth"])
def test_what_only_looks_like_a_date_stays_words(text):
    p = query.parse(text)
    assert p.period is None and p.text == text and not p.problems


@pytest.mark.parametrize("bad", ["after:2023-13", "before:2023-02-30", "after:yesterday", "after:"])
def test_a_date_that_does_not_parse_is_one_line_and_the_rest_stays(bad):
    p = query.parse(f"red kite {bad}")
    assert p.text == "red kite" and p.period is None
    assert len(p.problems) == 1 and bad in p.problems[0] and "not a date" in p.problems[0]


def test_negatives_places_and_folders():
    p = query.parse('kite -string -"power lines" in:trips place:"new york"')
    assert p.text == "kite" and p.negatives == ["string", "power lines"]
    assert p.folders == ["trips"] and p.places == [("newyork", "new york")]
    assert [x.label for x in p.parts] == ["kite", "not: string", "not: power lines", "in trips", "in new york"]
    # place words count only when the library has photos there; "in" goes with them
    p = query.parse("tram in lisbon", {"lisbon"})
    assert p.text == "tram" and p.places == [("lisbon", "lisbon")] and p.parts[1].tokens == ["in", "lisbon"]
    assert query.parse("tram in lisbon").text == "tram in lisbon"
    p = query.parse("bridge new york", {"newyork"})
    assert p.text == "bridge" and p.places == [("newyork", "new york")]


def test_removing_a_part_removes_its_tokens():
    text = "kite after:2023 -string july 2022"
    p = query.parse(text)
    label = {x.label: x for x in p.parts}
    assert query.without(text, label["not: string"]) == "kite after:2023 july 2022"
    assert query.without(text, label["July 2022"]) == "kite after:2023 -string"
    # a lead word goes with its part, not the first of its kind in the query
    text = "cat in the hat in lisbon in 2023"
    p = query.parse(text, {"lisbon"})
    label = {x.label: x for x in p.parts}
    assert p.text == "cat in the hat" and p.places == [("lisbon", "lisbon")]
    assert query.without(text, label["2023"]) == "cat in the hat in lisbon"
    assert query.without(text, label["in lisbon"]) == "cat in the hat in 2023"
    assert query.parse("photos from lisbon", {"lisbon"}).parts[1].tokens == ["from", "lisbon"]


# -- the library -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_clip):
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import get_layout
    from sorce_desktop.core.search.answer import SearchService
    from sorce_desktop.core.search.textsearch import TextSearcher

    root = tmp_path_factory.mktemp("when") / "photos"
    mtime = time.mktime((2021, 3, 4, 12, 0, 0, 0, 0, -1))
    write_photo(root / "beach.jpg", (230, 200, 120), taken="2023:07:14 10:30:00", offset="+01:00", gps=LISBON)
    write_photo(root / "tram.jpg", (240, 220, 30), taken="2023:02:01 09:00:00", gps=LISBON)
    write_photo(root / "grandma-birthday-2019.jpg", (200, 60, 160), taken="2019:05:01 15:00:00")
    write_photo(root / "trips" / "eiffel.jpg", (90, 90, 200), taken="2022:12:31 23:30:00", gps=PARIS)
    write_photo(root / "trips" / "old.jpg", (60, 160, 60), taken="0000:00:00 00:00:00", mtime=mtime)
    write_photo(root / "Birthdays" / "cake.jpg", (250, 250, 250), taken="2024:01:20 18:00:00")
    model = DualEncoderEmbedder(tiny_clip)
    lib = Library(tmp_path_factory.mktemp("when-data"))
    remember_folder(lib, root)
    lib.bind(model, get_layout("grid3"))
    lib.indexer(model, get_layout("grid3")).run()
    ids = {p.path.rsplit("/", 1)[-1]: p.id for p in lib.store.photos_under()}
    # words read in two photos (as the OCR pass records them)
    lib.store.commit_text(
        [
            TextPhoto(ids["tram.jpg"], None, [line("STRING QUARTET", 5, 5, 60, 15)]),
            TextPhoto(ids["eiffel.jpg"], None, [line("BIRTHDAY SALE", 5, 5, 60, 15)]),
        ],
        "test",
        None,
    )
    service = SearchService(lib.store, model, TextSearcher(lib.store, None))
    yield lib, service, root, ids
    lib.close()


def names(hits):
    return [h.path.rsplit("/", 1)[-1] for h in hits]


def test_a_period_restricts_and_hits_carry_when_and_where(library):
    _lib, service, _root, _ids = library
    a = service.answer("a photo after:2023", top=50)
    assert sorted(names(a.hits)) == ["beach.jpg", "cake.jpg", "tram.jpg"]
    beach = next(h for h in a.hits if h.path.endswith("beach.jpg"))
    assert (beach.taken, beach.taken_source, beach.place) == ("2023-07-14T10:30:00+01:00", "exif", "Lisbon, Portugal")
    d = beach.to_json()
    assert d["taken"] == "2023-07-14T10:30:00+01:00" and d["taken_source"] == "exif" and d["place"] == "Lisbon, Portugal"
    assert d["matched"] == ["picture"] and {"path", "score", "box", "region", "source", "regions"} <= set(d)
    assert sorted(names(service.answer("a photo 2022", top=50).hits)) == ["eiffel.jpg"]
    assert sorted(names(service.answer("a photo december 2022", top=50).hits)) == ["eiffel.jpg"]
    # the file time counts for a photo without a trusted date (flagged as such)
    old = service.answer("a photo march 2021", top=50).hits
    assert names(old) == ["old.jpg"] and old[0].taken_source == "file"
    # flags do the same as tokens
    assert sorted(names(service.answer("a photo", after="2022", before="2023-07", top=50).hits)) == [
        "eiffel.jpg",
        "tram.jpg",
    ]


def test_sort_by_date_newest_first(library):
    _lib, service, _root, _ids = library
    hits = service.answer("a photo", top=50, sort="date").hits
    assert names(hits) == ["cake.jpg", "beach.jpg", "tram.jpg", "eiffel.jpg", "old.jpg", "grandma-birthday-2019.jpg"]


def test_places_from_the_library_and_unknown_ones(library):
    _lib, service, _root, _ids = library
    a = service.answer("a photo in lisbon", top=50)
    assert sorted(names(a.hits)) == ["beach.jpg", "tram.jpg"] and not a.problems
    assert [p.label for p in a.parts if p.kind == "place"] == ["in lisbon"]
    assert sorted(names(service.answer("a photo place:portugal", top=50).hits)) == ["beach.jpg", "tram.jpg"]
    assert names(service.answer("a photo place:france", top=50).hits) == ["eiffel.jpg"]
    a = service.answer("a photo place:atlantisxyz", top=50)
    assert len(a.problems) == 1 and "not a place the gazetteer knows" in a.problems[0]
    assert len(a.hits) == 6  # the rest of the query still runs
    a = service.answer("a photo place:tokyo", top=50)
    assert a.hits == [] and "no photo here was taken there" in a.problems[0]


def test_in_folder_and_a_folder_not_in_the_library(library):
    _lib, service, root, _ids = library
    assert sorted(names(service.answer("a photo in:trips", top=50).hits)) == ["eiffel.jpg", "old.jpg"]
    assert sorted(names(service.answer("a photo in:birthdays", top=50).hits)) == ["cake.jpg"]
    assert len(service.answer(f"a photo in:{root.name}", top=50).hits) == 6  # the watched folder itself
    a = service.answer("a photo in:nowhere", top=50)
    assert len(a.problems) == 1 and "in:nowhere" in a.problems[0] and len(a.hits) == 6


def test_file_and_folder_names_are_searchable_after_words_read(library):
    _lib, service, _root, _ids = library
    a = service.answer("birthday", top=50)
    top3 = a.hits[:3]
    # the words read in eiffel.jpg first, then the file name and the folder name (with the picture's rank)
    assert names(top3)[0] == "eiffel.jpg"
    assert sorted(names(top3[1:])) == ["cake.jpg", "grandma-birthday-2019.jpg"]
    by = {n: h for n, h in zip(names(a.hits), a.hits)}
    assert by["grandma-birthday-2019.jpg"].matched == ["picture", "file_name"]
    assert by["grandma-birthday-2019.jpg"].regions[-1].words == "grandma-birthday-2019.jpg"
    assert by["cake.jpg"].regions[-1].words == "Birthdays/cake.jpg"
    # without a visual model: the words read, then the names, which have no picture region to outline
    from sorce_desktop.core.search.answer import SearchService

    text_only = SearchService(service.store, None, service.text).answer("birthday", top=50)
    assert names(text_only.hits) == ["eiffel.jpg", "grandma-birthday-2019.jpg", "cake.jpg"]
    name_hit = text_only.hits[1]
    assert name_hit.matched == ["file_name"] and name_hit.source == "name"
    assert [r.kind for r in name_hit.regions] == ["name"]
    assert top3[0].matched[-1] == "words"
    assert name_hit.to_json()["matched"] == ["file_name"]


def test_not_this_excludes_photos_whose_words_match(library):
    _lib, service, _root, _ids = library
    assert "tram.jpg" in names(service.answer("a photo", top=50).hits)
    a = service.answer("a photo -string", top=50)
    assert "tram.jpg" not in names(a.hits) and len(a.hits) == 5
    assert [p.label for p in a.parts] == ["a photo", "not: string"]
    a = service.answer('a photo -"birthday sale"', top=50)
    assert "eiffel.jpg" not in names(a.hits)
    assert "grandma-birthday-2019.jpg" not in names(service.answer("a photo -birthday", top=50).hits)


def test_filters_alone_list_the_photos_newest_first(library):
    _lib, service, _root, _ids = library
    a = service.answer("after:2023", top=50)
    assert names(a.hits) == ["cake.jpg", "beach.jpg", "tram.jpg"]
    assert names(service.answer("lisbon", top=50).hits) == ["beach.jpg", "tram.jpg"]


def test_not_this_applies_to_filters_alone_and_is_not_a_query_by_itself(library):
    from sorce_desktop.core.search.answer import QueryError

    _lib, service, _root, _ids = library
    # the words read in tram.jpg ("STRING QUARTET") and a file name leave it out of a listing by filter too
    assert names(service.answer("lisbon -string", top=50).hits) == ["beach.jpg"]
    assert names(service.answer("before:2022", top=50).hits) == ["old.jpg", "grandma-birthday-2019.jpg"]
    assert names(service.answer("before:2022 -birthday", top=50).hits) == ["old.jpg"]
    assert len(service.answer("after:2023 -string", top=1).hits) == 1  # the page is still filled
    with pytest.raises(QueryError, match=r"Only what to leave out is given \(not: string\)"):
        service.answer("-string", top=50)


def test_not_this_pushes_down_a_photo_a_filter_alone_kept():
    from sorce_desktop.core.search.answer import FILTER

    box = Box(0, 0, 1, 1)
    hits = [PhotoHit(str(i), 0.0, box, "full", i, 1, 1, FILTER, regions=[]) for i in range(3)]
    cal = (10.0, -2.5)  # probability 0.5 at cosine 0.25
    assert [h.photo_id for h in push_down(hits, {0: 0.30, 1: 0.10, 2: 0.20}, cal)] == [1, 2, 0]
    # found by its words alone (no picture region): not judged by its picture
    words = [PhotoHit("w", 0.9, box, "text", 7, 1, 1, "text", regions=[MatchedRegion("text", box, 0.9, "t")])]
    assert push_down(words, {7: 0.9}, cal)[0].photo_id == 7


def test_filters_that_keep_no_photo_are_named_as_the_reason(library):
    _lib, service, _root, _ids = library
    a = service.answer("a photo 2020", top=50)
    assert a.hits == [] and a.kept == 0 and a.nothing_kept() == "None of your photos fits “2020”."
    a = service.answer("a photo 2023 in:trips", top=50)
    assert a.hits == [] and a.nothing_kept() == "None of your photos fits “2023” and “in trips” together."
    a = service.answer("a photo 2023", top=50)
    assert a.kept == 2 and a.nothing_kept() is None
    assert service.answer("a photo", top=50).kept is None  # no filter: nothing to blame


def test_a_selective_filter_is_searched_exactly_and_agrees_with_the_index(library, monkeypatch):
    from sorce_desktop.core.search import answer as search_module
    _lib, service, _root, _ids = library
    exact = service.answer("a red thing after:2023", top=50).hits
    monkeypatch.setattr(search_module, "EXACT_FILTER_PHOTOS", 0)  # the index's ranking, filtered
    filtered = service.answer("a red thing after:2023", top=50).hits
    assert names(exact) == names(filtered)
    assert [round(h.score, 5) for h in exact] == [round(h.score, 5) for h in filtered]


# -- "not this": pushing down by the negative's own region score vs subtracting it (rclip) ---------------
def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _negative_test_set(seed: int, related: float):
    """Photos as regions over concept directions: 12 wanted (a kite, no string), 12 unwanted (a kite on a
    string: 6 in the kite's own region, 6 beside it), 40 others (6 with a string alone). Texts share a
    large common direction (the modality gap of CLIP-like models); ``related``: how much of "kite" the
    text "string" carries (related concepts are close in a text tower)."""
    rng = np.random.default_rng(seed)
    d = 128
    basis = np.linalg.qr(rng.standard_normal((d, 24)))[0].T
    img_common, txt_common, kite, string, sky = basis[:5]
    others = basis[5:]

    def region(*parts, noise=0.35):
        return _unit(0.9 * img_common + sum(parts) + noise * _unit(rng.standard_normal(d)))

    photos, kind = [], []
    for i in range(12):
        size = 0.5 + 0.5 * (i % 4) / 3  # small kites weigh less in their region
        photos.append([region(size * kite, 0.5 * sky), region(0.8 * sky), region(others[i % 19])])
        kind.append("wanted")
    for i in range(12):
        size = 0.5 + 0.5 * (i % 4) / 3
        if i < 6:
            photos.append([region(size * kite, 0.6 * string, 0.4 * sky), region(0.8 * sky), region(others[i])])
        else:
            photos.append([region(size * kite, 0.5 * sky), region(0.7 * string), region(others[i])])
        kind.append("unwanted")
    for i in range(40):
        parts = [others[i % 19], 0.6 * others[(i * 7 + 3) % 19]]
        if i < 6:
            parts.append(0.8 * string)
        photos.append([region(*parts), region(others[(i + 5) % 19]), region(0.5 * sky)])
        kind.append("other")
    q_kite = _unit(1.4 * txt_common + kite + 0.15 * _unit(rng.standard_normal(d)))
    q_string = _unit(1.4 * txt_common + string + related * kite + 0.15 * _unit(rng.standard_normal(d)))
    return [np.stack(p) for p in photos], kind, q_kite, q_string


def _rank(photos, q):
    best = [(float((p @ q).max()), i) for i, p in enumerate(photos)]
    return [i for _, i in sorted(best, key=lambda t: (-t[0], t[1]))]


def _kept(order, kind, k=12):
    top = order[:k]
    return sum(kind[i] == "wanted" for i in top), sum(kind[i] == "unwanted" for i in top)


def test_not_this_push_down_keeps_the_wanted_photos_better_than_subtraction():
    """Top-12 counts (12 wanted photos exist, 12 unwanted), summed over 5 seeds, for three degrees of
    relatedness of the negative to the query: pushing down by the negative's own region score keeps
    more wanted photos and fewer unwanted ones than subtracting the negative from the query (rclip).
    The chosen rule is core/search/answer.py's push_down."""
    report = {}
    for related in (0.0, 0.3, 0.6):
        totals = {"plain": [0, 0], "subtract": [0, 0], "push_down": [0, 0]}
        for seed in range(5):
            photos, kind, q, n = _negative_test_set(seed, related)
            plain = _rank(photos, q)
            sub = _rank(photos, _unit(q - n))
            hits = []
            for i in plain:
                s = float((photos[i] @ q).max())
                box = Box(0, 0, 1, 1)
                hits.append(PhotoHit(str(i), s, box, "r", i, 1, 1, regions=[MatchedRegion("picture", box, s, "r")]))
            neg_best = {i: float((p @ n).max()) for i, p in enumerate(photos)}
            pushed = [h.photo_id for h in push_down(hits, neg_best, None)]
            for name, order in (("plain", plain), ("subtract", sub), ("push_down", pushed)):
                w, u = _kept(order, kind)
                totals[name][0] += w
                totals[name][1] += u
        report[related] = totals
        assert totals["push_down"][0] > totals["subtract"][0], (related, totals)
        assert totals["push_down"][1] < totals["subtract"][1], (related, totals)
        assert totals["subtract"][1] < totals["plain"][1]  # subtracting does push some down
    print("top-12 (wanted kept of 60, unwanted kept of 60) by relatedness:", report)


def test_not_this_with_calibration_uses_the_models_probability():
    box = Box(0, 0, 1, 1)
    hits = [PhotoHit(str(i), 0.3, box, "r", i, 1, 1, regions=[MatchedRegion("picture", box, 0.3, "r")]) for i in range(3)]
    cal = (10.0, -2.5)  # probability 0.5 at cosine 0.25
    order = [h.photo_id for h in push_down(hits, {0: 0.30, 1: 0.10, 2: 0.20}, cal)]
    assert order == [1, 2, 0]


# -- the command line ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_library(tmp_path_factory, tiny_clip):
    from conftest import no_text_reading

    from sorce_desktop.cli import main

    root = tmp_path_factory.mktemp("cli-when") / "photos"
    write_photo(root / "stop-sign.jpg", (230, 30, 30), taken="2023:07:14 10:30:00", offset="+01:00", gps=LISBON)
    write_photo(root / "trips" / "eiffel.jpg", (90, 90, 200), taken="2019:12:31 23:30:00", gps=PARIS)
    write_photo(root / "garden.jpg", (60, 160, 60), taken="2021:06:01 08:00:00")
    data = no_text_reading(tmp_path_factory.mktemp("cli-when-data"))
    assert main(["index", str(root), "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", data]) == 0
    return root, data


def run_cli(capsys, *args):
    from sorce_desktop.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_search_after_json_has_when_where_and_what_matched(cli_library, capsys):
    import json

    root, data = cli_library
    code, out, err = run_cli(capsys, "search", "stop", "--after", "2020", "--json", "--data-dir", data)
    assert code == 0, err
    hits = json.loads(out)
    assert sorted(h["path"].rsplit("/", 1)[-1] for h in hits) == ["garden.jpg", "stop-sign.jpg"]
    stop = next(h for h in hits if h["path"].endswith("stop-sign.jpg"))
    assert stop["taken"] == "2023-07-14T10:30:00+01:00" and stop["taken_source"] == "exif"
    assert stop["place"] == "Lisbon, Portugal"
    assert stop["matched"] == ["picture", "file_name"]  # its picture region, and its file name
    assert {"path", "score", "box", "region", "width", "height", "source", "regions"} <= set(stop)
    garden = next(h for h in hits if h["path"].endswith("garden.jpg"))
    assert "place" not in garden and garden["matched"] == ["picture"]
    code, out, err = run_cli(capsys, "search", "a photo", "--sort", "date", "--json", "--data-dir", data)
    assert [h["taken"][:4] for h in json.loads(out)] == ["2023", "2021", "2019"]
    code, out, err = run_cli(capsys, "search", "a photo in:trips", "--json", "--data-dir", data)
    assert [h["path"].rsplit("/", 1)[-1] for h in json.loads(out)] == ["eiffel.jpg"]
    code, out, err = run_cli(capsys, "search", "a photo", "--before", "2020-01", "--data-dir", data)
    assert code == 0 and "eiffel.jpg" in out and "taken 2019-12-31T23:30:00 (exif)  Paris, " in out


@pytest.mark.parametrize(
    "args, said",
    [
        (["red after:2023-13"], "after:2023-13"),
        (["red", "--after", "2023-13"], "--after 2023-13"),
        (["red place:atlantisxyz"], "place:atlantisxyz: not a place the gazetteer knows"),
        (["red in:nowhere"], "in:nowhere: no watched folder or subfolder"),
        (["red", "--after", "2020", "--before", "2019"], "that period ends before it starts"),
        (["red 2019 after:2020"], "after 2020, 2019: these periods have no day in common"),
    ],
)
def test_cli_bad_tokens_exit_2_with_one_line(cli_library, capsys, args, said):
    _root, data = cli_library
    code, out, err = run_cli(capsys, "search", *args, "--data-dir", data)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in err


def test_cli_a_word_with_one_dash_is_not_this_rather_than_an_option(cli_library, capsys):
    import json

    _root, data = cli_library
    code, out, err = run_cli(capsys, "search", "a photo", "-stop", "--json", "--data-dir", data)
    assert code == 0, err
    assert sorted(h["path"].rsplit("/", 1)[-1] for h in json.loads(out)) == ["eiffel.jpg", "garden.jpg"]
    code, out, err = run_cli(capsys, "search", "-stop", "in:trips", "--json", "--data-dir", data)
    assert code == 0 and [h["path"].rsplit("/", 1)[-1] for h in json.loads(out)] == ["eiffel.jpg"]
    code, out, err = run_cli(capsys, "search", "-stop", "--data-dir", data)
    assert code == 1 and "Only what to leave out is given (not: stop)" in err
    # an option misspelt is still refused as one, whatever the dashes
    for bad in (["--tpo", "3"], ["-top", "3"]):
        with pytest.raises(SystemExit) as exc:
            run_cli(capsys, "search", "a photo", *bad, "--data-dir", data)
        assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_cli_a_period_or_a_folder_alone_lists_its_photos_newest_first(cli_library, capsys):
    import json

    root, data = cli_library
    for args in (["--after", "2020"], ["", "--after", "2020"]):
        code, out, err = run_cli(capsys, "search", *args, "--json", "--data-dir", data)
        assert code == 0, err
        assert [h["path"].rsplit("/", 1)[-1] for h in json.loads(out)] == ["stop-sign.jpg", "garden.jpg"]
        assert {h["source"] for h in json.loads(out)} == {"filter"}
    code, out, err = run_cli(capsys, "search", "--folder", str(root / "trips"), "--json", "--data-dir", data)
    assert code == 0 and [h["path"].rsplit("/", 1)[-1] for h in json.loads(out)] == ["eiffel.jpg"]
    code, out, err = run_cli(capsys, "search", "--before", "2020-13", "--data-dir", data)
    assert code == 2 and "--before 2020-13" in err
    code, out, err = run_cli(capsys, "search", "--data-dir", data)
    assert code == 1 and "--after 2023" in err  # nothing at all: what can be given is said
    code, out, err = run_cli(capsys, "search", "--after", "2020", "--data-dir", str(root.parent / "empty-data"))
    assert code == 1 and "Nothing is indexed yet" in err


def test_cli_says_when_the_filters_keep_no_photo(cli_library, capsys):
    _root, data = cli_library
    code, out, err = run_cli(capsys, "search", "a photo 2018", "--data-dir", data)
    assert code == 0 and out.strip() == "nothing found"
    assert "note: None of your photos fits “2018”." in err


def test_cli_status_counts_photos_with_a_place(cli_library, capsys):
    import json

    _root, data = cli_library
    code, out, err = run_cli(capsys, "status", "--json", "--data-dir", data)
    assert code == 0 and json.loads(out)["with_place"] == 2
    code, out, err = run_cli(capsys, "status", "--data-dir", data)
    assert "photos with a place (from their GPS position): 2" in out
