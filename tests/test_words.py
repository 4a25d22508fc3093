"""What is formatted for people (core/words.py): one way each, for the command line and the window."""

from __future__ import annotations

import pytest

from sorce_desktop.core.words import count, duration_words, human_size, own_name, photos, time_left


def test_counts_take_their_plural():
    assert [photos(n) for n in (0, 1, 2, 1204)] == ["0 photos", "1 photo", "2 photos", "1,204 photos"]
    assert count(1, "folder") == "1 folder" and count(3, "folder") == "3 folders"
    assert count(2, "match", "matches") == "2 matches"


@pytest.mark.parametrize(
    "n,text",
    [(0, "0 bytes"), (1023, "1023 bytes"), (12 * 2**10, "12 KB"), (int(2.34 * 2**20), "2.3 MB"),
     (300 * 2**20, "300 MB"), (1000 * 2**20, "1,000 MB"), (int(1.46 * 2**30), "1.46 GB")],
)  # fmt: skip
def test_sizes(n, text):
    assert human_size(n) == text


def test_time_left():
    assert time_left(None) == ""
    assert time_left(5) == "less than a minute left"
    assert time_left(60) == "about 1 min left" and time_left(59 * 60) == "about 59 min left"
    assert time_left(3600 + 5 * 60) == "about 1 h 05 min left"


def test_durations_in_words():
    """How long a re-index takes, said in the window's confirmation (formatted here, beside time left)."""
    assert [duration_words(s) for s in (5, 30, 80, 12 * 60, 90 * 60, 15 * 3600)] == [
        "a few seconds", "less than a minute", "about a minute", "about 12 minutes", "about 1.5 hours",
        "about 15 hours",
    ]  # fmt: skip


def test_own_name():
    assert own_name("/photos/2024/") == "2024" and own_name("/photos/cat.jpg") == "cat.jpg"
    assert own_name("/") == "/"
