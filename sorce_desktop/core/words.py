"""What is formatted for people, in one place: counts with their plural ("1 photo", "1,204 photos"), sizes
("300 MB", "1.46 GB"), time left ("about 3 min left"), how long something takes ("about 12 minutes") and a path's own name. The command line and the window
both use these, so they say the same thing the same way."""

from __future__ import annotations

import os


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular for exactly one."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def photos(n: int) -> str:
    return count(n, "photo")


def human_size(n: float) -> str:
    """A number of bytes: "512 bytes", "12 KB", "2.3 MB", "300 MB", "1.46 GB" (binary units, as file
    managers count)."""
    if n < 1024:
        return f"{n:.0f} bytes"
    if n < 2**20:
        return f"{n / 2**10:.0f} KB"
    if n < 10 * 2**20:
        return f"{n / 2**20:.1f} MB"
    if n < 2**30:
        return f"{n / 2**20:,.0f} MB"
    return f"{n / 2**30:.2f} GB"


def time_left(seconds: float | None) -> str:
    """Time left in words ("about 3 min left"); "" when not known."""
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return "less than a minute left"
    if s < 3600:
        return f"about {round(s / 60)} min left"
    return f"about {s // 3600} h {s % 3600 // 60:02d} min left"


def duration_words(seconds: float) -> str:
    """How long something takes, roughly: "a few seconds", "about a minute", "about 12 minutes", "about 1.5
    hours" (the cost of indexing again, asked before a settings change)."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 45:
        return "less than a minute"
    if seconds < 90:
        return "about a minute"
    minutes = seconds / 60
    if minutes < 60:
        return f"about {minutes:.0f} minutes"
    hours = minutes / 60
    return f"about {hours:.1f} hours" if hours < 10 else f"about {hours:.0f} hours"


def own_name(path: str) -> str:
    """A file's or folder's own name (the last part of its path; the path itself for a root)."""
    return os.path.basename(path.rstrip("/\\" + os.sep)) or path
