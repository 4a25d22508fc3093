"""Writing a model's query encoder (core/models/query_encoder.py) from its float weights, once, when the
model is loaded in full on a CPU.

The text tower is rebuilt from the model folder's float weights (the loaded model may hold int8 copies
only), exported with ``torch.onnx.export`` (opset 17, batch 1, the model's fixed length), quantised by
onnxruntime (7-bit signed weights, per output channel) where the model runs int8, and checked before
it is trusted: the tokenizer's ids against transformers' on odd strings, the vectors against the loaded
model's own (cosine). Nothing is written when a check fails; the loaded model keeps embedding queries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sorce_desktop.core.models.fingerprint import crc32_of
from sorce_desktop.core.models.query_encoder import (
    QUERY_FORMAT,
    SUPPORTED_TYPES,
    QueryEncoder,
    QueryEncoderUnavailable,
    precision_for,
    query_key,
    query_paths,
)

log = logging.getLogger(__name__)

#: strings whose ids must come out the same as transformers' (and a few queries whose vectors must agree)
PROBES = (
    "a red kite in the sky",
    "",
    "   ",
    "Ünïcödé café, naïve résumé — 東京の猫 🐈‍⬛ ✓",
    "UPPER lower MiXeD 123 4.5e6",
    "punctuation!!! ?? ... ,,, ;; -- (brackets) [x] {y} <z> 'quotes' \"double\"",
    "tab\tnew\nline  two  spaces",
    "word " * 200,
    "a" * 500,
    "<pad> </s> <s> <unk> <|endoftext|> <|startoftext|> <bos> <eos>",
)
#: the vectors of the probes against the loaded model's: below this, the export is refused
MIN_COSINE = 0.99
#: ONNX opset of the exports: 20 has GELU as one operator (onnxruntime >= 1.18 runs it as one kernel; at 17
#: the tanh approximation is eight elementwise operators: 44.3 -> 40.1 ms a query on AVX2, history/
#: query-latency-2026-12-07.md)
OPSET = 20
#: onnxruntime dynamic int8: signed weights with 7 bits of range (``reduce_range``) and a scale per output
#: channel. Activations are unsigned 8-bit, so on a CPU without VNNI the u8 x s8 pair sums of ``vpmaddubsw``
#: (two products added into int16) cannot saturate (255 x 64 x 2 < 32767); full-range signed weights
#: saturate there (cosine 0.92 on AVX2), and unsigned weights take a slower u8 x u8 kernel (51.9 against
#: 40.1 ms a query on AVX2, cosine to float32 0.9997 against 0.9993 on random weights).
INT8_WEIGHTS = {"per_channel": True, "reduce_range": True}


class _Tower(torch.nn.Module):
    """The text tower from token embeddings to the projected vector, written out layer by layer so the
    last layer works on the pooled position alone (attention of that one query; its MLP on one row)."""

    def __init__(self, text_model: torch.nn.Module, projection: torch.nn.Module, length: int, causal: bool):
        super().__init__()
        self.layers = text_model.encoder.layers
        self.final_layer_norm = text_model.final_layer_norm
        self.projection = projection
        self.positions = torch.nn.Parameter(
            text_model.embeddings.position_embedding.weight.detach()[:length].clone(), requires_grad=False
        )
        mask = torch.zeros(length, length)
        if causal:
            mask = torch.full((length, length), torch.finfo(torch.float32).min).triu(1)
        self.causal = causal
        self.register_buffer("mask", mask, persistent=False)

    def _attention(self, layer, x: torch.Tensor, qx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        a = layer.self_attn
        heads, d = a.num_heads, a.head_dim
        q = a.q_proj(qx).view(1, -1, heads, d).transpose(1, 2)
        k = a.k_proj(x).view(1, -1, heads, d).transpose(1, 2)
        v = a.v_proj(x).view(1, -1, heads, d).transpose(1, 2)
        w = q @ k.transpose(-1, -2) * a.scale
        if mask is not None:
            w = w + mask
        o = (torch.softmax(w, dim=-1) @ v).transpose(1, 2).reshape(1, -1, heads * d)
        return a.out_proj(o)

    def forward(self, embeds: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        h = embeds + self.positions
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.layer_norm1(h)
            if i < last:
                h = h + self._attention(layer, x, x, self.mask if self.causal else None)
            else:  # only the pooled position goes on
                mask = self.mask.index_select(0, pool) if self.causal else None
                h = h.index_select(1, pool) + self._attention(layer, x, x.index_select(1, pool), mask)
            h = h + layer.mlp(layer.layer_norm2(h))
        return self.projection(self.final_layer_norm(h[:, 0]))


def _text_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str, tuple[int, int]]:
    """The float weights of the text tower (and the projection, scale and bias) from the folder's safetensors,
    without the token table; and the table's name and shape (it is streamed to the .npy apart)."""
    from safetensors import safe_open

    wanted = ("text_model.", "text_projection.", "logit_scale", "logit_bias")
    out: dict[str, torch.Tensor] = {}
    table, shape = "", (0, 0)
    for w in sorted(folder.glob("*.safetensors")):
        with safe_open(str(w), framework="pt") as f:
            for name in f.keys():
                if name.endswith("embeddings.token_embedding.weight") and name.startswith("text_model."):
                    table, shape = name, tuple(f.get_slice(name).get_shape())
                elif name.startswith(wanted):
                    out[name] = f.get_tensor(name).to(torch.float32)
    if not table:
        raise ValueError("the model's weights have no text_model token embedding table")
    return out, table, shape


