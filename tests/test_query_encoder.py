"""The query encoder (core/models/query_encoder.py): a text query embedded without torch or transformers,
with the same token ids as transformers' tokenizer and the same vector as the loaded model's text tower;
files that are damaged or stale are never used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sorce_desktop.core.models.base import ModelError
from sorce_desktop.core.models.query_encoder import (
    QueryEncoder,
    QueryEncoderUnavailable,
    open_query_encoder,
    precision_for,
    query_key,
    query_paths,
    read_sidecar,
)
from sorce_desktop.core.models.query_export import PROBES, write_query_encoder
from sorce_desktop.core.models.speed import FAST, THOROUGH

ODD = (
    *PROBES,
    "ﬁne ligature, full-width ＡＢＣ, combining e\u0301, zero\u200bwidth, rtl مرحبا",
    "x" * 3000,
    "the END.",
    "a\u00a0non-breaking space",
    "....",
    "- - -",
)


def _with_tokenizer(folder: Path, kind: str, dest: Path) -> Path:
    """A copy of a tiny model folder whose tokenizer is the real class of its family (CLIP's lowercasing,
    Gemma's byte fallback and padding as SigLIP 2's), from the tiny tokenizer's own pieces."""
    from transformers import AutoTokenizer
    from transformers.models.clip.tokenization_clip import CLIPTokenizer
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    shutil.copytree(folder, dest)
    base = json.loads(AutoTokenizer.from_pretrained(folder).backend_tokenizer.to_str())["model"]
    size = json.loads((folder / "config.json").read_text())["text_config"]["vocab_size"]
    pieces = [p for p in base["vocab"] if not p.startswith("<")]
    for f in dest.glob("*token*"):
        f.unlink()
    if kind == "clip":
        vocab = {p: i for i, p in enumerate(pieces[: size - 2])}
        vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in base["merges"]]
        merges = [m for m in merges if "".join(m) in vocab and m[0] in vocab and m[1] in vocab]
        tok = CLIPTokenizer(vocab=vocab, merges=merges)
    else:  # as google/siglip2-*: Gemma's tokenizer, an end-of-text token added, padded on the right
        vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
        vocab |= {f"<0x{i:02X}>": 5 + i for i in range(256)}
        vocab |= {p.replace("Ġ", "▁"): len(vocab) + i for i, p in enumerate(pieces[: size - len(vocab)])}
        tok = GemmaTokenizer(
            vocab=vocab, merges=[], add_bos_token=False, add_eos_token=True, padding_side="right"
        )
    tok.save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_siglip, tiny_clip):
    root = tmp_path_factory.mktemp("query-models")
    return {
        "siglip": tiny_siglip,
        "clip": tiny_clip,
        "siglip-gemma": _with_tokenizer(tiny_siglip, "siglip", root / "siglip-gemma"),
        "clip-clip": _with_tokenizer(tiny_clip, "clip", root / "clip-clip"),
    }


def _loaded(folder: Path, speed, prepared: Path):
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    return DualEncoderEmbedder(folder, device="cpu", speed=speed, prepared_dir=prepared)


@pytest.mark.parametrize("name", ["siglip", "clip", "siglip-gemma", "clip-clip"])
def test_token_ids_and_vectors_match_the_loaded_model(models, name, tmp_path):
    folder = models[name]
    for speed in (THOROUGH, FAST):
        e = _loaded(folder, speed, tmp_path)
        write_query_encoder(e, tmp_path)
        enc = open_query_encoder(folder, str(folder), tmp_path, e.int8)
        assert enc.fingerprint == e.fingerprint and enc.match_calibration() == e.match_calibration()
        for text in ODD:
            prompt = e.template.format(text.strip())
            want = e.tokenizer(
                [prompt],
                padding="max_length" if e.pad_to_max else True,
                truncation=True,
                max_length=e.text_max_length,
            )["input_ids"][0]
            assert enc.token_ids(prompt) == list(want), (name, text[:30])
        texts = [t for t in ODD if t.strip()]
        cos = np.sum(enc.embed_texts(texts) * e.embed_texts(texts), axis=1)
        # float32: the same arithmetic; int8: two int8 kernels (PyTorch's and onnxruntime's)
        assert cos.min() > (0.99999 if speed is THOROUGH else 0.99), (name, speed.name, cos.min())


