"""Save a tiny random model to try the app without a download (its matches are arbitrary).

A randomly initialised dual encoder of a few layers (the same code paths as a real CLIP or SigLIP:
regions, boxes, words, live results), built offline in seconds and saved as a model folder that
``--model DIR`` or the window's "Choose Model Folder..." takes. Random weights find nothing in
particular: use it to see how the app works, and a real model (``models --download``) to search.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sorce_desktop.core.jsonout import print_json

#: the architectures it can build (bench/synthetic.py SPECS): CLIP, or SigLIP (which has a match probability)
KINDS = ("tiny-clip", "tiny-siglip")


def add_arguments(p) -> None:
    p.add_argument("folder", metavar="DIR", help="where to save the model (a new or empty folder)")
    p.add_argument("--kind", choices=KINDS, default="tiny-clip", help="architecture (default tiny-clip)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")


def run(args) -> int:
    from sorce_desktop.bench.synthetic import build_dual_encoder

    folder = Path(args.folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        print(f"sorce-desktop: {folder} is not an empty folder: give a new or empty one.", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    path = build_dual_encoder(folder, args.kind, seed=args.seed).resolve()
    seconds = time.perf_counter() - t0
    if args.json:
        print_json({"model": str(path), "kind": args.kind, "seed": args.seed, "seconds": round(seconds, 3)})
        return 0
    prog = os.environ.get("SORCE_DESKTOP_PROG") or "sorce-desktop"
    print(
        f"Saved a tiny random {args.kind} model in {path} ({seconds:.1f}s). Its matches are arbitrary: it shows "
        f"how the app works without a download. Try it: {prog} index ~/Pictures --model {path}"
        f" (or choose its folder in the window)."
    )
    return 0
