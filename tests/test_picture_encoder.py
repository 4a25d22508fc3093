"""The picture encoder (core/models/picture_encoder.py): "fast" runs the vision tower in onnxruntime int8,
written once from the model's float weights, checked against the loaded model's own vectors at every input
side the app uses, and the PyTorch vision tower given back. Files that are damaged or stale are never used."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sorce_desktop.core.models import picture_export
from sorce_desktop.core.models.dual import DualEncoderEmbedder
from sorce_desktop.core.models.loader import load_embedder
from sorce_desktop.core.models.picture_encoder import (
    PictureEncoder,
    PictureEncoderUnavailable,
    picture_key,
    picture_paths,
)
from sorce_desktop.core.models.query_export import MIN_COSINE
from sorce_desktop.core.models.speed import FAST, THOROUGH


@pytest.fixture
def model_dir(tiny_siglip, tmp_path):
    return shutil.copytree(tiny_siglip, tmp_path / "model", ignore=shutil.ignore_patterns(".prepared"))


def _load(folder, cache, speed=FAST):
    return load_embedder(str(folder), cache, speed=speed, download=False)


def _photos(n=3, size=(64, 48)):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    out = []
    for _ in range(n):
        a = rng.uniform(-2, 2, 3)
        img = np.stack([(128 + 60 * np.sin(xx / 7 * a[c] + yy / 5)).astype(np.uint8) for c in range(3)], -1)
        out.append(Image.fromarray(img))
    return out


def _cos(a, b):
    return np.sum(a * b, axis=1)


def test_fast_runs_pictures_through_the_picture_encoder_at_every_side(model_dir, tmp_path):
    got = _load(model_dir, tmp_path / "models")
    assert got.picture_encoder is not None
    assert got.model.vision_model is None  # the PyTorch vision tower was given back
    plain = DualEncoderEmbedder(model_dir, speed=FAST, prepared_dir=tmp_path / "plain")  # PyTorch int8
    ref = DualEncoderEmbedder(model_dir, speed=THOROUGH)  # float32
    photos = _photos()
    assert _cos(got.embed_images(photos), plain.embed_images(photos)).min() >= MIN_COSINE
    assert _cos(got.embed_images(photos), ref.embed_images(photos)).min() >= MIN_COSINE
    for side in (got.tile_size, 48, 24):  # the tiles, the closer look's windows: any whole number of patches
        a, b = got.embed_images_at(photos, side), ref.embed_images_at(photos, side)
        assert a.shape == b.shape
        assert _cos(a, b).min() >= MIN_COSINE
    # what was checked is recorded beside the file
    _onnx, side = picture_paths(tmp_path / "models" / "prepared", picture_key(model_dir, "int8"))
    assert json.loads(side.read_text())["cosine_to_loaded_model_min"] >= MIN_COSINE


def test_it_is_written_once_and_opened_after(model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "models"
    first = _load(model_dir, cache).embed_images(_photos())
    exports = []
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(a))
    again = _load(model_dir, cache)
    assert exports == []
    assert again.picture_encoder is not None
    assert np.array_equal(first, again.embed_images(_photos()))


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _stale(side):
    s = json.loads(side.read_text())
    s["format"] = -1
    side.write_text(json.dumps(s))


@pytest.mark.parametrize("spoil", ["data", "truncated", "sidecar", "stale"])
def test_a_damaged_or_stale_file_is_never_used_and_is_written_again(model_dir, tmp_path, spoil):
    cache = tmp_path / "models"
    want = _load(model_dir, cache).embed_images(_photos())
    onnx, side = picture_paths(cache / "prepared", picture_key(model_dir, "int8"))
    if spoil == "data":
        _flip(onnx)
    elif spoil == "truncated":
        onnx.write_bytes(onnx.read_bytes()[:1000])
    elif spoil == "sidecar":
        side.write_text("{not json")
    else:
        _stale(side)
    with pytest.raises(PictureEncoderUnavailable):
        PictureEncoder(model_dir, cache / "prepared", "int8")
    again = _load(model_dir, cache)
    assert again.picture_encoder is not None
    assert np.array_equal(want, again.embed_images(_photos()))
    PictureEncoder(model_dir, cache / "prepared", "int8")  # whole again


def test_thorough_and_clip_keep_the_models_own_vision_tower(model_dir, tiny_clip, tmp_path):
    thorough = _load(model_dir, tmp_path / "a", THOROUGH)
    assert thorough.picture_encoder is None and thorough.model.vision_model is not None
    clip = _load(shutil.copytree(tiny_clip, tmp_path / "clip"), tmp_path / "b")
    assert clip.picture_encoder is None and clip.model.vision_model is not None
    assert not (tmp_path / "b" / "prepared" / "picture").exists()


def test_an_export_that_fails_its_check_is_not_written_and_is_said(model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(picture_export, "MIN_COSINE", 1.01)  # no vectors pass
    with caplog.at_level(logging.WARNING):
        got = _load(model_dir, tmp_path / "models")
    assert got.picture_encoder is None and got.model.vision_model is not None
    assert "no picture encoder" in caplog.text and "cosine" in caplog.text
    folder = tmp_path / "models" / "prepared" / "picture"
    assert list(folder.glob("*.onnx")) == [] and list(folder.glob("*.json")) == []
    assert [p for p in folder.iterdir()] == []  # no work folder left behind


def test_it_is_checked_at_every_side_the_closer_look_uses():
    from sorce_desktop.core.search.refine import DETAIL_STRATEGY, RefineStrategy

    assert {RefineStrategy().input_side, DETAIL_STRATEGY.input_side} <= set(picture_export.CLOSER_LOOK_SIDES)
