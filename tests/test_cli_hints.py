"""What the command line tells the user: failure counts that agree with `errors`, hints naming the
command as typed, the configured model in `models`, the path of a query image that is not there."""

from __future__ import annotations

import json
import os

from conftest import no_text_reading

from sorce_desktop.cli import main
from sorce_desktop.core.words import count, photos


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_counts_in_words():
    assert photos(1) == "1 photo" and photos(0) == "0 photos" and photos(1204) == "1,204 photos"
    assert count(1, "file") == "1 file" and count(2, "file") == "2 files"


def test_index_names_files_that_failed_before_and_the_command_as_typed(tmp_path, tiny_clip, photo_dir, capsys, monkeypatch):
    (photo_dir / "broken.jpg").write_text("nope")
    (photo_dir / "broken2.png").write_text("not a png either")
    data = no_text_reading(tmp_path / "data")
    code, out, err = cli(capsys, "index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data)
    assert code == 0 and "2 failed this run" in out
    monkeypatch.setenv("SORCE_DESKTOP_PROG", "./run.sh")
    code, out, err = cli(capsys, "index", "--data-dir", data)
    assert code == 0 and "0 failed this run" in out  # nothing new failed ...
    assert "2 files cannot be indexed; see which and why: ./run.sh errors" in err  # ... yet 2 did before
    code, out, err = cli(capsys, "errors", "--json", "--data-dir", data)
    assert len(json.loads(out)) == 2


def test_search_by_a_missing_image_names_it(tmp_path, tiny_clip, photo_dir, capsys):
    data = no_text_reading(tmp_path / "data")
    assert cli(capsys, "index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data)[0] == 0
    missing = tmp_path / "nowhere" / "missing.jpg"
    code, out, err = cli(capsys, "search", "--image", str(missing), "--data-dir", data)
    assert code == 1 and str(missing) in err and err.count("\n") == 1


def test_models_lists_the_configured_local_model(tmp_path, tiny_clip, capsys):
    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.settings import Settings

    data = tmp_path / "data"
    Settings(model=str(tiny_clip)).save(AppPaths.resolve(data).ensure().settings)
    code, out, err = cli(capsys, "models", "--json", "--data-dir", str(data))
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[str(tiny_clip)]["configured"] and rows[str(tiny_clip)]["offline"]
    assert sum(r["configured"] for r in rows.values()) == 1
    code, out, err = cli(capsys, "models", "--data-dir", str(data))
    line = next(ln for ln in out.splitlines() if ln.startswith(str(tiny_clip)))
    assert "available offline" in line and "(configured)" in line
    assert not any(r["in_use"] for r in rows.values())  # no index yet


def test_models_names_the_model_the_index_is_made_with(tmp_path, tiny_clip, photo_dir, capsys):
    data = no_text_reading(tmp_path / "data")
    assert cli(capsys, "index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data)[0] == 0
    code, out, err = cli(capsys, "models", "--json", "--data-dir", data)
    rows = {r["id"]: r for r in json.loads(out)}
    in_use = [r["id"] for r in rows.values() if r["in_use"]]
    assert len(in_use) == 1 and os.path.samefile(in_use[0], tiny_clip) and not rows[in_use[0]]["configured"]
    assert rows["google/siglip2-base-patch16-256"]["configured"]  # the saved setting, not changed by --model
    code, out, err = cli(capsys, "models", "--data-dir", data)
    assert "(this library's index)" in next(ln for ln in out.splitlines() if ln.startswith(in_use[0]))
