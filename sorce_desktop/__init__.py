"""sorce-desktop: find photos by describing something small in them."""

import os

# OpenMP threads (FAISS's, PyTorch's) that spin-wait after a parallel region take a laptop's cores from the
# work right after it. bench query's loop at 100k photos (AVX2, 2026-12-07, ACTIVE and PASSIVE interleaved,
# two runs each): total p50 66.5 / 70.5 ms against 73.1 / 71.8, the search 8.2-8.5 against 10.1-10.7 ms; and
# PyTorch's vision tower was no slower passive (1.84-2.11 against 2.07-2.13 s for 12 tiles). Set before either
# library is loaded; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
APP_NAME = "sorce-desktop"
