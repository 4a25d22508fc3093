"""When and where: capture times from EXIF (else the file time, flagged), places from GPS through the
gazetteer the package ships, read with the header during indexing and backfilled without embedding."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from conftest import CountingEmbedder, catalog_rows
from PIL import Image
from whenwhere_support import LISBON, PARIS, write_photo

from sorce_desktop.core.indexing import indexer as indexer_module
from sorce_desktop.core.photos.whenwhere import EXIF, FILE, file_time, read_facts

MTIME = time.mktime((2021, 3, 4, 12, 0, 0, 0, 0, -1))


def facts(path):
    with Image.open(path) as img:
        return read_facts(img, os.stat(path).st_mtime_ns)


def test_exif_time_offset_and_place(tmp_path):
    f = facts(write_photo(tmp_path / "a.jpg", taken="2023:07:14 10:30:00", offset="+01:00", gps=LISBON))
    assert (f.taken, f.offset, f.source, f.iso) == (
        "2023-07-14T10:30:00",
        "+01:00",
        EXIF,
        "2023-07-14T10:30:00+01:00",
    )
    assert f.lat == pytest.approx(LISBON[0], abs=1e-4) and f.lon == pytest.approx(LISBON[1], abs=1e-4)
    assert (f.place.city, f.place.country) == ("Lisbon", "Portugal")
    assert f.place.describe() == "Lisbon, Portugal"
    assert (
        facts(write_photo(tmp_path / "p.jpg", taken="2022:05:01 09:00:00", gps=PARIS)).place.city == "Paris"
    )


@pytest.mark.parametrize(
    "bad",
    ["0000:00:00 00:00:00", "1900:01:01 00:00:00", "2999:01:01 00:00:00", "2023:13:01 10:00:00", "junk"],
)
def test_invalid_exif_dates_fall_back_to_the_file_time_recorded_as_such(tmp_path, bad):
    f = facts(write_photo(tmp_path / "a.jpg", taken=bad, mtime=MTIME))
    assert f.source == FILE
    assert (f.taken, f.offset) == file_time(int(MTIME * 1e9))
    assert f.taken.startswith("2021-03-04T12:00")


def test_no_exif_is_the_file_time_and_no_place(tmp_path):
    f = facts(write_photo(tmp_path / "a.jpg", mtime=MTIME))
    assert f.source == FILE and f.place is None and f.lat is None


def test_gps_far_from_any_place_keeps_coordinates_without_a_name(tmp_path):
    f = facts(
        write_photo(tmp_path / "sea.jpg", taken="2020:01:01 00:00:00", gps=(-40.0, -30.0))
    )  # South Atlantic
    assert f.lat == pytest.approx(-40.0) and f.place is None


def _library_photos(root):
    write_photo(root / "lisbon.jpg", (220, 60, 60), taken="2023:07:14 10:30:00", offset="+01:00", gps=LISBON)
    write_photo(root / "old.jpg", (60, 220, 60), taken="0000:00:00 00:00:00", mtime=MTIME)
    write_photo(root / "trips" / "paris.jpg", (60, 60, 220), taken="2019:12:31 23:30:00", gps=PARIS)
    return root


def test_indexing_reads_facts_with_the_header_in_one_open(tmp_path, indexed_library, monkeypatch):
    root = _library_photos(tmp_path / "photos")
    opened = []
    real = indexer_module.open_regular

    def counting(path):
        opened.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(indexer_module, "open_regular", counting)
    lib, report = indexed_library(root)
    assert report.embedded == 3
    # one open per photo: the facts come with the header of the read that embeds it, no backfill
    assert sorted(opened) == sorted(str(p) for p in root.rglob("*.jpg"))
    assert report.facts_read == 0
    rows = {
        os.path.basename(r[0].decode() if isinstance(r[0], bytes) else r[0]): r[1:]
        for r in catalog_rows(
            lib.store,
            "SELECT p.path, f.taken, f.taken_offset, f.taken_source, f.city, f.country FROM photo_facts f "
            "JOIN photos p ON p.id = f.photo_id",
        )
    }
    assert rows["lisbon.jpg"] == ("2023-07-14T10:30:00", "+01:00", "exif", "Lisbon", "Portugal")
    assert rows["old.jpg"][2] == "file" and rows["old.jpg"][0].startswith("2021-03-04")
    assert rows["paris.jpg"][:3] == ("2019-12-31T23:30:00", None, "exif") and rows["paris.jpg"][3] == "Paris"
    assert lib.store.count_placed() == 2


def test_photos_indexed_before_are_backfilled_without_embedding_again(
    tmp_path, indexed_library, clip_embedder
):
    from sorce_desktop.core.regions import get_layout

    root = _library_photos(tmp_path / "photos")
    lib, _ = indexed_library(root)
    # a catalog from before capture times were read: the table is there (migration), empty
    with lib.store.transaction() as db:
        db.execute("DELETE FROM photo_facts")
    assert len(lib.store.photos_without_facts()) == 3
    counting = CountingEmbedder(clip_embedder)
    report = lib.indexer(counting, get_layout("grid3")).run()
    assert counting.calls == 0 and report.embedded == 0
    assert report.facts_read == 3
    assert lib.store.photos_without_facts() == []
    assert lib.store.count_placed() == 2


def test_a_catalog_without_the_facts_table_gains_it_on_open(tmp_path, indexed_library):
    from sorce_desktop.core.store.catalog import Store

    root = _library_photos(tmp_path / "photos")
    lib, _ = indexed_library(root)
    data = lib.store.folder
    with lib.store.transaction() as db:
        db.execute("DROP TABLE photo_facts")
    lib.close()
    with Store(data) as store:  # the migration adds the table; the photos and vectors stay
        assert store.counts()["indexed"] == 3
        assert len(store.photos_without_facts()) == 3


def test_file_time_is_local_with_its_offset():
    taken, offset = file_time(int(MTIME * 1e9))
    local = dt.datetime.fromtimestamp(MTIME).astimezone()
    assert taken == local.strftime("%Y-%m-%dT%H:%M:%S") and offset[0] in "+-" and len(offset) == 6


def test_the_librarys_places_follow_what_is_recorded_and_forgotten(tmp_path, indexed_library):
    root = _library_photos(tmp_path / "photos")
    lib, _ = indexed_library(root)
    assert sorted(p[0] for p in lib.store.places()) == ["Lisbon", "Paris"]
    paris = lib.store.photo_by_path(str(root / "trips" / "paris.jpg"))
    lib.store.delete_photos([paris.id])
    assert [p[0] for p in lib.store.places()] == ["Lisbon"]
    with Image.open(root / "lisbon.jpg") as img:
        porto = read_facts(img, 0)
    porto.place = type(porto.place)("Porto", "Porto", "Portugal")
    lisbon = lib.store.photo_by_path(str(root / "lisbon.jpg"))
    lib.store.set_facts([(lisbon.id, porto)])
    assert [p[0] for p in lib.store.places()] == ["Porto"]


def test_a_reader_of_an_index_from_before_capture_times_says_so(tmp_path, indexed_library, clip_embedder):
    from sorce_desktop.core.search.answer import SearchService
    from sorce_desktop.core.store.catalog import Store

    root = _library_photos(tmp_path / "photos")
    lib, _ = indexed_library(root)
    data = lib.store.folder
    with lib.store.transaction() as db:
        db.execute("DROP TABLE photo_facts")
    lib.close()
    with Store(data, writer=False) as store:
        answer = SearchService(store, clip_embedder).answer("a photo after:2023", top=10)
        assert len(answer.problems) == 1 and "run index once" in answer.problems[0]
        assert len(answer.hits) == 3  # the rest of the query still runs