def _write_table(folder: Path, name: str, shape: tuple[int, int], path: Path) -> None:
    """The token table in float16 as a .npy, converted in chunks (never the whole float32 table in memory)."""
    from safetensors import safe_open

    for w in sorted(folder.glob("*.safetensors")):
        with safe_open(str(w), framework="pt") as f:
            if name not in f.keys():
                continue
            sl = f.get_slice(name)
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
            step = 8192
            for i in range(0, shape[0], step):
                out[i : i + step] = sl[i : i + step].to(torch.float16).numpy()
            out.flush()
            del out
            return
    raise ValueError(f"the token table {name} is in none of the weight files")


def _tokenizer_json(tokenizer, pad_to_max: bool, length: int) -> str:
    """The backend tokenizer as transformers configures it for the loaded model's own call (truncation to
    the model's length, padding to it where the model pads to it)."""
    tokenizer(["x"], padding="max_length" if pad_to_max else True, truncation=True, max_length=length)
    backend = tokenizer.backend_tokenizer
    return backend.to_str()


def write_query_encoder(embedder, cache_dir: Path) -> Path:
    """Write the query encoder of a loaded :class:`DualEncoderEmbedder` into ``cache_dir`` (the prepared
    models' folder) unless a good one is there; returns its sidecar. Raises ValueError (or what the export
    raised) when the model cannot have one."""
    from transformers import AutoModel

    folder = Path(embedder.folder)
    mtype = embedder.model_type
    if mtype not in SUPPORTED_TYPES:
        raise ValueError(f"no query encoder for {mtype!r} models (only {', '.join(SUPPORTED_TYPES)})")
    if not hasattr(embedder.tokenizer, "backend_tokenizer"):
        raise ValueError("its tokenizer is not a `tokenizers` one")
    precision = precision_for(embedder.int8)
    key = query_key(folder, precision)
    files, sidecar = query_paths(cache_dir, key)
    try:
        QueryEncoder(folder, embedder.model_id, cache_dir, precision)
        return sidecar
    except QueryEncoderUnavailable as exc:
        log.info("writing the query encoder of %s (%s: %s)", embedder.model_id, sidecar, exc)
    t0 = time.perf_counter()
    config = embedder.model.config
    length = int(embedder.text_max_length)
    weights, table_name, table_shape = _text_weights(folder)
    with torch.device("meta"):
        model = AutoModel.from_config(config, dtype=torch.float32)
    missing = [k for k in weights if k not in model.state_dict()]
    if missing:
        raise ValueError(f"weights the model does not have: {missing[:3]}")
    model.load_state_dict(weights, strict=False, assign=True)
    text = model.text_model
    projection = text.head if mtype == "siglip" else model.text_projection
    tower = _Tower(text, projection, length, causal=mtype == "clip").eval()
    left = [n for n, t in (*tower.named_parameters(), *tower.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"weights missing from the model folder: {left[:3]}")
    eos = int(getattr(text, "eos_token_id", None) or getattr(config.text_config, "eos_token_id", 0) or 0)
    pool = "last" if mtype == "siglip" else ("argmax" if eos == 2 else "eos")
    tok_json = _tokenizer_json(embedder.tokenizer, embedder.pad_to_max, length)

    files["onnx"].parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".writing-", dir=files["onnx"].parent))
    try:
        plain = work / "plain.onnx"
        dim = int(config.text_config.hidden_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants
            torch.onnx.export(
                tower, (torch.zeros(1, length, dim), torch.zeros(1, dtype=torch.int64)), str(plain),
                input_names=["embeds", "pool"], output_names=["vector"], opset_version=OPSET, dynamo=False,
            )  # fmt: skip
        made, made_side = query_paths(work, key)  # checked from there before they are moved in
        made["onnx"].parent.mkdir()
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quiet = NotFrom(
                "onnxruntime"
            )  # its quantiser logs advice meant for its developers on the root logger
            logging.getLogger().addFilter(quiet)
            try:
                quantize_dynamic(plain, made["onnx"], **INT8_WEIGHTS, weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().removeFilter(quiet)
        else:
            os.replace(plain, made["onnx"])
        _write_table(folder, table_name, table_shape, made["table"])
        made["tokenizer"].write_text(tok_json, encoding="utf-8")
        cal = embedder.match_calibration()
        side = {
            **sidecar_head(QUERY_FORMAT, key, embedder, precision, folder),
            "length": length,
            "pool": pool,
            "eos_token_id": eos,
            "pad_token_id": int(embedder.tokenizer.pad_token_id or 0),
            "template": embedder.template,
            "calibration": list(cal) if cal else None,
            "files": files_record(made),
        }
        made_side.write_text(json.dumps(side), encoding="utf-8")
        # checked from the files themselves before they are trusted: ids, then vectors
        enc = QueryEncoder(folder, embedder.model_id, work, precision)
        _check(enc, embedder)
        side["cosine_to_loaded_model_min"] = round(float(_cosines(enc, embedder).min()), 6)
        del enc  # its table is mapped: closed before the files move
        for k, p in made.items():
            os.replace(p, files[k])
        made_side.write_text(json.dumps(side), encoding="utf-8")
        os.replace(made_side, sidecar)  # last: files without their sidecar are never used
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _remove_older(sidecar, side["source"], precision)
    log.info(
        "query encoder of %s written in %.1fs (%s)", embedder.model_id, time.perf_counter() - t0, sidecar
    )
    return sidecar


class NotFrom(logging.Filter):
    """Drops log records made in ``package`` (onnxruntime's quantiser logs advice for its developers)."""

    def __init__(self, package: str):
        super().__init__()
        self.part = f"{os.sep}{package}{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        return self.part not in record.pathname


def made_with() -> dict[str, str]:
    """The torch and onnxruntime an export was made with (kept in its sidecar, for a bug report)."""
    return {"torch": torch.__version__, "onnxruntime": package_version("onnxruntime")}


def files_record(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Each written file's size and CRC-32, as a sidecar records them (``query_encoder.read_sidecar`` checks
    the sizes, the encoders the checksums)."""
    return {k: {"size": p.stat().st_size, "crc32": crc32_of(p)} for k, p in files.items()}


def sidecar_head(fmt: int, key: str, embedder, precision: str, folder: Path) -> dict:
    """What a picture model's export records first in its sidecar: the format and key it was written under,
    the model it was made from (id, fingerprint, folder), its precision and vector size, what made it."""
    return {
        "format": fmt,
        "key": key,
        "model_id": embedder.model_id,
        "fingerprint": embedder.fingerprint,
        "precision": precision,
        "source": str(Path(folder).resolve()),
        "dim": int(embedder.dim),
        "made_with": made_with(),
    }


def package_version(package: str) -> str:
    """The installed version of ``package``, or "" where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def _cosines(enc: QueryEncoder, embedder) -> np.ndarray:
    texts = [p for p in PROBES if p.strip()][:6]
    return np.sum(enc.embed_texts(texts) * embedder.embed_texts_with_model(texts), axis=1)


def _check(enc: QueryEncoder, embedder) -> None:
    tok = embedder.tokenizer
    for p in PROBES:
        prompt = embedder.template.format(p.strip())
        want = tok([prompt], padding="max_length" if embedder.pad_to_max else True, truncation=True,
                   max_length=embedder.text_max_length)["input_ids"][0]  # fmt: skip
        got = enc.token_ids(prompt)
        if list(want) != got:
            raise ValueError(f"its tokenizer gives other ids than transformers' for {p[:40]!r}")
    cos = _cosines(enc, embedder)
    if cos.min() < MIN_COSINE:
        raise ValueError(f"its vectors differ from the loaded model's (cosine {cos.min():.4f})")


def _remove_older(sidecar: Path, source: str, precision: str) -> None:
    """Query encoders made before from the same folder at the same precision (its weights or tokenizer
    replaced): they would never be read again."""
    for other in sidecar.parent.glob("*.json"):
        if other == sidecar or other.name.count(".") != 1:
            continue
        try:
            side = json.loads(other.read_text(encoding="utf-8"))
            if side.get("source") != source or side.get("precision") != precision:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        files, _ = query_paths(sidecar.parent.parent, other.stem)
        other.unlink(missing_ok=True)
        for p in files.values():
            p.unlink(missing_ok=True)


def write_sentence_encoder(text_embedder, cache_dir: Path) -> Path:
    """Write the sentence query encoder of a loaded ``TextEmbedder`` (core/text/ocr.py) into ``cache_dir``
    unless a good one is there; returns its sidecar. Checked like the picture model's: the tokenizer's ids
    against transformers' on odd strings, the vectors against the loaded model's."""
    from sorce_desktop.core.models.query_encoder import (
        SentenceQueryEncoder,
        sentence_key,
        sentence_paths,
    )

    folder = Path(text_embedder.folder)
    model_id = text_embedder.model_id
    key = sentence_key(folder)
    files, sidecar = sentence_paths(cache_dir, key)
    try:
        SentenceQueryEncoder(folder, cache_dir, model_id)
        return sidecar
    except QueryEncoderUnavailable as exc:
        log.info("writing the sentence query encoder (%s: %s)", sidecar, exc)
    tok = text_embedder.tokenizer
    tok(["x"], padding=True, truncation=True, max_length=128)  # the settings TextEmbedder.embed calls it with
    tok_json = tok.backend_tokenizer.to_str()

    class States(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, token_type_ids):
            return self.model(input_ids=input_ids, token_type_ids=token_type_ids).last_hidden_state

    files["onnx"].parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".writing-", dir=files["onnx"].parent))
    try:
        made, made_side = sentence_paths(work, key)
        made["onnx"].parent.mkdir()
        ids = torch.ones(1, 8, dtype=torch.int64)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants
            torch.onnx.export(
                States(text_embedder.model).eval(), (ids, torch.zeros_like(ids)), str(made["onnx"]),
                input_names=["input_ids", "token_type_ids"], output_names=["states"], opset_version=OPSET,
                dynamic_axes={"input_ids": {1: "n"}, "token_type_ids": {1: "n"}, "states": {1: "n"}}, dynamo=False,
            )  # fmt: skip
        made["tokenizer"].write_text(tok_json, encoding="utf-8")
        side = {
            "format": QUERY_FORMAT,
            "key": key,
            "model_id": model_id,
            "source": str(folder.resolve()),
            "dim": int(text_embedder.dim),
            "made_with": made_with(),
            "files": files_record(made),
        }
        made_side.write_text(json.dumps(side), encoding="utf-8")
        enc = SentenceQueryEncoder(folder, work, model_id)
        for p in PROBES:
            want = tok([p], padding=True, truncation=True, max_length=128)["input_ids"][0]
            if list(want) != enc.token_ids(p):
                raise ValueError(f"its tokenizer gives other ids than transformers' for {p[:40]!r}")
        texts = [p for p in PROBES if p.strip()]
        cos = np.sum(enc.embed(texts) * text_embedder.embed(texts), axis=1)
        if cos.min() < 0.9999:
            raise ValueError(f"its vectors differ from the loaded model's (cosine {cos.min():.5f})")
        del enc
        for k, p in made.items():
            os.replace(p, files[k])
        os.replace(made_side, sidecar)  # last: files without their sidecar are never used
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sidecar
