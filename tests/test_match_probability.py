"""The model's own match probability (SigLIP: sigmoid(exp(logit_scale) * cosine + logit_bias), both in
the checkpoint): likely matches first and marked, --min-score on that scale; models without one (CLIP)
keep cosines and claim no probability."""

from __future__ import annotations

import json

import numpy as np
import pytest
from calibrated_support import QUERY, calibrated_siglip
from conftest import no_text_reading, scene_photos
from gui_support import copy_photos

from sorce_desktop.cli import main


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_siglip):
    root = tmp_path_factory.mktemp("calibrated")
    photos = copy_photos(root / "photos", 10)
    model = calibrated_siglip(tiny_siglip, root / "model", sorted(photos.iterdir()))
    data = root / "data"
    no_text_reading(data)
    args = ["index", str(photos), "--model", str(model), "--layout", "grid3", "--speed", "thorough"]
    assert main([*args, "--data-dir", str(data)]) == 0
    return model, data


def test_probability_is_the_checkpoints_own_sigmoid(calibrated):
    import torch
    from PIL import Image
    from transformers import AutoModel

    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.search.answer import match_probability

    model, _data = calibrated
    emb = DualEncoderEmbedder(model)
    cal = emb.match_calibration()
    ref = AutoModel.from_pretrained(model).eval()
    assert cal == pytest.approx((float(ref.logit_scale.detach().exp()), float(ref.logit_bias.detach())))
    # the reference: the model's own forward over one text and one image, through its sigmoid
    img = Image.open(scene_photos(1)[0]).convert("RGB")
    cos = float(emb.embed_images([img])[0] @ emb.embed_texts([QUERY])[0])
    tok = emb.tokenizer(
        [emb.template.format(QUERY)], padding="max_length", truncation=True, max_length=emb.text_max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = ref(input_ids=tok["input_ids"], pixel_values=emb.preprocess([img]))
    assert match_probability(cos, cal) == pytest.approx(float(torch.sigmoid(out.logits_per_text)[0, 0]), abs=1e-4)
    assert match_probability(cos, cal) == pytest.approx(1 / (1 + np.exp(-(cal[0] * cos + cal[1]))))


def test_likely_matches_first_and_min_score_is_a_probability(calibrated, capsys):
    _model, data = calibrated
    assert main(["search", QUERY, "--json", "--top", "10", "--data-dir", str(data)]) == 0
    hits = json.loads(capsys.readouterr().out)
    likely = [h["likely"] for h in hits]
    assert True in likely and False in likely  # the checkpoint's bias puts some photos on each side
    assert likely == sorted(likely, reverse=True)  # the likely ones first
    assert all((h["probability"] >= 0.5) == h["likely"] for h in hits)  # no words: the picture decides
    assert main(["search", QUERY, "--json", "--min-score", "0.5", "--data-dir", str(data)]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in kept] == [h["path"] for h in hits if h["likely"]]
    assert main(["search", QUERY, "--data-dir", str(data)]) == 0
    assert "--- less likely matches ---" in capsys.readouterr().out
    assert main(["search", QUERY, "--min-score", "2", "--data-dir", str(data)]) == 2  # a usage error
    assert "between 0 and 1" in capsys.readouterr().err


def test_models_without_calibration_keep_cosines(tmp_path, tiny_clip, capsys):
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    assert DualEncoderEmbedder(tiny_clip).match_calibration() is None
    photos = copy_photos(tmp_path / "photos", 4)
    data = no_text_reading(tmp_path / "data")
    assert main(["index", str(photos), "--model", str(tiny_clip), "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["search", "a dog", "--json", "--data-dir", data]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all("likely" not in h and "probability" not in h for h in hits)
    floor = sorted(h["score"] for h in hits)[1]
    assert main(["search", "a dog", "--json", "--min-score", str(floor), "--data-dir", data]) == 0
    assert all(h["score"] >= floor - 1e-6 for h in json.loads(capsys.readouterr().out))  # a cosine


def test_every_picture_region_the_model_finds_likely_is_listed(calibrated, tiny_siglip):
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.search.answer import LIKELY, match_probability

    model, data = calibrated
    with Library(data, writer=False) as lib:
        service = lib.search_service(DualEncoderEmbedder(model))
        cal = service.embedder.match_calibration()
        hits = service.search(QUERY, top=10)
        several = [h for h in hits if len(h.picture_regions()) > 1]
        assert several  # the bias puts many regions of the likeliest photos over 0.5
        for h in hits:
            pics = h.picture_regions()
            assert pics[0].score == pytest.approx(h.picture.score) and h.box == pics[0].box
            assert all(a.score >= b.score for a, b in zip(pics, pics[1:]))
            assert all(match_probability(r.score, cal) >= LIKELY for r in pics[1:])
        # without a probability, "matched" is the best region alone
        plain = Library(data, writer=False)
        try:
            from sorce_desktop.core.search.answer import SearchService

            emb = service.embedder
            emb.match_calibration = lambda: None
            assert all(len(h.picture_regions()) == 1 for h in SearchService(plain.store, emb, None).search(QUERY, top=10))
        finally:
            plain.close()
