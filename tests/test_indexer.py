"""Indexer and search through the real store: incremental runs embed exactly what changed."""

import os
import shutil
import time

import pytest
from conftest import CountingEmbedder, remember_folder, scene_photos
from PIL import Image

from sorce_desktop.core.library import Library
from sorce_desktop.core.regions import get_layout
from sorce_desktop.core.store.catalog import ModelMismatch


@pytest.fixture
def lib(tmp_path):
    with Library(tmp_path / "data") as library:
        yield library


def run(lib, embedder, layout="grid3"):
    lib.bind(embedder.inner if isinstance(embedder, CountingEmbedder) else embedder, get_layout(layout))
    return lib.indexer(embedder, get_layout(layout), batch_size=4).run()


def test_incremental_runs_embed_exactly_what_changed(lib, clip_embedder, photo_dir, untouched):
    untouched(photo_dir)
    remember_folder(lib, photo_dir)
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert (r.new, r.embedded, e.photos) == (12, 12, 12)
    assert lib.store.counts()["indexed"] == 12
    assert lib.store.vectors.count == 12 * 10

    e2 = CountingEmbedder(clip_embedder)
    r = run(lib, e2)
    assert (r.embedded, r.unchanged, e2.photos) == (0, 12, 0)


def test_add_modify_delete_move_rename(lib, clip_embedder, photo_dir):
    remember_folder(lib, photo_dir)
    run(lib, CountingEmbedder(clip_embedder))
    extra = scene_photos(2, start=40)
    # add one
    shutil.copy2(extra[0], photo_dir / "added.jpg")
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert (r.new, e.photos) == (1, 1)
    # modify one (new content under the same name)
    target = sorted(photo_dir.glob("0*.jpg"))[0]
    shutil.copyfile(extra[1], target)
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert (r.changed, e.photos) == (1, 1)
    # touch without changing content: no embedding
    os.utime(target, ns=(1, 1_000_000_000))
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert e.photos == 0 and lib.store.photo_by_path(str(target)).mtime_ns == 1_000_000_000
    # delete one
    (photo_dir / "added.jpg").unlink()
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert (r.deleted, e.photos) == (1, 0)
    assert lib.store.photo_by_path(str(photo_dir / "added.jpg")) is None
    # move one into the subfolder: vectors kept
    moved_from = sorted(photo_dir.glob("0*.jpg"))[1]
    before = lib.store.photo_by_path(str(moved_from))
    regions_before = [r.id for r in lib.store.regions_of(before.id)]
    os.rename(moved_from, photo_dir / "sub" / "moved.jpg")
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert (r.moved, r.new, r.deleted, e.photos) == (1, 0, 0, 0)
    after = lib.store.photo_by_path(str(photo_dir / "sub" / "moved.jpg"))
    assert after.id == before.id and [x.id for x in lib.store.regions_of(after.id)] == regions_before
    # rename the subfolder: every photo under it moves, nothing embedded
    os.rename(photo_dir / "sub", photo_dir / "renamed")
    e = CountingEmbedder(clip_embedder)
    r = run(lib, e)
    assert (r.moved, r.new, r.deleted, e.photos) == (4, 0, 0, 0)
    paths = {p.path for p in lib.store.photos_under(str(photo_dir))}
    on_disk = {str(p) for p in photo_dir.rglob("*.jpg")}
    assert paths == on_disk
    assert lib.store.vectors.count == len(on_disk) * 10


