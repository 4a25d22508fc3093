"""The command line over real services (in-process where possible, one real subprocess)."""

import json
import subprocess
import sys

from conftest import no_text_reading

from sorce_desktop.cli import main
from sorce_desktop.core.regions import DEFAULT_LAYOUT


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_search_status_errors(tmp_path, tiny_clip, photo_dir, capsys, untouched):
    (photo_dir / "broken.jpg").write_text("nope")
    untouched(photo_dir)
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data)
    assert code == 0, err
    assert "indexing [" in err and "12/13" not in out
    assert "indexed 12 photos" in out and "1 failed" in out

    code, out, err = cli(capsys, "index", "--data-dir", data, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["embedded"] == 0 and summary["unchanged"] == 13

    code, out, err = cli(capsys, "search", "a bicycle", "--top", "4", "--json", "--data-dir", data)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 4
    for h in hits:
        assert {"path", "score", "box", "region"} <= set(h)
        x0, y0, x1, y1 = h["box"]
        assert 0 <= x0 < x1 <= h["width"] and 0 <= y0 < y1 <= h["height"]

    code, out, err = cli(capsys, "search", "bicycle", "--folder", str(photo_dir / "sub"), "--json", "--data-dir", data)
    assert {h["path"].rsplit("/", 2)[-2] for h in json.loads(out)} == {"sub"}

    code, out, err = cli(capsys, "status", "--json", "--data-dir", data)
    st = json.loads(out)
    assert (st["indexed"], st["pending"], st["failed"]) == (12, 0, 1)
    assert st["model"] == str(tiny_clip) and st["layout"] == DEFAULT_LAYOUT and st["index_bytes"] > 0
    assert st["folders"][0]["path"] == str(photo_dir)

    code, out, err = cli(capsys, "errors", "--json", "--data-dir", data)
    errs = json.loads(out)
    assert errs == [{"path": str(photo_dir / "broken.jpg"), "reason": "not an image, or an image format that cannot be read"}]


def test_expected_failures_are_one_sentence(tmp_path, tiny_clip, photo_dir, capsys):
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(tmp_path / "missing"), "--data-dir", data)
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    a_file = next(photo_dir.glob("*.jpg"))  # a photo given where its folder belongs
    code, out, err = cli(capsys, "index", str(a_file), "--data-dir", data)
    assert code == 1 and "is a file, not a folder" in err and "Traceback" not in err
    code, out, err = cli(capsys, "search", "cat", "--data-dir", data)
    assert code == 1 and "Nothing is indexed yet" in err
    code, out, err = cli(capsys, "index", str(photo_dir), "--model", str(tmp_path / "nomodel"), "--data-dir", data)
    assert code == 1 and "model folder" in err
    # the failed command left nothing behind: the folder is not remembered
    code, out, err = cli(capsys, "status", "--json", "--data-dir", data)
    assert json.loads(out)["folders"] == []
    cli(capsys, "index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data)
    code, out, err = cli(capsys, "search", "", "--data-dir", data)
    assert code == 1 and "empty" in err
    notes = tmp_path / "notes.jpg"  # not an image, whatever its name says
    notes.write_text("shopping list")
    code, out, err = cli(capsys, "search", "--image", str(notes), "--data-dir", data)
    assert code == 1 and "not an image" in err and err.count("notes.jpg") == 1, err


def test_missing_hub_model_subprocess_no_traceback(tmp_path, photo_dir):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "sorce_desktop", "index", str(photo_dir), "--data-dir", str(tmp_path / "d"),
         "--model", "google/siglip2-base-patch16-256"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert p.returncode == 1
    assert "google/siglip2-base-patch16-256 is not downloaded" in p.stderr
    assert "Traceback" not in p.stderr


def test_models_lists_registry(tmp_path, capsys):
    code, out, err = cli(capsys, "models", "--json", "--data-dir", str(tmp_path))
    rows = json.loads(out)
    assert code == 0 and any(r["default"] for r in rows) and not any(r["offline"] for r in rows)
