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
    from sorce_desktop.core.images import ImageError, decode_reasons

    with pytest.raises(ImageError) as caught, decode_reasons():
        raise OSError("broken data stream when reading image file <_io.BytesIO object at 0x7f2f0ed60d60>")
    assert str(caught.value) == "the image cannot be decoded (broken data stream when reading image file)"
