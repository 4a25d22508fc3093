"""A dual encoder loaded lean (core/models/lean.py): int8 weights without their float originals, the token
table in float16, nothing left mapped, and quantisation done once and kept in the per-user model cache
(a damaged or stale copy is rebuilt). Embeddings stay those of the plain load within a stated tolerance."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sorce_desktop.core.models import lean
from sorce_desktop.core.models.dual import DualEncoderEmbedder
from sorce_desktop.core.models.loader import load_embedder
from sorce_desktop.core.models.quant import quantize_linear_int8
from sorce_desktop.core.models.query_export import MIN_COSINE
from sorce_desktop.core.models.speed import FAST, THOROUGH

TEXTS = ["a red kite in the sky", "a cat on the windowsill", "stop"]
#: the float16 token table rounds each looked-up value to 11 significant bits: text vectors keep a cosine of
#: at least this to the plain load's (int8's activation scales follow the inputs, so it moves a little
#: more than float32); picture vectors do not use the table and are the same to float rounding
TEXT_COSINE = 0.999
PICTURE_ABS = 1e-5


@pytest.fixture(params=["tiny_siglip", "tiny_clip"])
def model_dir(request, tmp_path):
    source = request.getfixturevalue(request.param)  # CLIP keeps a 0-d logit scale; SigLIP a bias too
    return shutil.copytree(source, tmp_path / "model", ignore=shutil.ignore_patterns(".prepared"))


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]


def _plain(folder, speed):
    """An embedder whose model is loaded as before the lean load: from the file, quantised in memory."""
    from transformers import AutoModel

    e = DualEncoderEmbedder(folder, speed=speed, prepared_dir=folder.parent / "plain-prepared")
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    if e.int8:
        model.vision_model = quantize_linear_int8(model.vision_model)
        model.text_model = quantize_linear_int8(model.text_model)
    e.model = model
    return e


def _same_vectors(a, b) -> None:
    # the loaded models' own text towers (a query goes through the query encoder where the loader wrote
    # one: tests/test_query_encoder.py)
    if a.model.text_model is not None:
        ta, tb = a.embed_texts_with_model(TEXTS), b.embed_texts_with_model(TEXTS)
        assert (ta * tb).sum(1).min() >= TEXT_COSINE
    else:  # given back once its query encoder was written: the query encoder against PyTorch's int8
        ta, tb = a.embed_texts(TEXTS), b.embed_texts_with_model(TEXTS)
        assert (ta * tb).sum(1).min() >= MIN_COSINE
    pa, pb = a.embed_images(_images()), b.embed_images(_images())
    if a.picture_encoder is None and b.picture_encoder is None:
        assert np.abs(pa - pb).max() <= PICTURE_ABS
    else:  # onnxruntime's int8 (7-bit weights) against PyTorch's: the bar the export is checked against
        assert (pa * pb).sum(1).min() >= MIN_COSINE


def _load(folder, cache):
    return load_embedder(str(folder), cache, speed=FAST, download=False)


@pytest.mark.parametrize("speed", [FAST, THOROUGH], ids=["fast", "thorough"])
def test_lean_load_keeps_the_embeddings(model_dir, tmp_path, speed):
    e = DualEncoderEmbedder(model_dir, speed=speed, prepared_dir=tmp_path / "cache")
    _same_vectors(e, _plain(model_dir, speed))
    table = e.model.text_model.embeddings.token_embedding
    assert isinstance(table, lean.Float16Lookup) and table.weight.dtype == torch.float16
    if speed.int8:
        # no float copy of a quantised layer is kept
        plain_linears = [
            n for n, m in e.model.named_modules() if type(m) is torch.nn.Linear and "_model" in n
        ]
        assert plain_linears == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("speed", [FAST, THOROUGH], ids=["fast", "thorough"])
def test_no_weight_file_stays_mapped(model_dir, tmp_path, speed):
    """The model's own file is not left mapped (its pages would stay resident); "fast" maps only its token
    table, from the prepared file, so that only the rows looked up are read in."""
    e = DualEncoderEmbedder(model_dir, speed=speed, prepared_dir=tmp_path / "cache")
    e.embed_texts(["x"])
    with open("/proc/self/maps") as f:
        mapped = {line.split()[-1] for line in f if str(tmp_path) in line}
    prepared = {str(p) for p in (tmp_path / "cache").glob("*.safetensors")}
    assert mapped == (prepared if speed.int8 else set())
    if speed.int8:
        table = e.model.text_model.embeddings.token_embedding.weight
        with open("/proc/self/maps") as f:
            spans = [[int(x, 16) for x in line.split()[0].split("-")] for line in f if str(tmp_path) in line]
        assert any(a <= table.data_ptr() < b for a, b in spans)


def test_quantised_once_then_loaded_from_the_cache(model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "models"
    first = _load(model_dir, cache)
    files = sorted(p.name for p in (cache / "prepared").iterdir() if p.is_file())  # query/: the query encoder
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    from transformers import AutoModel

    def refuse(*a, **k):
        raise AssertionError("the float weights were read again")

    monkeypatch.setattr(AutoModel, "from_pretrained", refuse)
    again = _load(model_dir, cache)
    assert np.array_equal(first.embed_texts(TEXTS), again.embed_texts(TEXTS))
    assert np.array_equal(first.embed_images(_images()), again.embed_images(_images()))


def _spy_from_pretrained(monkeypatch) -> list:
    from transformers import AutoModel

    calls = []
    real = AutoModel.from_pretrained

    def spy(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    return calls


def _damage_data(data, side) -> None:
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte inside a tensor: the file still parses
    data.write_bytes(bytes(raw))


def _truncate(data, side) -> None:
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])


def _stale_torch(data, side) -> None:
    meta = json.loads(side.read_text())
    meta["torch"] = "0.0.1"
    side.write_text(json.dumps(meta))


def _other_model(data, side) -> None:
    meta = json.loads(side.read_text())
    meta["fingerprint"] = "another model"
    side.write_text(json.dumps(meta))


def _lost_sidecar(data, side) -> None:
    side.unlink()


def _garbled_sidecar(data, side) -> None:
    side.write_text("[1, 2")


@pytest.mark.parametrize(
    "spoil", [_damage_data, _truncate, _stale_torch, _other_model, _lost_sidecar, _garbled_sidecar]
)
def test_damaged_or_stale_cache_is_rebuilt(model_dir, tmp_path, monkeypatch, spoil):
    cache = tmp_path / "models"
    first = _load(model_dir, cache)
    want = first.embed_texts(TEXTS), first.embed_images(_images())
    del first  # it maps its token table from the file spoiled in place below
    (side,) = (cache / "prepared").glob("*.json")
    data = side.with_suffix(".safetensors")
    spoil(data, side)
    calls = _spy_from_pretrained(monkeypatch)
    again = _load(model_dir, cache)
    assert len(calls) == 1  # made again from the model's own weights
    assert np.array_equal(want[0], again.embed_texts(TEXTS))
    assert np.array_equal(want[1], again.embed_images(_images()))
    lean.check_prepared(data, side, json.loads(side.read_text())["fingerprint"])  # whole again
    calls.clear()
    _load(model_dir, cache)
    assert calls == []


def test_a_replaced_model_is_not_served_from_the_old_cache(model_dir, tmp_path, monkeypatch):
    """The same folder with other weights (a re-download, a local model replaced in place) is prepared anew."""
    cache = tmp_path / "models"
    _load(model_dir, cache)
    from sorce_desktop.bench.synthetic import build_dual_encoder

    spec = "tiny-clip" if json.loads((model_dir / "config.json").read_text())["model_type"] == "clip" else "tiny-siglip"
    other = build_dual_encoder(tmp_path / "other", spec, seed=7)
    shutil.copy2(other / "model.safetensors", model_dir / "model.safetensors")
    calls = _spy_from_pretrained(monkeypatch)
    got = _load(model_dir, cache)
    assert len(calls) == 1
    _same_vectors(got, _plain(model_dir, FAST))
    assert len([p for p in (cache / "prepared").iterdir() if p.is_file()]) == 2  # the old prepared file is gone
    sidecars = [p for p in (cache / "prepared" / "query").glob("*.json") if p.name.count(".") == 1]
    assert len(sidecars) == 1  # and its query encoder
    if got.model_type == "siglip":  # and its picture encoder
        assert got.picture_encoder is not None
        assert len(list((cache / "prepared" / "picture").glob("*.json"))) == 1
