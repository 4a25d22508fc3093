"""Keep third-party libraries' console chatter (transformers' warnings and progress bars, the hub's
download bars) out of the app's output: the command line prints its own progress, the window shows its
own, and a windowed app has no console to print to."""

from __future__ import annotations

import os


def quiet_third_party_loggers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # transformers missing or changed: its chatter is harmless
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except Exception:
        pass
