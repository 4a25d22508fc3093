"""The vector file: a FAISS index of the catalog's picture vectors, kept in step with the catalog.

The catalog (:mod:`sorce_desktop.core.store.catalog`) is the truth and holds every vector; this file is a cache of
them, so search does not read the catalog. It is saved atomically (temporary file, fsync, rename) with its
checksum in a small JSON file beside it (``vectors.json``, with the model binding repair falls back on),
checked when opened, and rebuilt from the catalog whenever the two differ (a crash between them, a
truncated, damaged or foreign file). Its kind (exact or compressed) follows the library's size
(:mod:`sorce_desktop.core.store.ann`). It holds only picture vectors; text lines' embeddings stay in the catalog.

What it needs from the catalog comes in as two functions (the ids of the visual regions that have a
vector, and the vectors of given ids), so it holds no SQL. The atomic-write helpers (:func:`remove_file`,
:func:`fsync_dir`, :func:`file_checksum`) are public: repair uses them for the catalog file too.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from sorce_desktop.core.store import ann
from sorce_desktop.core.store.errors import (
    StoreError,
    StoreFull,
    error_reason,
    full_message,
    nearly_full,
    translate_os_error,
)

log = logging.getLogger(__name__)

VECTORS_NAME = "vectors.faiss"

#: How long the vector file may stay unsaved while work goes on (the catalog is committed after every
#: batch either way; the vector file is rebuilt from it if lost).
SAVE_EVERY_S = 60.0


class SaveClock:
    """When the vector file is saved, the one rule: at the end of a run, and while work goes on (an
    indexing run, the folder watcher handing in files) at most every ``every_s`` seconds. The indexing
    service owns one and hands it to every indexer it uses; an indexer used on its own has its own."""

    def __init__(self, every_s: float = SAVE_EVERY_S):
        self.every_s = every_s
        self.unsaved = False
        self.last = time.monotonic()

    def changed(self) -> None:
        """The catalog's vectors changed since the file was saved."""
        self.unsaved = True

    def due(self) -> bool:
        """Whether work in progress should save now."""
        return self.unsaved and time.monotonic() - self.last >= self.every_s

    def saved(self) -> None:
        self.unsaved = False
        self.last = time.monotonic()
VECTORS_META = "vectors.json"

class Binding(Protocol):
    """The model and layout that made the vectors (the catalog's ``ModelBinding``; this module sits below
    the catalog and does not import it)."""

    model_id: str
    fingerprint: str
    layout: str
    dim: int


#: the catalog's visual region ids that have a vector, in the catalog's order
CatalogIds = Callable[[], list[int]]
#: the catalog's vectors of the given region ids: ``(ids, (n, dim))`` of those that still exist
CatalogVectors = Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]]


class VectorIndex:
    """Region vectors by region id, inner-product search (vectors are unit length).

    Exact (flat) for small libraries, an inverted file with product quantisation past
    ``ann.EXACT_MAX_VECTORS`` (the store switches kinds in :meth:`Store.save`, see ``core/store/ann.py``)."""

    def __init__(self, dim: int, spec: ann.IndexSpec | None = None, train: np.ndarray | None = None):
        self.dim = dim
        self.spec = spec or ann.IndexSpec(ann.FLAT, dim)
        self.index = ann.build(self.spec, train)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return ann.index_ids(self.index)

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )

    def remove(self, ids: Iterable[int]) -> None:
        arr = np.fromiter(ids, dtype=np.int64)
        if arr.size:
            self.index.remove_ids(arr)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.count))
        return ann.search(self.index, queries, k)

    def save(self, path: Path) -> int:
        """Write atomically; returns the file's checksum (:func:`file_checksum`), kept beside it.

        faiss writes through Python's own file object, so a failed write is an ``OSError`` with its errno
        (faiss's own file writer reports only "write error", and prints its C++ complaint on stderr)."""
        import faiss

        tmp = path.with_name(path.name + ".tmp")
        crc = 0

        def write(block: bytes) -> int:
            nonlocal crc
            crc = zlib.crc32(block, crc)
            return f.write(block)

        try:
            with open(tmp, "wb") as f:
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(write))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return crc
        except (OSError, RuntimeError) as exc:
            # Either way the previous file is intact.
            remove_file(tmp)
            raise vector_save_error(exc, path) from exc

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        import faiss

        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"vector size {index.d}, expected {dim}")
        obj = cls.__new__(cls)
        obj.dim = dim
        obj.index = index
        # Lists are treated as sized for (at least) what the index holds now.
        obj.spec = ann.spec_of(index, trained_for=int(index.ntotal))
        return obj


