"""The window searches the words read in the photos as soon as it opens, while the picture model loads
in the background; a query typed meanwhile runs again with pictures once the model is ready."""

from __future__ import annotations

import threading

import pytest
from gui_support import open_test_window, search
from signs_support import build_signs_library

pytestmark = pytest.mark.gui


@pytest.fixture
def signs_slow_model(tmp_path, tiny_clip, monkeypatch):
    """The signs library, then a picture model that loads only once the test opens the gate."""
    from sorce_desktop.core.library import Library

    signs = build_signs_library(tmp_path, tiny_clip)
    gate = threading.Event()
    real = Library.load_embedder

    def load(self, *a, **k):
        assert gate.wait(120)
        return real(self, *a, **k)

    monkeypatch.setattr(Library, "load_embedder", load)
    yield signs, gate
    gate.set()


def test_words_are_searchable_while_the_picture_model_loads(qtbot, tiny_clip, signs_slow_model):
    import shutil

    signs, gate = signs_slow_model
    shutil.rmtree(signs.data / "models" / "prepared" / "query")  # no query encoder: words alone meanwhile
    win = open_test_window(qtbot, signs.data, tiny_clip)
    search(qtbot, win, '"stop"')
    assert win.session.state.state == "loading" and not win.session.ready
    assert win.model.items[0].hit.path == signs.exact["stop"]
    assert all(it.hit.source == "text" for it in win.model.items)
    # a query that needs pictures gets its words now ...
    search(qtbot, win, "stop")
    assert not win.session.ready and win.result.vector is None
    assert {it.hit.path for it in win.model.items} == {signs.exact["stop"], signs.partial["stop"]}
    # ... and its pictures once the model is ready, without typing it again
    gate.set()
    qtbot.waitUntil(lambda: win.session.ready and win.result is not None and win.result.vector is not None, timeout=60000)
    assert win.result.query.text == "stop"
    assert any(it.hit.source != "text" for it in win.model.items)


def test_picture_queries_are_answered_while_the_picture_model_loads(qtbot, tiny_clip, signs_slow_model):
    """With the model's query encoder written (by `index`), a text query is answered by the pictures too
    before the model is loaded, with the vector the loaded model then uses."""
    import numpy as np

    signs, gate = signs_slow_model
    win = open_test_window(qtbot, signs.data, tiny_clip)
    search(qtbot, win, "stop")
    assert win.session.state.state == "loading" and not win.session.ready
    assert win.result.vector is not None and any(it.hit.source != "text" for it in win.model.items)
    early = [it.hit.path for it in win.model.items]
    vector = win.result.vector
    gate.set()
    qtbot.waitUntil(lambda: win.session.ready, timeout=60000)
    search(qtbot, win, "stop")
    assert np.array_equal(win.result.vector, vector) and [it.hit.path for it in win.model.items] == early


def test_bench_startup_reads_the_windows_milestones(tmp_path, tiny_clip):
    """The launched window logs when it is shown, when words and then pictures are searchable; bench
    startup times them from launch."""
    from sorce_desktop.bench.startup import launch_window
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings

    signs = build_signs_library(tmp_path, tiny_clip)
    paths = AppPaths.resolve(signs.data)
    settings = Settings.load(paths.settings)
    settings.first_run_done = True
    settings.save(paths.settings)
    marks = launch_window(signs.data, timeout=300)
    assert 0 < marks["window_shown"] <= marks["pictures_searchable"]
    assert marks["words_searchable"] <= marks["pictures_searchable"]
    assert marks["window_shown"] <= marks["picture_queries"] <= marks["pictures_searchable"]


def test_search_asks_the_open_window(qtbot, tmp_path, tiny_clip):
    """With the window open on the library, `search` is answered by it over the single-instance socket:
    no model loaded by the command, the same hits as the window's own answer."""
    import json
    import os
    import subprocess
    import sys

    from gui_support import wait_ready
    from test_startup import PICTURE_MODULES, ROOT

    from sorce_desktop.gui.app import serve_instance

    signs = build_signs_library(tmp_path, tiny_clip)
    win = open_test_window(qtbot, signs.data, tiny_clip)
    assert serve_instance(win, signs.data) is not None
    wait_ready(qtbot, win)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for query in ("stop", '"stop"'):
        code = (
            "import json, sys\n"
            "from sorce_desktop.cli import main\n"
            f"rc = main(['search', {query!r}, '--json', '--top', '20', '--data-dir', {str(signs.data)!r}])\n"
            f"print(json.dumps(sorted(m for m in {PICTURE_MODULES!r} if m in sys.modules)), file=sys.stderr)\n"
            "sys.exit(rc)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        qtbot.waitUntil(lambda p=proc: p.poll() is not None, timeout=120000)  # the window answers meanwhile
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        assert json.loads(err.strip().splitlines()[-1]) == [], query
        answer = win.session.service.answer(query, top=20)
        assert json.loads(out) == json.loads(json.dumps([h.to_json() for h in answer.hits])), query
    win.close()
