"""First-run advice: which model suits this machine, and why.

A multimodal LLM with Regional Prompts (the SORCE paper's method) is the best at small things, but an
8B model on a laptop CPU takes minutes per photo; a dual encoder indexes several photos a second
there. So: a CUDA GPU (or Apple silicon) with room for the model gets the MLLM, anything else the
dual encoder, with the reason in words. The command line warns with ``detect_hardware()`` when an MLLM
is asked for on a CPU; the first-run page marks ``recommend_model()``'s choice "Recommended", shows its
reason and moves its picker to it unless a model was already chosen (both are called off the UI thread:
probing CUDA imports torch and can take a moment).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from sorce_desktop.core.models.registry import DEFAULT_MODEL, KNOWN_MODELS, ModelInfo

#: MLLMs to recommend, best first: the paper's ReP fine-tune, then the smaller Qwen2-VL 2B.
MLLM_PREFERENCE = ("lcxrocks/e5-v-ReP", "Qwen/Qwen2-VL-2B-Instruct")
#: Memory beyond the weights: activations and the key/value cache of a batch of photos (GiB).
HEADROOM_GB = 1.5
#: Share of Apple-silicon unified memory the GPU may use (macOS caps it at about two thirds to three
#: quarters of RAM; the rest is the system's and the other apps').
UNIFIED_GPU_SHARE = 2 / 3


@dataclass(frozen=True)
class Hardware:
    """What the model would run on. ``memory_gb``: GPU memory (CUDA) or unified memory (Apple)."""

    device: str  # 'cuda' | 'mps' | 'cpu'
    name: str
    memory_gb: float = 0.0

    @property
    def model_memory_gb(self) -> float:
        """Memory a model may take on this device."""
        if self.device == "cuda":
            return self.memory_gb
        if self.device == "mps":
            return self.memory_gb * UNIFIED_GPU_SHARE
        return 0.0


@dataclass(frozen=True)
class Recommendation:
    model_id: str
    kind: str  # 'dual' | 'mllm'
    reason: str
    hardware: Hardware


def _total_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


def detect_hardware() -> Hardware:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware("cuda", props.name, props.total_memory / 2**30)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and platform.system() == "Darwin":
        return Hardware("mps", f"Apple {platform.machine()}", _total_ram_gb())
    return Hardware("cpu", platform.processor() or platform.machine() or "CPU", _total_ram_gb())


def _fits(info: ModelInfo, hw: Hardware) -> bool:
    return info.memory_gb + HEADROOM_GB <= hw.model_memory_gb


def recommend_model(hardware: Hardware | None = None) -> Recommendation:
    """The model to offer on first run for ``hardware`` (detected when not given)."""
    hw = hardware or detect_hardware()
    dual = KNOWN_MODELS[DEFAULT_MODEL]
    where = "GPU memory" if hw.device == "cuda" else "unified memory"
    if hw.device in ("cuda", "mps"):
        for model_id in MLLM_PREFERENCE:
            info = KNOWN_MODELS[model_id]
            if _fits(info, hw):
                return Recommendation(
                    info.id,
                    "mllm",
                    f"{hw.name} has {hw.memory_gb:.0f} GB of {where}, enough for {info.title} "
                    f"(about {info.memory_gb:.0f} GB): the SORCE paper's method, best at finding small things.",
                    hw,
                )
        smallest = KNOWN_MODELS[MLLM_PREFERENCE[-1]]
        return Recommendation(
            dual.id,
            "dual",
            f"{hw.name} has {hw.memory_gb:.0f} GB of {where}; a multimodal LLM needs at least "
            f"{smallest.memory_gb + HEADROOM_GB:.0f} GB available to it, so {dual.title} is the practical choice.",
            hw,
        )
    return Recommendation(
        dual.id,
        "dual",
        "No CUDA GPU or Apple silicon found: a multimodal LLM (8B parameters) on a CPU takes minutes per "
        f"photo, while {dual.title} indexes several photos a second on a laptop CPU.",
        hw,
    )
