"""Loading only what a command needs: a query of quoted words is answered from the words read in the
photos, with no picture model imported or loaded, and gets the same answer it gets with the model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from signs_support import build_signs_library

ROOT = Path(__file__).resolve().parents[1]

#: what the models pull in (picture, and text by meaning); none of it is needed for quoted words
PICTURE_MODULES = ("sorce_desktop.core.models.dual", "sorce_desktop.core.models.lean", "transformers", "torch")


@pytest.fixture(scope="module")
def signs(tmp_path_factory, tiny_clip):
    return build_signs_library(tmp_path_factory.mktemp("signs"), tiny_clip)


def _search_in_fresh_process(data: Path, *args: str) -> tuple[list, set[str]]:
    """``search ARGS --json`` run in a new interpreter: its hits, and which picture modules it imported."""
    code = (
        "import json, sys\n"
        "from sorce_desktop.cli import main\n"
        f"rc = main(['search', *{list(args)!r}, '--json', '--top', '20', '--data-dir', {str(data)!r}])\n"
        f"print(json.dumps(sorted(m for m in {PICTURE_MODULES!r} if m in sys.modules)), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), set(json.loads(out.stderr.strip().splitlines()[-1]))


def test_words_only_query_imports_no_picture_model(signs, tiny_clip):
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    hits, imported = _search_in_fresh_process(signs.data, '"stop"')
    assert imported == set()
    assert hits[0]["path"] == signs.exact["stop"]
    # the same answer the window gives with its picture model loaded
    with Library(signs.data, writer=False) as lib:
        answer = lib.search_service(DualEncoderEmbedder(tiny_clip)).answer('"stop"', top=20)
    assert hits == json.loads(json.dumps([h.to_json() for h in answer.hits]))
    assert answer.vector is None


def test_a_picture_query_needs_only_the_query_encoder(signs, tiny_clip):
    """A cold picture query imports neither torch nor transformers where the model wrote its query
    encoder (`index` did); without one it loads the model, which writes it, and the next needs it only."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    prepared = signs.data / "models" / "prepared" / "query"
    assert any(prepared.glob("*.json"))  # written when `index` loaded the model
    hits, imported = _search_in_fresh_process(signs.data, '"stop" sign')
    assert imported == set()
    assert {h["path"] for h in hits} <= {signs.exact["stop"], signs.partial["stop"]}
    with Library(signs.data, writer=False) as lib:  # the photos the loaded model finds, in its order
        answer = lib.search_service(DualEncoderEmbedder(tiny_clip)).answer("a red kite in the sky", top=5)
    hits, imported = _search_in_fresh_process(signs.data, "a red kite in the sky")
    assert imported == set()
    assert [h["path"] for h in hits][:5] == [h.path for h in answer.hits]

    shutil.rmtree(prepared)
    hits, imported = _search_in_fresh_process(signs.data, '"stop" sign')
    assert "sorce_desktop.core.models.dual" in imported and any(prepared.glob("*.json"))
    assert {h["path"] for h in hits} <= {signs.exact["stop"], signs.partial["stop"]}
    again, imported = _search_in_fresh_process(signs.data, '"stop" sign')
    assert imported == set() and [h["path"] for h in again] == [h["path"] for h in hits]


@pytest.mark.parametrize(
    ("query", "words_only"),
    [('"stop"', True), ('"stop" "open late"', True), ("“stop”", True), ('"stop" sign', False), ("stop", False),
     ('"stop"sign', False), ('""', False)],
)
def test_which_queries_are_words_only(query, words_only):
    from sorce_desktop.core.search.answer import clean_query
    from sorce_desktop.core.search.textsearch import parse_query

    assert parse_query(clean_query(query)).words_only is words_only


def test_words_only_query_loads_no_text_model(tmp_path):
    """Lines with meaning embeddings: an unquoted word loads the text model to match by meaning, quoted
    words only do not (they are matched by letters, which always outrank a match by meaning)."""
    import numpy as np

    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.textsearch import TextSearcher
    from sorce_desktop.core.store.catalog import IndexedPhoto, Store, TextPhoto
    from sorce_desktop.core.text.ocr import TextLine

    class Meaning:
        fingerprint = "test-meaning@8"

        def embed(self, texts):
            return np.ones((len(texts), 8), np.float32) / np.sqrt(8)

    store = Store(tmp_path / "index")
    try:
        items = []
        for name, words in (("a.jpg", "STOP"), ("b.jpg", "HALT")):
            photo = IndexedPhoto(str(tmp_path / name), str(tmp_path), 10, 1, f"h-{name}", 640, 480)
            line = TextLine(words, 0.9, Box(0, 0, 90, 20), [(0, 0), (90, 0), (90, 20), (0, 20)])
            items.append(TextPhoto(None, photo.hash, [line], np.ones((1, 8), np.float32) / np.sqrt(8), photo))
        store.commit_text(items, "test", Meaning.fingerprint)
        loads = []
        searcher = TextSearcher(store, lambda: loads.append(1) or Meaning())
        hits = searcher.search('"stop"')
        assert [h.text for h in hits] == ["STOP"] and loads == []
        assert {h.text for h in searcher.search("stop")} == {"STOP", "HALT"} and loads == [1]  # by meaning too
    finally:
        store.close()


def test_search_asks_a_running_watch(signs, tiny_clip, tmp_path):
    """`watch` running for the library answers `search` over its socket: the command loads no model and
    prints what it prints when it answers itself."""
    from sorce_desktop.cli import main

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    watch = subprocess.Popen(
        [sys.executable, "-m", "sorce_desktop", "--data-dir", str(signs.data), "watch", "--polling"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        for line in watch.stderr:  # ready once it says it watches
            if line.startswith("watching"):
                break
        asked = {q: _search_in_fresh_process(signs.data, q) for q in ("stop", "a red kite in the sky")}
    finally:
        watch.terminate()
        watch.wait(60)
    for query, (_hits, imported) in asked.items():
        assert imported == set(), query  # answered by the watch, which has the models
    # the same answers as the command's own (compared after the watch stopped, by the command itself)
    import io
    from contextlib import redirect_stdout

    for query, (hits, _imported) in asked.items():
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(["search", query, "--json", "--top", "20", "--data-dir", str(signs.data)]) == 0
        assert hits == json.loads(buf.getvalue()), query
