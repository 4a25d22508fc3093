"""Giving memory back to the system: what a long-lived process (the window, ``watch``) frees should
leave its resident size, not stay in the C heap for reuse."""

from __future__ import annotations

import ctypes
import sys


def give_back_freed_memory() -> None:
    """Return the C heap's freed pages to the system (glibc only; elsewhere a no-op). Loading frees many
    buffers of a few MB (each int8 weight, once packed), and indexing frees decoded photos and the text
    reader's buffers, which glibc would otherwise keep for reuse."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to ask
        pass
