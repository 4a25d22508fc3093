"""The tanh GELU computed through a sigmoid (core/models/activations.py): the same function, so the
swap the embedder makes on a CPU must not move a photo's vectors."""

from __future__ import annotations

import numpy as np
import torch
from conftest import coco_photos
from PIL import Image

from sorce_desktop.core.models.activations import SigmoidGELUTanh, sigmoid_tanh_gelus
from sorce_desktop.core.models.dual import DualEncoderEmbedder


def test_sigmoid_form_is_the_tanh_gelu():
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.randn(100_000) * 3, torch.tensor([0.0, -0.0])])
    want = torch.nn.functional.gelu(x, approximate="tanh")
    got = SigmoidGELUTanh()(x.clone())
    assert torch.allclose(got, want, rtol=1e-5, atol=2e-6), float((got - want).abs().max())
    # the input is not changed (the MLP's residual path may still hold it)
    y = x.clone()
    SigmoidGELUTanh()(y)
    assert torch.equal(y, x)


def test_the_embedder_swaps_its_tanh_gelus_and_its_vectors_stay(tiny_siglip):
    from transformers import AutoModel

    emb = DualEncoderEmbedder(tiny_siglip)
    names = {type(m).__name__ for m in emb.model.modules()}
    assert "SigmoidGELUTanh" in names and "GELUTanh" not in names and "PytorchGELUTanh" not in names
    plain = AutoModel.from_pretrained(tiny_siglip).eval()
    assert sigmoid_tanh_gelus(plain.vision_model) > 0  # the plain model still had them
    plain = AutoModel.from_pretrained(tiny_siglip).eval()
    img = Image.open(coco_photos(1)[0]).convert("RGB")
    pixels = emb.preprocess([img])
    with torch.inference_mode():
        want = plain.get_image_features(pixel_values=pixels)
    want = getattr(want, "pooler_output", want).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = emb.forward_pixels(pixels)
    assert np.abs(got - want).max() < 1e-5
