"""Query latency and memory at 10k-1M photos: exact vs compressed vector index (bench query).

Per library size (photos x the default layout's regions per photo, synthetic unit vectors), for each
index kind the store can use (``core/store/ann.py``): build it, then time what a search does in the
product: text embedding (the real-size random text tower of the default model) + vector search +
best region per photo (the first hit of each photo among the top regions, growing k until
``--top`` photos are found, as ``SearchService.search_vector`` does). Reported: p50/p95 of the
total and of each part, index bytes per photo, resident memory growth, and for compressed kinds
Recall@10 of photos against exact search.

The exact ground truth is computed by streaming the vectors chunk by chunk, so it is available
even where the exact index itself would not fit in memory (1M photos x 10 regions x 768 floats is
30 GB). Kinds whose index would exceed ``--max-gb`` are reported as skipped with their size.

Synthetic vectors: real embeddings are far from uniform on the sphere (uniform random vectors are
the worst case for quantisation, and no real model produces them). Each photo has a latent drawn
from a decaying spectrum in a random 128-d subspace, its regions are perturbations of it, plus a
shared mean direction and isotropic noise; queries are drawn from the same model. Recall on real
vectors can be checked with ``--catalog DATA_DIR`` (the vectors of an indexed library).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sorce_desktop.core.jsonout import print_json
from sorce_desktop.core.store import ann

#: 8-bit scalar codes in inverted lists: an index kind measured beside the store's, not chosen by it.
IVFSQ8 = "ivfsq8"


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="10000,100000,1000000", help="library sizes in photos, comma-separated")
    p.add_argument("--regions", type=int, default=None, help="regions per photo (default: the default layout's)")
    p.add_argument("--dim", type=int, default=768, help="vector size (768: SigLIP 2 base)")
    p.add_argument("--queries", type=int, default=100, help="queries timed per index")
    p.add_argument("--recall-queries", type=int, default=200, help="queries for Recall@10")
    p.add_argument("--top", type=int, default=20, help="photos per result page")
    p.add_argument(
        "--kinds",
        default="flat,ivfsq8,ivfpq",
        help="index kinds: flat (exact), ivfsq8, ivfpq (PQ codes of --pq-dims dimensions each)",
    )
    p.add_argument(
        "--pq-dims",
        default="store",
        help="ivfpq: 'store' = the store's codes (4-bit codes of 2 dimensions, fast scan: 192 B for 768-d); "
        "numbers = one-byte codes of that many dimensions each (4: 192 B for 768-d, the kind written before "
        "fast scan), comma-separated",
    )
    p.add_argument(
        "--nprobe",
        default="store",
        help="inverted lists probed per query, comma-separated; 'store' = what the store uses for that size",
    )
    p.add_argument("--max-gb", type=float, default=4.0, help="skip an index larger than this")
    p.add_argument(
        "--rescore",
        default="0,store",
        help="compressed kinds: candidates re-scored exactly per query (at least; 0 = the compressed "
        "index's own ranking; store = the store's rule for the size), comma-separated",
    )
    p.add_argument(
        "--fetch-db-max-gb",
        type=float,
        default=6.0,
        help="re-scoring reads the candidates' float32 vectors from a SQLite table built like the "
        "catalog's, for sizes whose table fits this; larger sizes time the same number of reads on the "
        "largest table built (0: no table, the generator's time is counted instead)",
    )
    p.add_argument("--work-dir", metavar="DIR", help="where the SQLite table is built (default: a temp dir)")
    p.add_argument("--model", default="siglip2-base-patch16-256", help="synthetic spec for the text tower")
    p.add_argument("--no-text", action="store_true", help="leave out the text embedding")
    p.add_argument("--catalog", metavar="DATA_DIR", help="use an indexed library's vectors instead")
    p.add_argument("--cache-dir", metavar="DIR", help="where real-size random models are cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--filter-years",
        type=int,
        default=10,
        help="photos' capture times spread over this many years; a query restricted to one of them (a "
        "period filter, e.g. after:2020 before:2021) is timed beside the plain one (0: not timed)",
    )


# -- synthetic vectors ------------------------------------------------------------------------------
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a counter -> 64 well-mixed bits (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class SyntheticVectors:
    """Deterministic structured unit vectors with random access: the vector of region ``id`` is a pure
    function of (seed, id), so a chunk is generated without the others, and a compressed index's
    candidates can be re-scored with their exact vectors at any library size (never all in memory).

    Counter-based: normals from hashed counters (Box-Muller), the isotropic noise as random signs (64
    per hash; in 768-d its projections are as Gaussian as Gaussian noise's)."""

    CHUNK = 5_000  # photos per chunk

    def __init__(self, dim: int, regions: int, seed: int = 0, rank: int = 128):
        rng = np.random.default_rng([seed, 1])
        rank = min(rank, dim)
        self.dim, self.regions, self.seed, self.rank = dim, regions, seed, rank
        self.basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # rank x dim
        self.scales = ((1.0 + np.arange(rank)) ** -0.5).astype(np.float32)
        self.scales /= np.linalg.norm(self.scales)
        mean = rng.standard_normal(dim).astype(np.float32)
        self.mean = mean / np.linalg.norm(mean)
        # Shares of a vector's energy: shared mean direction, structured part, isotropic noise.
        self.w_mean, self.w_struct, self.w_noise = 0.55, 0.75, 0.35

    def _salt(self, stream: int) -> np.uint64:
        return _mix64(np.array([self.seed * 1_000_003 + stream], np.uint64))[0]

    def _normals(self, stream: int, keys: np.ndarray, count: int) -> np.ndarray:
        half = -(-count // 2)  # Box-Muller: two normals per 64-bit hash
        ctr = keys.astype(np.uint64)[:, None] * np.uint64(half) + np.arange(half, dtype=np.uint64)[None, :]
        h = _mix64(ctr + self._salt(stream))
        u1 = ((h >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
        theta = (h & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2.0 * np.pi * 2.0**-24)
        r = np.sqrt(np.float32(-2.0) * np.log(u1))
        return np.concatenate([r * np.cos(theta), r * np.sin(theta)], axis=1)[:, :count]

    def _signs(self, stream: int, keys: np.ndarray) -> np.ndarray:
        words = -(-self.dim // 64)
        ctr = keys.astype(np.uint64)[:, None] * np.uint64(words) + np.arange(words, dtype=np.uint64)[None, :]
        bits = np.unpackbits(_mix64(ctr + self._salt(stream)).view(np.uint8), axis=1)[:, : self.dim]
        return bits.astype(np.float32) * 2.0 - 1.0

    def _latent(self, stream: int, keys: np.ndarray) -> np.ndarray:
        return self._normals(stream, keys, self.rank) * self.scales * math.sqrt(self.rank)

    def _finish(self, lat: np.ndarray, noise: np.ndarray) -> np.ndarray:
        v = (lat / math.sqrt(self.rank)) @ self.basis * self.w_struct
        v += self.mean * self.w_mean
        v += noise * (self.w_noise / math.sqrt(self.dim))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v

    def vectors_of(self, ids) -> np.ndarray:
        """The vectors of region ids (photo ``id // regions``), in the order given."""
        ids = np.asarray(ids, dtype=np.int64)
        lat = self._latent(1, ids // self.regions) * 0.8 + self._latent(2, ids) * 0.6
        return self._finish(lat, self._signs(3, ids))

    def fetch(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """``Store.region_vectors_by_ids``'s interface, for re-scoring without a catalog file."""
        ids = np.asarray(ids, dtype=np.int64)
        return ids, self.vectors_of(ids)

    def chunk(self, index: int, photos: int) -> np.ndarray:
        """Vectors of photos ``[index*CHUNK, index*CHUNK+photos)``: (photos*regions, dim), photo-major."""
        start = index * self.CHUNK * self.regions
        return self.vectors_of(np.arange(start, start + photos * self.regions))

    def chunks(self, n_photos: int):
        for i, start in enumerate(range(0, n_photos, self.CHUNK)):
            yield start, self.chunk(i, min(self.CHUNK, n_photos - start))

    def queries(self, n: int) -> np.ndarray:
        keys = np.arange(n, dtype=np.int64)
        return self._finish(self._latent(4, keys), self._signs(5, keys))


class CatalogVectors:
    """An indexed library's region vectors, grouped by photo (for recall on real embeddings)."""

    def __init__(self, data_dir: str):
        from sorce_desktop.core.library import Library

        pids, parts = [], []
        with Library(data_dir, writer=False) as lib:
            store = lib.store
            for photo in sorted(store.photos_under(), key=lambda p: p.id):
                _, vectors = store.region_vectors_by_ids([r.id for r in store.regions_of(photo.id)])
                pids += [photo.id] * len(vectors)
                parts.append(vectors)
        if not pids:
            raise ValueError(f"no vectors in the index at {data_dir}")
        self.vectors = np.concatenate(parts)
        _, self.photo_of = np.unique(np.array(pids), return_inverse=True)
        self.dim = self.vectors.shape[1]
        self.n_photos = int(self.photo_of.max()) + 1
        self.regions = len(pids) / self.n_photos

    def queries(self, n: int, seed: int = 0) -> np.ndarray:
        # A region vector plus noise: a query near, but not equal to, something in the library.
        rng = np.random.default_rng(seed)
        q = self.vectors[rng.integers(0, len(self.vectors), n)] + rng.standard_normal((n, self.dim)).astype(
            np.float32
        ) * (0.8 / math.sqrt(self.dim))
        return q / np.linalg.norm(q, axis=1, keepdims=True)


# -- helpers ----------------------------------------------------------------------------------------
def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux: report what resource knows (peak, not current)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def best_photos(
    search, q: np.ndarray, photo_of, top: int, n_vectors: int, allowed: set[int] | None = None
) -> tuple[list[int], int]:
    """The product's grouping: first (best) region of each photo among the top k, k grown x4 as needed;
    ``allowed``: only those photos (a period filter), as ``SearchService.search_vector`` does."""
    k = min(n_vectors, max(64, top * 16))
    while True:
        _scores, ids = search(q[None, :], k)
        seen: dict[int, None] = {}
        for rid in ids[0]:
            if rid < 0:
                continue
            pid = int(photo_of(int(rid)))
            if allowed is not None and pid not in allowed:
                continue
            seen.setdefault(pid, None)
        if len(seen) >= top or k >= n_vectors:
            return list(seen)[:top], k
        k = min(n_vectors, k * 4)


def exact_top_photos(source, n_photos: int, queries: np.ndarray, top: int, regions: int) -> list[list[int]]:
    """Exact top photos per query by streaming every vector once (no index needed)."""
    keep = top * regions * 2  # regions kept per query: enough to hold ``top`` distinct photos
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, vecs in source.chunks(n_photos):
        s = queries @ vecs.T
        ids = np.arange(start * regions, start * regions + len(vecs), dtype=np.int64)
        k = min(keep, s.shape[1])
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, ids[part]], axis=1)
        if best_s.shape[1] > keep:
            sel = np.argpartition(-best_s, keep - 1, axis=1)[:, :keep]
            best_s, best_i = np.take_along_axis(best_s, sel, 1), np.take_along_axis(best_i, sel, 1)
    out = []
    for s, i in zip(best_s, best_i):
        order = np.argsort(-s, kind="stable")
        photos: dict[int, None] = {}
        for rid in i[order]:
            photos.setdefault(int(rid) // regions, None)
            if len(photos) == top:
                break
        out.append(list(photos))
    return out


@dataclass
class _Source:
    """Catalog vectors behind the same chunk interface as the synthetic ones."""

    cat: CatalogVectors

    def chunks(self, n_photos: int):
        yield 0, self.cat.vectors


def _specs(kinds: list[str], dim: int, n_vectors: int, pq_dims: list[int]) -> list[ann.IndexSpec]:
    out = []
    for kind in kinds:
        if kind == ann.FLAT:
            out.append(ann.IndexSpec(ann.FLAT, dim))
        elif kind == IVFSQ8:
            nlist = ann.nlist_for(n_vectors)
            out.append(
                ann.IndexSpec(IVFSQ8, dim, nlist=nlist, nprobe=ann.nprobe_for(nlist), trained_for=n_vectors)
            )
        elif kind == ann.IVFPQ:
            for pd in pq_dims:  # 0: the store's own codes
                nlist = ann.nlist_for(n_vectors)
                out.append(
                    ann.IndexSpec(
                        ann.IVFPQ,
                        dim,
                        nlist=nlist,
                        m=ann.pq_m_for(dim, pd or ann.PQ_DIMS_PER_CODE),
                        nprobe=ann.nprobe_for(nlist),
                        trained_for=n_vectors,
                        nbits=ann.PQ_BITS if not pd else 8,
                    )
                )
        else:
            raise ValueError(f"unknown index kind {kind!r}")
    return out


def _build(spec: ann.IndexSpec, train: np.ndarray):
    """The store's index kinds, plus IVFSQ8 (8-bit scalar codes: measured here, not chosen)."""
    if spec.kind != IVFSQ8:
        return ann.build(spec, train)
    import faiss

    quantizer, nlist = ann.coarse_quantizer(spec, train)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, spec.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    return ann.train_ivf(index, spec, train)


def _estimated_bytes(spec: ann.IndexSpec, n_vectors: int) -> int:
    per = {ann.FLAT: spec.dim * 4 + 8, IVFSQ8: spec.dim + 8, ann.IVFPQ: spec.code_bytes + 8}[spec.kind]
    return per * n_vectors + spec.nlist * spec.dim * 4


def _text_embedder(args, cache, speed=None):
    """The real-size random model (its text tower is what a query costs), with a speed profile."""
    from sorce_desktop.bench.synthetic_models import synthetic_model
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    return DualEncoderEmbedder(synthetic_model(args.model, cache), model_id=args.model, device="cpu", speed=speed)


# -- the benchmark ----------------------------------------------------------------------------------
@dataclass
class _Vectors:
    """The vectors searched: synthetic at each size asked for, or one indexed library's."""

    sizes: list[int]  # library sizes in photos
    dim: int
    regions: int  # per photo
    source: object  # SyntheticVectors or _Source: chunks(n_photos) of vectors in photo order
    queries: np.ndarray
    photo_of: Callable[[int], int]  # a region id's photo
    cat: CatalogVectors | None = None


def _vectors(args, regions: int) -> _Vectors:
    n_queries = max(args.queries, args.recall_queries)
    if args.catalog:
        cat = CatalogVectors(args.catalog)
        photo_of_arr = cat.photo_of
        return _Vectors(
            [cat.n_photos],
            cat.dim,
            cat.regions,
            _Source(cat),
            cat.queries(n_queries, args.seed),
            lambda rid: int(photo_of_arr[rid]),
            cat,
        )
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    source = SyntheticVectors(args.dim, regions, args.seed)
    return _Vectors(sizes, args.dim, regions, source, source.queries(n_queries), lambda rid: rid // regions)


def _time_text(args, log) -> tuple[dict, Callable | None]:
    """Text embedding: the default model's text tower at its real size (random weights cost the same).
    Returns the report's ``text`` section and the function a query's text goes through (None: off)."""
    text: dict = {"included": not args.no_text}
    if args.no_text:
        return text, None
    from sorce_desktop.bench.synthetic_models import cache_dir
    from sorce_desktop.core.models.speed import DEFAULT_SPEED, THOROUGH, get_speed

    # What the app runs for a query: the text tower of the default indexing profile ("fast": int8
    # on a CPU); float32 (the "thorough" profile) timed beside it, with the cosine between the two.
    text_fns: dict[str, Callable] = {}
    app = _text_embedder(args, cache_dir(args.cache_dir), get_speed(None))
    # the app embeds a query through the model's query encoder (onnxruntime, written once from the model)
    from sorce_desktop.core.models.query_encoder import open_query_encoder
    from sorce_desktop.core.models.query_export import write_query_encoder

    t = time.perf_counter()
    write_query_encoder(app, app.folder / ".prepared")
    text["query_encoder_ready_s"] = round(time.perf_counter() - t, 1)
    encoder = open_query_encoder(app.folder, app.model_id, app.folder / ".prepared", app.int8)
    text_fns["app"] = encoder.embed_texts
    text["app_profile"] = f"{DEFAULT_SPEED} (query encoder: onnxruntime {encoder.precision} text tower)"
    # the loaded model's own text tower (PyTorch; int8 in "fast"), what a query cost before
    text_fns["model"] = app.embed_texts_with_model
    if app.int8:
        ref = _text_embedder(args, cache_dir(args.cache_dir), THOROUGH)
        text_fns["fp32"] = ref.embed_texts
    words = ["a red kite in the sky", "a cat on the windowsill", "a cup on the shelf", "the small boat"]
    times: dict[str, list[float]] = {name: [] for name in text_fns}
    for fn in text_fns.values():
        fn(["warm up"])
    for i in range(max(10, args.queries // 5)):  # interleaved: the machine's load falls on all alike
        for name, fn in text_fns.items():
            t = time.perf_counter()
            fn([words[i % len(words)] + f" {i}"])
            times[name].append((time.perf_counter() - t) * 1000)
    for name, ts in times.items():
        text[name] = {"p50_ms": round(pct(ts, 50), 2), "p95_ms": round(pct(ts, 95), 2)}
        log(f"text embedding {name}: p50 {text[name]['p50_ms']} ms")
    text["app_over_model_p50"] = round(float(np.median(np.array(times["app"]) / np.array(times["model"]))), 3)
    if "fp32" in text_fns:
        probe = [f"{w} {i}" for i, w in enumerate(words * 5)]
        cos = np.sum(text_fns["app"](probe) * text_fns["fp32"](probe), axis=1)
        text["app_vs_fp32_cosine_min"] = round(float(cos.min()), 5)
        cos = np.sum(text_fns["model"](probe) * text_fns["fp32"](probe), axis=1)
        text["model_vs_fp32_cosine_min"] = round(float(cos.min()), 5)
    return text, text_fns["app"]


def _build_index(spec: ann.IndexSpec, v: _Vectors, n_photos: int, seed: int) -> tuple[object, dict]:
    """The index of the first ``n_photos`` photos' vectors, and what building it cost."""
    rss0 = rss_bytes()
    t = time.perf_counter()
    if spec.compressed:
        train = _train_sample(v.source, n_photos, ann.train_size(spec), seed)
        index = _build(spec, train)
        del train
    else:
        index = ann.build(spec)
    for start, vecs in v.source.chunks(n_photos):
        ids = np.arange(start * v.regions, start * v.regions + len(vecs), dtype=np.int64)
        index.add_with_ids(vecs, ids)
    build_s = time.perf_counter() - t
    nbytes = ann.index_bytes(index)
    return index, dict(
        build_s=round(build_s, 1),
        index_bytes=nbytes,
        bytes_per_photo=round(nbytes / n_photos),
        rss_growth_bytes=rss_bytes() - rss0,
    )


def _searcher(index, rescore_min: int, n_vectors: int, v: _Vectors, fetch: _Fetch | None) -> Callable:
    """A search as the store runs it: the index alone, or its candidates re-scored with exact vectors
    (read through ``fetch`` for synthetic vectors, from memory for a catalog's)."""
    if rescore_min and fetch is not None:

        def search(q, k):
            kc = ann.rescore_candidates(k, n_vectors, rescore_min)  # as Store.search_vectors does
            _a, cand = ann.search(index, q, kc)
            return ann.rescore(q, cand, fetch, kc)

    elif rescore_min and v.cat is not None:
        vectors = v.cat.vectors

        def search(q, k):
            kc = ann.rescore_candidates(k, n_vectors, rescore_min)
            _a, cand = ann.search(index, q, kc)
            return ann.rescore(q, cand, lambda got: (np.asarray(got), vectors[np.asarray(got)]), kc)

    else:

        def search(q, k):
            return ann.search(index, q, k)

    return search


def _recall(search, v: _Vectors, queries: np.ndarray, truth: list[list[int]], n_vectors: int) -> float:
    """Recall@10 of photos against exact search."""
    hits = [best_photos(search, q, v.photo_of, 10, n_vectors)[0] for q in queries]
    return round(float(np.mean([len(set(h) & set(t)) / max(1, len(t)) for h, t in zip(hits, truth)])), 4)


def _latency(
    search, fetch: _Fetch | None, text_fn, v: _Vectors, n_queries: int, top: int, n_vectors: int
) -> dict:
    """Text + search + grouping, one query at a time as the app runs them: percentiles in ms."""
    tt, ts, tg, tot = [], [], [], []
    for i, q in enumerate(v.queries[:n_queries]):
        t0 = time.perf_counter()
        if text_fn is not None:
            text_fn([f"a small thing number {i}"])
        t1 = time.perf_counter()
        _s, ids = search(q[None, :], min(n_vectors, max(64, top * 16)))
        t2 = time.perf_counter() + (fetch.take() if fetch is not None else 0.0)
        best_photos(search, q, v.photo_of, top, n_vectors)
        t3 = time.perf_counter() + (fetch.take() if fetch is not None else 0.0)
        # best_photos repeats the first search; subtract it to get the grouping alone
        tt.append((t1 - t0) * 1000)
        ts.append((t2 - t1) * 1000)
        tg.append(max(0.0, (t3 - t2) - (t2 - t1)) * 1000)
        tot.append((t1 - t0) * 1000 + (t3 - t2) * 1000)
    return dict(
        p50_ms=round(pct(tot, 50), 2),
        p95_ms=round(pct(tot, 95), 2),
        text_p50_ms=round(pct(tt, 50), 2),
        search_p50_ms=round(pct(ts, 50), 2),
        search_p95_ms=round(pct(ts, 95), 2),
        group_p50_ms=round(pct(tg, 50), 2),
    )


def _facts_db(n_photos: int, years: int):
    """The catalog's capture-time table (the store's own statements) for ``n_photos`` photos, their times
    spread evenly over ``years`` years from 2015: what a period filter reads."""
    import sqlite3

    from sorce_desktop.core.store.catalog import FACTS_TABLES

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    for stmt in FACTS_TABLES:
        db.execute(stmt.replace(" REFERENCES photos(id) ON DELETE CASCADE", ""))
    rng = np.random.default_rng(7)
    days = rng.integers(0, 365, n_photos)
    rows = (
        (pid, f"{2015 + pid % years}-{1 + d // 31 % 12:02d}-{1 + d % 28:02d}T12:00:00", "exif")
        for pid, d in enumerate(days.tolist())
    )
    db.executemany("INSERT INTO photo_facts(photo_id, taken, taken_source) VALUES (?,?,?)", rows)
    db.commit()
    return db


def _filtered_latency(search, fetch, text_fn, v: _Vectors, n_queries: int, top: int, n_vectors: int, facts) -> dict:
    """A query restricted to one year: the period's photos from the catalog's table (as
    ``Store.taken_between``), then the ranking filtered to them (as ``search_vector`` with more photos
    than ``EXACT_FILTER_PHOTOS``). Percentiles in ms, text embedding included; ``year_same_words``: the
    same without it, as the window answers a changed period, folder or sort for words it has just embedded
    (``SearchService.text_vector`` keeps their vector)."""
    from sorce_desktop.core.search.answer import EXACT_FILTER_PHOTOS
    from sorce_desktop.core.store.catalog import taken_between

    tot, tf, same = [], [], []
    kept = 0
    for i, q in enumerate(v.queries[:n_queries]):
        t0 = time.perf_counter()
        if text_fn is not None:
            text_fn([f"a small thing number {i} 2020"])
        t1 = time.perf_counter()
        allowed = set(taken_between(facts, "2020-01-01T00:00:00", "2021-01-01T00:00:00"))
        t2 = time.perf_counter()
        best_photos(search, q, v.photo_of, top, n_vectors, allowed)
        t3 = time.perf_counter() + (fetch.take() if fetch is not None else 0.0)
        kept = len(allowed)
        tf.append((t2 - t1) * 1000)
        tot.append((t3 - t0) * 1000)
        same.append((t3 - t1) * 1000)
    return dict(
        year_filter_photos=kept,
        year_filter_path="index, filtered" if kept > EXACT_FILTER_PHOTOS else "exact over the period's photos",
        year_p50_ms=round(pct(tot, 50), 2),
        year_p95_ms=round(pct(tot, 95), 2),
        year_period_p50_ms=round(pct(tf, 50), 2),
        year_same_words_p50_ms=round(pct(same, 50), 2),
    )


def _ground_truth(v: _Vectors, n_photos: int, queries: np.ndarray, log) -> list[list[int]]:
    log(f"{n_photos} photos ({n_photos * v.regions} vectors): exact ground truth...")
    t = time.perf_counter()
    if v.cat is not None:  # catalog region ids are not photo-major: group by the real photo ids
        truth = _catalog_truth(v.cat, queries, 10)
    else:
        truth = exact_top_photos(v.source, n_photos, queries, 10, v.regions)
    log(f"  ground truth in {time.perf_counter() - t:.0f}s")
    return truth


class _FetchTable:
    """The SQLite table re-scoring reads synthetic vectors from (as the store reads the catalog's),
    rebuilt for each library size that fits ``--fetch-db-max-gb``."""

    def __init__(self, work: str):
        self.path = os.path.join(work, "regions.sqlite")
        self.db, self.rows = None, 0

    def prepare(self, args, kinds: list[str], rescores: list[int], v: _Vectors, n_photos: int, log) -> None:
        n_vectors = int(n_photos * v.regions)
        wanted = (
            not args.catalog
            and args.fetch_db_max_gb > 0
            and any(k != ann.FLAT for k in kinds)
            and any(rescores)
            and n_vectors * (v.dim * 4 + 64) <= args.fetch_db_max_gb * 2**30
        )
        if not wanted:
            return
        log(f"{n_photos} photos: building the SQLite table for re-scoring reads...")
        t = time.perf_counter()
        self.close()
        self.db = _build_fetch_table(self.path, v.source, n_photos, v.regions)
        self.rows = n_vectors
        log(f"  table of {n_vectors} rows in {time.perf_counter() - t:.0f}s")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def _measure_index(
    spec: ann.IndexSpec, args, v: _Vectors, n_photos: int, truth, text_fn, table, log, facts=None
) -> list[dict]:
    """Build one index kind at one size and time it with each nprobe and re-scoring asked for."""
    n_vectors = int(n_photos * v.regions)
    est = _estimated_bytes(spec, n_vectors)
    entry: dict = {"photos": n_photos, "vectors": n_vectors, "kind": spec.kind, "index": spec.describe()}
    if est > args.max_gb * 2**30:
        entry.update(skipped=f"needs about {est / 2**30:.1f} GB (over --max-gb {args.max_gb})")
        entry["bytes_per_photo"] = round(est / n_photos)
        log(f"  {spec.describe()}: skipped ({entry['skipped']})")
        return [entry]
    index, built = _build_index(spec, v, n_photos, args.seed)
    entry.update(built)
    nprobes = [None if x.strip() == "store" else int(x) for x in args.nprobe.split(",") if x.strip()]
    rescores = [-1 if x.strip() == "store" else int(x) for x in args.rescore.split(",") if x.strip()]
    store_min = ann.RESCORE_MIN_LARGE if n_vectors >= ann.RESCORE_LARGE_VECTORS else ann.RESCORE_MIN
    variants = (
        [(p, store_min if r == -1 else r) for p in nprobes for r in rescores] if spec.compressed else [(0, 0)]
    )
    rows = []
    for nprobe, rescore_min in variants:
        if spec.compressed:
            ivf = ann.ivf_of(index)
            nprobe = min(ivf.nlist, ann.nprobe_for(ivf.nlist) if nprobe is None else nprobe)
            ivf.nprobe = nprobe
        row = dict(entry, nprobe=nprobe, rescore=rescore_min) if spec.compressed else dict(entry)
        fetch = None
        if rescore_min and v.cat is None:
            fetch = _Fetch(v.source, table.db, table.rows, n_vectors, v.dim)
            row["rescore_reads"] = fetch.mode
        search = _searcher(index, rescore_min, n_vectors, v, fetch)
        row["recall_at_10"] = _recall(search, v, v.queries[: args.recall_queries], truth, n_vectors)
        if fetch is not None:
            fetch.take()
        row.update(_latency(search, fetch, text_fn, v, args.queries, args.top, n_vectors))
        if facts is not None:
            row.update(_filtered_latency(search, fetch, text_fn, v, args.queries, args.top, n_vectors, facts))
        rows.append(row)
        log(
            f"  {spec.describe() if not spec.compressed else spec.describe().split(' (')[0]}"
            f"{f' nprobe {nprobe} rescore {rescore_min}' if spec.compressed else ''}: p50 {row['p50_ms']} ms "
            f"(search {row['search_p50_ms']}), p95 {row['p95_ms']} ms, R@10 {row['recall_at_10']}, "
            f"{row['bytes_per_photo']} B/photo, built in {row['build_s']}s"
            + (
                f"; one year of {args.filter_years}: p50 {row['year_p50_ms']} ms "
                f"({row['year_same_words_p50_ms']} ms for words just asked)"
                if facts is not None
                else ""
            )
        )
    return rows


def run(args) -> int:
    import shutil
    import tempfile

    import faiss
    import torch

    from sorce_desktop.bench.startup import cpu_vector_features
    from sorce_desktop.core.regions import DEFAULT_LAYOUT, get_layout

    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    layout = get_layout(DEFAULT_LAYOUT)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    pq_dims = [0 if x.strip() == "store" else int(x) for x in args.pq_dims.split(",") if x.strip()]
    rescores = [-1 if x.strip() == "store" else int(x) for x in args.rescore.split(",") if x.strip()]
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))

    v = _vectors(args, args.regions or layout.count(640, 480))
    text, text_fn = _time_text(args, log)
    results = []
    work = tempfile.mkdtemp(prefix="sorce-bench-query-", dir=args.work_dir)
    table = _FetchTable(work)
    for n_photos in v.sizes:
        table.prepare(args, kinds, rescores, v, n_photos, log)
        truth = _ground_truth(v, n_photos, v.queries[: args.recall_queries], log)
        facts = _facts_db(n_photos, args.filter_years) if args.filter_years > 0 and not args.catalog else None
        for spec in _specs(kinds, v.dim, int(n_photos * v.regions), pq_dims):
            results += _measure_index(spec, args, v, n_photos, truth, text_fn, table, log, facts)
        if facts is not None:
            facts.close()
    table.close()
    shutil.rmtree(work, ignore_errors=True)
    chosen = {str(n): ann.spec_for(int(n * v.regions), v.dim).describe() for n in v.sizes}
    out = {
        "bench": "query",
        "date": time.strftime("%Y-%m-%d"),
        "threads": threads,
        "cpu_vector_features": cpu_vector_features(),
        "regions_per_photo": v.regions,
        "layout": layout.name,
        "dim": v.dim,
        "vectors": "catalog " + args.catalog if args.catalog else "synthetic structured unit vectors",
        "text": text,
        "results": results,
        "store_choice": chosen,
        "targets": {"p50_ms_100k": 50, "p50_ms_1m": 200, "bytes_per_photo_1m": 4096, "recall_at_10": 0.95},
    }
    if args.json:
        print_json(out)
    else:
        print(_table(out))
    return 0


def _build_fetch_table(path, source, n_photos: int, regions: int):
    """A SQLite ``regions`` table of every vector at this size, the catalog's layout (one row of
    id + float32 blob per region: a row fills most of a 4 KB page, as in the catalog)."""
    import sqlite3

    if os.path.exists(path):
        os.unlink(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(
        "CREATE TABLE regions (id INTEGER PRIMARY KEY AUTOINCREMENT, photo_id INTEGER NOT NULL, "
        "name TEXT NOT NULL, vector BLOB)"
    )
    for start, vecs in source.chunks(n_photos):
        base = start * regions
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO regions(id, photo_id, name, vector) VALUES (?, ?, ?, ?)",
            ((base + i, (base + i) // regions, f"r{(base + i) % regions}", v.tobytes()) for i, v in enumerate(vecs)),
        )
        db.execute("COMMIT")
    return db


class _Fetch:
    """Candidate vectors for re-scoring: from the SQLite table when it holds this size (timed as the
    product's ``fetch_region_vectors``), else exact vectors from the generator while the same number
    of reads is timed on the largest table built (``proxy_s`` replaces the generator's time)."""

    def __init__(self, source, db, table_rows: int, n_vectors: int, dim: int):
        self.source, self.db, self.table_rows, self.n_vectors, self.dim = source, db, table_rows, n_vectors, dim
        self.gen_s = 0.0  # generator time (subtracted where a table read stands in for it)
        self.proxy_s = 0.0  # table reads standing in for the generator
        self.mode = (
            "sqlite" if db is not None and table_rows >= n_vectors
            else f"sqlite proxy ({table_rows} rows)" if db is not None
            else "generator"
        )

    def __call__(self, ids):
        from sorce_desktop.core.store.catalog import fetch_region_vectors

        if self.mode == "sqlite":
            return fetch_region_vectors(self.db, ids, self.dim)
        if self.db is not None:
            t = time.perf_counter()
            fetch_region_vectors(self.db, np.asarray(ids) % self.table_rows, self.dim)
            self.proxy_s += time.perf_counter() - t
        t = time.perf_counter()
        out = self.source.fetch(ids)
        if self.db is not None:
            self.gen_s += time.perf_counter() - t
        return out

    def take(self) -> float:
        """Seconds to correct a timed span by (table reads in, generator out), and reset."""
        d = self.proxy_s - self.gen_s
        self.proxy_s = self.gen_s = 0.0
        return d


def _catalog_truth(cat: CatalogVectors, queries: np.ndarray, top: int) -> list[list[int]]:
    s = queries @ cat.vectors.T
    out = []
    for row in s:
        photos: dict[int, None] = {}
        for rid in np.argsort(-row):
            photos.setdefault(int(cat.photo_of[rid]), None)
            if len(photos) == top:
                break
        out.append(list(photos))
    return out


def _train_sample(source, n_photos: int, want: int, seed: int) -> np.ndarray:
    """Training vectors spread over the library (every chunk contributes)."""
    rng = np.random.default_rng([seed, 9])
    parts, total = [], 0
    chunks = list(range(0, n_photos, getattr(source, "CHUNK", n_photos)))
    per_chunk = max(1, want // max(1, len(chunks)))
    for _start, vecs in source.chunks(n_photos):
        take = min(len(vecs), per_chunk)
        parts.append(vecs[rng.choice(len(vecs), take, replace=False)])
        total += take
        if total >= want:
            break
    return np.concatenate(parts)


def _table(out: dict) -> str:
    lines = [
        f"bench query: {out['regions_per_photo']} regions/photo ({out['layout']} layout), {out['dim']}-d, "
        f"{out['threads']} threads, {out['vectors']}",
        f"CPU: {out['cpu_vector_features']['cpu']} [{' '.join(out['cpu_vector_features']['flags'])}]",
    ]
    if out["text"].get("app"):
        lines.append(f"text embedding p50: {out['text']['app']['p50_ms']} ms ({out['text']['app_profile']})")
        if out["text"].get("model"):
            lines.append(
                f"  the loaded model's own text tower: {out['text']['model']['p50_ms']} ms (query encoder / model, "
                f"paired: {out['text']['app_over_model_p50']})"
            )
    lines.append(
        f"{'photos':>9} {'index':32} {'p50 ms':>8} {'p95 ms':>8} {'search':>8} {'R@10':>6} {'B/photo':>9}"
        f" {'1 year p50':>10}"
    )
    for r in out["results"]:
        if "skipped" in r:
            lines.append(f"{r['photos']:>9} {r['index']:32} skipped: {r['skipped']}")
            continue
        name = r["index"].split(" (")[0] + (f" np{r['nprobe']}" if r.get("nprobe") else "") + (
            f" rs{r['rescore']}" if r.get("rescore") else ""
        )
        lines.append(
            f"{r['photos']:>9} {name:32} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['search_p50_ms']:>8} "
            f"{r['recall_at_10']:>6} {r['bytes_per_photo']:>9} {r.get('year_p50_ms', '-'):>10}"
        )
    lines.append("store's choice: " + ", ".join(f"{k} photos -> {v}" for k, v in out["store_choice"].items()))
    return "\n".join(lines)
