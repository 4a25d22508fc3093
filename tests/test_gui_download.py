"""The model download in the window: progress with size and time left, Cancel; a failed download
says why in plain words (no network, disk full, not found) and offers Retry."""

from __future__ import annotations

import errno
import threading
import time

import pytest
from gui_support import open_test_window, wait_ready

from sorce_desktop.core.models.download import (
    DownloadCancelled,
    DownloadFailed,
    DownloadProgress,
    download_failure,
    failure_reason,
    resolve_model,
)

pytestmark = pytest.mark.gui

HUB_MODEL = "google/siglip2-base-patch16-256"


def _caused(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as e:
        return e


def test_failures_in_plain_words(tmp_path, hub_unreachable):
    with pytest.raises(DownloadFailed) as info:
        resolve_model(HUB_MODEL, tmp_path / "models")
    assert info.value.reason == "offline"
    assert str(info.value).startswith("No internet connection") and "Dry run" not in str(info.value)
    full = _caused(RuntimeError("write failed"), OSError(errno.ENOSPC, "No space left on device"))
    assert failure_reason(full) == "disk_full"
    assert str(download_failure(HUB_MODEL, tmp_path, full)).startswith("The disk is full")
    not_found = type("RepositoryNotFoundError", (OSError,), {})("404 Client Error. Repository Not Found")
    assert failure_reason(not_found) == "not_found"
    assert "There is no model called" in str(download_failure("someone/nothing", tmp_path, not_found))
    gated = type("GatedRepoError", (not_found.__class__,), {})("403 gated")
    assert failure_reason(gated) == "other"
    assert DownloadProgress("m", 250, 1250, "f", 100.0).eta_s == pytest.approx(10.0)
    assert DownloadProgress("m", 250, 1250, "f").eta_s is None


def test_offline_download_message_and_retry(qtbot, tmp_path, hub_unreachable, tiny_clip):
    # a first run with no network: the hub model cannot come, the window says so where it can be seen
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)
    win.settings.model = HUB_MODEL
    attempts = []
    win.session.model_state.connect(lambda st: st.state == "loading" and attempts.append(st))
    win.session.load_model(HUB_MODEL)
    qtbot.waitUntil(lambda: win.session.state.state == "error", timeout=30000)
    panel = win.download_panel
    assert panel.isVisible() and panel.title.text() == "No internet connection"
    assert "could not be downloaded" in panel.detail.text() and "Retry" in panel.detail.text()
    assert panel.retry_button.isVisible() and not panel.cancel_button.isVisible()
    panel.retry_button.click()
    qtbot.waitUntil(lambda: len(attempts) == 2 and win.session.state.state == "error", timeout=30000)
    assert attempts[-1].model == HUB_MODEL and panel.title.text() == "No internet connection"
    # the model already loaded still answers: the window says that one, not "Model not ready"
    from sorce_desktop.gui.window import READY_PLACEHOLDER

    assert win.session.embedder is not None and win.model_label.text() == tiny_clip.name
    assert win.search.placeholderText() == READY_PLACEHOLDER and "could not be had" in win.model_label.toolTip()
    win.close()


def test_download_progress_time_left_and_cancel(qtbot, tmp_path, tiny_clip, monkeypatch):
    win = open_test_window(qtbot, tmp_path / "data", tiny_clip)
    wait_ready(qtbot, win)  # the library's own model first: its load must not land after the download's
    states = []
    win.session.model_state.connect(lambda st: states.append(st.state))
    total = 1500 * 2**20
    started = threading.Event()

    def downloading(model=None, *, progress=None, cancel=None, **_kw):
        # the hub's side of a download, on the model lane as a real one: 300 MB in, 20 MB/s so far
        progress(DownloadProgress(model, 300 * 2**20, total, "model.safetensors", 20 * 2**20))
        started.set()
        while not cancel.is_set():
            time.sleep(0.02)
        raise DownloadCancelled(f"download of {model} cancelled")

    monkeypatch.setattr(win.session.lib, "load_embedder", downloading)
    win.session.load_model(HUB_MODEL)
    panel = win.download_panel
    qtbot.waitUntil(lambda: panel.showing_progress and "300 MB" in panel.detail.text(), timeout=20000)
    assert panel.title.text().startswith("Downloading ")
    assert "300 MB of 1.46 GB" in panel.detail.text()
    assert "about 1 min left" in panel.detail.text()  # 1200 MB at 20 MB/s
    assert panel.progress.value() == 200
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: "cancelled" in states, timeout=60000)
    assert panel.isVisible() and panel.title.text() == "Download cancelled"
    assert panel.retry_button.isVisible() and not panel.progress.isVisible()
    win.close()
