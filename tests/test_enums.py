"""States that code compares are enums of one base, written as their plain values (prints, JSON, SQL),
so what the command line and the files say did not change when they stopped being strings."""

from __future__ import annotations

import json

import pytest

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.indexing.indexer import Phase, Verdict
from sorce_desktop.core.indexing.service import EventKind
from sorce_desktop.core.store.catalog import Source, Status


def _states():
    from sorce_desktop.gui.session import LoadState  # the window's model state (imports Qt)

    return [EventKind, Phase, Verdict, Status, Source, LoadState]


@pytest.mark.gui
def test_every_compared_state_is_a_str_enum_written_as_its_value():
    for cls in _states():
        assert issubclass(cls, StrEnum) and "__str__" not in vars(cls), cls
        for m in cls:
            assert str(m) == f"{m}" == m.value and json.dumps(m) == json.dumps(m.value) and m == m.value


def test_values_kept():
    assert [k.value for k in Phase] == ["scanning", "embedding", "paused", "done", "cancelled"]
    assert json.dumps({"kind": EventKind.INDEXED, "status": Status.FAILED}) == '{"kind": "indexed", "status": "failed"}'