def vector_save_error(exc: BaseException, path: Path) -> StoreError:
    """Why the vector file ``path`` (or its checksum file) could not be written, in words."""
    known = translate_os_error(exc, path.parent) if isinstance(exc, OSError) else None
    if known is None and not isinstance(exc, OSError) and nearly_full(path.parent):
        known = StoreFull(full_message(path.parent))  # a write error without its errno
    if known is not None:
        return known
    for p in (path, path.with_name(path.name + ".tmp")):
        if p.is_dir():
            return StoreError(
                f"{p} is a folder where the index keeps a file: move it away (the vector index is "
                "rebuilt from the catalog, nothing indexed is lost)."
            )
    return StoreError(
        f"The vector index could not be saved as {path} ({error_reason(exc)}); the previous one is kept and "
        "nothing committed to the catalog is lost."
    )


def remove_file(path: Path) -> None:
    """Remove a temporary file if it is one (never a folder someone put in its place)."""
    try:
        if path.is_file() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def file_checksum(path: Path, chunk: int = 1 << 22) -> int:
    """CRC-32 of a file, streamed (about 2.8 GB/s here: bit rot is what it is for, not tampering)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def fsync_dir(path: Path) -> None:
    """Make a rename in the folder ``path`` durable (a no-op where folders cannot be synced)."""
    if os.name == "nt":  # pragma: no cover
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class VectorFile:
    """The vector file of one library folder and its checksum file: reading, checking and writing."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / VECTORS_NAME
        self.meta_path = folder / VECTORS_META

    def exists(self) -> bool:
        return self.path.exists()

    def read(self, binding: Binding) -> tuple[VectorIndex | None, str | None, bool]:
        """The saved index, when it belongs to ``binding`` and its checksum matches. Returns ``(index,
        None, unchecked)``, or ``(None, why it cannot be used, unchecked)``; ``unchecked``: the file was
        written before checksums were kept (the next save adds one)."""
        unchecked = False
        try:
            meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
            if meta.get("fingerprint") not in (None, binding.fingerprint):
                raise ValueError("it belongs to another model")
            # The checksum is what tells a file damaged on disk from a good one: flipped bytes can
            # leave it loadable, with the right ids, and rank the wrong photos first.
            if "crc32" in meta and file_checksum(self.path) != meta["crc32"]:
                raise ValueError("its checksum does not match: the file is damaged")
            unchecked = "crc32" not in meta
            return VectorIndex.load(self.path, binding.dim), None, unchecked
        except Exception as exc:
            return None, f"the vector index could not be read ({exc})", unchecked

    def write(self, index: VectorIndex, binding: Binding) -> None:
        """Save ``index`` atomically, then its checksum file with the binding that made it."""
        checksum = index.save(self.path)
        meta = {
            "fingerprint": binding.fingerprint,
            # the rest of the binding: what repair keeps when the catalog's own row is lost
            "model_id": binding.model_id,
            "layout": binding.layout,
            "dim": binding.dim,
            "count": index.count,
            "saved_at": time.time(),
            "crc32": checksum,
        }
        tmp = self.folder / (VECTORS_META + ".tmp")
        try:
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, self.meta_path)
        except OSError as exc:
            remove_file(tmp)
            raise vector_save_error(exc, self.meta_path) from exc
        fsync_dir(self.folder)


def sync_with_catalog(index: VectorIndex, catalog_ids: CatalogIds, fetch: CatalogVectors) -> int:
    """Make ``index`` hold exactly the catalog's visual vectors. Returns how many changed."""
    have = set(index.ids().tolist())
    want = set(catalog_ids())
    extra = have - want
    missing = sorted(want - have)
    index.remove(extra)
    for i in range(0, len(missing), 4096):  # bounded memory for a large rebuild
        index.add(*fetch(missing[i : i + 4096]))
    return len(extra) + len(missing)


def rekinded(index: VectorIndex, n: int, catalog_ids: CatalogIds, fetch: CatalogVectors) -> VectorIndex | None:
    """An empty index of the kind a library of ``n`` vectors calls for (``ann.spec_for``), or None when
    ``index`` already is of that kind. Compressed kinds are trained on a sample of the catalog's own
    vectors; the caller fills it with :func:`sync_with_catalog`."""
    want = ann.spec_for(n, index.dim, index.spec)
    if want == index.spec:
        return None
    train = None
    if want.compressed:
        ids = catalog_ids()
        rng = np.random.default_rng(len(ids))
        pick = sorted(rng.choice(ids, min(len(ids), ann.train_size(want)), replace=False).tolist())
        _ids, train = fetch(pick)
    log.info("vector index: %s -> %s for %d vectors", index.spec.describe(), want.describe(), n)
    return VectorIndex(index.dim, want, train)
