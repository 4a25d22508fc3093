"""Live folder watching with the real watchdog observer on temporary folders.

After every change the catalog must match the folder tree exactly, and no photo may be embedded twice
(the embedder below counts every photo it embeds by its pixels).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CountingEmbedder, no_text_reading, remember_folder, scene_photos
from PIL import Image

from sorce_desktop.core.indexing import watcher as watcher_mod
from sorce_desktop.core.indexing.scanner import is_temporary_name
from sorce_desktop.core.indexing.watcher import Watcher
from sorce_desktop.core.library import Library
from sorce_desktop.core.regions import get_layout

SETTLE = 0.3


def make_photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A small JPEG with unique content."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path


def tree_photos(root: Path) -> set[str]:
    """What the catalog must hold: image files, temporary names and hidden folders left out."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for n in filenames:
            if n.lower().endswith((".jpg", ".jpeg", ".png")) and not is_temporary_name(n):
                out.add(os.path.join(dirpath, n))
    return out


class Env:
    def __init__(self, tmp_path: Path, embedder, folders=("photos",), **kw):
        self.tmp = tmp_path
        self.roots = [tmp_path / f for f in folders]
        for r in self.roots:
            r.mkdir(exist_ok=True)
        self.root = self.roots[0]
        self.lib = Library(tmp_path / "data")
        for r in self.roots:
            remember_folder(self.lib, r)
        self.layout = get_layout("global")
        self.lib.bind(embedder, self.layout)
        self.embedder = CountingEmbedder(embedder)
        self.events: list = []
        self.kw = dict(settle_s=SETTLE, reconcile_every_s=0, root_check_s=0.2, **kw)
        self.watcher: Watcher | None = None

    def start(self) -> Watcher:
        indexer = self.lib.indexer(self.embedder, self.layout, batch_size=16)
        self.service = self.lib.indexing_service(indexer).start()
        self.watcher = Watcher(self.service, on_event=self.events.append, **self.kw)
        self.watcher.start()
        assert self.watcher.wait_ready(60)
        return self.watcher

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.service.stop()
            self.watcher = None

    def idle(self, timeout: float = 60) -> None:
        assert self.watcher.wait_idle(timeout, quiet=0.8), "the watcher did not settle"

    def catalog(self, status: str | None = "indexed") -> set[str]:
        return {
            p.path for p in self.lib.store.photos_under() if status is None or p.status == status
        }

    def assert_matches(self, timeout: float = 30) -> None:
        on_disk = set().union(*(tree_photos(r) for r in self.roots))
        # Events can take a moment to arrive on a loaded machine: wait for the catalog to catch up, then
        # for everything to be quiet, and check again (so a late duplicate would still be seen).
        deadline = time.time() + timeout
        while self.catalog() != on_disk and time.time() < deadline:
            time.sleep(0.05)
        self.idle()
        assert self.catalog(None) == on_disk, self.events
        assert self.catalog() == on_disk
        assert self.lib.store.vectors.count == len(on_disk)  # one region each ('global' layout)
        self.embedder.assert_none_twice()

    def kinds(self, kind: str) -> list:
        return [e for e in self.events if e.kind == kind]

    def close(self) -> None:
        self.stop()
        self.lib.close()


@pytest.fixture
def env(tmp_path, clip_embedder):
    e = Env(tmp_path, clip_embedder)
    yield e
    e.close()


def copy_in(src: Path, dest: Path) -> Path:
    shutil.copyfile(src, dest)
    return dest


def test_create_modify_delete(env):
    env.start()
    photos = scene_photos(3)
    a = copy_in(photos[0], env.root / "a.jpg")
    env.assert_matches()
    assert env.embedder.total == 1
    assert any(str(a) in e.paths for e in env.kinds("indexed"))
    # modify: new content under the same name is embedded again, once
    shutil.copyfile(photos[1], a)
    env.assert_matches()
    assert env.embedder.total == 2, env.events
    # a touch with the same content: nothing embedded
    os.utime(a, ns=(1, 2_000_000_000))
    env.assert_matches()
    assert env.embedder.total == 2, env.events
    assert env.lib.store.photo_by_path(str(a)).mtime_ns == 2_000_000_000
    # delete
    a.unlink()
    env.assert_matches()
    assert env.catalog(None) == set() and env.kinds("removed")


