"""Counts in words, the way a person writes them ("1 photo", "2 photos", "1,204 photos")."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular for exactly one."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def photos(n: int) -> str:
    return count(n, "photo")
