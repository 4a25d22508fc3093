"""Store faults, round 3 (issue 31): a full disk at any write, a lost write-ahead log, repair that keeps
the folder list and the model, an unplugged drive left as an empty mount point.

The full disk is a real small tmpfs where one can be mounted (root); the same faults are also injected
(``ENOSPC`` at each write site: the catalog, its write-ahead log, the vector file, its checksum file) so
the checks run everywhere. Photos are generated here.
"""

from __future__ import annotations

import errno
import json
import logging
import pathlib
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import no_text_reading, remember_folder
from PIL import Image

from sorce_desktop.cli import main as cli_main
from sorce_desktop.core.store import catalog as store_mod
from sorce_desktop.core.store import vectorfile
from sorce_desktop.core.store.catalog import CATALOG_NAME, VECTORS_META, VECTORS_NAME, Store


def make_photos(folder: Path, n: int, start: int = 0) -> Path:
    """``n`` small JPEGs of random pixels (every region different, nothing blank)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        arr = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"p{i:03d}.jpg", "JPEG", quality=90)
    return folder


def _run(argv: list[str], capfd) -> tuple[int, str, str]:
    """The CLI in this process; stdout and stderr read at the file descriptors, so anything a C++
    library prints there (faiss's "close error") is seen too. What the app logs at WARNING or above
    reaches the user's terminal too (the CLI's log handler): it is counted as said on stderr."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        code = cli_main(argv)
    finally:
        logging.getLogger().removeHandler(handler)
    out, err = capfd.readouterr()
    logged = "".join(f"{r.levelname} {r.name}: {r.getMessage()}\n" for r in records)
    if any(r.exc_info for r in records):
        logged += "Traceback (logged)\n"
    return code, out, logged + err


def _one_line(err: str) -> str:
    """The one error line, last (progress lines may come before it), and nothing else said."""
    assert "Traceback" not in err and "faiss::" not in err and "close error" not in err, err
    lines = [ln for ln in err.rstrip("\n").split("\n") if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("sorce-desktop")]
    assert errors == [len(lines) - 1], err
    assert all(ln.lstrip("\r").startswith(("scanning folders", "indexing [")) for ln in lines[:-1]), err
    return lines[-1]


def _status(data: Path, capfd) -> dict:
    code, out, err = _run(["status", "--json", "--data-dir", str(data)], capfd)
    assert code == 0, err
    assert "older version" not in err
    return json.loads(out)


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


# -- 1. a full disk, part-way ----------------------------------------------------------------------------
# 40k: the catalog cannot even be created; 100k: a few commits, then its log; 300k: batches until full
@pytest.mark.parametrize("size", ["40k", "100k", "200k", "300k"])
def test_full_disk_on_a_real_tmpfs(tmp_path, tiny_clip, capfd, untouched, size):
    mnt = tmp_path / "small"
    if not _mount(mnt, size):
        pytest.skip("cannot mount a tmpfs here (mount needs root); test_full_disk_injected covers every site")
    try:
        photos = untouched(make_photos(tmp_path / "photos", 40))
        data = mnt / "data"
        no_text_reading(data)
        argv = ["index", str(photos), "--model", str(tiny_clip), "--layout", "grid3", "--batch-size", "4"]
        argv += ["--data-dir", str(data)]
        code, out, err = _run(argv, capfd)
        assert code == 1, (out, err)
        first = _one_line(err)
        assert "is full" in first and "everything before it is kept" in first, first
        code, out, err = _run(argv, capfd)  # again, still full: the same sentence, nothing else
        assert code == 1 and _one_line(err) == first
        done = _status(data, capfd)["indexed"]  # never "made by an older version"
        code, out, err = _run(["search", "a photo", "--data-dir", str(data)], capfd)
        assert "older version" not in err and "Traceback" not in err
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        code, out, err = _run([*argv, "--json"], capfd)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["embedded"] == 40 - done, (summary, done)  # committed photos are not redone
        assert summary["unchanged"] == done and summary["changed"] == 0
        st = _status(data, capfd)
        assert st["indexed"] == 40 and st["pending"] == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


