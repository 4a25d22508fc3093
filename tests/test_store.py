"""The store: atomic, repairable, never two models' vectors, survives kill -9."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from sorce_desktop.core.library import Library
from sorce_desktop.core.regions import get_layout
from sorce_desktop.core.store.catalog import (
    CATALOG_NAME,
    SCHEMA_VERSION,
    VECTORS_NAME,
    Store,
    StoreError,
    StoreLocked,
)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage", "other_dim"])
def test_vector_index_repaired_from_catalog(tmp_path, clip_embedder, photo_dir, damage, indexed_library):
    lib, _ = indexed_library(photo_dir)
    q = clip_embedder.embed_texts(["a cat"])[0]
    before = [(h.path, h.box) for h in lib.search_service(clip_embedder).search(vector=q, top=5)]
    lib.close()
    path = tmp_path / "data" / "index" / VECTORS_NAME
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    else:
        import faiss

        faiss.write_index(faiss.IndexFlatIP(7), str(path))
    with Library(tmp_path / "data") as lib2:
        assert any("rebuilt from the catalog" in n for n in lib2.store.notices)
        assert lib2.store.vectors.count == 120
        after = [(h.path, h.box) for h in lib2.search_service(clip_embedder).search(vector=q, top=5)]
        assert after == before


def test_stale_vector_file_is_synced(tmp_path, clip_embedder, photo_dir, indexed_library):
    """A crash between the catalog commit and the vector-file save leaves the file behind: fixed on open."""
    lib, _ = indexed_library(photo_dir)
    stale = (tmp_path / "data" / "index" / VECTORS_NAME).read_bytes()
    victim = sorted(photo_dir.glob("*.jpg"))[0]
    lib.store.delete_photos([lib.store.photo_by_path(str(victim)).id])
    lib.close()
    (tmp_path / "data" / "index" / VECTORS_NAME).write_bytes(stale)
    with Store(tmp_path / "data" / "index") as st:
        assert st.vectors.count == 110


def test_second_writer_refused_reader_allowed(tmp_path):
    a = Store(tmp_path / "idx")
    try:
        with pytest.raises(StoreLocked, match="Another sorce-desktop process"):
            Store(tmp_path / "idx")
        with Store(tmp_path / "idx", writer=False) as reader:
            assert reader.counts()["indexed"] == 0
    finally:
        a.close()
    Store(tmp_path / "idx").close()  # released on close


def test_newer_schema_refused_older_reset(tmp_path):
    Store(tmp_path / "idx").close()
    db = sqlite3.connect(tmp_path / "idx" / CATALOG_NAME)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer version"):
        Store(tmp_path / "idx")
    db = sqlite3.connect(tmp_path / "idx" / CATALOG_NAME)
    db.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    db.commit()
    db.close()
    with Store(tmp_path / "idx") as st:
        assert any("older version" in n for n in st.notices)


def test_damaged_catalog_is_explained(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / CATALOG_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="damaged"):
        Store(tmp_path / "idx")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from sorce_desktop.core.indexing.scanner import existing_folder
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import get_layout

    data, model, folder = sys.argv[1:4]
    lib = Library(data)
    lib.store.add_folder(existing_folder(folder))
    e = DualEncoderEmbedder(model)
    inner = e.embed_photos
    def slow(photos, layout):
        time.sleep(0.15)
        return inner(photos, layout)
    e.embed_photos = slow
    lib.bind(e, get_layout("grid3"))
    def progress(p):
        if p.phase == "embedding" and p.done:
            print("done", p.done, flush=True)
    lib.indexer(e, get_layout("grid3"), progress, batch_size=2).run()
    lib.close()
    print("finished", flush=True)
    """
)


@pytest.mark.slow
def test_killed_mid_batch_resumes_cleanly(tmp_path, tiny_clip, clip_embedder, photo_dir):
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    data = tmp_path / "data"
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), str(tiny_clip), str(photo_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = ""
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("done") or line.startswith("finished") or not line:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with Library(data) as lib:
            st = lib.store
            counts = st.counts()
            assert counts["indexed"] + counts["pending"] == 12
            assert st.vectors.count == counts["indexed"] * 10 == st.count_vectors()
            if attempt == 0:
                assert 0 < counts["indexed"] < 12, "the kill should land mid-run"
    with Library(data) as lib:
        r = lib.indexer(clip_embedder, get_layout("grid3")).run()
        assert lib.store.counts()["indexed"] == 12 and lib.store.vectors.count == 120
        assert r.embedded <= 12


#: the store's own modules: the catalog, the vector file kept in step with it, salvage for repair, and the
#: store's errors; the only places SQL is written
STORE_MODULES = ("store/catalog.py", "store/vectorfile.py", "store/salvage.py", "store/errors.py")


def test_no_sql_outside_the_store():
    """Every SQL statement of the product is in the store's modules (rclip's db.py): no module reads or
    writes the catalog behind its back. The benchmarks' scratch databases are their own."""
    import re
    from pathlib import Path

    import sorce_desktop

    root = Path(sorce_desktop.__file__).parent
    allowed = {root / "core" / name for name in STORE_MODULES}
    assert all(p.is_file() for p in allowed), allowed  # the allow-list names files that exist
    statement = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA)\b")
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path not in allowed and "bench" not in path.relative_to(root).parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if statement.search(line)
    ]
    assert not found, "SQL outside the store's modules:\n" + "\n".join(found)


def test_no_private_name_imported_across_modules():
    """A module uses another's public interface only: no ``from x import _name`` (nor ``import x._y``)
    anywhere in the package. A name another module needs is made public where it is defined."""
    import ast
    from pathlib import Path

    import sorce_desktop

    root = Path(sorce_desktop.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names] + (node.module or "").split(".")
            elif isinstance(node, ast.Import):
                names = [part for a in node.names for part in a.name.split(".")]
            else:
                continue
            private = [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
            if private:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {', '.join(private)}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)
