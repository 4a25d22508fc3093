"""What a new user meets on the command line (issue 30, items 10-15): reasons that are sentences about
the file, the command line's own remedies, the same offline fallback for `index` and `watch`,
`--min-score` on the scale the model has, a missing `--folder`, counts in sentences."""

from __future__ import annotations

import json
import re

import pytest
from conftest import no_text_reading

from sorce_desktop.cli import main


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_non_image_read_for_its_text_only_is_recorded_in_words(tmp_path, capsys, monkeypatch):
    """Text-only indexing (no picture model offline) decodes through the text reader: a file that is not
    an image is recorded with a sentence, not Pillow's "<_io.BytesIO object at 0x...>"."""
    pytest.importorskip("rapidocr_onnxruntime")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_text("nope")
    data = str(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(photos), "--data-dir", data)
    assert code == 0, err
    code, out, err = cli(capsys, "errors", "--json", "--data-dir", data)
    [(path, reason)] = [(e["path"], e["reason"]) for e in json.loads(out)]
    assert path.endswith("broken.jpg")
    assert reason == "not an image, or an image format that cannot be read"
    code, out, err = cli(capsys, "errors", "--data-dir", data)
    assert not re.search(r"object at 0x|<_io|Error\b", out), out


def test_reasons_never_name_python_objects():
    from sorce_desktop.core.photos.images import ImageError, decode_reasons

    with pytest.raises(ImageError) as caught, decode_reasons():
        raise OSError("broken data stream when reading image file <_io.BytesIO object at 0x7f2f0ed60d60>")
    assert str(caught.value) == "the image cannot be decoded (broken data stream when reading image file)"


#: the window's words, which the command line must not use for its own remedies
WINDOW_WORDS = re.compile(r"press retry|choose a model folder|start the app again", re.IGNORECASE)


