"""The one encoding of machine-readable output (every ``--json`` of the command line).

File names are bytes on Linux and macOS and need not be valid UTF-8. The app keeps them as Python
strings decoded with ``surrogateescape`` (``os.fsdecode``): each byte that is not part of valid
UTF-8 becomes one lone surrogate U+DC80..U+DCFF. In JSON that surrogate is written as the escape
``\\udcXX`` (XX = the original byte), and the whole output is ASCII: valid UTF-8 under any locale,
and exactly reversible (Python: ``os.fsencode(json.loads(line)["path"])`` gives the original bytes;
elsewhere: a ``\\udcXX`` escape not paired with a high surrogate stands for the byte 0xXX).
Floats that are not finite (which JSON cannot hold) are written as ``null``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any) -> str:
    """``obj`` as one line of ASCII JSON (undecodable name bytes as ``\\udcXX``, see the module doc)."""
    return json.dumps(_finite(obj), ensure_ascii=True, allow_nan=False)


def print_json(obj: Any, stream: TextIO | None = None, *, flush: bool = False) -> None:
    """Write ``obj`` as one JSON line. The text is ASCII, so no stream encoding or locale can fail on it
    or let raw invalid bytes through."""
    out = stream if stream is not None else sys.stdout
    out.write(to_json(obj) + "\n")
    if flush:
        out.flush()