def test_slow_write_waits_for_a_complete_file(env):
    env.start()
    data = scene_photos(1)[0].read_bytes()
    target = env.root / "slow.jpg"
    chunks = [data[i : i + len(data) // 10 + 1] for i in range(0, len(data), len(data) // 10 + 1)]
    with open(target, "wb") as f:
        for i, c in enumerate(chunks):
            f.write(c)
            f.flush()
            # over a second in all, with one pause longer than the settle time (a writer stalling)
            time.sleep(0.6 if i == 3 else 0.06)
    env.assert_matches()
    assert env.embedder.total == 1
    row = env.lib.store.photo_by_path(str(target))
    assert row.size == len(data) and row.status == "indexed"


def test_temporary_names_wait_until_renamed(env):
    env.start()
    src = scene_photos(1)[0]
    for name in ("photo.jpg.part", "photo.jpg.crdownload", ".photo.jpg", "~$photo.jpg", "photo.jpg.tmp"):
        copy_in(src, env.root / name)
    (env.root / ".sync").mkdir()
    copy_in(src, env.root / ".sync" / "staged.jpg")
    env.idle()
    time.sleep(SETTLE * 2)
    env.idle()
    assert env.catalog(None) == set() and env.embedder.total == 0
    os.rename(env.root / "photo.jpg.part", env.root / "photo.jpg")
    env.assert_matches()
    assert env.catalog() == {str(env.root / "photo.jpg")} and env.embedder.total == 1


@pytest.mark.slow
def test_moves_and_renames_keep_vectors(env, tmp_path):
    photos = scene_photos(6)
    (env.root / "sub").mkdir()
    for i, p in enumerate(photos[:4]):
        copy_in(p, (env.root / "sub" if i >= 2 else env.root) / f"p{i}.jpg")
    env.start()
    env.assert_matches()
    assert env.embedder.total == 4

    def regions(path):
        row = env.lib.store.photo_by_path(str(path))
        return row.id, [r.id for r in env.lib.store.regions_of(row.id)]

    # move inside the watched folder
    before = regions(env.root / "p0.jpg")
    os.rename(env.root / "p0.jpg", env.root / "sub" / "moved.jpg")
    env.assert_matches()
    assert regions(env.root / "sub" / "moved.jpg") == before and env.embedder.total == 4
    # rename in place
    os.rename(env.root / "p1.jpg", env.root / "renamed.jpg")
    env.assert_matches()
    assert env.embedder.total == 4
    # move in from outside: a new photo, embedded once
    outside = tmp_path / "outside"
    outside.mkdir()
    copy_in(photos[4], outside / "in.jpg")
    os.rename(outside / "in.jpg", env.root / "in.jpg")
    env.assert_matches()
    assert env.embedder.total == 5
    # move out: forgotten
    os.rename(env.root / "renamed.jpg", outside / "out.jpg")
    env.assert_matches()
    assert env.embedder.total == 5 and env.kinds("removed")
    # rename a folder: every photo under it moves, nothing is embedded
    before_sub = {p.name: regions(p) for p in (env.root / "sub").iterdir()}
    os.rename(env.root / "sub", env.root / "album")
    env.assert_matches()
    assert {p.name: regions(p) for p in (env.root / "album").iterdir()} == before_sub
    assert env.embedder.total == 5
    # a folder moved in from outside: its photos are new
    (outside / "trip").mkdir()
    copy_in(photos[5], outside / "trip" / "t.jpg")
    os.rename(outside / "trip", env.root / "trip")
    env.assert_matches()
    assert env.embedder.total == 6
    # a folder moved out: its photos are forgotten
    os.rename(env.root / "album", outside / "album")
    env.assert_matches()
    assert env.embedder.total == 6
    # renamed over an existing photo (an atomic save): the replaced photo and its vectors go
    os.rename(env.root / "in.jpg", env.root / "trip" / "t.jpg")
    env.assert_matches()
    assert env.embedder.total == 6


def test_move_between_two_watched_folders_keeps_vectors(tmp_path, clip_embedder):
    e = Env(tmp_path, clip_embedder, folders=("a", "b"))
    try:
        copy_in(scene_photos(1)[0], e.roots[0] / "x.jpg")
        e.start()
        e.assert_matches()
        row = e.lib.store.photo_by_path(str(e.roots[0] / "x.jpg"))
        os.rename(e.roots[0] / "x.jpg", e.roots[1] / "x.jpg")
        e.assert_matches()
        moved = e.lib.store.photo_by_path(str(e.roots[1] / "x.jpg"))
        assert moved.id == row.id and moved.folder == str(e.roots[1]) and e.embedder.total == 1
    finally:
        e.close()


def test_burst_of_500_files_becomes_batches(env, tmp_path):
    staging = tmp_path / "staging"
    for i in range(500):
        make_photo(staging / f"b{i:03d}.jpg", seed=1000 + i)
    env.start()
    for p in sorted(staging.iterdir()):
        shutil.copyfile(p, env.root / p.name)
    env.assert_matches()
    assert env.embedder.total == 500 and len(env.catalog()) == 500
    assert env.watcher.stats["batches"] <= 500 // 8, env.watcher.stats  # batches, not 500 jobs


@pytest.mark.parametrize("how", ["unplugged", "deleted"])
def test_folder_removed_and_brought_back(env, tmp_path, how):
    photos = scene_photos(3)
    for i, p in enumerate(photos):
        shutil.copy2(p, env.root / f"p{i}.jpg")
    env.start()
    env.assert_matches()
    away = tmp_path / "away"
    if how == "unplugged":
        os.rename(env.root, away)  # the drive is gone with everything on it
    else:
        shutil.copytree(env.root, away)  # copy2 keeps mtimes: the photos come back unchanged
        shutil.rmtree(env.root)
    deadline = time.time() + 10
    while not env.kinds("offline") and time.time() < deadline:
        time.sleep(0.05)
    env.idle()
    assert env.kinds("offline") and env.watcher.offline_folders() == [str(env.root)]
    assert not env.lib.store.folder_online(str(env.root))
    assert len(env.catalog()) == 3, "photos of an absent folder must stay in the index"
    if how == "unplugged":
        os.rename(away, env.root)
    else:
        shutil.copytree(away, env.root)
    deadline = time.time() + 10
    while not env.kinds("online") and time.time() < deadline:
        time.sleep(0.05)
    env.assert_matches()
    assert env.lib.store.folder_online(str(env.root)) and env.watcher.offline_folders() == []
    assert env.embedder.total == 3  # nothing re-embedded
    # and it is watched again
    copy_in(scene_photos(1, start=10)[0], env.root / "new.jpg")
    env.assert_matches()
    assert env.embedder.total == 4


def test_reconciliation_at_start_catches_what_changed_while_stopped(env, tmp_path):
    photos = scene_photos(4)
    for i, p in enumerate(photos[:3]):
        copy_in(p, env.root / f"p{i}.jpg")
    env.start()
    env.assert_matches()
    env.stop()
    # while nobody watches: add, delete, move
    copy_in(photos[3], env.root / "added.jpg")
    (env.root / "p0.jpg").unlink()
    (env.root / "sub").mkdir()
    os.rename(env.root / "p1.jpg", env.root / "sub" / "p1.jpg")
    env.start()
    env.assert_matches()
    assert env.embedder.total == 4 and env.kinds("reconciled")


def test_falls_back_to_polling_when_notifications_fail(tmp_path, clip_embedder, monkeypatch):
    class NoWatchesLeft:
        def __init__(self, *a, **k):
            pass

        def start(self):
            pass

        def schedule(self, *a, **k):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        def stop(self):
            pass

        def join(self, timeout=None):
            pass

    monkeypatch.setattr(watcher_mod, "_native_observer_class", lambda: NoWatchesLeft)
    e = Env(tmp_path, clip_embedder, poll_interval_s=0.2)
    try:
        e.start()
        notices = e.kinds("notice")
        assert notices and "max_user_watches" in notices[0].message
        copy_in(scene_photos(1)[0], e.root / "polled.jpg")
        deadline = time.time() + 15
        while not e.catalog() and time.time() < deadline:
            time.sleep(0.1)
        e.assert_matches()
        assert e.catalog() == {str(e.root / "polled.jpg")} and e.embedder.total == 1
    finally:
        e.close()


def test_stop_finishes_the_changes_it_saw(env):
    env.start()
    photos = scene_photos(5)
    for i, p in enumerate(photos):
        copy_in(p, env.root / f"late{i}.jpg")
    time.sleep(0.1)  # the events are delivered; the files have not settled yet
    env.watcher.stop()
    assert len(env.catalog()) == 5 and env.embedder.total == 5
    assert env.kinds("stopped")


def _read_events(proc, until, timeout=90):
    """Read JSON event lines from the watch process until ``until(event)`` is true."""
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        ev = json.loads(line)
        out.append(ev)
        if until(ev):
            return out
    raise AssertionError(f"no matching event; got {out}")


@pytest.mark.slow
def test_watch_command_prints_and_stops_cleanly_on_ctrl_c(tmp_path, tiny_clip):
    root = tmp_path / "photos"
    root.mkdir()
    data = tmp_path / "data"
    no_text_reading(data)
    # faulthandler: if it ever hangs, SIGABRT makes it print every thread's stack (shown in the failure)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    cmd = [
        sys.executable, "-m", "sorce_desktop", "watch", str(root), "--data-dir", str(data),
        "--model", str(tiny_clip), "--layout", "global", "--settle", "0.3", "--json",
    ]  # fmt: skip
    # Ctrl+C as in a terminal: a shell running the tests as a background job hands its children SIGINT
    # ignored, and Python then leaves it ignored (it only installs KeyboardInterrupt over the default).
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if os.name == "posix" else None,
    )  # fmt: skip
    try:
        _read_events(proc, lambda ev: ev["kind"] == "reconciled")
        photos = scene_photos(3)
        copy_in(photos[0], root / "one.jpg")
        _read_events(proc, lambda ev: ev["kind"] == "indexed" and str(root / "one.jpg") in ev["paths"])
        # Ctrl+C right after two more photos land: they are finished before it exits.
        copy_in(photos[1], root / "two.jpg")
        copy_in(photos[2], root / "three.jpg")
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"watch did not stop within 60 s of Ctrl+C; stdout:\n{out[-2000:]}\nstderr:\n{err[-8000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    kinds = [json.loads(line)["kind"] for line in out.splitlines() if line.strip()]
    assert "stopped" in kinds and "stopping" in err
    with Library(data, writer=False) as lib:
        indexed = {p.path for p in lib.store.photos_under() if p.status == "indexed"}
        assert indexed == {str(root / n) for n in ("one.jpg", "two.jpg", "three.jpg")}
        assert lib.store.counts()["pending"] == 0