def test_bad_files_are_recorded_and_the_run_goes_on(indexed_library, clip_embedder, photo_dir, untouched):
    (photo_dir / "empty.jpg").write_bytes(b"")
    (photo_dir / "text.jpg").write_text("not a photo")
    data = scene_photos(1)[0].read_bytes()
    (photo_dir / "cut.jpg").write_bytes(data[: len(data) // 4])
    os.mkfifo(photo_dir / "fifo.jpg")
    os.symlink(photo_dir, photo_dir / "loop")
    (photo_dir / ".hidden").mkdir()
    shutil.copy2(scene_photos(1)[0], photo_dir / ".hidden" / "h.jpg")
    shutil.copy2(scene_photos(1)[0], photo_dir / "download.jpg.part")
    untouched(photo_dir)
    lib, r = indexed_library(photo_dir, batch_size=4)
    errors = dict(lib.store.errors())
    assert r.embedded == 12
    assert "empty" in errors[str(photo_dir / "empty.jpg")]
    assert "not an image" in errors[str(photo_dir / "text.jpg")]
    assert "truncated" in errors[str(photo_dir / "cut.jpg")] or "damaged" in errors[str(photo_dir / "cut.jpg")]
    assert "not a regular file" in errors[str(photo_dir / "fifo.jpg")]
    indexed = {p.path for p in lib.store.photos_under(str(photo_dir)) if p.status == "indexed"}
    assert not any(".hidden" in p or p.endswith(".part") or "/loop/" in p for p in indexed)
    # failures are not retried while the file is unchanged
    r = run(lib, clip_embedder)
    assert r.embedded == 0 and r.failed == 0


@pytest.mark.slow
def test_crop_of_a_region_finds_its_photo_and_box(indexed_library, clip_embedder, photo_dir, untouched):
    untouched(photo_dir)
    lib, _ = indexed_library(photo_dir, batch_size=4)
    service = lib.search_service(clip_embedder)
    photos = sorted(photo_dir.rglob("*.jpg"))
    for photo in photos[:6]:
        row = lib.store.photo_by_path(str(photo))
        for region in lib.store.regions_of(row.id)[1::4]:
            hits = service.search(image=str(photo), crop=region.box, top=3)
            assert hits[0].path == str(photo)
            assert hits[0].box == region.box and hits[0].region == region.name
            assert hits[0].score > 0.9999


def test_search_options(indexed_library, clip_embedder, photo_dir):
    lib, _ = indexed_library(photo_dir, batch_size=4)
    service = lib.search_service(clip_embedder)
    hits = service.search("a dog on a sofa", top=5)
    assert len(hits) == 5 and len({h.path for h in hits}) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert 0 <= h.box.x0 < h.box.x1 <= h.width and 0 <= h.box.y0 < h.box.y1 <= h.height
    sub = service.search("a dog on a sofa", top=10, folder=str(photo_dir / "sub"))
    assert sub and all(h.path.startswith(str(photo_dir / "sub") + os.sep) for h in sub)
    assert len(sub) == 3
    assert service.search("x", top=10, min_score=0.9999) == []  # no region is the text's own vector
    from sorce_desktop.core.search.answer import MinScoreError, QueryError

    with pytest.raises(MinScoreError, match="between -1 and 1"):  # a cosine cannot reach 2: refused
        service.search("x", top=10, min_score=2.0)

    with pytest.raises(QueryError):
        service.search("  \x00\t ")
    assert service.search("🐈 猫 кошка " * 200, top=2)  # long, emoji, non-Latin: an answer


def test_model_change_never_mixes_vectors(indexed_library, tiny_siglip, photo_dir):
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    lib, _ = indexed_library(photo_dir, batch_size=4)
    other = DualEncoderEmbedder(tiny_siglip)
    with pytest.raises(ModelMismatch, match="Re-indexing 12 photos"):
        lib.bind(other, get_layout("grid3"))
    with pytest.raises(ModelMismatch):
        lib.search_service(other)
    assert lib.bind(other, get_layout("grid3"), reindex=True) is True
    assert lib.store.counts()["pending"] == 12 and lib.store.vectors.count == 0
    r = lib.indexer(other, get_layout("grid3")).run()
    assert r.embedded == 12 and lib.store.vectors.count == 120
    assert lib.store.vectors.dim == other.dim


def test_remove_folder_forgets_photos_not_files(indexed_library, photo_dir, untouched):
    untouched(photo_dir)
    lib, _ = indexed_library(photo_dir, batch_size=4)
    assert lib.store.remove_folder(str(photo_dir)) == 12
    assert lib.store.counts()["indexed"] == 0 and lib.store.vectors.count == 0


def test_offline_folder_keeps_its_photos(indexed_library, clip_embedder, photo_dir, tmp_path):
    lib, _ = indexed_library(photo_dir, batch_size=4)
    away = tmp_path / "unplugged"
    os.rename(photo_dir, away)
    r = run(lib, clip_embedder)
    assert r.offline == [str(photo_dir)] and r.deleted == 0
    assert lib.store.counts()["indexed"] == 12 and not lib.store.folder_online(str(photo_dir))
    os.rename(away, photo_dir)
    r = run(lib, clip_embedder)
    assert r.embedded == 0 and lib.store.folder_online(str(photo_dir))


def test_pause_and_cancel(lib, clip_embedder, photo_dir):
    import threading

    remember_folder(lib, photo_dir)
    lib.bind(clip_embedder, get_layout("grid3"))
    events = []
    ix = lib.indexer(clip_embedder, get_layout("grid3"), batch_size=2)
    ix.on_progress = lambda p: events.append(p)
    ix.pause()
    t = threading.Thread(target=ix.run)
    t.start()
    deadline = time.time() + 10
    while not any(p.phase == "paused" for p in events) and time.time() < deadline:
        time.sleep(0.01)
    assert any(p.phase == "paused" for p in events)
    assert lib.store.counts()["indexed"] == 0
    ix.cancel()
    t.join(10)
    assert events[-1].phase == "cancelled"
    done_before = lib.store.counts()["indexed"]
    assert done_before < 12 and lib.store.counts()["pending"] == 12 - done_before
    r = lib.indexer(clip_embedder, get_layout("grid3")).run()
    assert lib.store.counts()["indexed"] == 12 and r.embedded == 12 - done_before


@pytest.mark.slow
def test_tiny_image_and_panorama_index(indexed_library, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    Image.new("RGB", (1, 1), "red").save(d / "one.png")
    Image.new("RGB", (30000, 200), (30, 60, 90)).save(d / "pano.jpg", quality=60)
    _, r = indexed_library(d, layout="tiles", batch_size=4)
    assert r.embedded == 2 and r.failed == 0
