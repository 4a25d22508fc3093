"""Reliability of the command line around the work itself (issue 31): signals, settings files that cannot
be used, a terminal that goes away, names that would act on a terminal, third-party logging, models that
stop loading, the picture path independent of the text setting, symlinks into the system's own trees.

Photos are drawn here; the model is the tiny random CLIP built from a config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_rows, no_text_reading, remember_folder
from PIL import Image, ImageDraw

from sorce_desktop.cli import main as cli_main
from sorce_desktop.core.library import Library
from sorce_desktop.core.paths import AppPaths

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "QT_QPA_PLATFORM": "offscreen"}
#: a subprocess that has not ended by then is hung (a test's own limit, never a performance goal)
HANG_S = 180


def draw_photos(folder: Path, n: int, size=(640, 480), names=None, words: bool = False) -> list[Path]:
    """``n`` JPEGs of coloured shapes (and a word or two when ``words``), different each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)) + n)
    out = []
    for i in range(n):
        img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(img)
        w, h = size
        for _ in range(10):
            x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            d.rectangle([x, y, x + int(rng.integers(20, w // 4)), y + int(rng.integers(20, h // 4))],
                        fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        if words:
            d.rectangle([w // 10, h // 3, w * 9 // 10, h * 2 // 3], fill="white")
            d.text((w // 8, h * 2 // 5), f"OPEN {i} DAYS", fill="black", font_size=max(12, h // 10))
        p = folder / (names[i] if names else f"photo{i:02d}.jpg")
        img.save(p, quality=92)
        out.append(p)
    return out


def cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli_main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


SLOW_CLI = textwrap.dedent(
    """
    import sys, time
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    inner = DualEncoderEmbedder.embed_photos

    def slow(self, photos, layout):  # indexing long enough to be interrupted or to outlive its reader
        time.sleep(0.15)
        return inner(self, photos, layout)

    DualEncoderEmbedder.embed_photos = slow
    from sorce_desktop.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


def _read_until(fd: int, needle: bytes, got: bytearray) -> None:
    while needle not in got:
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"the output ended before {needle!r}: {bytes(got)!r}")
        got += chunk


# -- 3. SIGTERM during index ----------------------------------------------------------------------------
def test_sigterm_during_index_stops_like_ctrl_c(tmp_path, tiny_clip):
    photos = draw_photos(tmp_path / "photos", 12)
    data = no_text_reading(tmp_path / "data")
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    proc = subprocess.Popen(
        [sys.executable, str(script), "index", str(tmp_path / "photos"), "--model", str(tiny_clip),
         "--batch-size", "1", "--data-dir", data],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )
    err = bytearray()
    try:
        _read_until(proc.stderr.fileno(), b"indexing [", err)  # the model is loaded and photos go in
        proc.send_signal(signal.SIGTERM)
        out, rest = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
    err = (bytes(err) + rest).decode()
    assert proc.returncode == 130, (proc.returncode, err)  # as Ctrl+C: not killed outright (-15)
    assert "interrupted: what was indexed so far is kept" in err and "Traceback" not in err
    with Library(data, writer=False) as lib:
        counts = lib.store.counts()
        assert counts["indexed"] + counts["pending"] == len(photos)
        assert lib.store.vectors.count == lib.store.count_vectors()  # the photo in hand was finished whole


# -- 7. the terminal goes away ----------------------------------------------------------------------------
def test_index_whose_reader_exits_neither_hangs_nor_stops(tmp_path, tiny_clip):
    """``index ... 2>&1 | head -1`` with a real pipe: the reader takes what came until the progress bar
    showed, then exits. Before, a later redraw raised inside tqdm, which left its lock held, and the
    bar's close waited for it for ever."""
    photos = draw_photos(tmp_path / "photos", 6)
    data = no_text_reading(tmp_path / "data")
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, str(script), "index", str(tmp_path / "photos"), "--model", str(tiny_clip),
         "--batch-size", "1", "--data-dir", data],
        stdout=write_end, stderr=write_end, env=ENV,
    )
    os.close(write_end)
    try:
        _read_until(read_end, b"indexing [", bytearray())
        os.close(read_end)  # the reader exits: every later write meets a closed pipe
        code = proc.wait(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"index hung for {HANG_S} s after the reader of its output went away")
    finally:
        proc.kill()
    assert code == 0
    with Library(data, writer=False) as lib:
        assert lib.store.counts()["indexed"] == len(photos)  # the command went on to the end


# -- 4 and 9. settings that cannot be used -------------------------------------------------------------
def _settings_file(data: Path) -> Path:
    folder = AppPaths.resolve(data).settings
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "settings.json"


UNUSABLE_FILES = {
    "nested": lambda p: p.write_text("[" * 200_000 + "]" * 200_000),
    "nested-in-an-object": lambda p: p.write_text('{"model": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    "huge": lambda p: p.write_bytes(b'{"model": "' + b"x" * (3 << 20) + b'"}'),
    "a-folder": lambda p: p.mkdir(),
    "a-fifo": lambda p: os.mkfifo(p),
    "not-json": lambda p: p.write_text("{model: tiny"),
    "not-utf8": lambda p: p.write_bytes(b'{"model": "caf\xe9"}'),
    "a-list": lambda p: p.write_text("[1, 2]"),
    "unreadable": lambda p: (p.write_text("{}"), p.chmod(0)),
}


@pytest.mark.parametrize("kind", list(UNUSABLE_FILES))
def test_unusable_settings_file_is_one_line_and_never_stops_a_reader(tmp_path, capsys, kind, monkeypatch):
    data = tmp_path / "data"
    path = _settings_file(data)
    UNUSABLE_FILES[kind](path)
    if kind == "unreadable" and os.geteuid() == 0:  # root reads a chmod-0 file: refuse it as for a user
        real_open = os.open

        def refusing_open(file, flags, *a, **k):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, flags, *a, **k)

        monkeypatch.setattr(os, "open", refusing_open)
    for command in ("status", "errors", "models"):
        if kind == "a-fifo":  # opened for reading, a FIFO with no writer waits for ever: a hang detector
            r = subprocess.run([sys.executable, "-m", "sorce_desktop", command, "--data-dir", str(data)],
                               capture_output=True, env=ENV, timeout=HANG_S)
            code, out, err = r.returncode, r.stdout.decode(), r.stderr.decode()
        else:
            code, out, err = cli(capsys, command, "--data-dir", data)
        assert code == 0, (command, err)
        notes = [line for line in err.splitlines() if str(path) in line]
        assert len(notes) == 1 and "using the default settings" in notes[0], (command, err)
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "name,value,shown",
    [
        ("device", "tpu", "'tpu'"),
        ("device", 5, "5"),
        ("speed", ["a"], "['a']"),
        ("ocr", "no", "'no'"),
        ("layout", "nonsense", "'nonsense'"),
        ("layout", None, "None"),
        ("model", 7, "7"),
        ("model", "", "''"),
        ("thumbnail_cache_mb", -1, "-1"),
        ("thumbnail_cache_mb", 1e300, "1e+300"),
        ("refine", 1, "1"),
        ("first_run_done", "yes", "'yes'"),
    ],
)
def test_each_setting_is_checked_as_it_is_read(tmp_path, name, value, shown):
    from sorce_desktop.core.settings import Settings

    path = _settings_file(tmp_path)
    path.write_text(json.dumps({name: value, "refine": False} if name != "refine" else {name: value}))
    s = Settings.load(path.parent)
    default = getattr(Settings(), name)
    assert getattr(s, name) == default
    assert len(s.problems) == 1
    problem = s.problems[0]
    assert f"the setting {name} = {shown} in {path}" in problem and f"using the default, {default!r}" in problem
    if name != "refine":
        assert s.refine is False  # the usable values of the same file are kept


def test_wrong_setting_values_never_stop_index_search_or_watch(tmp_path, tiny_clip, capsys):
    """{"device": "tpu"} was a RuntimeError traceback in index, search and watch; {"speed": ["a"]} a
    TypeError on a new library; each is now one line naming the setting and the default used."""
    draw_photos(tmp_path / "photos", 3)
    data = tmp_path / "data"
    path = _settings_file(data)
    path.write_text(json.dumps({"device": "tpu", "speed": ["a"], "ocr": False, "refine": "yes"}))
    wanted = ["the setting device = 'tpu'", "the setting speed = ['a']", "the setting refine = 'yes'"]

    def one_line_each(err: str) -> None:
        for w in wanted:
            assert sum(w in line for line in err.splitlines()) == 1, (w, err)
        assert "Traceback" not in err

    code, out, err = cli(capsys, "index", tmp_path / "photos", "--model", tiny_clip, "--data-dir", data)
    assert code == 0 and "indexed 3 photos" in out
    one_line_each(err)
    code, out, err = cli(capsys, "search", "a red square", "--data-dir", data)
    assert code == 0 and "photo0" in out
    one_line_each(err)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sorce_desktop", "watch", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )
    err = bytearray()
    try:
        _read_until(proc.stderr.fileno(), b"Ctrl+C stops", err)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
    one_line_each((bytes(err) + rest).decode())


def test_a_gpu_setting_without_that_gpu_loads_on_what_is_there(tmp_path, tiny_clip):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the setting is usable here")
    path = _settings_file(tmp_path / "data")
    path.write_text(json.dumps({"device": "cuda", "ocr": False}))
    with Library(tmp_path / "data") as lib:
        assert lib.settings_problems == []  # a valid choice: checked where the model loads
        e = lib.load_embedder(str(tiny_clip))
        assert e.embed_texts(["a kite"]).shape == (1, e.dim)
        assert len(lib.settings_problems) == 1
        assert "the setting device = 'cuda'" in lib.settings_problems[0] and "using 'auto'" in lib.settings_problems[0]


def test_unknown_layout_on_the_command_line_is_refused(tmp_path, tiny_clip, capsys):
    draw_photos(tmp_path / "photos", 1)
    data = no_text_reading(tmp_path / "data")
    for command in ("index", "watch"):
        code, out, err = cli(capsys, command, tmp_path / "photos", "--layout", "nonsense", "--data-dir", data)
        assert code == 2 and "invalid choice: 'nonsense'" in err and "cells4o" in err
    with Library(data, writer=False) as lib:
        assert lib.store.binding() is None and lib.store.folders() == []  # nothing was done


# -- 5. third-party logging -------------------------------------------------------------------------------
ORT_WARNS = textwrap.dedent(
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from sorce_desktop.core.quiet import quiet_third_party_loggers

    quiet_third_party_loggers()
    # a network with an initializer no node uses: onnxruntime warns about it in ANSI colour on stderr
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    unused = numpy_helper.from_array(np.zeros(1, np.float32), "unused")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], [unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    print(session.run(None, {"x": np.ones(1, np.float32)})[0][0])
    """
)


def test_onnxruntime_logging_never_reaches_the_terminal(tmp_path):
    script = tmp_path / "ort.py"
    script.write_text(ORT_WARNS)
    env = {k: v for k, v in ENV.items() if k != "SORCE_DESKTOP_LOG"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, env=env, timeout=HANG_S)
    assert r.returncode == 0 and r.stdout.strip() == b"1.0", r.stderr
    assert r.stderr == b"", r.stderr  # before: "\x1b[0;93m... [W:onnxruntime:, graph.cc ...] Removing initializer"


# -- 8. names that would act on a terminal -------------------------------------------------------------
ODD = "tab\tand \x1b[31mansi\nline\u202eevil.jpg"
ODD_SHOWN = "tab\\tand \\x1b[31mansi\\nline\\u202eevil.jpg"


def test_every_name_in_plain_output_is_escaped(tmp_path, tiny_clip, capsys):
    root = tmp_path / "odd\x1b[2Jfolder"
    draw_photos(root, 1, names=[ODD])
    (root / ("broken\x07\x1b]0;title\x07.jpg")).write_bytes(b"not a photo")
    data = no_text_reading(tmp_path / "data")

    def clean(text: str) -> None:
        for ch in ("\x1b", "\t", "\x07", "\u202e"):
            assert ch not in text, (ch, text)

    code, out, err = cli(capsys, "index", root, "--model", tiny_clip, "--data-dir", data)
    assert code == 0
    clean(out + err)
    code, out, err = cli(capsys, "search", "ansi", "--data-dir", data)
    assert code == 0 and ODD_SHOWN in out
    clean(out + err)
    code, out, err = cli(capsys, "errors", "--data-dir", data)
    assert code == 0 and "broken\\x07\\x1b]0;title\\x07.jpg" in out
    clean(out + err)
    code, out, err = cli(capsys, "status", "--data-dir", data)
    assert code == 0 and "odd\\x1b[2Jfolder" in out
    clean(out + err)
    # --json keeps every name exact
    code, out, err = cli(capsys, "search", "ansi", "--json", "--data-dir", data)
    assert json.loads(out)[0]["path"] == str(root / ODD)
    # a folder that went away is named in index's warning
    os.rename(root, tmp_path / "gone")
    code, out, err = cli(capsys, "index", "--data-dir", data)
    assert code == 0 and "odd\\x1b[2Jfolder is not available" in err
    clean(out + err)


# -- 12. a model given as a relative path -------------------------------------------------------------
def test_relative_model_path_is_stored_absolute(tmp_path, tiny_clip, capsys, monkeypatch):
    draw_photos(tmp_path / "photos", 2)
    data = no_text_reading(tmp_path / "data")
    monkeypatch.chdir(tiny_clip.parent)
    code, out, err = cli(capsys, "index", tmp_path / "photos", "--model", tiny_clip.name, "--data-dir", data)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)  # another directory: the stored model must still name the folder
    code, out, err = cli(capsys, "status", "--json", "--data-dir", data)
    assert json.loads(out)["model"] == str(tiny_clip)
    code, out, err = cli(capsys, "search", "a red square", "--json", "--data-dir", data)
    assert code == 0 and len(json.loads(out)) == 2, err
    # the same folder given relatively again is the same model: nothing to re-index
    monkeypatch.chdir(tiny_clip.parent)
    code, out, err = cli(capsys, "index", "--model", f"./{tiny_clip.name}", "--json", "--data-dir", data)
    assert code == 0 and json.loads(out)["unchanged"] == 2 and "Re-indexing" not in err


# -- 13. a model that stops loading after the library was made -----------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "config"])
def test_model_that_stops_loading_is_one_line(tmp_path, tiny_clip, capsys, damage):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_clip, model)
    draw_photos(tmp_path / "photos", 2)
    data = no_text_reading(tmp_path / "data")
    assert cli(capsys, "index", tmp_path / "photos", "--model", model, "--data-dir", data)[0] == 0
    draw_photos(tmp_path / "photos" / "more", 1)  # work to do: the model is needed
    if damage == "deleted":
        shutil.rmtree(model)
    else:
        (model / "config.json").write_text('{"model_type": "clip", "text_config": 5}')
    r = subprocess.run(
        [sys.executable, "-m", "sorce_desktop", "index", "--data-dir", data],
        capture_output=True, env=ENV, timeout=HANG_S,
    )
    err = r.stderr.decode()
    lines = [line for line in err.splitlines() if line != "scanning folders..."]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("sorce-desktop: "), err
    assert str(model) in lines[0] and "Traceback" not in err


# -- 14. the picture path does not depend on the text setting ------------------------------------------
def test_picture_regions_and_vectors_do_not_depend_on_text_reading(tmp_path, clip_embedder):
    """Photos large enough that the text reader needs more pixels than the picture model: before, the
    shared decode was drafted at the text's scale and the picture regions got other vectors."""
    from sorce_desktop.core.regions import get_layout

    draw_photos(tmp_path / "photos", 3, size=(3200, 2400), words=True)
    layout = get_layout("cells4o")
    got = {}
    for text in (False, True):
        with Library(tmp_path / f"data-{text}") as lib:
            remember_folder(lib, tmp_path / "photos")
            lib.bind(clip_embedder, layout)
            source = lib.text_source() if text else None
            report = lib.indexer(clip_embedder, layout, text_source=source).run()
            assert report.failed == 0 and (report.text_read == 3) == text
            rows = catalog_rows(
                lib.store,
                "SELECT p.path, r.name, r.x0, r.y0, r.x1, r.y1, r.vector FROM regions r JOIN photos p "
                "ON p.id = r.photo_id WHERE r.source = 'visual' ORDER BY p.path, r.name, r.x0, r.y0",
            )
        got[text] = rows
    assert len(got[True]) == len(got[False]) > 3
    for a, b in zip(got[False], got[True], strict=True):
        assert a[:6] == b[:6]  # the same regions, boxes included
        va, vb = (np.frombuffer(v, dtype=np.float32) for v in (a[6], b[6]))
        np.testing.assert_allclose(va, vb, atol=1e-6)


# -- 15. symlinks into the system's own trees or back above the folder ---------------------------------
def test_symlinks_never_lead_into_system_trees_or_above_the_folder(tmp_path):
    from sorce_desktop.core.indexing.scanner import existing_folder, walk_images

    root = tmp_path / "photos"
    draw_photos(root / "a", 1)
    outside = draw_photos(tmp_path / "elsewhere", 1)
    links = {"up": tmp_path, "self": root, "slash": Path("/"), "proc": Path("/proc/self"), "dev": Path("/dev"),
             "elsewhere": tmp_path / "elsewhere"}
    for name, target in links.items():
        (root / "a" / name).symlink_to(target, target_is_directory=True)
    found = sorted(os.path.relpath(e.path, root) for e in walk_images(str(root)))
    # the folder's own photo once, and the folder a link leads to beside it (followed as before)
    assert found == ["a/elsewhere/" + outside[0].name, "a/photo00.jpg"]
    with pytest.raises(FileNotFoundError, match="the running system's own files"):
        existing_folder("/proc/self")


def test_index_proc_self_is_refused_in_one_line(tmp_path, capsys):
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", "/proc/self", "--data-dir", data)
    assert code == 1 and err.count("\n") == 1 and "is in /proc" in err, err
    with Library(data, writer=False) as lib:
        assert lib.store.folders() == []