@pytest.fixture
def no_network(monkeypatch):
    """Downloads allowed, but the network is not there (what huggingface_hub raises then)."""
    from sorce_desktop.core.models import download

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def unreachable(model_id, cache_dir, **kw):
        raise ConnectionError("Failed to establish a new connection: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "download_model", unreachable)


def test_a_failed_download_names_the_command_lines_remedies(tmp_path, capsys, no_network):
    model = "google/siglip2-base-patch16-256"
    code, out, err = cli(capsys, "models", "--download", model, "--data-dir", str(tmp_path))
    assert code == 1
    assert "No internet connection" in err and f"models --download {model}" in err and "--model DIR" in err
    assert not WINDOW_WORDS.search(err), err
    # index on a first run falls back to the text in the photos and says why in the same words
    photos = tmp_path / "photos"
    photos.mkdir()
    code, out, err = cli(capsys, "index", str(photos), "--data-dir", str(tmp_path / "data"))
    assert code == 0, err
    assert "only the text in the photos" in err and "--model DIR" in err
    assert not WINDOW_WORDS.search(err), err


def test_downloads_switched_off_say_how_to_switch_them_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = cli(capsys, "index", str(tmp_path), "--model", "google/siglip2-base-patch16-256",
                         "--data-dir", str(tmp_path / "data"))
    assert code == 1 and "Unset HF_HUB_OFFLINE" in err and "--model DIR" in err
    assert not WINDOW_WORDS.search(err), err


def test_watch_offline_with_no_model_watches_the_text_as_index_does(tmp_path):
    """`watch` on a first run with no picture model goes on with the text in the photos, like `index`,
    with the same note, once; Ctrl+C stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys
    import time

    photos = tmp_path / "photos"
    photos.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sorce_desktop", "watch", str(photos), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if os.name == "posix" else None,
    )  # fmt: skip
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("watching"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines) + err
    assert proc.returncode == 0, err
    assert err.count("only the text in the photos") == 1, err
    assert "watching 1 folder for the text in the photos" in err
    assert not WINDOW_WORDS.search(err), err


@pytest.fixture
def clip_library(tmp_path, tiny_clip, photo_dir, capsys):
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data)
    assert code == 0, err
    return photo_dir, data


def test_search_in_a_folder_that_does_not_exist_says_so(clip_library, tmp_path, capsys):
    photos, data = clip_library
    code, out, err = cli(capsys, "search", "a bicycle", "--folder", str(tmp_path / "missing"), "--data-dir", data)
    assert code == 1 and out == ""
    assert f"The folder {tmp_path / 'missing'} does not exist." in err
    code, out, err = cli(capsys, "search", "a bicycle", "--folder", str(photos / "sub"), "--data-dir", data)
    assert code == 0 and "nothing found" not in out


def test_counts_are_sentences_and_a_new_model_is_not_a_change(tmp_path, tiny_clip, tiny_siglip, capsys):
    import shutil

    from conftest import scene_photos

    from sorce_desktop.core.indexing.service import EventKind
    from sorce_desktop.core.library import Library

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(scene_photos(1)[0], photos / "one.jpg")
    (photos / "broken.jpg").write_text("nope")
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(photos), "--model", str(tiny_clip), "--layout", "global", "--data-dir", data)
    assert code == 0, err
    # one photo indexed of two new files, the other failed: the sentence says both without contradiction
    assert re.match(r"indexed 1 photo, 1 failed this run, in [\d.]+s: 2 new, 0 changed, 0 moved", out), out
    assert "1 file cannot be indexed" in err
    # only the model changes: nothing on disk changed, the photo is embedded again for the new model
    args = ["index", "--model", str(tiny_siglip), "--layout", "global", "--reindex", "--data-dir", data]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert re.match(r"indexed 1 photo, 0 failed this run, in [\d.]+s: 0 new, 0 changed, "
                    r"1 re-embedded for the new model, 0 moved, 0 removed, 1 unchanged", out), out
    code, out, err = cli(capsys, *args[:2], str(tiny_clip), *args[3:], "--json")  # and back
    summary = json.loads(out)
    assert (summary["changed"], summary["unfinished"], summary["embedded"]) == (0, 1, 1)
    # the watcher's full check: "1 folder", never "folder(s)"
    with Library(data) as lib:
        from sorce_desktop.core.models.dual import DualEncoderEmbedder

        service = lib.indexing_service(lib.indexer(DualEncoderEmbedder(tiny_clip), lib.layout()))
        events = []
        service.subscribe(events.append)
        service.start()
        try:
            service.scan().result(timeout=120)
        finally:
            service.stop()
    [reconciled] = [e.message for e in events if e.kind == EventKind.RECONCILED]
    assert reconciled.startswith("checked 1 folder: 0 new, 0 changed, 0 moved"), reconciled
    # status: the speed setting and how many photos have their text read
    code, out, err = cli(capsys, "status", "--data-dir", data)
    assert "speed: fast" in out and "text read in 0 photos (reading text is switched off in Settings)" in out
    assert "1 region vector;" in out
    code, out, err = cli(capsys, "status", "--json", "--data-dir", data)
    st = json.loads(out)
    assert (st["speed"], st["text_read"], st["reads_text"]) == ("fast", 0, False)


@pytest.fixture(scope="module")
def signs(tmp_path_factory, tiny_clip):
    from signs_support import build_signs_library

    return build_signs_library(tmp_path_factory.mktemp("signs"), tiny_clip)


def _picture(hit: dict) -> float | None:
    return next((r["score"] for r in hit["regions"] if r["kind"] == "picture"), None)


def test_min_score_is_checked_against_the_scale_the_model_has(signs, capsys):
    """CLIP has no match probability: --min-score is a cosine, so 2 cannot be reached and is refused as
    a usage error; a reachable one keeps the photos whose picture reaches it (and words read exactly),
    and the answer stays in the order of its scores, exact whole words first."""
    data = str(signs.data)
    code, out, err = cli(capsys, "search", "bakery", "--json", "--data-dir", data)
    hits = json.loads(out)
    scores = [h["score"] for h in hits]
    assert hits[0]["path"] == signs.exact["bakery"]  # the exact whole word, though the picture ranks it last
    assert scores == sorted(scores, reverse=True), scores
    for bad in ("2", "-1.5"):
        code, out, err = cli(capsys, "search", "bakery", "--min-score", bad, "--data-dir", data)
        assert code == 2 and out == "" and "between -1 and 1" in err and "cosine" in err, err
    pictures = sorted(p for h in hits if (p := _picture(h)) is not None)
    floor = pictures[len(pictures) // 2]
    code, out, err = cli(capsys, "search", "bakery", "--json", "--min-score", str(floor), "--data-dir", data)
    kept = json.loads(out)
    assert 0 < len(kept) < len(hits)
    assert signs.exact["bakery"] in [h["path"] for h in kept]  # its words are read exactly: it stays
    for h in kept:
        assert (_picture(h) or -2) >= floor - 1e-6 or h["path"] == signs.exact["bakery"], h
    scores = [h["score"] for h in kept]
    assert scores == sorted(scores, reverse=True), scores
    code, out, err = cli(capsys, "search", "bakery", "--min-score", str(floor), "--data-dir", data)
    printed = [float(line.split()[1]) for line in out.splitlines() if re.match(r"\s*\d+\. ", line)]
    assert printed == sorted(printed, reverse=True) and len(printed) == len(kept), out


def test_min_score_applies_with_no_picture_model(signs):
    """Text only: --min-score is the words' match score (1: the letters read exactly)."""
    from sorce_desktop.core.library import Library
    with Library(signs.data, writer=False) as lib:
        service = lib.search_service(None)
        every = [h.path for h in service.search("bakery")]
        assert signs.exact["bakery"] in every and signs.partial["bakery"] in every  # BAKERY and BAKERV
        assert [h.path for h in service.search("bakery", min_score=0.99)] == [signs.exact["bakery"]]
        with pytest.raises(ValueError, match="between 0 and 1"):
            service.search("bakery", min_score=2)
        assert service.score_scale().name == "words"


def test_bench_tiny_model_saves_a_model_the_app_takes(tmp_path, photo_dir, capsys):
    """The tiny offline model for trying the app has a command (no longer only inside the screenshots
    script); the folder it saves is a model `index --model DIR` takes; a folder in use is refused."""
    folder = tmp_path / "tiny"
    code, out, err = cli(capsys, "bench", "tiny-model", str(folder), "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == str(folder.resolve())
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(photo_dir), "--model", str(folder), "--data-dir", data)
    assert code == 0 and out.startswith("indexed 12 photos"), err
    code, out, err = cli(capsys, "bench", "tiny-model", str(folder))
    assert code == 1 and "not an empty folder" in err
