"""A tiny SigLIP whose checkpoint's logit scale and bias put the model's own match probability around
0.5 for one query over real photos, so some regions are likely matches and some are not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

QUERY = "a red kite in the sky"


def calibrated_siglip(tiny_siglip: Path, dest: Path, photos: list[Path], scale: float = 40.0) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from sorce_desktop.core.images import load_image
    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.regions import get_layout

    emb = DualEncoderEmbedder(tiny_siglip)
    q = emb.embed_texts([QUERY])[0]
    layout = get_layout("grid3")
    best = []
    for p in photos:
        regions = emb.embed_photos([load_image(p, emb.decode_min_side(layout))], layout)[0]
        best.append(float(np.max(np.stack([r.vector for r in regions]) @ q)))
    # the model says "likely" (logit 0) halfway between the photos' best region scores
    middle = float(np.median(best))
    shutil.copytree(tiny_siglip, dest)
    weights = next(dest.glob("*.safetensors"))
    state = load_file(weights)
    state["logit_scale"] = torch.tensor([float(np.log(scale))])
    state["logit_bias"] = torch.tensor([-scale * middle])
    save_file(state, weights, metadata={"format": "pt"})
    return dest
