"""One window per library: a second launch brings the first window to the front and exits; the
command line's read commands work while the window is open, and `index` says the window holds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gui_support import copy_photos, open_test_window, wait_indexed, wait_ready

pytestmark = pytest.mark.gui


def _run(*args, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.Popen(
        [sys.executable, "-m", "sorce_desktop", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(qtbot, proc, timeout=120000):
    qtbot.waitUntil(lambda: proc.poll() is not None, timeout=timeout)  # the window keeps answering meanwhile
    out, err = proc.communicate()
    return proc.returncode, out, err


def test_second_launch_raises_the_first_window(qtbot, tmp_path, tiny_clip):
    from sorce_desktop.gui.app import serve_instance

    data = tmp_path / "data"
    win = open_test_window(qtbot, data, tiny_clip)
    server = serve_instance(win, data)
    assert server is not None
    raised = []
    server.raise_requested.connect(lambda: raised.append(True))
    win.hide()  # behind other windows, or closed to the tray: the second launch must bring it back
    code, out, err = _finish(qtbot, _run("--data-dir", str(data)), timeout=60000)
    assert code == 0, err
    assert "Another sorce-desktop process" not in err and "--data-dir" not in err, (out, err)
    qtbot.waitUntil(lambda: raised == [True], timeout=5000)
    assert win.isVisible()
    # another library is another window: its launch is not taken for this one
    from sorce_desktop.gui.app import instance_name

    assert instance_name(tmp_path / "other") != instance_name(data)
    win.close()


@pytest.mark.slow
def test_command_line_reads_while_the_window_is_open(qtbot, tmp_path, tiny_clip):
    photos = copy_photos(tmp_path / "photos", 4)
    data = tmp_path / "data"
    win = open_test_window(qtbot, data, tiny_clip)
    wait_ready(qtbot, win)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 4)
    code, out, err = _finish(qtbot, _run("status", "--json", "--data-dir", str(data)))
    assert code == 0, err
    assert json.loads(out)["indexed"] == 4
    code, out, err = _finish(qtbot, _run("search", "a dog", "--json", "--data-dir", str(data)))
    assert code == 0, err
    assert len(json.loads(out)) == 4
    code, out, err = _finish(qtbot, _run("index", str(photos), "--data-dir", str(data)))
    assert code == 1
    assert "The Sorce Desktop window" in err and "indexes it itself" in err and str(data) in err
    win.close()
