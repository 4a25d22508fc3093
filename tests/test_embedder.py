"""The dual-encoder backend: batching, region crops, query by a crop of a region."""

import numpy as np
import pytest
from conftest import scene_photos
from PIL import Image

from sorce_desktop.core.models.dual import DualEncoderEmbedder, letterbox
from sorce_desktop.core.photos.images import load_image
from sorce_desktop.core.regions import get_layout


@pytest.mark.slow
def test_batched_multi_region_forward_equals_one_crop_at_a_time(clip_embedder):
    photos = [load_image(p, clip_embedder.decode_min_side(get_layout("grid3"))) for p in scene_photos(3)]
    layout = get_layout("grid3")
    batched = clip_embedder.embed_photos(photos, layout)
    for photo, regions in zip(photos, batched):
        specs = layout.regions(photo.width, photo.height)
        assert [r.name for r in regions] == [s.name for s in specs]
        assert [r.box for r in regions] == [s.box for s in specs]
        for r in regions:
            single = clip_embedder.embed_images([photo.crop(r.box)])[0]
            assert np.dot(single, r.vector) > 0.99999
            assert abs(np.linalg.norm(r.vector) - 1) < 1e-5


def test_siglip_backend_embeds_text_and_images(tiny_siglip):
    e = DualEncoderEmbedder(tiny_siglip)
    t = e.embed_texts(["a cat", "a red kite in the sky"])
    assert t.shape == (2, e.dim)
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    i = e.embed_images([Image.new("RGB", (50, 20), "red")])
    assert i.shape == (1, e.dim)


def test_letterbox_keeps_every_pixel_and_aspect():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    out = letterbox(img, 60, (0, 0, 0), Image.BILINEAR)
    arr = np.asarray(out)
    assert out.size == (60, 60)
    rows = np.where(arr[:, 30, 0] > 128)[0]
    assert rows.min() == 20 and rows.max() == 39  # 300x100 -> 60x20, centred, not squashed
    assert arr[:, :, 0].sum() > 0 and (arr[0, 0] == 0).all()


def test_model_folder_errors_are_clear(tmp_path):
    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.download import resolve_model

    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), tmp_path / "cache")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        resolve_model(str(tmp_path / "half"), tmp_path / "cache")


def test_missing_hub_model_offline_names_it(tmp_path, monkeypatch):
    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.download import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="google/siglip2-base-patch16-256 is not downloaded"):
        resolve_model("google/siglip2-base-patch16-256", tmp_path / "cache")


def test_sharded_folder_with_missing_shard(tiny_clip, tmp_path):
    import json
    import shutil

    from sorce_desktop.core.models.base import ModelError
    from sorce_desktop.core.models.download import check_model_folder

    f = tmp_path / "sharded"
    shutil.copytree(tiny_clip, f)
    (f / "model.safetensors").rename(f / "model-00001-of-00002.safetensors")
    (f / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ModelError, match="missing weight files model-00002"):
        check_model_folder(f)
