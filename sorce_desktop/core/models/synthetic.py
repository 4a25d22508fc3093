"""Randomly initialised models built from configs, saved as ordinary model folders.

Used by the tests (tiny models, seconds) and by the benchmarks (the real architectures and sizes:
a random model costs exactly what the trained one costs). No download is involved; the loaders see
a normal transformers folder. Random weights say nothing about retrieval quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_CORPUS = [
    "a photo of a cat on the windowsill",
    "the red kite in the sky",
    "a cup on the shelf in the back",
    "this is a photo of a dog, a person, a car, a bicycle, a bird, a boat, a bottle",
    "summarize above image in one word:",
    "summarize above sentence in one word:",
    "the left upper corner in the above image",
    "the right lower corner in the above image",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-()",
]


def build_tokenizer(folder: Path, vocab_size: int = 512, extra_special: dict[str, str] | None = None):
    """A byte-level BPE tokenizer trained in a moment on a few strings, saved into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"] + list((extra_special or {}).values())
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=extra_special or {},
    )
    fast.save_pretrained(folder)
    return fast


#: Architectures by name. "tiny-*" are for tests; the others mirror real checkpoints' configs.
SPECS = {
    "tiny-clip": dict(
        arch="clip",
        image_size=32,
        patch=8,
        width=32,
        layers=2,
        heads=2,
        text_vocab=None,
        text_len=32,
        proj=24,
    ),
    "tiny-siglip": dict(
        arch="siglip", image_size=32, patch=8, width=32, layers=2, heads=2, text_vocab=None, text_len=16
    ),
    # google/siglip2-base-patch16-256 (fixed resolution, Gemma tokenizer's 256k vocabulary)
    "siglip2-base-patch16-256": dict(
        arch="siglip",
        image_size=256,
        patch=16,
        width=768,
        layers=12,
        heads=12,
        text_vocab=256000,
        text_len=64,
    ),
    "siglip2-base-patch16-384": dict(
        arch="siglip",
        image_size=384,
        patch=16,
        width=768,
        layers=12,
        heads=12,
        text_vocab=256000,
        text_len=64,
    ),
    # openai/clip-vit-base-patch32
    "clip-vit-base-patch32": dict(
        arch="clip",
        image_size=224,
        patch=32,
        width=768,
        layers=12,
        heads=12,
        text_vocab=49408,
        text_len=77,
        proj=512,
        text_width=512,
        text_heads=8,
    ),
}


def build_dual_encoder(folder: str | Path, spec: str = "tiny-clip", seed: int = 0) -> Path:
    """Save a randomly initialised dual encoder of ``spec`` (see ``SPECS``) into ``folder``."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = SPECS[spec]
    tok = build_tokenizer(folder)
    vocab = s["text_vocab"] or len(tok)
    torch.manual_seed(seed)
    vision = dict(
        hidden_size=s["width"],
        intermediate_size=4 * s["width"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        image_size=s["image_size"],
        patch_size=s["patch"],
    )
    tw = s.get("text_width", s["width"])
    text = dict(
        vocab_size=vocab,
        hidden_size=tw,
        intermediate_size=4 * tw,
        num_hidden_layers=s["layers"],
        num_attention_heads=s.get("text_heads", s["heads"]),
        max_position_embeddings=s["text_len"],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if s["arch"] == "clip":
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=s["proj"])
        model = CLIPModel(config)
        pre = dict(
            image_mean=[0.48145466, 0.4578275, 0.40821073],
            image_std=[0.26862954, 0.26130258, 0.27577711],
            resample=3,
        )
    else:
        config = SiglipConfig(text_config=text, vision_config=vision)
        model = SiglipModel(config)
        pre = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=2)
    model.eval()
    model.save_pretrained(folder)
    pre.update(
        rescale_factor=1 / 255,
        do_normalize=True,
        do_rescale=True,
        size={"height": s["image_size"], "width": s["image_size"]},
        image_processor_type="CLIPImageProcessor" if s["arch"] == "clip" else "SiglipImageProcessor",
    )
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    (folder / "SYNTHETIC.txt").write_text(f"randomly initialised {spec} (seed {seed}); not a trained model\n")
    return folder
