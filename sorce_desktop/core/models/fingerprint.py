"""What identifies a model folder's weights, read without loading the model (no torch, no transformers),
so a command that needs only the query encoder can find its prepared files cheaply."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path


def folder_fingerprint(folder: Path) -> str:
    """A short hash of a model folder's config and weights, so two different models stored under the
    same name never share an index."""
    h = hashlib.blake2b(digest_size=6)
    h.update((folder / "config.json").read_bytes())
    for w in sorted(folder.glob("*.safetensors")):
        st = w.stat()
        h.update(f"{w.name}:{st.st_size}".encode())
        with open(w, "rb") as f:
            h.update(f.read(1 << 16))
    return h.hexdigest()


def weights_source(folder: Path) -> str:
    """What a prepared copy of the model in ``folder`` is made from: its fingerprint, and each weight
    file's size and modification time (a file replaced in place makes the copy stale)."""
    parts = [folder_fingerprint(folder)]
    for w in sorted(folder.glob("*.safetensors")):
        st = w.stat()
        parts.append(f"{w.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def crc32_of(path: Path) -> int:
    """The CRC-32 of a file, read in 4 MiB pieces: what the prepared files' sidecars record to tell a damaged
    file from a good one."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc
