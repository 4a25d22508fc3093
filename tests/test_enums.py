"""States that code compares are enums of one base, written as their plain values (prints, JSON, SQL),
so what the command line and the files say did not change when they stopped being strings."""

from __future__ import annotations

import json

import pytest

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.indexing.indexer import Phase, Verdict
from sorce_desktop.core.indexing.service import EventKind
from sorce_desktop.core.search.answer import RegionKind
from sorce_desktop.core.store.catalog import Source, Status


def _states():
    from sorce_desktop.gui.session import LoadState  # the window's model state (imports Qt)

    return [EventKind, Phase, Verdict, Status, Source, LoadState, RegionKind]


@pytest.mark.gui
def test_every_compared_state_is_a_str_enum_written_as_its_value():
    for cls in _states():
        assert issubclass(cls, StrEnum) and "__str__" not in vars(cls), cls
        for m in cls:
            assert str(m) == f"{m}" == m.value and json.dumps(m) == json.dumps(m.value) and m == m.value


def test_values_kept():
    assert [k.value for k in Phase] == ["scanning", "embedding", "paused", "done", "cancelled"]
    assert json.dumps({"kind": EventKind.INDEXED, "status": Status.FAILED}) == '{"kind": "indexed", "status": "failed"}'


def test_a_matched_regions_kind_is_an_enum_in_an_answer_and_in_a_running_windows_reply():
    """The front ends compare a matched region's kind (which outline colour, "Aa" for words, a file name
    with nothing to outline) against RegionKind, not string literals; a hit read back from a running
    window's reply (core/running.py) carries the same enum, and the JSON keeps the plain values."""
    from sorce_desktop.core import running
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import MatchedRegion, PhotoHit

    regions = [
        MatchedRegion(RegionKind.PICTURE, Box(0, 0, 10, 10), 0.3, "cell_0_0"),
        MatchedRegion(RegionKind.TEXT, Box(1, 1, 5, 3), 1.0, "text", "STOP", "letters"),
    ]
    hit = PhotoHit("/p/a.jpg", 0.3, Box(0, 0, 10, 10), "cell_0_0", 1, 20, 20, "both", regions=regions)
    assert [k for k, _b, _r in hit.outlines()] == [RegionKind.PICTURE, RegionKind.TEXT]
    assert [r["kind"] for r in hit.to_json()["regions"]] == ["picture", "text"]
    reply = {"hits": [hit.to_json()], "exact": [[hit.score, None, [r.score for r in regions]]]}
    back = running.hits_from_reply(json.loads(json.dumps(reply)))
    assert [type(r.kind) for r in back[0].regions] == [RegionKind, RegionKind]
