"""Screenshots of searching by when, where and which folder: the query's chips and the period filter.

    python docs/screenshots/make_query_screenshots.py [--photos N] [--out docs/screenshots]

As make_screenshots.py: the real window under Xvfb on coco-small photos copied to a temporary folder,
with a tiny random model (the ranking is arbitrary, the window is the real one). The copies get EXIF
capture dates over 2019-2024 and some a GPS position in Lisbon or Paris (written by Pillow), in two
subfolders. Saves query-chips.png ("kite in lisbon after:2021 -string": words, place, period and not
chips, and a line for what was not understood) and period-filter.png (the period set to a year, newest
first, a folder selected, its chip).
Needs: apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_screenshots import COCO, ROOT, SIZE, spin_events, under_xvfb  # noqa: E402

LISBON, PARIS = (38.7223, -9.1393), (48.8566, 2.3522)


def stamp(src: Path, dst: Path, taken: str, gps=None) -> None:
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    def dms(x: float):
        d = int(x)
        m = int((x - d) * 60)
        return IFDRational(d, 1), IFDRational(m, 1), IFDRational(int(((x - d) * 60 - m) * 600000), 10000)

    img = Image.open(src)
    exif = img.getexif()
    exif.get_ifd(0x8769)[0x9003] = taken
    if gps is not None:
        g = exif.get_ifd(0x8825)
        g[1], g[2], g[3], g[4] = "N", dms(gps[0]), ("E" if gps[1] >= 0 else "W"), dms(abs(gps[1]))
    img.save(dst, exif=exif, quality=92)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    return under_xvfb(shoot, ap.parse_args(), "sorce-query-shots-")


def shoot(tmp: Path, out: Path, args) -> int:
    from sorce_desktop.bench.synthetic import build_dual_encoder
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings
    from sorce_desktop.gui.app import make_app, open_window

    photos = tmp / "Pictures"
    for i, p in enumerate(sorted(COCO.glob("*.jpg"))[: args.photos]):
        folder = photos / ("Lisbon trip" if i % 3 == 0 else "Paris 2019" if i % 3 == 1 else "Home")
        folder.mkdir(parents=True, exist_ok=True)
        year = 2019 + i % 6
        gps = LISBON if i % 3 == 0 else PARIS if i % 3 == 1 else None
        stamp(p, folder / p.name, f"{year}:{1 + i % 12:02d}:{1 + i % 28:02d} 12:00:00", gps)
    model = build_dual_encoder(tmp / "models" / "tiny-clip", "tiny-clip", seed=0)
    data = tmp / "data"
    Settings(model=str(model), first_run_done=True, refine=False, ocr=False).save(
        AppPaths.resolve(data).ensure().settings
    )
    app = make_app(["sorce-desktop"])
    win = open_window(data)
    win.resize(*SIZE)
    win.move(0, 0)
    win.show()

    def spin(cond, timeout: float = 120.0) -> bool:
        return spin_events(app, cond, timeout)

    def save(name: str) -> None:
        spin(lambda: False, 1.5)  # thumbnails and pending paints land
        win.grab().save(str(out / name))
        print("saved", out / name)

    spin(lambda: win.session.ready)
    win.add_folder(str(photos))
    spin(lambda: not win.session.indexing and win.session.status.indexed == args.photos, 300)

    def search(text: str) -> None:
        win.search.setText(text)
        win.throttle.flush(text)
        spin(lambda: win.result is not None and win.result.query.text == text and not win.throttle.pending)

    search("kite in lisbon after:2021 -string after:2023-13")
    save("query-chips.png")
    win.query_bar.period.setCurrentIndex(3)
    win.query_bar.year.setValue(2022)
    win.query_bar.sort.setCurrentIndex(1)
    search("a person")
    win.folders.list.setCurrentRow(0)
    spin(lambda: win.result is not None and win.result.query.folder is not None)
    save("period-filter.png")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
