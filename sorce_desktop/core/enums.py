"""The one base for states that code compares and people or files read (event kinds, indexing phases,
photo statuses, ...): a member compares as itself and prints, formats and serialises (JSON, SQL) as its
plain value, so a state that was a string keeps its spelling everywhere it is written."""

from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    """``enum.StrEnum`` of Python 3.11, for 3.10 too."""

    def __str__(self) -> str:
        return self.value
