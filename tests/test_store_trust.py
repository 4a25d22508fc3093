"""Trusting the store (issue 21): damage is detected and repaired, a read-only library still searches,
no command-line value or file name gets a traceback, implausible files are refused before being read.

Where a real fault needs root (a read-only or tiny tmpfs mount) the test mounts one and is skipped
elsewhere; where root makes a real fault impossible (root reads and writes files whatever their mode),
the fault is simulated at the narrowest point (one ``open``), and the test says so.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import no_text_reading, remember_folder, scene_photos

from sorce_desktop.cli import main as cli_main
from sorce_desktop.core.library import Library
from sorce_desktop.core.regions import get_layout
from sorce_desktop.core.store.catalog import CATALOG_NAME, VECTORS_NAME

ROOT = Path(__file__).resolve().parents[1]


def _index(photos: Path, data: Path, model: Path, capsys=None) -> None:
    """Index ``photos`` into ``data`` with ``model``, the text in them not read."""
    no_text_reading(data)
    code = cli_main(["index", str(photos), "--model", str(model), "--layout", "grid3", "--data-dir", str(data)])
    assert code == 0
    if capsys is not None:
        capsys.readouterr()


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_clear_line(err: str) -> str:
    """The one error line (progress lines such as "scanning folders..." may come before it)."""
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    errors = [i for i, line in enumerate(lines) if line.startswith("sorce-desktop")]
    assert errors == [len(lines) - 1], err  # one error line, the last, nothing after it
    return lines[-1]


def _mount(path: Path, size: str = "64m") -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _remount(path: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(path)], check=True, capture_output=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- 1. the vector index is checked before it is trusted ---------------------------------------------
def test_flipped_bytes_in_vector_index_are_detected_and_rebuilt(
    tmp_path, clip_embedder, photo_dir, indexed_library
):
    lib, _ = indexed_library(photo_dir)
    q = clip_embedder.embed_texts(["a cat"])[0]
    before = [
        (h.path, h.box, round(h.score, 5)) for h in lib.search_service(clip_embedder).search(vector=q, top=5)
    ]
    lib.close()
    path = tmp_path / "data" / "index" / VECTORS_NAME
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    # 2,000 bytes inside the vectors (past the header, before the id map at the end): still loadable
    start = len(raw) // 4
    for i in rng.choice(np.arange(start, start + len(raw) // 2), 2000, replace=False):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with Library(tmp_path / "data", writer=False) as reader:  # a reader rebuilds in memory, writes nothing
        assert any("checksum" in n and "rebuilt from the catalog" in n for n in reader.store.notices)
        after = [(h.path, h.box, round(h.score, 5)) for h in reader.search_service(clip_embedder).search(vector=q, top=5)]
        assert after == before
    assert path.read_bytes() == bytes(raw)
    with Library(tmp_path / "data") as writer:  # a writer saves the rebuilt file ...
        assert any("checksum" in n for n in writer.store.notices)
    with Library(tmp_path / "data") as again:  # ... which then passes its check
        assert again.store.notices == []
        assert again.store.vectors.count == 120


# -- 2. readers never write; a read-only library still searches --------------------------------------
def test_readers_work_while_a_writer_holds_the_write_lock(tmp_path, tiny_clip, photo_dir, capsys):
    """Readers used to open the catalog with a write transaction: while another connection held the
    write lock (a writer mid-commit, a read-only mount, another user's folder) they failed, and said
    the catalog was damaged."""
    data = tmp_path / "data"
    _index(photo_dir, data, tiny_clip, capsys)
    other = sqlite3.connect(data / "index" / CATALOG_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO meta(key, value) VALUES ('probe', '1')")
    try:
        code, out, err = _run(["status", "--json", "--data-dir", str(data)], capsys)
        assert code == 0, err
        assert json.loads(out)["indexed"] == 12
        code, out, err = _run(["errors", "--json", "--data-dir", str(data)], capsys)
        assert code == 0 and json.loads(out) == [], err
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture
def read_only_library(tmp_path, tiny_clip, photo_dir, capsys):
    """An indexed data folder on a tmpfs that is then remounted read-only (needs root)."""
    mnt = tmp_path / "ro"
    if not _mount(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _index(photo_dir, mnt / "data", tiny_clip, capsys)
        _remount(mnt, "ro")
        yield mnt / "data"
    finally:
        _umount(mnt)


def test_read_only_library_searches_and_refuses_writes_plainly(read_only_library, photo_dir, capsys):
    data = str(read_only_library)
    before = sorted(os.listdir(read_only_library / "index"))
    code, out, err = _run(["status", "--json", "--data-dir", data], capsys)
    assert code == 0, err
    assert json.loads(out)["indexed"] == 12 and json.loads(out)["vectors"] > 100
    code, out, err = _run(["search", "a photo", "--json", "--data-dir", data], capsys)
    assert code == 0, err
    assert len(json.loads(out)) == 12
    code, out, err = _run(["errors", "--data-dir", data], capsys)
    assert code == 0 and "no errors" in out, err
    for argv in (["index", str(photo_dir)], ["watch", str(photo_dir)]):
        code, out, err = _run([*argv, "--data-dir", data], capsys)
        assert code == 1, err
        _one_clear_line(err)
        assert "cannot be written (a read-only file system)" in err
        assert "Move it away" not in err and "damaged" not in err
    assert sorted(os.listdir(read_only_library / "index")) == before


def test_read_only_library_with_a_leftover_write_ahead_log(tmp_path, tiny_clip, photo_dir, capsys):
    """A writer killed mid-run leaves its write-ahead log; on a read-only mount the log's commits are
    still read (mode=ro), not silently skipped."""
    mnt = tmp_path / "ro"
    if not _mount(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        data = mnt / "data"
        _index(photo_dir, data, tiny_clip, capsys)
        # keep a write-ahead log with a commit in it: a process that is then frozen, never closed
        script = (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA wal_autocheckpoint=0')\n"
            "db.execute(\"INSERT INTO folders(path, added_at, online) VALUES (x'2f6c617465', 0, 1)\")\n"
            "print('ok', flush=True)\n"
            "time.sleep(60)\n"
        )
        p = subprocess.Popen([sys.executable, "-c", script, str(data / "index" / CATALOG_NAME)], stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ok"
        p.kill()
        p.wait()
        assert (data / "index" / (CATALOG_NAME + "-wal")).stat().st_size > 0
        _remount(mnt, "ro")
        code, out, err = _run(["status", "--json", "--data-dir", str(data)], capsys)
        assert code == 0, err
        assert "/late" in [f["path"] for f in json.loads(out)["folders"]]
    finally:
        _umount(mnt)


def test_index_refuses_a_folder_it_cannot_write_in_one_line(tmp_path, tiny_clip, photo_dir, capsys, monkeypatch):
    """Another user's data folder. Root can write any file, so the refusal of the lock file is
    simulated at that one ``open`` (the same errno a user gets)."""
    import builtins

    from sorce_desktop.core.store import catalog as store_mod
    data = tmp_path / "data"
    _index(photo_dir, data, tiny_clip, capsys)
    real_open = builtins.open

    def no_write(path, mode="r", *a, **kw):
        if str(path).endswith("writer.lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(store_mod, "open", no_write, raising=False)
    code, out, err = _run(["index", str(photo_dir), "--data-dir", str(data)], capsys)
    assert code == 1
    _one_clear_line(err)
    assert "cannot be written (permission denied)" in err and "Move it away" not in err


# -- 3. a damaged catalog: a clear line, then repair salvages it --------------------------------------
def _page_of(catalog: Path, needle: bytes) -> int:
    raw = catalog.read_bytes()
    at = raw.find(needle)
    assert at > 0
    return at // 4096


def _damage_page(catalog: Path, page: int, how: str) -> None:
    with open(catalog, "r+b") as f:
        f.seek(page * 4096)
        if how == "zero":
            f.write(b"\x00" * 4096)
        else:
            f.write(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("how", ["zero", "random"])
def test_damaged_catalog_page_is_explained_then_repaired(tmp_path, tiny_clip, photo_dir, capsys, how, untouched):
    untouched(photo_dir)
    data = tmp_path / "data"
    _index(photo_dir, data, tiny_clip, capsys)
    catalog = data / "index" / CATALOG_NAME
    db = sqlite3.connect(catalog)
    assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
    n_vectors = db.execute("SELECT count(*) FROM regions").fetchone()[0]
    # a page of region rows, found by a vector it holds: zeroed, or overwritten with random bytes
    (vec,) = db.execute("SELECT vector FROM regions WHERE id=?", (60 if how == "zero" else 20,)).fetchone()
    needle = bytes(vec)
    db.close()
    size_before = catalog.stat().st_size
    _damage_page(catalog, _page_of(catalog, needle), how)
    damaged_bytes = catalog.read_bytes()

    for argv in (["status"], ["search", "a photo"], ["errors"], ["index"]):
        code, out, err = _run([*argv, "--data-dir", str(data)], capsys)
        if code == 0:  # a command that never touched the damaged page
            continue
        _one_clear_line(err)
        assert str(catalog) in err and "damaged" in err and "sorce-desktop repair" in err, err

    code, out, err = _run(["repair", "--json", "--data-dir", str(data)], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["damaged"] and report["kept_as"]
    kept = Path(report["kept_as"])
    assert kept.parent == catalog.parent and kept.read_bytes() == damaged_bytes  # kept whole, beside it
    assert kept.stat().st_size == size_before
    assert sum(report["lost"].values()) >= 1
    assert report["rows"]["photos"] + report["lost"].get("photos", 0) >= 12

    code, out, err = _run(["index", "--json", "--data-dir", str(data)], capsys)
    assert code == 0, err
    summary = json.loads(out)
    redone = summary["embedded"]
    assert 1 <= redone < 12, summary  # only what was lost
    assert summary["unchanged"] + redone == 12 or summary["unchanged"] + summary["new"] + summary["changed"] == 12
    code, out, err = _run(["status", "--json", "--data-dir", str(data)], capsys)
    st = json.loads(out)
    assert code == 0 and st["indexed"] == 12 and st["vectors"] == n_vectors and st["failed"] == 0
    assert sqlite3.connect(catalog).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    code, out, err = _run(["search", "a photo", "--json", "--data-dir", str(data)], capsys)
    assert code == 0 and len(json.loads(out)) == 12


def test_repair_leaves_a_healthy_catalog_alone(tmp_path, tiny_clip, photo_dir, capsys):
    data = tmp_path / "data"
    _index(photo_dir, data, tiny_clip, capsys)
    catalog = data / "index" / CATALOG_NAME
    before = catalog.read_bytes()
    code, out, err = _run(["repair", "--data-dir", str(data)], capsys)
    assert code == 0 and "not damaged" in out
    assert catalog.read_bytes() == before
    assert [p.name for p in catalog.parent.iterdir() if "damaged" in p.name] == []


def test_damaged_header_is_explained_without_bad_advice(tmp_path, capsys):
    from sorce_desktop.core.store.catalog import Store

    Store(tmp_path / "data" / "index").close()
    catalog = tmp_path / "data" / "index" / CATALOG_NAME
    catalog.write_bytes(b"this is not sqlite" * 300)
    code, out, err = _run(["status", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 1
    _one_clear_line(err)
    assert str(catalog) in err and "sorce-desktop repair" in err and "Move it away" not in err
    code, out, err = _run(["repair", "--json", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0, err
    kept = Path(json.loads(out)["kept_as"])
    assert kept.read_bytes() == b"this is not sqlite" * 300
    code, out, err = _run(["status", "--json", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0 and json.loads(out)["indexed"] == 0


# -- 4. a full disk, the second time -------------------------------------------------------------------
def test_full_disk_second_run_same_message(tmp_path, tiny_clip, capsys, untouched):
    mnt = tmp_path / "small"
    if not _mount(mnt, "400k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        for p in scene_photos(60):
            shutil.copy2(p, photos / p.name)
        untouched(photos)
        data = mnt / "data"
        no_text_reading(data)
        argv = ["index", str(photos), "--model", str(tiny_clip), "--layout", "grid3", "--data-dir", str(data)]
        code, out, first = _run(argv, capsys)
        assert code == 1 and "is full" in first, first
        first = _one_clear_line(first)
        code, _, second = _run(["status", "--json", "--data-dir", str(data)], capsys)
        done = json.loads(_)["indexed"] if code == 0 else None
        for _i in range(2):  # again and again while still full
            code, out, again = _run(argv, capsys)
            assert code == 1
            assert _one_clear_line(again) == first
        code, out, err = _run(["status", "--json", "--data-dir", str(data)], capsys)
        assert code == 0 and json.loads(out)["indexed"] == done
    finally:
        _umount(mnt)


def test_full_disk_at_the_writer_lock_simulated(tmp_path, tiny_clip, photo_dir, capsys, monkeypatch):
    """The same, anywhere: ENOSPC from the lock file's write (where the second run used to crash)."""
    import builtins

    from sorce_desktop.core.store import catalog as store_mod
    data = tmp_path / "data"
    _index(photo_dir, data, tiny_clip, capsys)
    real_open = builtins.open

    class Full(io.TextIOWrapper):
        pass

    def full_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        if str(path).endswith("writer.lock"):

            def flush():
                raise OSError(errno.ENOSPC, "No space left on device")

            f.flush = flush
        return f

    monkeypatch.setattr(store_mod, "open", full_open, raising=False)
    code, out, err = _run(["index", str(photo_dir), "--data-dir", str(data)], capsys)
    assert code == 1
    _one_clear_line(err)
    assert "is full" in err and "everything before it is kept" in err


# -- 5. command-line values ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_index(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("values")
    (root / "photos").mkdir()
    for p in scene_photos(3):
        shutil.copy2(p, root / "photos" / p.name)
    data = no_text_reading(root / "data")
    assert cli_main(["index", str(root / "photos"), "--model", str(tiny_clip), "--data-dir", data]) == 0
    return root


def _model_with_config(root: Path, tiny_clip: Path, config: str) -> Path:
    folder = root / f"model-{abs(hash(config))}"
    if not folder.exists():
        shutil.copytree(tiny_clip, folder)
        (folder / "config.json").write_text(config)
    return folder


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "x", "--image", "{img}", "--crop", "inf", "0", "10", "10"],
        ["search", "x", "--image", "{img}", "--crop", "1e300", "0", "10", "10"],
        ["search", "x", "--image", "{img}", "--crop", "0", "0", "5000", "5000"],
        ["search", "x", "--image", "{img}", "--crop", "-5", "0", "10", "10"],
        ["search", "x", "--image", "{img}", "--crop", "100", "100", "10", "10"],
        ["search", "x", "--image", "{img}", "--crop", "10", "10", "10", "50"],
        ["search", "x", "--crop", "0", "0", "10", "10"],
        ["search", "--image", "/no/such/image.jpg"],
        ["search", "x", "--top", "0"],
        ["search", "x", "--min-score", "nan"],
        ["index", "{photos}", "--batch-size", "0"],
        ["watch", "--settle", "-1"],
        ["index", "{photos}", "--model", "{model:[]}"],
        ["index", "{photos}", "--model", "{model:null}"],
        ["index", "{photos}", "--model", '{model:{"model_type": "bert"}}'],
        ["index", "{photos}", "--model", '{model:{"model_type": "no_such_model"}}'],
        ["index", "{photos}", "--model", '{model:{"model_type": 7}}'],
        ["status", "--data-dir", "{file}"],
        ["search", "x", "--data-dir", "{file}/below"],
    ],
)
def test_every_command_line_value_is_checked(small_index, tiny_clip, capsys, argv):
    root = small_index
    img = str(sorted((root / "photos").glob("*.jpg"))[0])
    (root / "a-file").write_text("not a folder")
    out_argv = []
    for a in argv:
        if a.startswith("{model:"):
            a = str(_model_with_config(root, tiny_clip, a[len("{model:") : -1]))
        a = a.replace("{img}", img).replace("{photos}", str(root / "photos")).replace("{file}", str(root / "a-file"))
        out_argv.append(a)
    if "--data-dir" not in out_argv:
        out_argv += ["--data-dir", str(root / ("data" if out_argv[0] != "index" else "data-new"))]
    if out_argv[0] == "watch":  # a watch that accepted the value would run until stopped
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        try:
            r = subprocess.run([sys.executable, "-m", "sorce_desktop", *out_argv], capture_output=True, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{out_argv} was accepted: the watch ran")
        code, out, err = r.returncode, r.stdout.decode(), r.stderr.decode()
    else:
        try:
            code = cli_main(out_argv)
        except SystemExit as exc:  # argparse refusals
            code = exc.code
        out, err = capsys.readouterr()
    assert code not in (0, None), (out_argv, out, err)
    _one_clear_line(err)


def test_reader_of_an_empty_library_creates_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    code, out, err = _run(["status", "--json", "--data-dir", str(data)], capsys)
    assert code == 0 and json.loads(out)["indexed"] == 0
    assert list((data / "index").iterdir()) == []
    code, out, err = _run(["search", "a cat", "--data-dir", str(data)], capsys)
    assert code == 1 and "Nothing is indexed yet" in _one_clear_line(err)


def test_data_folder_under_a_read_only_folder(tmp_path, capsys):
    mnt = tmp_path / "ro"
    if not _mount(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root; root writes any chmod-0 folder)")
    try:
        _remount(mnt, "ro")
        code, out, err = _run(["status", "--data-dir", str(mnt / "data")], capsys)
        assert code == 1
        _one_clear_line(err)
        assert "cannot be created" in err
    finally:
        _umount(mnt)


# -- 6. JSON whatever bytes a name holds, under any locale --------------------------------------------
@pytest.mark.parametrize("encoding,errors", [("utf-8", "strict"), ("utf-8", "surrogateescape"), ("ascii", "strict")])
def test_watch_json_is_utf8_under_any_locale(monkeypatch, encoding, errors):
    from sorce_desktop.cli import _print_event
    from sorce_desktop.core.indexing.service import EventKind, IndexEvent

    raw = b"/photos/caf\xe9-\xff.jpg"
    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding=encoding, errors=errors, write_through=True)
    monkeypatch.setattr(sys, "stdout", stream)
    _print_event(IndexEvent(EventKind.INDEXED, [os.fsdecode(raw), "/photos/日本.jpg"], folder="/photos"), True)
    stream.flush()
    line = buf.getvalue().decode("utf-8")  # strict: valid UTF-8
    event = json.loads(line)
    assert [os.fsencode(p) for p in event["paths"]] == [raw, "/photos/日本.jpg".encode()]


