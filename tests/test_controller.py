"""The library controller (core/controller.py): one library's policy in one place. A settings change becomes a
plan; folders are added and removed as jobs of the indexing service, and the folder watcher writes nothing;
another model is refused the same way for every front end; each hit's outline is decided in core. Real store,
drawn photos, a tiny real model."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace

import pytest
from conftest import no_text_reading, scene_photos

from sorce_desktop.core.controller import (
    LibraryController,
    ModelMismatch,
    ModelRequest,
    ModelStep,
    Redo,
    Settled,
)
from sorce_desktop.core.library import Library
from sorce_desktop.core.models.speed import SPEEDS, THOROUGH, speed_of_variant
from sorce_desktop.core.regions import Box, get_layout
from sorce_desktop.core.search.answer import MatchedRegion, PhotoHit

WORKER = "sorce-indexing"  # the indexing service's thread: the one writer


def copy_photos(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(scene_photos(n, start)):
        shutil.copy2(p, folder / f"p{i:03d}.jpg")
    return folder


@pytest.fixture
def controller(tmp_path, clip_embedder):
    data = tmp_path / "data"
    no_text_reading(data)  # reading text costs seconds a photo and says nothing here
    lib = Library(data)
    lib.bind(clip_embedder, get_layout("global"))
    c = LibraryController(lib)
    c.use(Settled(clip_embedder, get_layout("global"))).result(60)
    yield c
    c.close()


def record_folder_writes(store) -> list[tuple[str, str, str]]:
    """(what, folder, thread) for every write of a folder row, whoever makes it."""
    writes: list[tuple[str, str, str]] = []
    for name in ("add_folder", "set_folder_online", "remove_folder"):
        original = getattr(store, name)

        def spy(folder, *args, _original=original, _name=name, **kw):
            writes.append((_name, str(folder), threading.current_thread().name))
            return _original(folder, *args, **kw)

        setattr(store, name, spy)
    return writes


def test_folders_are_added_and_removed_as_service_jobs_and_the_watcher_writes_nothing(controller, tmp_path):
    store = controller.store
    writes = record_folder_writes(store)
    a, b, c = (copy_photos(tmp_path / n, 2, start=2 * i) for i, n in enumerate("abc"))
    folder, fut = controller.add_folder(a, index=True)
    assert fut.result(60) == folder == str(a)
    # the watcher is told of a folder the library does not have yet (as `watch FOLDER` does) ...
    watcher = controller.watch(settle_s=0.1, root_check_s=0.05, folders=[str(a), str(c)], reconcile_at_start=False)
    assert watcher.wait_ready(30)
    # ... and of one more while it runs (as the window's watcher was)
    assert watcher.add_folder(b, reconcile=False) == str(b)
    controller.service.wait_idle(60)
    assert store.folders() == [str(a), str(c), str(b)]
    # a folder that goes away is marked offline: by the service, on the watcher's word
    shutil.rmtree(c)
    deadline = threading.Event()
    for _ in range(400):
        if not store.folder_online(str(c)):
            break
        deadline.wait(0.05)
    assert not store.folder_online(str(c))
    controller.remove_folder(str(b)).result(60)
    assert str(b) not in store.folders()
    kinds = {(what, f) for what, f, _ in writes}
    assert {("add_folder", str(a)), ("add_folder", str(b)), ("add_folder", str(c))} <= kinds
    assert ("set_folder_online", str(c)) in kinds and ("remove_folder", str(b)) in kinds
    assert {thread for _, _, thread in writes} == {WORKER}, writes


def test_a_settings_change_becomes_a_plan_of_what_is_redone_and_kept(controller, tmp_path):
    folder = copy_photos(tmp_path / "photos", 3)
    controller.add_folder(folder, index=True)
    controller.service.wait_idle(120)
    variants = controller.store.visual_variants()
    assert sum(variants.values()) == 3
    bound = controller.store.binding()
    now = controller.settings
    now.model, now.layout = bound.model_id, bound.layout  # the settings name what the index was made with
    made_at = {speed_of_variant(v) or THOROUGH.name for v in variants}
    assert len(made_at) == 1
    other_speed = next(s for s in SPEEDS if s not in made_at)
    now.speed = next(iter(made_at))  # indexing at the speed the photos were made at

    same = controller.plan(replace(now))
    assert same.redoes == [] and not same.rebind and same.pictures == 0

    layout = controller.plan(replace(now, layout="grid3"))
    assert layout.rebind and layout.layout_only and layout.pictures == 3 and layout.redoes == [Redo.PICTURES]

    model = controller.plan(replace(now, model="another/model"))
    assert model.rebind and not model.layout_only and model.pictures == 3
    kept = controller.plan(replace(now, model="another/model", speed=other_speed), keep_binding=True)  # "Keep Current"
    assert not kept.rebind and kept.speed_redo == 3

    speed = controller.plan(replace(now, speed=other_speed))
    assert speed.speed_changed and speed.speed_redo == 3 and speed.redoes == [Redo.SPEED]
    assert speed.without_speed_redo().redoes == [Redo.RELOAD]  # only new photos at the new speed

    text = controller.plan(replace(now, ocr=not now.ocr))
    assert text.reread_text and text.pictures == 0 and text.redoes == [Redo.TEXT]

    device = controller.plan(replace(now, device="cpu" if now.device != "cpu" else "auto"))
    assert device.redoes == [Redo.RELOAD] and device.pictures == 0


def test_another_model_is_refused_before_it_loads_unless_reindexing(controller, tmp_path):
    bound = controller.store.binding()
    # an index with no picture vectors yet takes another model: nothing would be mixed
    assert controller.step_for(ModelRequest("another/model")) == ModelStep.BIND
    controller.add_folder(copy_photos(tmp_path / "photos", 1), index=True)
    controller.service.wait_idle(120)
    assert controller.store.counts()["indexed"] == 1
    assert controller.step_for(ModelRequest()) == ModelStep.KEEP
    assert controller.step_for(ModelRequest(bound.model_id, "global")) == ModelStep.KEEP
    with pytest.raises(ModelMismatch):
        controller.step_for(ModelRequest("another/model"))
    with pytest.raises(ModelMismatch, match="grid3"):
        controller.step_for(ModelRequest(layout="grid3"))
    assert controller.step_for(ModelRequest("another/model", reindex=True)) == ModelStep.BIND
    # the index's own model settles without loading anything until a job needs it
    settled = controller.settle(ModelRequest(), lazy=True)
    assert callable(settled.embedder) and settled.layout.name == "global" and not settled.rebound


def test_each_hits_outline_is_decided_in_core():
    picture = MatchedRegion("picture", Box(10, 10, 50, 50), 0.3, "cell_0_0")
    line = MatchedRegion("text", Box(60, 5, 90, 15), 1.0, "text", "STOP", "letters")
    name = MatchedRegion("name", Box(0, 0, 100, 100), 0.5, "name", "stop.jpg", "name")
    both = PhotoHit("/p/a.jpg", 0.9, picture.box, picture.region, 1, 100, 100, "both", "STOP", regions=[picture, line, name])
    assert both.shown_box == picture.box  # not refined yet: as matched
    both.refined_box = Box(20, 20, 40, 40)
    assert both.shown_box == Box(20, 20, 40, 40)
    assert both.outlines() == [("picture", Box(20, 20, 40, 40), picture), ("text", line.box, line)]  # no name box
    view = both.refinable()
    assert view is not None and view.box == picture.box and view.region == picture.region
    words = PhotoHit("/p/b.jpg", 0.8, line.box, "text", 2, 100, 100, "text", "STOP", regions=[line])
    words.refined_box = Box(0, 0, 1, 1)  # a line of words is outlined as read, whatever refinement says
    assert words.shown_box == line.box and words.refinable() is None
    bare = PhotoHit("/p/c.jpg", 0.7, Box(1, 2, 3, 4), "full", 3, 10, 10)
    assert bare.outlines() == [("picture", Box(1, 2, 3, 4), None)]


def test_a_folder_added_while_a_full_scan_waits_is_indexed_by_it(controller, tmp_path):
    """The folder's row goes ahead of the scans waiting (a waiting full scan absorbs the folder's own)."""
    folder = copy_photos(tmp_path / "photos", 2)
    go = threading.Event()
    controller.call(lambda: go.wait(60))  # the worker is busy; what follows waits in its queue
    controller.scan()
    added, fut = controller.add_folder(folder, index=True)
    go.set()
    assert fut.result(60) == added
    controller.service.wait_idle(120)
    assert controller.store.counts()["indexed"] == 2


def test_a_folder_not_there_reads_as_offline_to_status_the_window_and_watch_alike(tmp_path):
    """One rule for "offline" (scanner.folder_offline): with no watcher running, `status` (the reader's
    report) and the window (Library.status, which its Session shows) say a folder whose path vanished, and
    an empty mount point whose photos the catalog holds, are offline; `watch` reports the same two."""
    import os

    from sorce_desktop.core.controller import EventKind, LibraryReader

    data = tmp_path / "data"
    no_text_reading(data)
    lib = Library(data)
    folders = {name: copy_photos(tmp_path / name, 1) for name in ("here", "gone", "mount")}
    for f in folders.values():
        lib.store.add_folder(str(f))
        photo = f / "p000.jpg"
        st = photo.stat()
        lib.store.upsert_pending([(str(photo), str(f), st.st_size, st.st_mtime_ns, None)])
    shutil.rmtree(folders["gone"])  # an unplugged drive's folder: the path is not there
    os.remove(folders["mount"] / "p000.jpg")  # an unmounted share: its mount point is there, empty
    offline = {str(folders["gone"]), str(folders["mount"])}

    def said_offline(rows) -> set[str]:
        return {
            r["path"] if isinstance(r, dict) else r.path
            for r in rows
            if not (r["online"] if isinstance(r, dict) else r.online)
        }

    # no watcher, nothing written since the folders were seen: the catalog still says all three are online
    assert all(lib.store.folder_online(str(f)) for f in folders.values())
    assert said_offline(LibraryReader(lib).report()["folders"]) == offline  # `status`
    assert said_offline(lib.status().folders) == offline  # the window's folder list (Session.refresh_status)
    # `watch`: the watcher reports the same two, and the service records them
    c = LibraryController(lib)
    events = []
    watcher = c.watch(on_event=events.append, reconcile_at_start=False, root_check_s=0.05)
    try:
        assert watcher.wait_ready(30)
        c.service.wait_idle(30)
        assert {e.folder for e in events if e.kind == EventKind.OFFLINE} == offline
        assert {f for f in map(str, folders.values()) if not lib.store.folder_online(f)} == offline
        assert said_offline(LibraryReader(lib).report()["folders"]) == offline
    finally:
        c.close()


def test_a_reader_answers_queries_beside_the_writer_with_no_service_and_no_lock(controller, tmp_path):
    """`search` opens the library as a reader (LibraryController.open_reader): no indexing service, no writer
    lock (the window or `watch` holds it meanwhile); the reader decides which model answers a query."""
    from sorce_desktop.core.controller import LibraryReader, NothingIndexed

    _, fut = controller.add_folder(copy_photos(tmp_path / "a", 2), index=True)
    fut.result(60)
    controller.service.wait_idle(60)
    workers = sum(t.name == WORKER for t in threading.enumerate())
    with LibraryReader.open_reader(controller.lib.paths.index.parent) as reader:  # the writer stays open
        assert not hasattr(reader, "service") and not reader.store.writable
        model = reader.search_model("a red kite")
        assert model.embedder is not None and model.embedder.model_id == controller.lib.model_id()
        assert not model.note
        assert reader.answer(reader.search_service(model.embedder), "a red kite", top=2).hits
        assert sum(t.name == WORKER for t in threading.enumerate()) == workers
    empty = tmp_path / "empty"
    no_text_reading(empty)
    with LibraryReader(Library(empty)) as reader, pytest.raises(NothingIndexed):
        reader.search_model("a red kite")


def test_watch_names_what_differs_as_the_controller_refuses_it(controller, tmp_path, capsys):
    """Another model or layout without --reindex: the controller's refusal says which differs (ModelMismatch's
    models / layouts), and `watch` names the remedy from it instead of comparing with the index again."""
    from sorce_desktop import cli

    folder = copy_photos(tmp_path / "a", 2)
    _, fut = controller.add_folder(folder, index=True)
    fut.result(60)
    controller.service.wait_idle(60)
    model = controller.lib.model_id()
    with pytest.raises(ModelMismatch) as layout:
        controller.step_for(ModelRequest(layout="grid3"))
    assert layout.value.layouts == ("global", "grid3") and layout.value.models is None
    with pytest.raises(ModelMismatch) as both:
        controller.step_for(ModelRequest("another/model", "grid3"))
    assert both.value.models == (model, "another/model") and both.value.layouts == ("global", "grid3")
    data = str(controller.lib.paths.index.parent)
    controller.close()  # watch takes the writer lock
    assert cli.main(["watch", "--layout", "grid3", "--data-dir", data]) == 1
    assert "made with the global layout; run sorce-desktop index --layout grid3 --reindex" in capsys.readouterr().err
    assert cli.main(["watch", "--model", "another/model", "--layout", "grid3", "--data-dir", data]) == 1
    err = capsys.readouterr().err
    assert f"made with {model}; run sorce-desktop index --model another/model --reindex" in err


def test_the_first_run_questions_are_asked_only_of_a_library_with_no_folder(tmp_path):
    """Core decides whether the window opens on its first-run questions: a library given a folder from the
    command line (`index FOLDER`) opens on it, and its settings then count the questions as answered."""
    from sorce_desktop.core.controller import LibraryReader

    fresh = tmp_path / "fresh"
    no_text_reading(fresh, first_run_done=False)
    with LibraryReader(Library(fresh)) as reader:
        assert reader.first_run() and not reader.settings.first_run_done
    given = tmp_path / "given"
    no_text_reading(given, first_run_done=False)
    with LibraryReader(Library(given)) as reader:
        reader.store.add_folder(str(copy_photos(tmp_path / "photos", 1)))
        assert not reader.first_run() and reader.settings.first_run_done


def test_the_reader_answers_text_with_the_query_encoder_and_refines_with_the_whole_model(tiny_siglip, tmp_path):
    """`search`'s model, decided in core: a text query with the query encoder the model wrote when it last
    loaded in full (no torch needed); a query to refine, or by photo, with the whole model."""
    from sorce_desktop.core.controller import LibraryReader
    from sorce_desktop.core.models.query_encoder import QueryEncoder

    data = tmp_path / "data"
    no_text_reading(data)
    with LibraryReader(Library(data)) as reader:
        e = reader.load(str(tiny_siglip))  # writes the query encoder
        reader.lib.bind(e, reader.lib.layout_for(e))
        assert isinstance(reader.search_model("a red kite").embedder, QueryEncoder)
        loads = []
        reader.load = lambda model=None, **kw: loads.append(model) or e
        assert reader.search_model("a red kite", refine=True).embedder is e
        assert reader.search_model(None, image=str(tmp_path / "any.jpg")).embedder is e
        assert loads == [reader.lib.model_id()] * 2
