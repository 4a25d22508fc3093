"""Make the app icons for the three platforms from the one SVG in resources/.

    python packaging/make_icons.py [--svg resources/sorce-desktop.svg] [--out build/packaging/icons]

Writes PNGs (16 to 1024 px), ``sorce-desktop.ico`` (Windows: 16-256 px in one file),
``sorce-desktop.icns`` (macOS: 16-1024 px, written by Pillow, so no macOS tools are needed) and
``sorce-desktop.png`` (Linux: 256 px, the size desktop environments look up first).

The SVG is rendered by PySide6's QtSvg (part of PySide6-Essentials, which the app needs anyway), so this
works offline on every build machine. Other renderers are a fallback only when QtSvg cannot be imported,
and the script says which one it used: an icon is never silently replaced by something else.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SVG = ROOT / "resources" / "sorce-desktop.svg"
DEFAULT_OUT = ROOT / "build" / "packaging" / "icons"
NAME = "sorce-desktop"

PNG_SIZES = [16, 24, 32, 48, 64, 128, 256, 512, 1024]
ICO_SIZES = [16, 24, 32, 48, 64, 128, 256]  # 256 is the largest size an .ico entry can hold
ICNS_SIZES = [16, 32, 64, 128, 256, 512, 1024]


def _render_qt(svg: Path, size: int) -> Image.Image:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    # A QGuiApplication is needed for text in an SVG (fonts); painting shapes would work without one.
    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0], "-platform", "offscreen"])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG (QtSvg could not parse it)")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    buf.close()
    return Image.open(io.BytesIO(bytes(data))).convert("RGBA")


def _render_external(svg: Path, size: int) -> Image.Image:
    # Only used where PySide6 is missing (e.g. a bare build host): try tools that read SVG offline.
    try:
        import cairosvg  # type: ignore[import-not-found]

        return Image.open(io.BytesIO(cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)))
    except ImportError:
        pass
    for cmd in (
        ["rsvg-convert", "-w", str(size), "-h", str(size), str(svg)],
        ["magick", "-background", "none", "-density", "384", str(svg), "-resize", f"{size}x{size}", "png:-"],
        ["convert", "-background", "none", "-density", "384", str(svg), "-resize", f"{size}x{size}", "png:-"],
    ):
        if shutil.which(cmd[0]):
            out = subprocess.run(cmd, check=True, capture_output=True).stdout
            return Image.open(io.BytesIO(out)).convert("RGBA")
    raise RuntimeError("No SVG renderer: install PySide6-Essentials (QtSvg), cairosvg or librsvg.")


def renderer_name() -> str:
    try:
        import PySide6.QtSvg  # noqa: F401

        return "qtsvg"
    except ImportError:
        return "external"


def render(svg: Path, size: int) -> Image.Image:
    img = _render_qt(svg, size) if renderer_name() == "qtsvg" else _render_external(svg, size)
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return img


def make_icons(svg: Path = DEFAULT_SVG, out: Path = DEFAULT_OUT) -> dict[str, Path]:
    """Render every size and write the platform files; returns {kind: path}."""
    svg = Path(svg)
    if not svg.is_file():
        raise FileNotFoundError(f"No icon SVG at {svg}")
    out = Path(out)
    (out / "png").mkdir(parents=True, exist_ok=True)
    images: dict[int, Image.Image] = {}
    for size in PNG_SIZES:
        # Each size rendered from the vector (not downscaled from 1024): small sizes stay crisp.
        images[size] = render(svg, size)
        images[size].save(out / "png" / f"{size}.png")
    if images[256].getextrema()[3][1] == 0:
        raise ValueError(f"{svg} rendered to a fully transparent image")
    ico = out / f"{NAME}.ico"
    biggest = images[max(ICO_SIZES)]
    biggest.save(
        ico,
        format="ICO",
        sizes=[(s, s) for s in ICO_SIZES],
        append_images=[images[s] for s in ICO_SIZES if s != max(ICO_SIZES)],
    )
    icns = out / f"{NAME}.icns"
    images[1024].save(icns, format="ICNS", append_images=[images[s] for s in ICNS_SIZES if s != 1024])
    png = out / f"{NAME}.png"
    images[256].save(png)
    return {"ico": ico, "icns": icns, "png": png, "png_dir": out / "png"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--svg", type=Path, default=DEFAULT_SVG)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    made = make_icons(args.svg, args.out)
    print(f"icons from {args.svg} (renderer: {renderer_name()}):")
    for kind, path in made.items():
        print(f"  {kind:7s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