class _FullCatalog:
    """A catalog connection whose second batch commit (``INSERT INTO regions`` then ``COMMIT``) fails as
    SQLite fails on a full disk: "database or disk is full" when the catalog cannot grow, "disk I/O
    error" when its write-ahead log cannot."""

    def __init__(self, db: sqlite3.Connection, message: str, state: dict):
        self._db, self._message, self._state = db, message, state

    def execute(self, sql: str, *args):
        if sql.startswith("INSERT INTO regions"):
            self._state["batch"] = True
        elif sql == "COMMIT" and self._state.pop("batch", False):
            self._state["commits"] = self._state.get("commits", 0) + 1
            if self._state["commits"] >= 2 and self._state.get("full", True):
                self._db.execute("ROLLBACK")
                raise sqlite3.OperationalError(self._message)
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def _full_vector_writes(monkeypatch, name: str) -> None:
    """Writes to the index folder's file ``name`` fail with ENOSPC after a few bytes."""
    real_open = open

    class Full:
        def __init__(self, f):
            self._f, self._n = f, 0

        def write(self, data):
            self._n += len(data)
            if self._n > 64:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, attr):
            return getattr(self._f, attr)

    def full_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return Full(f) if Path(path).name == name and "w" in mode else f

    monkeypatch.setattr(vectorfile, "open", full_open, raising=False)  # where the vector file is written
    real_write_text = pathlib.Path.write_text

    def full_write_text(self, text, *a, **kw):
        if self.name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", full_write_text)


@pytest.mark.parametrize("site", ["catalog", "wal", "new catalog", "vector file", "checksum file"])
def test_full_disk_injected(tmp_path, tiny_clip, capfd, monkeypatch, site):
    """ENOSPC at each write site, anywhere (no mount needed): one sentence, the committed photos kept, the
    next run embeds only the rest."""
    photos = make_photos(tmp_path / "photos", 12)
    data = tmp_path / "data"
    no_text_reading(data)
    argv = ["index", str(photos), "--model", str(tiny_clip), "--layout", "grid3", "--batch-size", "4"]
    argv += ["--data-dir", str(data)]
    state: dict = {}
    if site in ("catalog", "wal"):
        message = "database or disk is full" if site == "catalog" else "disk I/O error"
        real_connect = Store._connect
        monkeypatch.setattr(Store, "_connect", lambda self: _FullCatalog(real_connect(self), message, state))
    elif site == "new catalog":
        # the catalog's first write fails (SQLite says "disk I/O error" when the log cannot be made)
        monkeypatch.setattr(store_mod, "nearly_full", lambda folder: True)
        real = sqlite3.connect

        def connect(target, *a, **kw):
            if str(target).endswith(CATALOG_NAME) and state.get("full", True):
                raise sqlite3.OperationalError("disk I/O error")
            return real(target, *a, **kw)

        monkeypatch.setattr(store_mod.sqlite3, "connect", connect)
    else:
        _full_vector_writes(monkeypatch, VECTORS_NAME + ".tmp" if site == "vector file" else VECTORS_META + ".tmp")
    code, out, err = _run(argv, capfd)
    assert code == 1, (out, err)
    line = _one_line(err)
    assert "is full" in line and "everything before it is kept" in line, line
    state["full"] = False
    monkeypatch.undo()
    st = _status(data, capfd)
    done = st["indexed"]
    if site in ("catalog", "wal"):
        assert 0 < done < 12  # the first batch was committed, the second not
    code, out, err = _run([*argv, "--json"], capfd)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["embedded"] == 12 - done and summary["unchanged"] == done, summary
    assert _status(data, capfd)["indexed"] == 12


# -- 10. each diagnosis names what is wrong ----------------------------------------------------------------
def _library_with_its_log(tmp_path: Path, tiny_clip: Path, capfd) -> Path:
    """An indexed data folder copied while its writer was still open: everything it committed is in the
    write-ahead log (``catalog.sqlite3-wal``), none of it checkpointed into the catalog file yet."""
    import shutil

    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import get_layout

    photos = make_photos(tmp_path / "photos", 6)
    embedder, layout = DualEncoderEmbedder(tiny_clip), get_layout("grid3")
    with Library(tmp_path / "live") as lib:
        remember_folder(lib, photos)
        lib.bind(embedder, layout)
        lib.indexer(embedder, layout).run()
        lib.store.save()
        shutil.copytree(tmp_path / "live", tmp_path / "data")
    wal = tmp_path / "data" / "index" / (CATALOG_NAME + "-wal")
    assert wal.stat().st_size > 0
    return tmp_path / "data"


@pytest.mark.parametrize("how", ["deleted", "garbled", "zeroed", "header garbled"])
def test_a_lost_write_ahead_log_is_named_not_called_an_older_version(tmp_path, tiny_clip, capfd, how):
    data = _library_with_its_log(tmp_path, tiny_clip, capfd)
    index = data / "index"
    wal = index / (CATALOG_NAME + "-wal")
    (index / (CATALOG_NAME + "-shm")).unlink(missing_ok=True)
    raw = wal.read_bytes()
    rng = np.random.default_rng(3)
    if how == "deleted":
        wal.unlink()
    elif how == "garbled":
        wal.write_bytes(raw[:32] + rng.integers(0, 256, len(raw) - 32, dtype=np.uint8).tobytes())
    elif how == "zeroed":
        wal.write_bytes(bytes(len(raw)))
    else:
        wal.write_bytes(rng.integers(0, 256, 32, dtype=np.uint8).tobytes() + raw[32:])
    for argv in (["status"], ["search", "a photo"], ["errors"]):
        code, out, err = _run([*argv, "--data-dir", str(data)], capfd)
        assert code == 1, (argv, out, err)
        line = _one_line(err)
        assert "older version" not in line and "write-ahead log" in line and str(index / CATALOG_NAME) in line
    # the writer says the same, once, and starts again with the folders it is given
    code, out, err = _run(["index", str(tmp_path / "photos"), "--data-dir", str(data)], capfd)
    assert code == 0, err
    assert "write-ahead log" in err and "older version" not in err
    assert _status(data, capfd)["indexed"] == 6


