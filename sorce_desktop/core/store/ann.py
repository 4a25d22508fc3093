"""Vector index kinds and the rule that picks one by library size.

The catalog keeps every region vector at full precision, so the FAISS index is a cache that can be
rebuilt in any form. Small libraries get the exact index (``flat``: every vector, exact inner
products). Past ``EXACT_MAX_VECTORS`` region vectors an exact search reads the whole matrix for
every query (memory bandwidth, not arithmetic, bounds it: ~3 KB per 768-d vector), and the index
holds 30 KB per photo with 10 regions; there the store switches to an inverted file with product
quantisation (``ivfpq``), trained on the catalog's own vectors: 4-bit codes of 2 dimensions each, scanned
with FAISS's "fast scan" (the codes' lookup tables held in SIMD registers), 192 bytes a 768-d vector. An
index written with one-byte codes of 4 dimensions (before 2026-12-07) is still read and searched; the
store rebuilds it as fast scan at its next save (``spec_for``). The thresholds and parameters come
from ``sorce-desktop bench query`` (figures in docs/benchmarks.md).

Both kinds support ``add_with_ids`` and ``remove_ids`` with the catalog's region ids, so removals
and repairs work the same way. HNSW is not offered: FAISS cannot remove vectors from it.

A compressed index never ranks on its own: it proposes ``rescore_candidates`` regions per query and
those are re-scored exactly from the catalog's float32 vectors (``rescore``). Product quantisation
alone reached Recall@10 0.69 against exact search (bench query, 10k photos); its candidates hold the
true top regions, its scores do not order them well enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLAT, IVFPQ = "flat", "ivfpq"

#: Up to this many region vectors the exact index stays (bench query: the exact scan costs ~0.19 ms
#: per 1,000 vectors on a 2-core laptop CPU, so ~25 ms here, half the 50 ms query budget; ~10k photos).
EXACT_MAX_VECTORS = 131_072
#: Back to exact only below this share of the threshold, so a library near it does not flip-flop.
EXACT_RETURN_SHARE = 0.5
#: Product-quantised codes: 768-d -> 384 codes of 2 dimensions, 4 bits each (192 bytes a vector), scanned
#: with FAISS's fast scan. bench query at 100k photos (AVX2, 2026-12-07): the same Recall@10 (0.970) as 192
#: one-byte codes of 4 dimensions, the index search 7.97 -> 2.26 ms p50, search with re-scoring 15.4 -> 8.5 ms.
PQ_DIMS_PER_CODE = 2
PQ_BITS = 4
#: Share of the inverted lists probed per query (``nprobe_for``). With re-scoring, recall is bounded
#: by the lists probed, not by the quantiser (bench query at 100k photos: 1/64 of 2048 lists ->
#: Recall@10 0.79, 1/32 -> 0.90, 1/16 -> 0.97, 1/8 -> 0.99; more candidates changed nothing).
PROBE_SHARE = 16
#: ... but never fewer lists than this.
NPROBE = 32
#: HNSW coarse quantiser: candidates kept while assigning a vector to its list when adding (a probe
#: at search time keeps ``2 * nprobe``); 64 finds the nearest centroid for nearly every vector.
HNSW_EF_ADD = 64
#: Above this many lists the coarse quantiser is an HNSW graph (assigning 10M vectors to 8k
#: centroids exhaustively costs minutes on a laptop).
HNSW_QUANTIZER_ABOVE = 1024
#: Rebuild (retrain) when the library has grown this many times past what the lists were made for.
RETRAIN_GROWTH = 8.0
#: A compressed index only proposes candidates: this many per query (or ``RESCORE_FACTOR`` times the
#: regions asked for, if more) are re-scored exactly with their float32 vectors from the catalog, so
#: the ranking and the scores a user sees are exact inner products. bench query: at 100k photos 640
#: candidates gave the same Recall@10 as 1,024-4,096 (0.974) at 48 ms p50 against 53 ms; at 1M photos
#: 1,280 gave 0.975 (fewer were not measured there, so large libraries keep 1,280).
RESCORE_MIN = 512
RESCORE_MIN_LARGE = 1280
#: from this many vectors on, RESCORE_MIN_LARGE
RESCORE_LARGE_VECTORS = 4_000_000
RESCORE_FACTOR = 2


@dataclass(frozen=True)
class IndexSpec:
    kind: str
    dim: int
    nlist: int = 0  # inverted lists (ivf kinds)
    m: int = 0  # product-quantiser codes per vector (ivfpq)
    nprobe: int = NPROBE
    trained_for: int = 0  # vector count the lists were sized for
    nbits: int = PQ_BITS  # bits per PQ code (ivfpq): 4 = fast scan, 8 = the one-byte codes written before

    @property
    def compressed(self) -> bool:
        return self.kind != FLAT

    @property
    def fast_scan(self) -> bool:
        return self.kind == IVFPQ and self.nbits == 4

    @property
    def code_bytes(self) -> int:
        """Bytes of PQ codes per vector (ivfpq)."""
        return (self.m * self.nbits + 7) // 8

    def describe(self) -> str:
        if self.kind == FLAT:
            return "flat (exact)"
        if self.kind == IVFPQ and self.fast_scan:
            return f"IVF{self.nlist},PQ{self.m}x4fs (nprobe {self.nprobe})"
        if self.kind == IVFPQ:
            return f"IVF{self.nlist},PQ{self.m} (nprobe {self.nprobe})"
        return f"IVF{self.nlist},{self.kind.removeprefix('ivf').upper()} (nprobe {self.nprobe})"


def nlist_for(n_vectors: int) -> int:
    """About 2 sqrt(n) lists, a power of two, 16 to 4096 (training cost grows with the square of the
    lists: 4096 keeps the k-means of a million-photo library to minutes on a laptop)."""
    n = max(1, n_vectors)
    return int(min(4096, max(16, 2 ** round(math.log2(2 * math.sqrt(n))))))


def nprobe_for(nlist: int) -> int:
    """Lists probed per query: a fixed share of them (``PROBE_SHARE``), at least ``NPROBE``."""
    return int(min(nlist, max(NPROBE, nlist // PROBE_SHARE)))


def pq_m_for(dim: int, dims_per_code: int = PQ_DIMS_PER_CODE) -> int:
    """The number of PQ codes: dim / dims_per_code, rounded to a divisor of dim."""
    target = max(1, dim // dims_per_code)
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1


def spec_for(
    n_vectors: int, dim: int, current: IndexSpec | None = None, exact_max: int | None = None
) -> IndexSpec:
    """The index a library of ``n_vectors`` region vectors should have.

    With ``current`` the rule has hysteresis: a compressed index stays until the library shrinks
    well below the threshold, and keeps its lists until it has grown ``RETRAIN_GROWTH`` times. A
    compressed index of the one-byte codes written before fast scan is rebuilt as fast scan."""
    limit = EXACT_MAX_VECTORS if exact_max is None else exact_max
    if current is not None and current.compressed:
        if n_vectors < limit * EXACT_RETURN_SHARE:
            return IndexSpec(FLAT, dim)
        if current.trained_for and n_vectors <= current.trained_for * RETRAIN_GROWTH and current.nbits != 8:
            return current
    elif n_vectors <= limit:
        return IndexSpec(FLAT, dim)
    nlist = nlist_for(n_vectors)
    return IndexSpec(IVFPQ, dim, nlist=nlist, m=pq_m_for(dim), nprobe=nprobe_for(nlist), trained_for=n_vectors)


def rescore_candidates(k: int, n_vectors: int, minimum: int | None = None) -> int:
    """How many candidates a compressed index proposes for a search of ``k`` regions."""
    if minimum is None:
        minimum = RESCORE_MIN_LARGE if n_vectors >= RESCORE_LARGE_VECTORS else RESCORE_MIN
    return max(1, min(n_vectors, max(minimum, RESCORE_FACTOR * k)))


def rescore(queries: np.ndarray, cand_ids: np.ndarray, fetch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` among each query's candidates (``cand_ids``, -1 = none), scored with the float32
    vectors ``fetch(ids) -> (ids_found, vectors)`` returns. Candidates ``fetch`` no longer finds (a
    region removed meanwhile) are dropped. Returns FAISS-shaped ``(scores, ids)``, padded with -inf/-1."""
    queries = np.asarray(queries, dtype=np.float32).reshape(len(cand_ids), -1)
    wanted = np.unique(cand_ids[cand_ids >= 0])
    found, vectors = fetch(wanted)
    row_of = {int(i): j for j, i in enumerate(np.asarray(found).tolist())}
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for qi, (q, cands) in enumerate(zip(queries, cand_ids)):
        keep = [(int(c), row_of[int(c)]) for c in cands if c >= 0 and int(c) in row_of]
        if not keep:
            continue
        ids = np.fromiter((c for c, _ in keep), np.int64, len(keep))
        rows = np.fromiter((r for _, r in keep), np.int64, len(keep))
        # einsum's own loop, not BLAS: a multithreaded BLAS left spinning after this tiny product
        # steals the cores from the next query's text embedding (bench query saw 30 -> 110 ms).
        scores = np.einsum("ij,j->i", vectors[rows], q)
        order = np.argsort(-scores, kind="stable")[:k]
        out_s[qi, : len(order)] = scores[order]
        out_i[qi, : len(order)] = ids[order]
    return out_s, out_i


