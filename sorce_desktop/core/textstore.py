"""Folding text for matching: what the catalog stores beside each text line and what queries compare.

The text tables and their statements live in :mod:`sorce_desktop.core.store.catalog` (its text section), which
imports this module; this module imports nothing of the store.
"""

from __future__ import annotations

from collections.abc import Sequence

TEXT_REGION = "text"  # regions.name of a text line


def fold(text: str) -> str:
    """What text matching compares: lower case, letters and digits only (OCR often drops or adds
    spaces and punctuation, so "ESPRESSO-BAR" and "espresso bar" fold to the same string)."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def fold_with_positions(text: str) -> tuple[str, list[int]]:
    """:func:`fold` plus, per folded character, its index in ``text`` (to map a match back to a box)."""
    chars, pos = [], []
    for i, ch in enumerate(text):
        for c in ch.casefold():
            if c.isalnum():
                chars.append(c)
                pos.append(i)
    return "".join(chars), pos


def fold_alternatives(text: str, alternatives: Sequence[str]) -> list[str] | None:
    """Per-character alternatives of ``text`` (as :class:`~sorce_desktop.core.text.ocr.TextLine` keeps
    them) -> per character of ``fold(text)``, its alternatives folded the same way, the character
    itself left out; None when there are none (or they do not fit the text)."""
    if len(alternatives) != len(text):
        return None
    folded, pos = fold_with_positions(text)
    out = []
    for ch, i in zip(folded, pos):
        out.append("".join(dict.fromkeys(c for c in fold(alternatives[i]) if c != ch)))
    return out if any(out) else None