def test_a_catalog_made_on_a_full_disk_is_an_empty_library(tmp_path, capfd):
    """A catalog file with no table (its first transaction never committed) and no vector file beside it:
    nothing was ever indexed there, so readers see an empty library."""
    index = tmp_path / "data" / "index"
    index.mkdir(parents=True)
    db = sqlite3.connect(index / CATALOG_NAME)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    st = _status(tmp_path / "data", capfd)
    assert st["indexed"] == 0 and st["folders"] == []


def test_a_folder_in_place_of_the_vector_file_is_named(tmp_path, tiny_clip, capfd):
    photos = make_photos(tmp_path / "photos", 4)
    data = tmp_path / "data"
    no_text_reading(data)
    argv = ["index", str(photos), "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", str(data)]
    assert _run(argv, capfd)[0] == 0
    vectors = data / "index" / VECTORS_NAME
    vectors.unlink()
    vectors.mkdir()
    code, out, err = _run(argv, capfd)
    assert code == 1
    line = _one_line(err)
    assert f"{vectors} is a folder" in line and "disk space" not in line and "full" not in line, line
    vectors.rmdir()  # moved away: the vector index is rebuilt from the catalog
    assert _run(argv, capfd)[0] == 0
    assert _status(data, capfd)["vectors"] == 40


# -- 6. an unplugged drive is not an empty folder ------------------------------------------------------------
@pytest.mark.parametrize("how", ["unmounted", "emptied"])
def test_index_keeps_the_photos_of_a_folder_left_empty(tmp_path, tiny_clip, capfd, how):
    """A watched folder that is a mount point left empty (its drive unmounted), or whose contents all
    vanished at once: ``index`` marks it offline and keeps its photos, and nothing is embedded again when
    they are back (the watcher's rule, scanner.folder_is_there)."""
    import shutil

    backup = make_photos(tmp_path / "backup", 20)
    folder = tmp_path / "drive"
    if how == "unmounted" and not _mount(folder, "8m"):
        pytest.skip("cannot mount a tmpfs here (mount needs root); the 'emptied' case is the same rule")

    def fill() -> None:
        for p in backup.iterdir():
            shutil.copy2(p, folder / p.name)

    try:
        folder.mkdir(exist_ok=True)
        fill()
        data = tmp_path / "data"
        no_text_reading(data)
        argv = ["index", "--json", "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", str(data)]
        code, out, err = _run([*argv, str(folder)], capfd)
        assert code == 0 and json.loads(out)["embedded"] == 20, err
        if how == "unmounted":
            subprocess.run(["umount", str(folder)], check=True)
        else:
            for p in folder.iterdir():
                p.unlink()
        assert not any(folder.iterdir())
        code, out, err = _run(argv, capfd)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["deleted"] == 0 and summary["offline"] == [str(folder)], summary
        assert "marked offline and its photos were kept" in err
        st = _status(data, capfd)
        assert st["indexed"] == 20 and [f["online"] for f in st["folders"]] == [False]
        if how == "unmounted":
            assert _mount(folder, "8m")
        fill()
        code, out, err = _run(argv, capfd)
        summary = json.loads(out)
        assert code == 0 and summary["embedded"] == 0 and summary["unchanged"] == 20, summary
        assert [f["online"] for f in _status(data, capfd)["folders"]] == [True]
    finally:
        if how == "unmounted":
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# -- 2, 11. repair keeps the folder list and the model, and counts rows ---------------------------------------
def _indexed(tmp_path: Path, tiny_clip: Path, capfd, folders: tuple[str, ...] = ("a", "b")) -> tuple[Path, list[Path]]:
    """A data folder with 10 photos in each of ``folders`` indexed (grid3, no text reading), closed."""
    roots = [make_photos(tmp_path / "photos" / f, 10, start=10 * i) for i, f in enumerate(folders)]
    data = tmp_path / "data"
    no_text_reading(data)
    argv = ["index", *map(str, roots), "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", str(data)]
    code, out, err = _run(argv, capfd)
    assert code == 0, err
    return data, roots


