"""Fault suite: hostile files, bad queries, disk full, interrupted downloads, locks, kill -9 loops, load.

Every test that indexes checks that the photo tree is unchanged (the ``untouched`` fixture).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_rows, no_text_reading, remember_folder, scene_photos, tree_fingerprint
from PIL import Image

from sorce_desktop.cli import main as cli_main
from sorce_desktop.core.library import Library
from sorce_desktop.core.regions import get_layout
from sorce_desktop.core.store.catalog import CATALOG_NAME, IndexedPhoto, Store, StoreError, StoreFull


def _png_bomb(w: int, h: int) -> bytes:
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def make_hostile_folder(root: Path) -> dict[str, str]:
    """Writes every kind of odd file; returns {name: 'indexed' | reason-substring}."""
    root.mkdir(parents=True, exist_ok=True)
    good = scene_photos(3, start=100)
    expect: dict[str, str] = {}
    data = good[0].read_bytes()
    (root / "zero.jpg").write_bytes(b"")
    expect["zero.jpg"] = "empty"
    (root / "truncated.jpg").write_bytes(data[: len(data) // 5])
    expect["truncated.jpg"] = "truncated"
    (root / "bomb.png").write_bytes(_png_bomb(50000, 50000))
    expect["bomb.png"] = "too large"
    Image.new("RGB", (30000, 200), (90, 120, 160)).save(root / "panorama.jpg", quality=60)
    expect["panorama.jpg"] = "indexed"
    Image.open(good[1]).convert("CMYK").save(root / "cmyk.jpg")
    expect["cmyk.jpg"] = "indexed"
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(root / "sixteen.png")
    expect["sixteen.png"] = "indexed"
    (root / "notes.jpg").write_text("shopping list: milk, eggs\n")
    expect["notes.jpg"] = "not an image"
    os.symlink(root, root / "loop")
    os.mkfifo(root / "pipe.jpg")
    expect["pipe.jpg"] = "not a regular file"
    odd_names = [b"caf\xe9-latin1.jpg", b"new\nline.jpg", "\u05e9\u05dc\u05d5\u05dd-\u202eRTL.jpg".encode()]
    for raw_name in odd_names:
        with open(os.path.join(os.fsencode(root), raw_name), "wb") as f:
            f.write(good[2].read_bytes())
        expect[os.fsdecode(raw_name)] = "indexed"
    locked = root / "locked"
    locked.mkdir()
    shutil.copy2(good[0], locked / "inside.jpg")
    locked.chmod(0)
    return expect


def test_hostile_files_each_skipped_or_indexed_with_reason(clip_embedder, tmp_path, indexed_library):
    root = tmp_path / "hostile"
    expect = make_hostile_folder(root)
    try:
        before = tree_fingerprint(root)
        lib, report = indexed_library(root)
        rows = {Path(p.path).name: p for p in lib.store.photos_under(str(root))}
        for name, want in expect.items():
            assert name in rows, f"{name!r} was not recorded"
            row = rows[name]
            if want == "indexed":
                assert row.status == "indexed", (name, row.error)
            else:
                assert row.status == "failed" and want in (row.error or ""), (name, row.error)
        if os.geteuid() != 0:  # root reads a chmod-0 folder anyway
            assert "permission denied" in dict(lib.store.errors()).get(str(root / "locked"), "")
        assert report.embedded >= 6
        # the odd names come back through search and JSON intact
        hits = lib.search_service(clip_embedder).search("a photo", top=50)
        names = {Path(h.path).name for h in hits}
        assert "caf\udce9-latin1.jpg" in names and "new\nline.jpg" in names
        assert tree_fingerprint(root) == before  # (checked before the folder's mode is restored)
    finally:
        (root / "locked").chmod(0o755)


def test_cli_prints_odd_names(tmp_path, tiny_clip, capsys):
    root = tmp_path / "odd"
    root.mkdir()
    shutil.copy2(scene_photos(1)[0], os.path.join(os.fsencode(root), b"caf\xe9.jpg"))
    data = no_text_reading(tmp_path / "data")
    assert cli_main(["index", str(root), "--model", str(tiny_clip), "--data-dir", data]) == 0
    capsys.readouterr()
    assert cli_main(["search", "cafe", "--json", "--data-dir", data]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert os.fsencode(hits[0]["path"]) == os.path.join(os.fsencode(root), b"caf\xe9.jpg")
    assert cli_main(["search", "cafe", "--data-dir", data]) == 0
    assert "caf\\xe9.jpg" in capsys.readouterr().out


@pytest.fixture(scope="module")
def indexed_data(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("queries")
    (root / "photos").mkdir()
    for p in scene_photos(6):
        shutil.copy2(p, root / "photos" / p.name)
    data = no_text_reading(root / "data")
    assert cli_main(["index", str(root / "photos"), "--model", str(tiny_clip), "--data-dir", data]) == 0
    return str(root / "data")


@pytest.mark.parametrize(
    "query,ok",
    [
        ("", False),
        ("   ", False),
        ("\x00\x07\x1b\x7f", False),
        ("a cat " * 2000, True),
        ("🐈‍⬛ on a 🛋️", True),
        ("кошка на подоконнике", True),
        ("窓辺の猫", True),
        ("قطة على النافذة", True),
        ("tab\tand\nnewline", True),
    ],
)
def test_odd_queries_answer_or_explain(indexed_data, capsys, query, ok):
    data = indexed_data
    code = cli_main(["search", query, "--json", "--data-dir", data])
    out, err = capsys.readouterr()
    if ok:
        assert code == 0 and len(json.loads(out)) > 0
    else:
        assert code == 1 and "empty" in err and "Traceback" not in err


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return r.returncode == 0


def test_disk_full_keeps_previous_index_and_resumes(tmp_path, clip_embedder, untouched):
    """The data folder sits on a tiny tmpfs: indexing runs out of space, the error is clear, what was
    committed stays, and after space returns (the mount grows) the next run finishes the job."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "400k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        for p in scene_photos(60):
            shutil.copy2(p, photos / p.name)
        untouched(photos)
        lib = Library(mnt / "data")
        remember_folder(lib, photos)
        lib.bind(clip_embedder, get_layout("grid3"))
        with pytest.raises(StoreFull, match="full"):
            lib.indexer(clip_embedder, get_layout("grid3"), batch_size=4).run()
        done = lib.store.counts()["indexed"]
        assert 0 < done < 60
        try:
            lib.close()
        except StoreError:
            pass
        with Library(mnt / "data", writer=False) as check:  # previous good index opens
            assert check.store.counts()["indexed"] == done
            assert check.store.vectors.count == done * 10
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        with Library(mnt / "data") as lib2:
            r = lib2.indexer(clip_embedder, get_layout("grid3")).run()
            assert lib2.store.counts()["indexed"] == 60 and r.embedded == 60 - done
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_catalog_locked_by_another_process_is_explained(tmp_path):
    Store(tmp_path / "idx").close()
    other = sqlite3.connect(tmp_path / "idx" / CATALOG_NAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        t = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            Store(tmp_path / "idx", busy_timeout_s=0.5)
        assert time.monotonic() - t < 30
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_interrupted_download_never_loads_half_a_model(tmp_path, tiny_clip, monkeypatch):
    """The hub download dies half-way through the weights: a clear error, nothing half-loaded, and the
    next try resumes (here: completes) and gives a working model."""
    import huggingface_hub

    from sorce_desktop.core.models import download as dl
    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.loader import load_embedder

    files = sorted(p.name for p in Path(tiny_clip).iterdir() if p.is_file())
    cache = tmp_path / "cache"
    repo = "someone/tiny"
    snapshot = cache / "models--someone--tiny" / "snapshots" / "abc"

    class Info:
        def __init__(self, name):
            self.filename, self.file_size = name, (Path(tiny_clip) / name).stat().st_size
            self.will_download = not (snapshot / name).exists()

    def fake_snapshot(repo_id, *, cache_dir, allow_patterns, dry_run=False, local_files_only=False):
        if dry_run:
            return [Info(n) for n in files]
        if all((snapshot / n).exists() for n in files):
            return str(snapshot)
        raise FileNotFoundError("incomplete snapshot")

    state = {"fail": True}

    def fake_download(repo_id, filename, *, cache_dir, tqdm_class=None):
        snapshot.mkdir(parents=True, exist_ok=True)
        data = (Path(tiny_clip) / filename).read_bytes()
        if filename.endswith(".safetensors") and state["fail"]:
            (snapshot / (filename + ".incomplete")).write_bytes(data[: len(data) // 2])
            raise ConnectionError("connection reset by peer")
        (snapshot / (filename + ".incomplete")).unlink(missing_ok=True)
        (snapshot / filename).write_bytes(data)
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    progress = []
    with pytest.raises(ModelError, match="could not be downloaded"):
        load_embedder(repo, cache, progress=progress.append)
    assert dl.cached_model_path(repo, cache) is None  # never taken for a whole model
    state["fail"] = False
    e = load_embedder(repo, cache, progress=progress.append)
    assert e.embed_texts(["ok"]).shape == (1, e.dim)
    assert progress and progress[-1].total_bytes > 0


KILL_LOOP = textwrap.dedent(
    """
    import sys, time
    from sorce_desktop.core.indexing.scanner import existing_folder
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import get_layout

    data, model, folder, reindex = sys.argv[1:5]
    lib = Library(data)
    lib.store.add_folder(existing_folder(folder))
    e = DualEncoderEmbedder(model)
    inner = e.embed_photos
    def slow(photos, layout):
        time.sleep(0.02)
        return inner(photos, layout)
    e.embed_photos = slow
    lib.bind(e, get_layout("grid3"), reindex=reindex == "1")
    print("go", flush=True)
    ix = lib.indexer(e, get_layout("grid3"), batch_size=2, save_every_s=0.0)  # save the index after every batch
    ix.run()
    lib.close()
    print("finished", flush=True)
    """
)


def _check_store(data: Path, n_photos: int, model_fp: str | None = None) -> tuple[int, str]:
    with Library(data) as lib:
        st = lib.store
        counts = st.counts()
        assert counts["indexed"] + counts["pending"] == n_photos
        assert st.vectors.count == st.count_vectors() == counts["indexed"] * 10
        b = st.binding()
        # never vectors of two models: every vector row has the bound model's size
        dims = {len(r[0]) // 4 for r in catalog_rows(st, "SELECT vector FROM regions")}
        assert dims <= {b.dim}
        return counts["indexed"], b.fingerprint


@pytest.mark.slow
def test_kill_9_loop_during_indexing_reindexing_and_saves(
    tmp_path, tiny_clip, tiny_siglip, photo_dir, untouched
):
    untouched(photo_dir)
    script = tmp_path / "loop.py"
    script.write_text(KILL_LOOP)
    data = tmp_path / "data"
    rng = np.random.default_rng(7)
    kills = 0
    committed = 0
    fingerprints: dict = {}
    n = int(os.environ.get("SORCE_KILL_LOOPS", "6"))  # more in the soak: SORCE_KILL_LOOPS=100
    half = n // 2
    for i in range(n):
        model = tiny_clip if i < half else tiny_siglip  # the second half re-indexes after a model change
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), str(model), str(photo_dir), "1" if i >= half else "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().startswith("go")
        time.sleep(float(rng.uniform(0.0, 0.5)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        done, fp = _check_store(data, 12)
        if (
            i not in (0, half)
        ):  # (the first run of the second half re-indexes with another model: dropping the old vectors is right)
            assert done >= committed  # a committed photo is never lost
        committed = done
        assert fp == (fingerprints[model] if model in fingerprints else fingerprints.setdefault(model, fp))
    assert kills >= n // 2
    print(f"kill loop: {kills} of {n} runs killed with SIGKILL; the store opened and matched after every one")
    with Library(data) as lib:
        from sorce_desktop.core.models.dual import DualEncoderEmbedder

        e = DualEncoderEmbedder(tiny_siglip)
        lib.indexer(e, get_layout("grid3")).run()
        assert lib.store.counts()["indexed"] == 12 and lib.store.binding().fingerprint == e.fingerprint


@pytest.mark.slow
def test_load_100k_rows_search_while_indexing(tmp_path, clip_embedder, photo_dir):
    """100,000 catalog rows with vectors; searches keep answering while an indexing run commits."""
    import threading

    with Library(tmp_path / "data") as lib:
        lib.bind(clip_embedder, get_layout("global"))
        rng = np.random.default_rng(0)
        batch = []
        for i in range(100_000):
            v = rng.standard_normal(clip_embedder.dim).astype(np.float32)
            v /= np.linalg.norm(v)
            from sorce_desktop.core.models.base import RegionEmbedding
            from sorce_desktop.core.regions import Box

            batch.append(
                IndexedPhoto(
                    f"/synthetic/{i:06d}.jpg",
                    None,
                    1,
                    1,
                    f"h{i}",
                    640,
                    480,
                    [RegionEmbedding("global", Box(0, 0, 640, 480), v)],
                )
            )
            if len(batch) == 5000:
                lib.store.commit_photos(batch)
                batch = []
        assert lib.store.counts()["indexed"] == 100_000 and lib.store.vectors.count == 100_000
        remember_folder(lib, photo_dir)
        service = lib.search_service(clip_embedder)
        errors = []
        answers = []

        def searcher():
            try:
                while not stop.is_set():
                    answers.append(len(service.search("a bicycle", top=20)))
            except Exception as exc:  # pragma: no cover - the failure is reported below
                errors.append(exc)

        stop = threading.Event()
        t = threading.Thread(target=searcher)
        t.start()
        report = lib.indexer(clip_embedder, get_layout("global"), batch_size=2).run([str(photo_dir)])
        stop.set()
        t.join(30)
        assert not errors and answers and all(a == 20 for a in answers)
        assert report.embedded == 12 and lib.store.counts()["indexed"] == 100_012


def test_two_processes_one_writer_clear_refusal(tmp_path, tiny_clip, photo_dir, capsys):
    """Another process (the GUI, or `watch`) holds the data folder: `index` refuses with a sentence,
    `search` and `status` still read, and nothing is corrupted."""
    data = tmp_path / "data"
    no_text_reading(data)
    assert cli_main(["index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", str(data)]) == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nfrom sorce_desktop.core.library import Library\n"
            "lib = Library(sys.argv[1]); print('ready', flush=True); time.sleep(120)",
            str(data),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        capsys.readouterr()
        assert cli_main(["index", "--data-dir", str(data)]) == 1
        err = capsys.readouterr().err
        assert "Another sorce-desktop process (pid" in err and "Traceback" not in err
        assert cli_main(["search", "a dog", "--json", "--data-dir", str(data)]) == 0
        assert len(json.loads(capsys.readouterr().out)) > 0
    finally:
        holder.kill()
        holder.wait()
    assert cli_main(["index", "--data-dir", str(data), "--json"]) == 0  # the lock died with its holder
    assert json.loads(capsys.readouterr().out)["unchanged"] == 12


@pytest.mark.slow
def test_100k_empty_files_in_one_folder(tmp_path, clip_embedder):
    """A folder of 100,000 zero-byte "photos" (a failed sync): each recorded with its reason in bulk,
    without loading the model or decoding anything, and not retried while unchanged."""
    root = tmp_path / "empties"
    root.mkdir()
    for i in range(100_000):
        os.close(os.open(root / f"IMG_{i:06d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    shutil.copy2(scene_photos(1)[0], root / "real.jpg")
    loads = []

    def factory():
        loads.append(1)
        return clip_embedder

    with Library(tmp_path / "data") as lib:
        remember_folder(lib, root)
        lib.bind(clip_embedder, get_layout("grid3"))
        report = lib.indexer(factory, get_layout("grid3")).run()
        counts = lib.store.counts()
        assert (counts["failed"], counts["indexed"], report.embedded) == (100_000, 1, 1)
        assert lib.store.errors()[0][1] == "the file is empty (0 bytes)"
        report = lib.indexer(factory, get_layout("grid3")).run()
        assert report.unchanged == 100_001 and report.embedded == 0 and len(loads) == 1
