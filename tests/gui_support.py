"""Helpers for the GUI tests: a real window on a temporary data folder with a tiny random model."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import scene_photos


def copy_photos(dest: Path, n: int, start: int = 0) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in scene_photos(n, start):
        shutil.copy2(p, dest / p.name)
    return dest


def open_test_window(
    qtbot,
    data_dir: Path,
    model: Path,
    *,
    first_run_done: bool = True,
    refine: bool = False,
    rerank: bool = False,
    ocr: bool = False,
):
    """A window on ``data_dir`` with these settings; text in photos is not read unless ``ocr`` (real OCR
    costs ~0.5-2 s a photo)."""
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.gui.app import make_app, open_window

    paths = AppPaths.resolve(data_dir).ensure()
    Settings(
        model=str(model),
        layout="grid3",
        first_run_done=first_run_done,
        refine=refine,
        rerank_by_zoom=rerank,
        ocr=ocr,
    ).save(paths.settings)
    make_app()
    win = open_window(data_dir)
    qtbot.addWidget(win)
    return win


def wait_ready(qtbot, win, timeout: int = 60000) -> None:
    qtbot.waitUntil(lambda: win.session.ready, timeout=timeout)


def wait_indexed(qtbot, win, n: int, timeout: int = 120000) -> None:
    """Until ``n`` photos are indexed and no run is going on, with the panel showing it."""
    qtbot.waitUntil(
        lambda: (
            not win.session.indexing and win.session.status.indexed == n and win.session.status.pending == 0
        ),
        timeout=timeout,
    )


def search(qtbot, win, text: str, timeout: int = 30000) -> None:
    win.search.setFocus()
    win.search.clear()
    qtbot.keyClicks(win.search, text)
    qtbot.waitUntil(
        lambda: win.result is not None and win.result.query.text == text and not win.throttle.pending,
        timeout=timeout,
    )
