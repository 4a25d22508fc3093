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


def build_tokenizer(
    folder: Path,
    vocab_size: int = 512,
    extra_special: dict[str, str] | None = None,
    *,
    specials: list[str] | None = None,
    wrap: str = "bos_eos",
    corpus: list[str] | None = None,
):
    """A byte-level BPE tokenizer trained in a moment on a few strings, saved into ``folder``.

    ``specials``: further special tokens (chat-template markers). ``wrap``: what encoding adds around
    a text: ``bos_eos`` (CLIP-like), ``bos`` (Llama 3 adds only ``<|begin_of_text|>``) or ``none``
    (Qwen2 adds nothing), so the last token of a prompt is the prompt's own, as with the real ones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    named = list((extra_special or {}).values())
    specials = ["<pad>", "<s>", "</s>", "<unk>"] + named + [t for t in specials or [] if t not in named]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((corpus or _CORPUS) * 4, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if wrap == "bos_eos":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
        )
    elif wrap == "bos":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    elif wrap != "none":
        raise ValueError(f"unknown wrap {wrap!r}")
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


# -- multimodal LLMs (Regional Prompts backend) ----------------------------------------------------------
_MLLM_CORPUS = _CORPUS + [
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummarize above image in one word: <|eot_id|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "Summarize above sentence in one word: the left lower corner, the right upper corner",
]
_LLAMA3_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
_QWEN2_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]

#: Multimodal-LLM architectures. "tiny-*" are for tests (random init made strong enough that a wrong
#: position or mask changes the embedding visibly); the others mirror the real checkpoints' configs.
MLLM_SPECS = {
    "tiny-llava-next": dict(
        arch="llava_next",
        vision=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            initializer_range=0.2,
        ),
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=100.0,
            initializer_range=0.2,
            max_position_embeddings=4096,
        ),
        pinpoints=[[32, 64], [64, 32], [64, 64]],
        vocab=None,
    ),
    # royokong/e5-v and lcxrocks/e5-v-ReP: LLaVA-NeXT (llama3-llava-next-8b) = CLIP ViT-L/14-336 +
    # Llama-3-8B, any-resolution tiling up to 672x672 / 1008x336.
    "e5-v": dict(
        arch="llava_next",
        vision=dict(
            image_size=336,
            patch_size=14,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            projection_dim=768,
        ),
        text=dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            rope_theta=500000.0,
            rms_norm_eps=1e-5,
            max_position_embeddings=8192,
        ),
        pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        vocab=128320,
    ),
    "tiny-qwen2-vl": dict(
        arch="qwen2_vl",
        vision=dict(
            depth=2,
            embed_dim=32,
            hidden_size=64,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=0.2,
        ),
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            initializer_range=0.2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 100.0, "mrope_section": [2, 3, 3]},
        ),
        vocab=None,
    ),
    # Qwen/Qwen2-VL-2B-Instruct
    "qwen2-vl-2b": dict(
        arch="qwen2_vl",
        vision=dict(
            depth=32,
            embed_dim=1280,
            hidden_size=1536,
            num_heads=16,
            mlp_ratio=4,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        text=dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        ),
        vocab=151936,
        tie_word_embeddings=True,
    ),
}


def build_mllm(
    folder: str | Path,
    spec: str = "tiny-llava-next",
    seed: int = 0,
    *,
    save_dtype: torch.dtype | None = None,
    device: str | None = None,
) -> Path:
    """Save a randomly initialised multimodal LLM of ``spec`` (see ``MLLM_SPECS``) into ``folder``,
    with its tokenizer and processor configs, so the backend loads it exactly like a downloaded one.

    ``save_dtype`` (e.g. bfloat16) halves the disk a real-size model needs; ``device`` builds it there
    (an 8B model initialises in seconds on a GPU, minutes on a CPU)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = MLLM_SPECS[spec]
    torch.manual_seed(seed)
    if s["arch"] == "llava_next":
        model = _build_llava_next(folder, s, save_dtype, device)
    elif s["arch"] == "qwen2_vl":
        model = _build_qwen2_vl(folder, s, save_dtype, device)
    else:  # pragma: no cover
        raise ValueError(s["arch"])
    model.eval()
    model.save_pretrained(folder)
    (folder / "SYNTHETIC.txt").write_text(f"randomly initialised {spec} (seed {seed}); not a trained model\n")
    return folder