def test_the_siglip_tokens_are_padded_and_truncated_as_transformers_does(models, tmp_path):
    e = _loaded(models["siglip-gemma"], THOROUGH, tmp_path)
    write_query_encoder(e, tmp_path)
    enc = open_query_encoder(models["siglip-gemma"], "m", tmp_path, False)
    short, long = enc.token_ids("a cat"), enc.token_ids("word " * 300)
    assert len(short) == len(long) == e.text_max_length
    assert short[-1] == e.tokenizer.pad_token_id and long[-1] == e.tokenizer.eos_token_id


def _written(folder: Path, prepared: Path, speed=FAST):
    e = _loaded(folder, speed, prepared)
    write_query_encoder(e, prepared)
    return e, query_paths(prepared, query_key(folder, precision_for(e.int8)))


@pytest.mark.parametrize("kind", ["onnx", "table", "tokenizer"])
def test_a_damaged_file_is_never_used_and_is_written_again(tiny_siglip, tmp_path, kind):
    e, (files, sidecar) = _written(tiny_siglip, tmp_path)
    path = files[kind]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # same size, one bit changed
    path.write_bytes(bytes(data))
    with pytest.raises(QueryEncoderUnavailable, match="checksum"):
        open_query_encoder(tiny_siglip, "m", tmp_path, True)
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(QueryEncoderUnavailable, match="damaged"):
        open_query_encoder(tiny_siglip, "m", tmp_path, True)
    write_query_encoder(e, tmp_path)  # the next full load writes it again
    enc = open_query_encoder(tiny_siglip, "m", tmp_path, True)
    assert float(enc.embed_texts(["a cat"])[0] @ e.embed_texts(["a cat"])[0]) > 0.99


def test_stale_files_are_not_found(tiny_siglip, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_siglip, folder)
    _e, (files, sidecar) = _written(folder, tmp_path / "prepared")
    open_query_encoder(folder, "m", tmp_path / "prepared", True)
    with pytest.raises(QueryEncoderUnavailable, match="not written yet"):  # another precision
        open_query_encoder(folder, "m", tmp_path / "prepared", False)
    tok = folder / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"<unk>"', '"<UNK>"'))  # the tokenizer changed
    with pytest.raises(QueryEncoderUnavailable, match="not written yet"):
        open_query_encoder(folder, "m", tmp_path / "prepared", True)
    side = json.loads(sidecar.read_text())
    side["format"] = 0  # made by an older format, under the same name
    sidecar.write_text(json.dumps(side))
    with pytest.raises(QueryEncoderUnavailable, match="stale"):
        read_sidecar(sidecar, files, side["key"])


def test_a_rewrite_removes_the_files_it_replaces(tiny_siglip, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_siglip, folder)
    prepared = tmp_path / "prepared"
    _e, (old_files, old_side) = _written(folder, prepared)
    tok = folder / "tokenizer_config.json"
    tok.write_text(tok.read_text() + "\n")  # same tokenizer, other bytes: another key
    _e, (files, side) = _written(folder, prepared)
    assert side != old_side and side.is_file() and not old_side.exists()
    assert not any(p.exists() for p in old_files.values())
    assert sorted(p.name for p in (prepared / "query").iterdir()) == sorted(
        [side.name, *(p.name for p in files.values())]
    )


def test_loading_the_model_writes_it_and_the_library_finds_it(tiny_siglip, tmp_path):
    from sorce_desktop.core.library import Library

    with Library(tmp_path / "data") as lib:
        assert lib.query_encoder(str(tiny_siglip)) is None
        e = lib.load_embedder(str(tiny_siglip))
        enc = lib.query_encoder(str(tiny_siglip))
    assert isinstance(enc, QueryEncoder) and enc.fingerprint == e.fingerprint
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    plain = DualEncoderEmbedder(tiny_siglip, speed=FAST, prepared_dir=tmp_path / "plain")  # keeps its tower
    assert float(enc.embed_texts(["a red kite"])[0] @ plain.embed_texts_with_model(["a red kite"])[0]) > 0.99
    # once it is written and checked, the loaded model gives its own text tower back (~85 MB in int8)
    assert e.model.text_model is None
    with pytest.raises(ModelError, match="load the model again"):
        e.embed_texts_with_model(["a kite"])
    # the loaded model embeds queries through it too (opened at the first: indexing asks none and does not
    # hold it): the same vector whichever front end asks
    assert e.query_encoder is None
    e.embed_texts(["a kite"])
    assert isinstance(e.query_encoder, QueryEncoder)
    assert np.array_equal(e.embed_texts(["a red kite"]), enc.embed_texts(["a red kite"]))
    with pytest.raises(Exception, match="text only"):
        enc.embed_images([])


