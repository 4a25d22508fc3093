"""Known models: what each costs and what it is good for.

Any transformers CLIP/SigLIP model works by hub id or local folder; the registry only adds advice
(size, speed, where it runs well) and the default.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    id: str
    kind: str  # 'dual' (CLIP-like dual encoder on region crops) or 'mllm' (regional prompts)
    title: str
    params_m: int  # parameters, millions
    download_mb: int  # approximate download size
    input_size: int
    #: 'laptop' runs well on a laptop CPU; 'gpu' wants a CUDA GPU or Apple silicon
    speed_class: str
    #: memory the model needs to run (GiB, in its compute dtype)
    memory_gb: float
    text_template: str = "{}"
    notes: str = ""


DEFAULT_MODEL = "google/siglip2-base-patch16-256"

KNOWN_MODELS: dict[str, ModelInfo] = {
    m.id: m
    for m in (
        ModelInfo(
            "google/siglip2-base-patch16-256",
            "dual",
            "SigLIP 2 base (multilingual), 256 px",
            375,
            1500,
            256,
            "laptop",
            1.6,
            "this is a photo of {}.",
            "Default: multilingual queries, a good quality/speed balance on a CPU.",
        ),
        ModelInfo(
            "google/siglip2-base-patch16-384",
            "dual",
            "SigLIP 2 base (multilingual), 384 px",
            376,
            1500,
            384,
            "laptop",
            1.6,
            "this is a photo of {}.",
            "Sharper on small things, about 2.3x slower than 256 px.",
        ),
        ModelInfo(
            "google/siglip2-so400m-patch14-384",
            "dual",
            "SigLIP 2 so400m (multilingual), 384 px",
            1136,
            4600,
            384,
            "gpu",
            4.6,
            "this is a photo of {}.",
            "Best dual-encoder quality; slow on a CPU.",
        ),
        ModelInfo(
            "openai/clip-vit-base-patch32",
            "dual",
            "CLIP ViT-B/32 (English)",
            151,
            600,
            224,
            "laptop",
            0.6,
            "a photo of {}.",
            "Fastest; English queries only.",
        ),
        ModelInfo(
            "openai/clip-vit-large-patch14",
            "dual",
            "CLIP ViT-L/14 (English)",
            428,
            1700,
            224,
            "gpu",
            1.7,
            "a photo of {}.",
        ),
        ModelInfo(
            "royokong/e5-v",
            "mllm",
            "E5-V (LLaVA-NeXT, Llama-3 8B) with Regional Prompts",
            8355,
            16700,
            336,
            "gpu",
            17.0,
            "{}",
            "The SORCE paper's backbone. Needs a GPU with 18 GB or more (bf16).",
        ),
        ModelInfo(
            "lcxrocks/e5-v-ReP",
            "mllm",
            "E5-V fine-tuned for Regional Prompts (SORCE)",
            8355,
            16700,
            336,
            "gpu",
            17.0,
            "{}",
            "The SORCE paper's fine-tuned model. Needs a GPU with 18 GB or more (bf16).",
        ),
        ModelInfo(
            "Qwen/Qwen2-VL-2B-Instruct",
            "mllm",
            "Qwen2-VL 2B with Regional Prompts",
            2209,
            4400,
            448,
            "gpu",
            5.0,
            "{}",
        ),
        ModelInfo(
            "Qwen/Qwen2-VL-7B-Instruct",
            "mllm",
            "Qwen2-VL 7B with Regional Prompts",
            8291,
            16600,
            448,
            "gpu",
            17.0,
            "{}",
        ),
    )
}


def model_info(model_id: str) -> ModelInfo | None:
    return KNOWN_MODELS.get(model_id)