@pytest.mark.slow
@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_every_json_output_is_utf8_under_any_locale(tmp_path, tiny_clip, locale):
    """status, errors, search, index and repair --json, in a subprocess under the locale, on names
    that are not UTF-8."""
    photos = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"f\xf6lder")))
    photos.mkdir()
    good = scene_photos(1)[0]
    shutil.copy2(good, os.path.join(os.fsencode(photos), b"caf\xe9.jpg"))
    with open(os.path.join(os.fsencode(photos), b"bad-\xff.jpg"), "wb") as f:
        f.write(b"not an image")
    data = no_text_reading(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    env.update(LC_ALL=locale, PYTHONPATH=str(ROOT))

    def run(*argv: str):
        r = subprocess.run([sys.executable, "-m", "sorce_desktop", *argv, "--json", "--data-dir", data],
                           capture_output=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
        return json.loads(r.stdout.decode("utf-8"))  # strict UTF-8

    run("index", os.fsdecode(photos), "--model", str(tiny_clip), "--layout", "global")
    status = run("status")
    assert os.fsencode(status["folders"][0]["path"]) == os.fsencode(photos)
    errors = run("errors")
    assert [os.path.basename(os.fsencode(e["path"])) for e in errors] == [b"bad-\xff.jpg"]
    hits = run("search", "a photo")
    assert [os.path.basename(os.fsencode(h["path"])) for h in hits] == [b"caf\xe9.jpg"]
    assert run("repair")["damaged"] is False


# -- 7. implausible image headers ------------------------------------------------------------------------
def _jpeg_claiming(data: bytes, w: int, h: int) -> bytes:
    import struct

    b = bytearray(data)
    i = 2
    while i < len(b):
        m = b[i + 1]
        n = struct.unpack(">H", b[i + 2 : i + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            b[i + 5 : i + 9] = struct.pack(">HH", h, w)
            return bytes(b)
        i += 2 + n
    raise AssertionError("no frame header")


def test_implausible_headers_are_recorded_not_read_whole(tmp_path, clip_embedder, untouched):
    import tracemalloc

    from PIL import Image

    root = tmp_path / "odd"
    root.mkdir()
    src = scene_photos(1, start=7)[0]
    (root / "claims.jpg").write_bytes(_jpeg_claiming(src.read_bytes(), 14000, 14000))
    small = io.BytesIO()
    Image.open(src).convert("RGB").save(small, "JPEG", quality=90)
    with open(root / "padded.jpg", "wb") as f:  # 1,000 bytes of header, then 400 MB of (sparse) zeros
        f.write(small.getvalue()[:1000])
        f.truncate(400 * 2**20)
    shutil.copy2(src, root / "good.jpg")
    untouched(root)
    with Library(tmp_path / "data") as lib:
        remember_folder(lib, root)
        lib.bind(clip_embedder, get_layout("grid3"))
        tracemalloc.start()
        try:
            report = lib.indexer(clip_embedder, get_layout("grid3")).run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        errors = {Path(p).name: r for p, r in lib.store.errors()}
        assert report.embedded == 1
        assert "claims 14000x14000" in errors["claims.jpg"]
        assert "mostly padding" in errors["padded.jpg"]
        assert peak < 100 * 2**20, peak  # the 400 MB file was never read whole


def test_load_image_refuses_implausible_headers(tmp_path):
    from sorce_desktop.core.photos.images import ImageError, load_image

    src = scene_photos(1)[0]
    p = tmp_path / "claims.jpg"
    p.write_bytes(_jpeg_claiming(src.read_bytes(), 14000, 14000))
    with pytest.raises(ImageError, match="claims"):
        load_image(p, 256)
    with pytest.raises(ImageError, match="claims"):
        load_image(p, 256, data=p.read_bytes())


# -- 8. messages that misled -------------------------------------------------------------------------------
def test_dangling_symlink_is_named_as_such(tmp_path, indexed_library):
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy2(scene_photos(1)[0], root / "good.jpg")
    os.symlink(root / "gone.jpg", root / "link.jpg")
    lib, _ = indexed_library(root)
    reason = dict(lib.store.errors())[str(root / "link.jpg")]
    assert "symbolic link" in reason and "does not exist" in reason and "pipe" not in reason


def test_unreadable_model_file_is_named_with_its_reason(tmp_path, tiny_clip, monkeypatch):
    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.loader import load_embedder

    folder = tmp_path / "model"
    shutil.copytree(tiny_clip, folder)
    weights = next(folder.glob("*.safetensors"))
    if os.geteuid() != 0:
        weights.chmod(0)
    else:  # root reads a chmod-0 file: the refusal is simulated at Python's open of that file
        import builtins

        real_open = builtins.open

        def refuse(path, *a, **kw):
            if Path(path) == weights:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *a, **kw)

        monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(ModelError) as info:
        load_embedder(str(folder), tmp_path / "cache")
    msg = str(info.value)
    assert str(weights) in msg and "Permission denied" in msg and "No such file" not in msg


def test_empty_query_is_refused_before_the_model_loads(tmp_path, tiny_clip, capsys):
    """The index names a model folder that is gone: an empty query is still refused for what it is."""
    model = tmp_path / "model"
    shutil.copytree(tiny_clip, model)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy2(scene_photos(1)[0], photos / "a.jpg")
    _index(photos, tmp_path / "data", model, capsys)
    shutil.rmtree(model)
    for q in ("", "   ", '""'):
        code, out, err = _run(["search", q, "--data-dir", str(tmp_path / "data")], capsys)
        assert code == 1
        _one_clear_line(err)
        assert "empty" in err and "model" not in err.lower()