# -- the words' meaning: all-MiniLM-L6-v2 -----------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    from sorce_desktop.core.text.ocr import TextEmbedder

    return TextEmbedder()


def test_the_sentence_encoder_gives_the_text_embedders_ids_and_vectors(minilm, tmp_path):
    from sorce_desktop.core.models.query_encoder import open_sentence_encoder
    from sorce_desktop.core.models.query_export import write_sentence_encoder

    write_sentence_encoder(minilm, tmp_path)
    enc = open_sentence_encoder(minilm.folder, tmp_path, minilm.model_id)
    assert enc.fingerprint == minilm.fingerprint
    for text in ODD:
        want = minilm.tokenizer([text], padding=True, truncation=True, max_length=128)["input_ids"][0]
        assert enc.token_ids(text) == list(want), text[:30]
    texts = [t for t in ODD if t.strip()] + ["STOP", "open late", "BAKERY"]
    assert np.sum(enc.embed(texts) * minilm.embed(texts), axis=1).min() > 0.9999
    files, sidecar = query_paths(tmp_path, enc.key)
    onnx = tmp_path / "query" / f"{enc.key}.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 3] ^= 1
    onnx.write_bytes(bytes(data))
    with pytest.raises(QueryEncoderUnavailable, match="checksum"):
        open_sentence_encoder(minilm.folder, tmp_path, minilm.model_id)


def test_words_by_meaning_need_neither_torch_nor_transformers(minilm, tmp_path):
    """A library whose lines were embedded by meaning: the first search loads the text model (and writes
    its sentence query encoder), later cold ones import neither torch nor transformers, same answer."""
    from test_startup import _search_in_fresh_process

    from sorce_desktop.core.paths import AppPaths
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.store.catalog import IndexedPhoto, Store, TextPhoto
    from sorce_desktop.core.text.ocr import TextLine

    data = tmp_path / "data"
    paths = AppPaths.resolve(data)
    paths.ensure()
    store = Store(paths.index)
    try:
        items = []
        for name, words in (("a.jpg", "OPEN LATE"), ("b.jpg", "CLOSED"), ("c.jpg", "BAKERY")):
            photo = IndexedPhoto(str(tmp_path / name), str(tmp_path), 10, 1, f"h-{name}", 640, 480)
            line = TextLine(words, 0.9, Box(0, 0, 90, 20), [(0, 0), (90, 0), (90, 20), (0, 20)])
            items.append(TextPhoto(None, photo.hash, [line], minilm.embed([words]), photo))
        store.commit_text(items, "test", minilm.fingerprint)
    finally:
        store.close()
    first, imported = _search_in_fresh_process(data, "bread shop")
    assert "torch" in imported  # no sentence query encoder yet: the model loads, and writes it
    again, imported = _search_in_fresh_process(data, "bread shop")
    assert imported == set()
    assert [h["path"] for h in again] == [h["path"] for h in first] and first


def test_indexing_with_text_writes_the_sentence_encoder_for_the_first_search(tmp_path):
    """Indexing loads the words' model to embed the lines it reads: it writes the sentence query encoder then,
    so the first search after indexing matches words by meaning without loading that model (~10 s)."""
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.loader import load_sentence_embedder
    from sorce_desktop.core.models.query_encoder import SentenceQueryEncoder

    with Library(tmp_path / "data") as lib:
        assert lib.ocr_enabled()
        source = lib.text_source()
        models = lib.paths.models
        lines = source.embedder.embed(["OPEN LATE"])  # what indexing does with the lines it reads
    from sorce_desktop.core.models.query_encoder import sentence_key, sentence_paths
    from sorce_desktop.core.text.ocr import minilm_folder

    files, sidecar = sentence_paths(models / "prepared", sentence_key(minilm_folder()))
    assert sidecar.is_file() and all(p.is_file() for p in files.values())  # written while indexing
    assert isinstance(load_sentence_embedder(models), SentenceQueryEncoder)
    assert float(load_sentence_embedder(models).embed(["OPEN LATE"])[0] @ lines[0]) > 0.999
