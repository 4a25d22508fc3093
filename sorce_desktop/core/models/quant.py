"""int8 dynamic quantisation (PyTorch's own) of a model's linear layers, for CPU inference.

Weights are stored as int8 with a scale per output channel; activations are quantised on the fly per batch.
On CPUs with AVX-512 VNNI / AVX2 the int8 matrix products (fbgemm/oneDNN) do several times the
operations per cycle of float32, and a vision transformer's cost is almost all linear layers.
Fidelity (cosine between float32 and int8 embeddings) is measured by ``bench index``.
"""

from __future__ import annotations

import warnings

import torch


def quantize_linear_int8(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose ``nn.Linear`` layers run in int8 (dynamic quantisation)."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "onednn", "qnnpack"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            break
    with warnings.catch_warnings():
        # torch marks the quantized-tensor constructors as deprecated; the path still works and is
        # the one the issue asks for (PyTorch's own dynamic quantisation).
        warnings.simplefilter("ignore")
        # Per-output-channel weight scales: on the trained MiniLM the cosine to float32 is 0.980
        # against 0.957 with one scale per tensor (bench index, docs/benchmarks.md).
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear: qconfig}, dtype=torch.qint8)


def int8_available() -> bool:
    return bool(set(torch.backends.quantized.supported_engines) - {"none"})
