"""The store picks the vector index kind by library size (core/store/ann.py) and keeps it consistent with
the catalog through adds, removals, reopening and rebuilding. Thresholds are lowered so that small
random libraries cross them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import catalog_rows

from sorce_desktop.core.models.base import RegionEmbedding
from sorce_desktop.core.regions import Box
from sorce_desktop.core.search.answer import SearchService
from sorce_desktop.core.store import ann
from sorce_desktop.core.store.catalog import VECTORS_NAME, IndexedPhoto, ModelBinding, Store

DIM = 32
REGIONS = 10


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(ann, "EXACT_MAX_VECTORS", 600)


def _photos(rng, start: int, n: int) -> list[IndexedPhoto]:
    out = []
    for i in range(start, start + n):
        centre = rng.standard_normal(DIM)
        regions = []
        for r in range(REGIONS):
            v = centre + 0.7 * rng.standard_normal(DIM)
            regions.append(RegionEmbedding(f"r{r}", Box(r, 0, r + 10, 10), (v / np.linalg.norm(v)).astype(np.float32)))
        out.append(IndexedPhoto(f"/photos/p{i:04d}.jpg", "/photos", 1, 1, f"h{i}", 100, 100, regions, "fp32"))
    return out


def _catalog_ids(store: Store) -> set[int]:
    return {r[0] for r in catalog_rows(store, "SELECT id FROM regions WHERE source='visual' AND vector IS NOT NULL")}


def _open(folder) -> Store:
    store = Store(folder)
    store.bind_model(ModelBinding("test-model", "test-model@1", "grid3", DIM))
    return store


def test_spec_rule_has_hysteresis():
    flat = ann.spec_for(1000, 768, exact_max=5000)
    assert flat.kind == ann.FLAT
    big = ann.spec_for(20_000, 768, exact_max=5000)
    # 192 bytes of codes a 768-d vector: 384 codes of 4 bits, searched with FAISS's fast scan
    assert big.kind == ann.IVFPQ and big.code_bytes == 192 and big.fast_scan and big.trained_for == 20_000
    # stays compressed between half the threshold and the threshold, and keeps its lists while it grows
    assert ann.spec_for(4000, 768, big, exact_max=5000) == big
    assert ann.spec_for(100_000, 768, big, exact_max=5000) == big
    assert ann.spec_for(2000, 768, big, exact_max=5000).kind == ann.FLAT
    retrained = ann.spec_for(20_000 * 9, 768, big, exact_max=5000)
    assert retrained.kind == ann.IVFPQ and retrained.trained_for == 180_000


def test_store_switches_kind_and_stays_consistent(tmp_path, small_threshold):
    rng = np.random.default_rng(0)
    store = _open(tmp_path)
    store.commit_photos(_photos(rng, 0, 40))  # 400 vectors: exact
    store.save()
    assert store.vectors.spec.kind == ann.FLAT

    photos = _photos(rng, 40, 80)  # 1,200 vectors: past the threshold
    store.commit_photos(photos)
    store.save()
    assert store.vectors.spec.kind == ann.IVFPQ
    assert set(store.vectors.ids().tolist()) == _catalog_ids(store)

    # A region's own vector finds its photo through the compressed index.
    service = SearchService(store, embedder=None)
    found = 0
    for p in photos[:20]:
        hits = service.search_vector(p.regions[3].vector, top=5)
        found += any(h.path == p.path for h in hits)
    assert found >= 18

    # Removal works on the compressed index: removed regions are never returned again.
    gone = [store.photo_by_path(p.path).id for p in photos[:30]]
    store.delete_photos(gone)
    ids_left = set(store.vectors.ids().tolist())
    assert ids_left == _catalog_ids(store)
    for p in photos[:5]:
        assert all(h.photo_id not in gone for h in service.search_vector(p.regions[0].vector, top=20))
    store.close()

    # Reopened: the saved compressed index is loaded as it is, and matches the catalog.
    store = _open(tmp_path)
    assert store.vectors.spec.kind == ann.IVFPQ
    assert set(store.vectors.ids().tolist()) == _catalog_ids(store)
    store.close()

    # Index file lost: rebuilt from the catalog straight into the compressed kind.
    (tmp_path / VECTORS_NAME).unlink()
    store = _open(tmp_path)
    assert store.notices and "rebuilt" in store.notices[0]
    assert store.vectors.spec.kind == ann.IVFPQ
    assert set(store.vectors.ids().tolist()) == _catalog_ids(store)

    # The library shrinks well below the threshold: back to the exact index.
    rows = store.photos_under("/photos")
    store.delete_photos([r.id for r in rows[: len(rows) - 25]])  # 250 vectors left (< 600 x 0.5)
    store.save()
    assert store.vectors.spec.kind == ann.FLAT
    assert set(store.vectors.ids().tolist()) == _catalog_ids(store)
    store.close()


def test_reindexing_a_photo_replaces_its_vectors_in_the_compressed_index(tmp_path, small_threshold):
    rng = np.random.default_rng(1)
    store = _open(tmp_path)
    photos = _photos(rng, 0, 80)
    store.commit_photos(photos)
    store.save()
    assert store.vectors.spec.kind == ann.IVFPQ
    before = set(store.vectors.ids().tolist())
    again = _photos(np.random.default_rng(2), 0, 3)  # same paths, new content
    store.commit_photos(again)
    after = set(store.vectors.ids().tolist())
    assert after == _catalog_ids(store)
    assert len(before - after) == 3 * REGIONS and len(after - before) == 3 * REGIONS
    store.close()


def test_compressed_index_results_are_rescored_exactly(tmp_path, small_threshold, monkeypatch):
    """Past the threshold the ranking and the scores are exact inner products with the catalog's
    float32 vectors: the compressed index only proposes candidates."""
    monkeypatch.setattr(ann, "RESCORE_MIN", 200)
    rng = np.random.default_rng(3)
    store = _open(tmp_path)
    photos = _photos(rng, 0, 120)  # 1,200 vectors
    store.commit_photos(photos)
    store.save()
    assert store.vectors.spec.kind == ann.IVFPQ
    ids, vecs = store.region_vectors_by_ids(sorted(_catalog_ids(store)))
    assert len(ids) == 1200
    queries = [
        p.regions[r % REGIONS].vector + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        for p, r in zip(photos[::6], range(20))
    ]
    exact_top, agree = 0, 0
    for q in queries:
        q = (q / np.linalg.norm(q)).astype(np.float32)
        scores, got = store.search_vectors(q[None, :], 10)
        assert got.shape[1] >= 10 and (got[0] >= 0).sum() >= 10
        scores, got = scores[:, : (got[0] >= 0).sum()], got[:, : (got[0] >= 0).sum()]
        truth = ids[np.argsort(-(vecs @ q))[:10]]
        # every returned score is the exact inner product of the returned region's stored vector
        rows = {int(i): j for j, i in enumerate(ids)}
        np.testing.assert_allclose(scores[0], vecs[[rows[int(i)] for i in got[0]]] @ q, rtol=0, atol=1e-5)
        assert list(scores[0]) == sorted(scores[0], reverse=True)
        exact_top += int(got[0][0] == truth[0])
        agree += len(set(got[0][:10].tolist()) & set(truth.tolist()))
    assert exact_top == len(queries)
    assert agree >= 0.95 * 10 * len(queries)

    # A region removed from the catalog between the index search and the fetch is never returned.
    found, _ = store.region_vectors_by_ids([int(ids[0]), 10**9])
    assert found.tolist() == [int(ids[0])]
    store.close()


def test_one_query_searches_the_probed_lists_on_every_core_with_the_same_answer():
    """A user's search is one query: FAISS then splits the probed lists over its threads (parallel_mode 1)
    instead of the queries (one core). Several queries at once keep the split by query. The answer is the
    same either way."""
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((4000, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    spec = ann.IndexSpec(ann.IVFPQ, DIM, nlist=32, m=8, nprobe=8, trained_for=len(vecs))
    index = ann.build(spec, vecs)
    index.add_with_ids(vecs, np.arange(len(vecs), dtype=np.int64))
    queries = vecs[:5] + 0.1 * rng.standard_normal((5, DIM)).astype(np.float32)
    ivf = ann.ivf_of(index)
    batch_scores, batch_ids = ann.search(index, queries, 20)
    assert ivf.parallel_mode == 0
    for i, q in enumerate(queries):
        scores, ids = ann.search(index, q[None, :], 20)
        assert ivf.parallel_mode == 1
        assert ids[0].tolist() == batch_ids[i].tolist()
        np.testing.assert_allclose(scores[0], batch_scores[i], rtol=1e-5, atol=1e-6)


def test_an_index_of_one_byte_codes_is_rebuilt_as_fast_scan(tmp_path, small_threshold, monkeypatch):
    """A library whose vector file was written with one-byte codes (before fast scan) is still searched, and
    becomes fast scan at its next save, holding every catalog vector."""
    rng = np.random.default_rng(5)
    old = ann.spec_for
    # the rule as it was: one-byte codes of 4 dimensions
    monkeypatch.setattr(
        ann, "spec_for",
        lambda n, dim, current=None, exact_max=None: dataclasses.replace(
            old(n, dim, current, exact_max), m=ann.pq_m_for(dim, 4), nbits=8
        ) if old(n, dim, None, exact_max).compressed else old(n, dim, current, exact_max),
    )  # fmt: skip
    store = _open(tmp_path)
    photos = _photos(rng, 0, 220)  # enough vectors to train one-byte codes
    store.commit_photos(photos)
    store.save()
    assert store.vectors.spec.kind == ann.IVFPQ and store.vectors.spec.nbits == 8
    assert not store.vectors.spec.fast_scan
    store.close()
    monkeypatch.setattr(ann, "spec_for", old)

    store = _open(tmp_path)
    assert store.vectors.spec.nbits == 8  # read as written
    service = SearchService(store, embedder=None)
    assert any(h.path == photos[0].path for h in service.search_vector(photos[0].regions[3].vector, top=5))
    store.commit_photos(_photos(rng, 220, 221))
    store.save()
    assert store.vectors.spec.fast_scan and store.vectors.spec.code_bytes == DIM // 4
    assert set(store.vectors.ids().tolist()) == _catalog_ids(store)
    found = sum(
        any(h.path == p.path for h in service.search_vector(p.regions[3].vector, top=5)) for p in photos[:20]
    )
    assert found >= 18
    store.close()


def test_fast_scan_behind_an_hnsw_coarse_quantiser_finds_the_vectors(monkeypatch):
    """Large libraries find their lists through an HNSW graph; the fast-scan index takes the probe's
    parameters from the search as the one-byte kind did."""
    monkeypatch.setattr(ann, "HNSW_QUANTIZER_ABOVE", 16)
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((6000, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    spec = ann.IndexSpec(ann.IVFPQ, DIM, nlist=64, m=DIM // 2, nprobe=16, trained_for=len(vecs))
    index = ann.build(spec, vecs)
    import faiss

    assert isinstance(faiss.downcast_index(ann.ivf_of(index).quantizer), faiss.IndexHNSW)
    assert ann.spec_of(index).fast_scan
    index.add_with_ids(vecs, np.arange(len(vecs), dtype=np.int64))
    _scores, cand = ann.search(index, vecs[:50], 32)
    assert np.mean([i in c for i, c in enumerate(cand.tolist())]) >= 0.9