def _instantiate(cls, config, save_dtype, device):
    previous = torch.get_default_dtype()
    if save_dtype is not None:
        torch.set_default_dtype(save_dtype)
    try:
        with torch.device(device or "cpu"):
            return cls(config)
    finally:
        torch.set_default_dtype(previous)


def _build_llava_next(folder: Path, s: dict, save_dtype, device):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = build_tokenizer(
        folder,
        extra_special={"image_token": "<image>"},
        specials=_LLAMA3_SPECIALS,
        wrap="bos",
        corpus=_MLLM_CORPUS,
    )
    image_token = tok.convert_tokens_to_ids("<image>")
    v = s["vision"]
    text = LlamaConfig(
        vocab_size=s["vocab"] or len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **s["text"],
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**v),
        text_config=text,
        image_token_index=image_token,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_grid_pinpoints=s["pinpoints"],
        image_seq_length=(v["image_size"] // v["patch_size"]) ** 2,
        tie_word_embeddings=False,
    )
    model = _instantiate(LlavaNextForConditionalGeneration, config, save_dtype, device)
    side = v["image_size"]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=s["pinpoints"],
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    # Saved without patch_size / vision_feature_select_strategy / num_additional_image_tokens, as
    # E5-V's processor config is: the backend must supply them from the model config, as the SORCE
    # evaluation code does, or the image-token count is wrong.
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok)
    processor.save_pretrained(folder)
    return model


def _build_qwen2_vl(folder: Path, s: dict, save_dtype, device):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = build_tokenizer(
        folder,
        extra_special={"image_token": "<|image_pad|>"},
        specials=_QWEN2_SPECIALS,
        wrap="none",
        corpus=_MLLM_CORPUS,
    )
    ids = {
        t: tok.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    text = dict(
        s["text"],
        vocab_size=s["vocab"] or len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = Qwen2VLConfig(
        vision_config=s["vision"],
        text_config=text,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s.get("tie_word_embeddings", False),
    )
    model = _instantiate(Qwen2VLForConditionalGeneration, config, save_dtype, device)
    v = s["vision"]
    # Qwen2-VL's own preprocessor config (Qwen/Qwen2-VL-2B-Instruct); the backend overrides the pixel
    # range with the SORCE evaluation code's min_pixels / max_pixels.
    pre = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 1280,
        "size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
        "patch_size": v["patch_size"],
        "temporal_patch_size": v["temporal_patch_size"],
        "merge_size": v["spatial_merge_size"],
        "resample": 3,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return model


def calibrate_siglip(folder: str | Path, dest: str | Path, photos: list[Path], query: str, scale: float = 40.0) -> Path:
    """Copy the tiny SigLIP at ``folder`` to ``dest`` with its checkpoint's logit scale and bias set so
    the model's own match probability for ``query`` is 0.5 at the median of the photos' best region
    scores: some photos come out likely matches and some not, as with a trained model (random weights
    alone put every pair near probability 0). For tests and screenshots of the likely-matches split."""
    import shutil

    import numpy as np
    from safetensors.torch import load_file, save_file

    from sorce_desktop.core.models.dual import DualEncoderEmbedder
    from sorce_desktop.core.photos.images import load_image
    from sorce_desktop.core.regions import get_layout

    emb = DualEncoderEmbedder(Path(folder))
    q = emb.embed_texts([query])[0]
    layout = get_layout("grid3")
    best = []
    for p in photos:
        regions = emb.embed_photos([load_image(p, emb.decode_min_side(layout))], layout)[0]
        best.append(float(np.max(np.stack([r.vector for r in regions]) @ q)))
    middle = float(np.median(best))
    dest = Path(dest)
    shutil.copytree(folder, dest)
    weights = next(dest.glob("*.safetensors"))
    state = load_file(weights)
    state["logit_scale"] = torch.tensor([float(np.log(scale))])
    state["logit_bias"] = torch.tensor([-scale * middle])
    save_file(state, weights, metadata={"format": "pt"})
    return dest
