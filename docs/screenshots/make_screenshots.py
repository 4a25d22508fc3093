"""Screenshots of the real window's main states, for the README and the docs.

    python docs/screenshots/make_screenshots.py [--photos N] [--out docs/screenshots]

Runs the app under Xvfb (a virtual X server; started here when there is no $DISPLAY) on photos
copied from ../shared/datasets/coco-small into a temporary folder, with a tiny randomly initialised
model (no download): the matches and outlines are therefore arbitrary, the window is the real one.
Saves first-run.png, indexing.png, results.png, detail.png, then words-and-picture.png (a photo matched
by its picture and by a line of words, both outlined: the line is recorded in the store as the OCR pass
would, since random weights read nothing), likely-matches.png (a tiny SigLIP whose checkpoint's logit
scale and bias are set so some photos are likely matches), download-progress.png (the download panel
fed progress by a stand-in for the hub) and download-offline.png (a real download attempt to a hub
address where nothing answers).
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


def paint_sign(path: Path, word: str):
    """Paint a shop sign reading ``word`` into the (copied) photo: what the words screenshot outlines."""
    from PIL import Image, ImageDraw, ImageFont

    from sorce_desktop.bench.text_render import available_fonts
    from sorce_desktop.core.regions import Box

    img = Image.open(path).convert("RGB")
    w, h = img.size
    box = Box(int(w * 0.06), int(h * 0.66), int(w * 0.40), int(h * 0.78))
    draw = ImageDraw.Draw(img)
    draw.rectangle(box.as_list(), fill=(250, 244, 228), outline=(90, 50, 20), width=3)
    fonts, _ = available_fonts()
    size = int(box.height * 0.7)
    font = ImageFont.truetype(fonts[0], size) if fonts else ImageFont.load_default()
    tw = draw.textlength(word, font=font)
    draw.text(((box.x0 + box.x1 - tw) / 2, box.y0 + (box.height - size) / 2 - 2), word, fill=(90, 40, 10), font=font)
    img.save(path, quality=95)
    return path, box


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=160)
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--query", default="a dog lying on the street")
    return under_xvfb(shoot, ap.parse_args(), "sorce-shots-")


def spin_events(app, cond, timeout: float = 120.0) -> bool:
    """Run the window's events until ``cond()`` holds or ``timeout`` seconds pass; returns ``cond()``."""
    from sorce_desktop.gui.qt import QtCore

    end = time.time() + timeout
    while time.time() < end:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def under_xvfb(shoot, args, prefix: str) -> int:
    """Run ``shoot(tmp, out, args)`` on a virtual screen with a temporary folder, cleaned up after."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb()
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return shoot(tmp, out, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if xvfb is not None:
            xvfb.terminate()


def shoot(tmp: Path, out: Path, args) -> int:
    from sorce_desktop.cli import main as cli_main
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.gui.app import make_app, open_window

    photos = tmp / "Pictures" / "Holidays"
    photos.mkdir(parents=True)
    for p in sorted(COCO.glob("*.jpg"))[: args.photos]:
        shutil.copy2(p, photos / p.name)
    sign_photo, sign_box = paint_sign(sorted(photos.iterdir())[7], "BAKERY")
    model = tmp / "models" / "tiny-clip"  # the tiny offline model, as a user makes one to try the app
    if cli_main(["bench", "tiny-model", str(model)]) != 0:
        return 1
    data = tmp / "data"
    # Reading the words of 160 photos takes minutes here; the words screenshot records its own line.
    Settings(model=str(model), first_run_done=False, refine=True, ocr=False).save(
        AppPaths.resolve(data).ensure().settings
    )

    app = make_app(["sorce-desktop"])
    win = open_window(data)
    win.resize(*SIZE)
    win.move(0, 0)

    def spin(cond, timeout: float = 120.0) -> bool:
        return spin_events(app, cond, timeout)

    def save(name: str) -> None:
        spin(lambda: False, 0.4)  # let pending paints land
        win.grab().save(str(out / name))
        print("saved", out / name)

    # 1. first run: a folder chosen, the model picker as a new user sees it (the default model)
    from sorce_desktop.core.models.registry import DEFAULT_MODEL, model_info

    DEFAULT_MB = model_info(DEFAULT_MODEL).download_mb

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

    # 5. a photo matched both by its picture and by its words: both outlined, each marked by kind
    from sorce_desktop.core.store.catalog import TextPhoto
    from sorce_desktop.core.text.ocr import TextLine

    win.close_detail()
    store = win.session.lib.store
    sign_id = store.photo_by_path(str(sign_photo)).id
    box = sign_box
    quad = [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    store.commit_text(
        [TextPhoto(sign_id, None, [TextLine("BAKERY", 0.9, box, quad)])], "screenshot", None
    )
    win.session.service = win.session.lib.search_service(win.session.embedder)  # now with text to search
    win.search.setText("bakery")
    win._run_query(None)
    spin(lambda: win.result is not None and win.result.query.text == "bakery")
    row = next(i for i, it in enumerate(win.model.items) if it.hit.photo_id == sign_id)
    win.open_detail(row)
    spin(lambda: win.detail.info.text().count("·") >= 3, 30)
    spin(lambda: win.detail.item.detail_refined, 30)
    save("words-and-picture.png")
    win.close()

    # 6. a model with its own match probability: likely matches, a divider, the rest
    from sorce_desktop.bench.synthetic import calibrate_siglip

    query = "a red kite in the sky"
    few = sorted(photos.iterdir())[:40]
    siglip = tmp / "models" / "tiny-siglip"
    if cli_main(["bench", "tiny-model", str(siglip), "--kind", "tiny-siglip", "--seed", "1"]) != 0:
        return 1
    siglip = calibrate_siglip(siglip, tmp / "models" / "tiny-siglip-calibrated", few, query)
    data2 = tmp / "data2"
    # the layout and speed the calibration was worked out at
    Settings(model=str(siglip), layout="grid3", first_run_done=True, refine=False, speed="thorough", ocr=False).save(
        AppPaths.resolve(data2).ensure().settings
    )
    win = open_window(data2)
    win.resize(*SIZE)
    win.move(0, 0)
    spin(lambda: win.session.ready)
    few_dir = tmp / "Pictures" / "Birds"
    few_dir.mkdir(parents=True)
    for p in few:
        shutil.copy2(p, few_dir / p.name)
    win.add_folder(str(few_dir))
    spin(lambda: not win.session.indexing and win.session.status.indexed == len(few))
    win.search.setText(query)
    win._run_query(None)
    spin(lambda: win.result is not None and win.result.query.text == query)
    divider = win.model.divider_row()
    if divider is not None:  # the divider in the middle of the view
        win.grid.verticalScrollBar().setValue(
            max(0, win.grid.visualRect(win.model.index(divider)).top() + win.grid.verticalScrollBar().value() - 300)
        )
    spin(lambda: all(win.thumbs._memory.get(win.model.item(r).thumb_key) for r in win.grid.visible_rows()), 30)
    save("likely-matches.png")

    # 7. the model download: progress, size, time left, Cancel (the hub's side stood in for)
    import threading

    from sorce_desktop.core.models.download import DownloadCancelled, DownloadProgress

    real_load = win.session.lib.load_embedder
    total = DEFAULT_MB * 2**20

    def downloading(model=None, *, progress=None, cancel=None, **_kw):
        progress(DownloadProgress(model, 612 * 2**20, total, "model.safetensors", 4.2 * 2**20))
        while not cancel.is_set():
            threading.Event().wait(0.02)
        raise DownloadCancelled("cancelled")

    win.session.lib.load_embedder = downloading
    win.session.load_model(DEFAULT_MODEL, reindex_layout="grid3")  # as "Re-index With This Model" (see 8.)
    spin(lambda: win.download_panel.showing_progress, 20)
    save("download-progress.png")
    win.download_panel.cancel_button.click()
    spin(lambda: win.session.state.state == "cancelled", 20)

    # 8. no network: a real download attempt to a hub address where nothing answers
    import huggingface_hub.constants as hub

    win.session.lib.load_embedder = real_load
    os.environ["HF_HUB_OFFLINE"] = "0"
    hub.HF_HUB_OFFLINE = False
    hub.ENDPOINT = "http://127.0.0.1:9"
    # asked for as "Re-index With This Model" asks: the index holds another model's vectors, and a model asked
    # for without re-indexing is refused before any download (the mismatch state, not the download panel)
    win.session.load_model(DEFAULT_MODEL, reindex_layout="grid3")
    spin(lambda: win.session.state.state == "error", 60)
    save("download-offline.png")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