def _root_page(catalog: Path, table: str) -> int:
    db = sqlite3.connect(catalog)
    try:
        return db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    finally:
        db.close()


def _zero_pages(catalog: Path, pages: list[int]) -> None:
    with open(catalog, "r+b") as f:
        for page in pages:  # SQLite numbers pages from 1
            f.seek((page - 1) * 4096)
            f.write(bytes(4096))


def _repair(data: Path, capfd) -> tuple[dict, str]:
    code, out, err = _run(["repair", "--json", "--data-dir", str(data)], capfd)
    assert code == 0, err
    report = json.loads(out)
    code, text, err = _run(["repair", "--data-dir", str(data)], capfd)  # the repaired catalog: not damaged
    assert code == 0 and "not damaged" in text
    return report, text


def test_repair_rebuilds_a_lost_folder_list_from_the_photos(tmp_path, tiny_clip, capfd):
    data, roots = _indexed(tmp_path, tiny_clip, capfd)
    catalog = data / "index" / CATALOG_NAME
    _zero_pages(catalog, [_root_page(catalog, "folders")])
    code, out, err = _run(["repair", "--data-dir", str(data)], capfd)
    assert code == 0, err
    assert "folder list was lost; 2 folders recovered from the photos' rows" in out, out
    assert all(str(r) in out for r in roots)
    st = _status(data, capfd)
    assert sorted(f["path"] for f in st["folders"]) == sorted(map(str, roots)) and st["indexed"] == 20
    code, out, err = _run(["index", "--json", "--data-dir", str(data)], capfd)  # no folder named: the list
    assert code == 0, err
    summary = json.loads(out)
    assert summary["unchanged"] == 20 and summary["embedded"] == 0, summary


def test_repair_counts_rows_not_rowid_ranges(tmp_path, tiny_clip, capfd):
    """Five zeroed pages, the regions table's root among them: what was lost is counted in rows (at most
    what the tables held), never in millions of rowids."""
    data, roots = _indexed(tmp_path, tiny_clip, capfd)
    catalog = data / "index" / CATALOG_NAME
    db = sqlite3.connect(catalog)
    n_photos = db.execute("SELECT count(*) FROM photos").fetchone()[0]
    n_regions = db.execute("SELECT count(*) FROM regions").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.close()
    regions_root = _root_page(catalog, "regions")
    photos_root = _root_page(catalog, "photos")
    targets = sorted({regions_root, photos_root, *range(pages - 3, pages)} - {1})[:5]
    _zero_pages(catalog, targets)
    report, _ = _repair(data, capfd)
    assert report["damaged"] and report["rows"]
    assert report["rows"].get("photos", 0) + report["lost"].get("photos", 0) <= n_photos, report
    assert report["rows"].get("regions", 0) + report["lost"].get("regions", 0) <= n_regions, report
    assert report["lost"]["regions"] == n_regions - report["rows"].get("regions", 0), report
    code, out, err = _run(["index", "--json", "--data-dir", str(data)], capfd)
    assert code == 0, err
    assert _status(data, capfd)["indexed"] == 20


def test_repair_keeps_the_model_binding_when_its_row_is_lost(tmp_path, tiny_clip, capfd):
    data, roots = _indexed(tmp_path, tiny_clip, capfd)
    catalog = data / "index" / CATALOG_NAME
    _zero_pages(catalog, [_root_page(catalog, "meta")])
    report, _ = _repair(data, capfd)
    st = _status(data, capfd)
    assert st["model"] == str(tiny_clip) and st["layout"] == "grid3", st
    bound = report.get("binding_restored")
    assert bound and bound["model_id"] == str(tiny_clip) and bound["layout"] == "grid3", report
    code, out, err = _run(["index", "--json", "--data-dir", str(data)], capfd)  # no --model: the kept one
    assert code == 0, err
    assert json.loads(out)["embedded"] == 0 and json.loads(out)["unchanged"] == 20


def test_repair_says_plainly_when_nothing_could_be_salvaged(tmp_path, tiny_clip, capfd):
    data, roots = _indexed(tmp_path, tiny_clip, capfd, folders=("a",))
    catalog = data / "index" / CATALOG_NAME
    with open(catalog, "r+b") as f:
        f.truncate(8192)  # the header and the schema are left, every table page is gone
    code, out, err = _run(["repair", "--data-dir", str(data)], capfd)
    assert code == 0, err
    assert "nothing could be salvaged" in out and "unreadable rows" not in out, out
    assert f"{tiny_clip} (grid3 layout)" in out, out
    code, out, err = _run(["index", "--json", str(roots[0]), "--data-dir", str(data)], capfd)
    assert code == 0, err  # the library's model, not the settings' (which is not downloaded here)
    assert json.loads(out)["embedded"] == 10