def train_size(spec: IndexSpec) -> int:
    """Vectors to train on: enough for the coarse k-means and the 256-centroid PQ codebooks."""
    if not spec.compressed:
        return 0
    return max(40 * spec.nlist, 256 * 40)


def build(spec: IndexSpec, train: np.ndarray | None = None):
    """An empty FAISS index of ``spec``; compressed kinds are trained on ``train`` (unit vectors)."""
    import faiss

    d = spec.dim
    if spec.kind == FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    if spec.kind != IVFPQ:
        raise ValueError(f"unknown vector index kind {spec.kind!r}")
    quantizer, nlist = coarse_quantizer(spec, train)
    if spec.fast_scan and len(train) >= 16 * 8:
        index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, spec.m, 4, faiss.METRIC_INNER_PRODUCT)
    else:  # one-byte codes, or fewer bits where the sample is too small to train 16 centroids a code
        nbits = min(spec.nbits, 8 if len(train) >= 256 * 8 else max(1, int(math.log2(max(2, len(train) // 8)))))
        index = faiss.IndexIVFPQ(quantizer, d, nlist, spec.m, nbits, faiss.METRIC_INNER_PRODUCT)
    return train_ivf(index, spec, train)


def coarse_quantizer(spec: IndexSpec, train: np.ndarray | None):
    """The coarse quantiser of an inverted-list index of ``spec`` and the number of lists ``train``
    supports (at least 8 training vectors a list)."""
    import faiss

    if train is None or len(train) == 0:
        raise ValueError(f"a {spec.kind} index needs training vectors")
    if spec.nlist > HNSW_QUANTIZER_ABOVE:
        quantizer = faiss.IndexHNSWFlat(spec.dim, 32, faiss.METRIC_INNER_PRODUCT)
        quantizer.hnsw.efSearch = HNSW_EF_ADD  # adds; a search passes its own (see search)
    else:
        quantizer = faiss.IndexFlatIP(spec.dim)
    return quantizer, max(1, min(spec.nlist, len(train) // 8))


def train_ivf(index, spec: IndexSpec, train: np.ndarray):
    """Train an inverted-list ``index`` on ``train`` (unit vectors) and set its probes; returns it."""
    import faiss

    # k-means assigns with an exact index even when the lists are found through HNSW at query time.
    index.clustering_index = faiss.IndexFlatIP(spec.dim)
    index.cp.niter = 10
    index.cp.seed = 1234
    if isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
        index.pq.cp.niter = 10  # 25 by default: 2.5x the training time for no measurable recall
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    index.clustering_index = None
    index.nprobe = min(spec.nprobe, index.nlist)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``, with an HNSW coarse quantiser asked for enough candidates to return
    ``nprobe`` lists (its own efSearch stays low, for fast adds)."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    ivf = ivf_of(index)
    if ivf is not None:
        # FAISS splits a search's work over its threads by query (mode 0): one query, as a user's search is,
        # then runs on one core. Mode 1 splits the probed lists instead (100k photos, 128 of 2,048 lists, 2
        # cores: 13 -> 7.5 ms a query); several queries at once keep mode 0. Same results either way.
        ivf.parallel_mode = 1 if len(q) == 1 else 0
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            params = faiss.SearchParametersIVF(
                nprobe=ivf.nprobe,
                quantizer_params=faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_ADD, 2 * ivf.nprobe)),
            )
            return index.search(q, k, params=params)
    return index.search(q, k)


def ivf_of(index):
    """The inverted-list index inside ``index``, or None for an exact one."""
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def spec_of(index, trained_for: int = 0) -> IndexSpec:
    """Recognise a loaded index."""
    import faiss

    ivf = ivf_of(index)
    if ivf is None:
        return IndexSpec(FLAT, index.d)
    ivf = faiss.downcast_index(ivf)
    if isinstance(ivf, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
        return IndexSpec(IVFPQ, index.d, ivf.nlist, ivf.pq.M, ivf.nprobe, trained_for, int(ivf.pq.nbits))
    raise ValueError(f"not a vector index this application writes ({type(ivf).__name__})")


def index_ids(index) -> np.ndarray:
    """Every id held by ``index`` (flat behind an id map, or inverted lists)."""
    import faiss

    ivf = ivf_of(index)
    if ivf is None:
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        n = invlists.list_size(lst)
        if n:
            ptr = invlists.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, n).astype(np.int64).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def index_bytes(index) -> int:
    """Bytes the index takes when written (what it also takes in memory, within a few percent)."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)
