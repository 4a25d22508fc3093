"""Screenshots of the real window's main states, for the README and the docs.

    python docs/screenshots/make_screenshots.py [--photos N] [--out docs/screenshots]

Runs the app under Xvfb (a virtual X server; started here when there is no $DISPLAY) on photos
copied from ../shared/datasets/coco-small into a temporary folder, with a tiny randomly initialised
model (no download): the matches and outlines are therefore arbitrary, the window is the real one.
Saves first-run.png, indexing.png, results.png and detail.png.
Needs: apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COCO = Path(os.environ.get("SORCE_COCO_SMALL", ROOT.parent / "shared" / "datasets" / "coco-small")) / "images"
if not COCO.is_dir():
    COCO = Path("/work/shared/datasets/coco-small/images")
SIZE = (1280, 800)


def start_xvfb() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    display = ":97"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", f"{SIZE[0]}x{SIZE[1]}x24", "-nolisten", "tcp", "-dpi", "96"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["DISPLAY"] = display
    time.sleep(1.0)
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=160)
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--query", default="a dog lying on the street")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb()
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="sorce-shots-"))
    try:
        return shoot(tmp, out, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if xvfb is not None:
            xvfb.terminate()


def shoot(tmp: Path, out: Path, args) -> int:
    from sorce_desktop.core.models.synthetic import build_dual_encoder
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.gui.app import make_app, open_window
    from sorce_desktop.gui.qt import QtCore

    photos = tmp / "Pictures" / "Holidays"
    photos.mkdir(parents=True)
    for p in sorted(COCO.glob("*.jpg"))[: args.photos]:
        shutil.copy2(p, photos / p.name)
    model = build_dual_encoder(tmp / "models" / "tiny-clip", "tiny-clip", seed=0)
    data = tmp / "data"
    Settings(model=str(model), first_run_done=False, refine=True).save(
        AppPaths.resolve(data).ensure().settings
    )

    app = make_app(["sorce-desktop"])
    win = open_window(data)
    win.resize(*SIZE)
    win.move(0, 0)

    def spin(cond, timeout: float = 120.0) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            if cond():
                return True
            time.sleep(0.01)
        return cond()

    def save(name: str) -> None:
        spin(lambda: False, 0.4)  # let pending paints land
        win.grab().save(str(out / name))
        print("saved", out / name)

    # 1. first run: a folder chosen, the model picker as a new user sees it (the default model)
    from sorce_desktop.core.models.registry import DEFAULT_MODEL

    win.welcome.set_folder(str(photos))
    win.welcome.picker.set_model(DEFAULT_MODEL)
    save("first-run.png")
    win.welcome.picker.set_model(str(model))  # no download here: the tiny local model does the work

    # 2. indexing: the app is usable while photos are indexed; results so far are searchable
    state = {"done": 0}
    win.session.index_progress.connect(
        lambda p: state.update(done=p.done) if p.phase == "embedding" else None
    )
    win.welcome.start_button.click()
    if not spin(lambda: win.pages.currentWidget() is win.main and state["done"] >= args.photos // 3):
        print("indexing did not start", file=sys.stderr)
        return 1
    win.session.pause()  # hold this moment still for the picture
    win.toggle_pause()
    win.toggle_pause()
    win.search.setText("a bicycle")
    win._run_query(None)
    spin(
        lambda: (
            win.result is not None and all(win.thumbs._memory.get(i.thumb_key) for i in win.model.items[:16])
        ),
        30,
    )
    win.session.resume()
    win._sync_pause()
    spin(lambda: "Indexing" in win.status_label.text() and "paused" not in win.status_label.text(), 10)
    save("indexing.png")

    # 3. results with the matches outlined
    spin(lambda: not win.session.indexing and win.session.status.pending == 0)
    win.search.setText(args.query)
    win._run_query(None)
    spin(lambda: win.result is not None and win.result.query.text == args.query)
    spin(lambda: all(win.thumbs._memory.get(i.thumb_key) for i in win.model.items[:20]), 30)
    spin(lambda: all(i.hit.refined_box is not None for i in win.model.items[:12]), 60)
    win.grid.setCurrentIndex(win.model.index(0))
    save("results.png")

    # 4. one photo large, the match outlined
    win.open_detail(1)
    spin(lambda: win.detail.info.text().count("·") >= 3, 30)
    spin(lambda: win.detail.item.detail_refined, 30)
    save("detail.png")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
