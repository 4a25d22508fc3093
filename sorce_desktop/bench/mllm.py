"""Regional Prompts on a multimodal LLM: photos/s for five full passes (the paper's code) vs the shared image prefix.

Both ways run in the same process on the same photos, batch by batch in alternating order (so load
from other programs hits both alike), with a randomly initialised model of the real architecture and
size: a random model costs what the trained one costs. (a) runs every prompt as a full forward pass,
as MCG-NJU/SORCE eval_sorce.py does; (b) prefills the shared prefix once per photo and runs the five
short suffixes on its key/value cache. The embeddings of (a) and (b) are compared too (min cosine).

On a CPU use the Qwen2-VL-2B-sized model and a few photos (minutes); on a GPU the E5-V-sized one
(LLaVA-NeXT, Llama-3-8B) in bf16: ``sorce-desktop bench mllm --device cuda --spec e5-v``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sorce_desktop.core.jsonout import print_json


def add_arguments(p) -> None:
    p.add_argument(
        "--model",
        metavar="FOLDER",
        help="an MLLM folder (LLaVA-NeXT or Qwen2-VL) to time instead of a random one of --spec",
    )
    p.add_argument(
        "--spec",
        default=None,
        help="random model to build: qwen2-vl-2b (default on CPU), e5-v (default on CUDA), tiny-llava-next, "
        "tiny-qwen2-vl",
    )
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto")
    p.add_argument("--photos", type=int, default=4, help="coco-small photos to embed (each way)")
    p.add_argument("--start", type=int, default=0, help="index of the first photo in coco-small")
    p.add_argument(
        "--batch-size", type=int, default=None, help="photos per batch (default: 1 on CPU, 4 on CUDA)"
    )
    p.add_argument("--layout", default="rep", help="prompt-set layout (default rep: global + 4 corners)")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches of each way first")
    p.add_argument("--dataset", metavar="DIR", help="photo folder (default: ../shared/datasets/coco-small)")
    p.add_argument("--cache-dir", metavar="DIR", help="where random real-size models are built and kept")


def _coco_small() -> Path | None:
    candidates = []
    if os.environ.get("SORCE_COCO_SMALL"):
        candidates.append(Path(os.environ["SORCE_COCO_SMALL"]))
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "datasets" / "coco-small")
    candidates.append(Path("/work/shared/datasets/coco-small"))
    return next((c for c in candidates if (c / "images").is_dir()), None)


def _model_folder(spec: str, cache: str | None) -> Path:
    """A random ``spec`` model folder, built once (bf16 on disk) and reused."""
    import torch

    from sorce_desktop.bench.synthetic import MLLM_SPECS, build_mllm

    if spec not in MLLM_SPECS:
        raise SystemExit(f"unknown --spec {spec!r}; known: {', '.join(MLLM_SPECS)}")
    base = Path(
        cache or os.environ.get("SORCE_BENCH_CACHE") or Path(tempfile.gettempdir()) / "sorce-bench-cache"
    )
    folder = base / "models" / spec
    if (folder / "SYNTHETIC.txt").is_file():
        return folder
    tmp = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"building a random {spec} model in {folder} (once)...", file=sys.stderr)
    device = "cuda" if spec == "e5-v" and torch.cuda.is_available() else None
    build_mllm(tmp, spec, save_dtype=torch.bfloat16 if not spec.startswith("tiny") else None, device=device)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # a half-built folder is never taken for a finished one
    return folder


def run(args) -> int:
    import torch

    from sorce_desktop.core.models.dual import pick_device
    from sorce_desktop.core.models.mllm import MLLMEmbedder
    from sorce_desktop.core.photos.images import load_image
    from sorce_desktop.core.regions import get_layout

    device = pick_device(None if args.device == "auto" else args.device)
    if args.model:
        folder, spec = Path(args.model), None
    else:
        spec = args.spec or ("e5-v" if device.type == "cuda" else "qwen2-vl-2b")
        folder = _model_folder(spec, args.cache_dir)
    data = Path(args.dataset) if args.dataset else _coco_small()
    if data is None:
        raise SystemExit("coco-small not found: give --dataset DIR (e.g. ../shared/datasets/coco-small)")
    images_dir = data / "images" if (data / "images").is_dir() else data
    paths = sorted(images_dir.glob("*.jpg"))[args.start : args.start + args.photos]
    if not paths:
        raise SystemExit(f"no photos in {images_dir}")

    t0 = time.perf_counter()
    emb = MLLMEmbedder(folder, device=str(device), batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    layout = get_layout(args.layout)
    photos = [load_image(p, emb.decode_min_side(layout)) for p in paths]
    bs = emb.batch_size
    batches = [photos[i : i + bs] for i in range(0, len(photos), bs)]

    def timed(fn, batch):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        out = fn(batch, layout)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, out, time.process_time() - c

    # warm-up with a whole batch: the first batch-sized shapes pay kernel selection and allocator growth
    for _ in range(args.warmup):
        emb.embed_photos(batches[0], layout)
        emb.embed_photos_full_passes(batches[0], layout)

    full_t, shared_t, full_c, shared_c, cosines = [], [], [], [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for k, batch in enumerate(batches):
        # alternate which way goes first, so a burst of load elsewhere does not favour one
        order = ("full", "shared") if k % 2 == 0 else ("shared", "full")
        res = {}
        for way in order:
            fn = emb.embed_photos_full_passes if way == "full" else emb.embed_photos
            res[way] = timed(fn, batch)
        full_t.append(res["full"][0])
        shared_t.append(res["shared"][0])
        full_c.append(res["full"][2])
        shared_c.append(res["shared"][2])
        for a, b in zip(res["full"][1], res["shared"][1]):
            cosines.extend(float(np.dot(x.vector, y.vector)) for x, y in zip(a, b))
        print(
            f"batch {k + 1}/{len(batches)}: full {res['full'][0]:.2f}s, shared {res['shared'][0]:.2f}s",
            file=sys.stderr,
        )

    n = len(photos)
    tokens = [len(t) for t in _image_token_counts(emb, photos)]
    result = {
        "model": str(folder) if spec is None else spec,
        "params_m": round(sum(p.numel() for p in emb.model.parameters()) / 1e6),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": emb.variant(),
        "layout": layout.name,
        "prompts": len(layout.regions(640, 480)),
        "photos": n,
        "batch_size": bs,
        "image_tokens_median": statistics.median(tokens) if tokens else None,
        "full_s": round(sum(full_t), 3),
        "shared_s": round(sum(shared_t), 3),
        "full_photos_per_s": round(n / sum(full_t), 4),
        "shared_photos_per_s": round(n / sum(shared_t), 4),
        "speedup": round(sum(full_t) / sum(shared_t), 3),
        "speedup_median_batch": round(statistics.median(f / s for f, s in zip(full_t, shared_t)), 3),
        # CPU time of this process: on a shared CPU, less disturbed by other programs than wall time
        "full_cpu_s": round(sum(full_c), 3),
        "shared_cpu_s": round(sum(shared_c), 3),
        "speedup_cpu_time": round(sum(full_c) / max(sum(shared_c), 1e-9), 3),
        "min_cosine_full_vs_shared": round(min(cosines), 6),
        "load_s": round(load_s, 1),
    }
    if device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0


def _image_token_counts(emb, photos) -> list[list[int]]:
    """Image tokens each photo's prompt carries (what prefill pays for)."""
    out = []
    image_id = emb.tokenizer.convert_tokens_to_ids(emb.family.image_placeholder)
    for p in photos:
        enc = emb.processor(text=[emb.family.image_prompt], images=[p.image], return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        out.append([t for t in ids if t == image_id])
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"
