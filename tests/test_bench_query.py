"""bench query: the synthetic vectors are random-access, and the re-scoring rows read the candidates'
vectors through the product's own fetch (a SQLite table like the catalog) and recover exact recall."""

from __future__ import annotations

import json

import numpy as np

from sorce_desktop.bench.query import SyntheticVectors
from sorce_desktop.cli import main


def test_synthetic_vectors_are_random_access_and_deterministic():
    sv = SyntheticVectors(64, 5, seed=3)
    chunk = sv.chunk(2, 40)  # photos 2*CHUNK .. 2*CHUNK+40
    first = 2 * sv.CHUNK * 5
    ids = np.array([first + 7, first + 199, first])
    np.testing.assert_allclose(sv.vectors_of(ids), chunk[[7, 199, 0]], atol=1e-6)  # BLAS blocking
    np.testing.assert_array_equal(SyntheticVectors(64, 5, seed=3).queries(4), sv.queries(4))
    assert not np.allclose(SyntheticVectors(64, 5, seed=4).queries(4), sv.queries(4))
    np.testing.assert_allclose(np.linalg.norm(chunk, axis=1), 1.0, atol=1e-5)
    # structure: a photo's regions are closer to each other than to another photo's
    same = chunk[0:5] @ chunk[0:5].T
    other = chunk[0:5] @ chunk[5:10].T
    assert same[np.triu_indices(5, 1)].mean() > other.mean() + 0.1


def _run(capsys, *extra) -> dict:
    rc = main(
        ["bench", "query", "--regions", "5", "--dim", "64", "--kinds", "flat,ivfpq", "--pq-dims", "16",
         "--nprobe", "store", "--queries", "4", "--recall-queries", "30", "--no-text", "--json", *extra]
    )
    assert rc == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_rescoring_reads_the_catalog_layout_and_recovers_recall(capsys, tmp_path):
    out = _run(capsys, "--sizes", "1500", "--rescore", "0,1000", "--work-dir", str(tmp_path))
    rows = {(r["kind"], r.get("rescore", 0)): r for r in out["results"]}
    assert rows[("flat", 0)]["recall_at_10"] == 1.0
    plain, rescored = rows[("ivfpq", 0)], rows[("ivfpq", 1000)]
    assert rescored["rescore_reads"] == "sqlite"
    assert "rescore_reads" not in plain
    # 16 dims per code is a coarse quantiser: its own ranking loses photos, exact re-scoring finds them
    assert plain["recall_at_10"] < 0.95
    assert rescored["recall_at_10"] >= 0.95
    assert rescored["recall_at_10"] > plain["recall_at_10"]
    assert list(tmp_path.iterdir()) == []  # the table is removed afterwards


def test_sizes_past_the_table_limit_time_reads_on_the_largest_table(capsys, tmp_path):
    # 1500 photos x 5 x (256 + 64) B = 2.4 MB fits 0.003 GB; 4000 photos does not
    out = _run(capsys, "--sizes", "1500,4000", "--rescore", "600", "--fetch-db-max-gb", "0.003",
               "--kinds", "ivfpq", "--work-dir", str(tmp_path))
    reads = [r["rescore_reads"] for r in out["results"]]
    assert reads == ["sqlite", "sqlite proxy (7500 rows)"]
    assert all(r["recall_at_10"] >= 0.8 for r in out["results"])  # exact vectors from the generator


def test_catalog_vectors_are_every_visual_region_grouped_by_photo(tmp_path, photo_dir, indexed_library):
    """--catalog reads an indexed library's region vectors through the store's public reads."""
    from sorce_desktop.bench.query import CatalogVectors

    lib, report = indexed_library(photo_dir, layout="grid2")
    with lib:
        want = {p.id: lib.store.region_vectors_by_ids([r.id for r in lib.store.regions_of(p.id)])[1]
                for p in lib.store.photos_under()}  # fmt: skip
    cat = CatalogVectors(str(tmp_path / "data"))
    assert cat.n_photos == len(want) == 12 and cat.regions == 5.0 and cat.dim == cat.vectors.shape[1] > 0
    np.testing.assert_array_equal(cat.vectors, np.concatenate([want[k] for k in sorted(want)]))
    assert list(cat.photo_of) == [i for i in range(12) for _ in range(5)]


def test_a_period_filter_is_timed_with_and_without_the_words_embedding(capsys, tmp_path):
    """One year of ten: the filtered query's time, and the same for words just asked (the window answering
    a changed filter without embedding them again), which leaves the text embedding out."""
    out = _run(capsys, "--sizes", "1500", "--rescore", "600", "--kinds", "ivfpq", "--filter-years", "10",
               "--work-dir", str(tmp_path))  # fmt: skip
    row = out["results"][0]
    assert row["year_filter_photos"] == 150
    assert 0 < row["year_same_words_p50_ms"] <= row["year_p50_ms"]
    assert row["year_period_p50_ms"] <= row["year_same_words_p50_ms"]
