"""sorce-desktop: find photos by describing something small in them."""

import os

# OpenMP threads (FAISS's, PyTorch's) that spin-wait after a parallel region take both cores of a laptop from
# the work right after it: a search's FAISS threads spinning slowed the next query's text tower in
# onnxruntime from ~47 to ~60 ms (bench query's loop, 100k photos, AVX2, 2026-12-07); PyTorch's vision tower
# was no slower passive (2.07-2.13 against 1.84-2.11 s for 12 tiles). Set before either library is loaded;
# a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
APP_NAME = "sorce-desktop"
