"""Keep third-party libraries' console chatter (transformers' warnings and progress bars, the hub's
download bars, onnxruntime's own logger) out of the app's output: the command line prints its own
progress, the window shows its own, and a windowed app has no console to print to."""

from __future__ import annotations

import os
import sys


def quiet_third_party_loggers() -> None:
    """Quiet them without importing transformers: it alone takes seconds to import, and a command that
    needs no model (a search for quoted words, ``status``) must not pay for it. Libraries not yet
    imported read the environment when they are; those already imported are told directly."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars follow the hub's
    if "transformers" in sys.modules:
        try:
            transformers = sys.modules["transformers"]
            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except Exception:  # transformers changed: its chatter is harmless
            pass
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:
            pass
    try:
        import onnxruntime  # about 0.2 s

        # onnxruntime logs from C++ straight to the terminal in ANSI colour ("Failed to persist telemetry
        # device ID", "Removing initializer ..."): only fatal lines, since every failure that matters comes
        # back to the app as an exception it words itself. SORCE_DESKTOP_LOG (debugging) lets warnings through.
        onnxruntime.set_default_logger_severity(2 if os.environ.get("SORCE_DESKTOP_LOG") else 4)
    except Exception:
        pass
