"""Loading a dual encoder lean on a CPU: each weight held once, in the form the model runs it.

Loaded as it is stored, a SigLIP 2 base model held ~3.1 GB resident in "fast": the float weights stayed
beside their int8 copies, 1.6 GB of it was the safetensors file still mapped, and the 256k-token
embedding table (~790 MB in float32) is only ever looked up. So:

- "fast" quantises once: what quantisation produces (the int8 weights with their per-channel scales,
  the token table in float16, the other tensors) is written to a prepared file in the per-user model
  cache, keyed by the model's fingerprint; later starts build the model from its config with no
  weights (on the meta device) and fill it from that file, never reading the float weights again;
- the tensors are read into memory of their own, except the token table: it is mapped from the
  prepared file (copy-on-write), so only the rows of the tokens actually looked up become resident;
- "thorough" (float32) keeps its token table in float16 and copies its tensors out of the model
  file, so that mapping is released.

Measured on a real-size SigLIP 2 base with random weights (docs/benchmarks.md, "Memory"): 3.1 GB
resident once loaded "fast" before, 0.7 GB after. A prepared file that is damaged (truncated, altered,
unreadable) or stale (another model, format or torch) is found by its sidecar (made from what, size,
CRC-32, checked as the file is read) and made again from the model.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import warnings
import zlib
from pathlib import Path

import torch

from sorce_desktop.core.memory import give_back_freed_memory
from sorce_desktop.core.models.fingerprint import crc32_of

log = logging.getLogger(__name__)

#: bumped whenever what a prepared file holds, or how, changes: older files are then stale
PREPARED_FORMAT = 1
_INT8 = "int8/"
_PLAIN = "tensor/"


class PreparedCacheError(Exception):
    """A prepared file that cannot be used (missing, damaged or stale): it is rebuilt."""


class Float16Lookup(torch.nn.Embedding):
    """A token embedding table kept in float16: each looked-up row is widened to float32, so the
    layers after it run exactly as before on values rounded to 11 significant bits."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Embedding's own name
        return super().forward(input).to(torch.float32)


def token_tables(model: torch.nn.Module, vocab_size: int) -> list[str]:
    """Names of the embedding modules that are a token table (one row per vocabulary entry)."""
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Embedding) and mod.num_embeddings == vocab_size
    ]


def halve_token_tables(model: torch.nn.Module, vocab_size: int) -> None:
    """Keep ``model``'s token tables in float16 (in place)."""
    for name in token_tables(model, vocab_size):
        mod = model.get_submodule(name)
        mod.weight = torch.nn.Parameter(mod.weight.detach().to(torch.float16), requires_grad=False)
        mod.__class__ = Float16Lookup


def own_memory(model: torch.nn.Module) -> None:
    """Copy every tensor of ``model`` that still lives in a file mapping into memory of its own, one at a
    time, so the mapping (safetensors keeps the file mapped while any tensor views it) is released."""
    with torch.no_grad():
        for mod in model.modules():
            for store in (mod._parameters, mod._buffers):
                for key, t in list(store.items()):
                    if t is None:
                        continue
                    copy = t.detach().clone()
                    store[key] = torch.nn.Parameter(copy, requires_grad=False) if key in mod._parameters else copy
    give_back_freed_memory()


def prepared_key(fingerprint: str) -> str:
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{fingerprint}|int8|{PREPARED_FORMAT}|{torch.__version__}".encode())
    return h.hexdigest()


def prepared_paths(folder: Path, fingerprint: str) -> tuple[Path, Path]:
    """(data file, sidecar) of the prepared "fast" model for ``fingerprint`` in ``folder``."""
    base = Path(folder) / prepared_key(fingerprint)
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _set_submodule(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def write_prepared(
    model: torch.nn.Module, vocab_size: int, fingerprint: str, path: Path, sidecar: Path, source: str = ""
) -> None:
    """Write what quantisation produced in ``model`` (already int8 where it runs int8) to ``path``.
    ``source``: the model folder it was made from; older prepared files of that folder are removed."""
    import torch.ao.nn.quantized.dynamic as nnqd
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    qnames: list[str] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nnqd.Linear):
            w = mod.weight()
            if w.qscheme() != torch.per_channel_affine or w.q_per_channel_axis() != 0:
                raise ValueError(f"{name}: unexpected quantisation scheme {w.qscheme()}")
            qnames.append(name)
            tensors[f"{_INT8}{name}/weight"] = w.int_repr().contiguous()
            tensors[f"{_INT8}{name}/scales"] = w.q_per_channel_scales().contiguous()
            tensors[f"{_INT8}{name}/zero_points"] = w.q_per_channel_zero_points().contiguous()
            if mod.bias() is not None:
                tensors[f"{_INT8}{name}/bias"] = mod.bias().detach().contiguous()
            continue
        prefix = f"{name}." if name else ""
        for store in (mod._parameters, mod._buffers):
            for key, t in store.items():
                if t is not None:
                    t = t.detach()
                    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
                        t = t.contiguous().clone()  # a view: safetensors stores whole, unshared tensors
                    tensors[_PLAIN + prefix + key] = t
    halves = token_tables(model, vocab_size)
    for name in halves:
        tensors[f"{_PLAIN}{name}.weight"] = tensors[f"{_PLAIN}{name}.weight"].to(torch.float16)
    meta = {
        "format": str(PREPARED_FORMAT),
        "fingerprint": fingerprint,
        "torch": torch.__version__,
        "int8": json.dumps(qnames),
        "float16_lookups": json.dumps(halves),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        side = {**meta, "size": tmp.stat().st_size, "crc32": crc32_of(tmp), "source": source}
        os.replace(tmp, path)
        tmp_side = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
        tmp_side.write_text(json.dumps(side), encoding="utf-8")
        os.replace(tmp_side, sidecar)  # last: a data file without its sidecar is never trusted
    finally:
        tmp.unlink(missing_ok=True)
    if source:
        _remove_older(path, source)


def _remove_older(path: Path, source: str) -> None:
    """Prepared files made before from ``source`` (its weights replaced, another torch): each is
    ~0.6 GB and would never be read again. A process still mapping one keeps it until it exits."""
    for other in path.parent.glob("*.json"):
        if other.stem == path.stem:
            continue
        try:
            if json.loads(other.read_text(encoding="utf-8")).get("source") != source:
                continue
            other.with_suffix(".safetensors").unlink(missing_ok=True)
            other.unlink(missing_ok=True)
        except (OSError, ValueError, AttributeError):
            continue


def check_prepared(path: Path, sidecar: Path, fingerprint: str) -> dict:
    """The sidecar of a prepared file made for ``fingerprint`` by this format and torch, and of the size it
    says; :class:`PreparedCacheError` with the reason otherwise (its checksum is checked as it is read)."""
    try:
        side = json.loads(sidecar.read_text(encoding="utf-8"))
        size = path.stat().st_size
    except FileNotFoundError:
        raise PreparedCacheError("not prepared yet") from None
    except (OSError, ValueError) as exc:
        raise PreparedCacheError(f"unreadable ({exc})") from None
    if not isinstance(side, dict):
        raise PreparedCacheError("its sidecar is not a JSON object")
    made = (side.get("format"), side.get("fingerprint"), side.get("torch"))
    if made != (str(PREPARED_FORMAT), fingerprint, torch.__version__):
        raise PreparedCacheError(f"stale (made by format {made[0]}, torch {made[2]} from {made[1]})")
    if side.get("size") != size:
        raise PreparedCacheError(f"damaged ({size} bytes, {side.get('size')} expected)")
    return side


_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_tensors(path: Path, crc32: int, lookups: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, the file's CRC-32 checked on the way (one pass). Each is read
    into memory of its own, except the ``lookups`` (tables that are only looked up): those are mapped
    from the file once it checked out, so only the rows looked up ever become resident."""
    import numpy as np

    tensors: dict[str, torch.Tensor] = {}
    mapped: dict[str, tuple[int, torch.dtype, list[int]]] = {}
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise PreparedCacheError("damaged (no header)")
        n = int.from_bytes(head, "little")
        raw = f.read(n)
        crc = zlib.crc32(raw, zlib.crc32(head))
        try:
            header = json.loads(raw)
            entries = sorted(
                ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise PreparedCacheError(f"damaged header ({exc})") from None
        pos = 0
        for name, info in entries:
            try:
                begin, end = (int(x) for x in info["data_offsets"])
                t = torch.empty([int(d) for d in info["shape"]], dtype=_DTYPES[info["dtype"]])
            except (KeyError, TypeError, ValueError) as exc:
                raise PreparedCacheError(f"damaged header ({name}: {exc})") from None
            if begin != pos or end - begin != t.numel() * t.element_size():
                raise PreparedCacheError(f"damaged header ({name} at {begin}..{end})")
            pos = end
            if name in lookups:
                mapped[name] = (8 + n + begin, t.dtype, list(t.shape))
                left = end - begin
                while left:  # checksummed, then dropped: the file is mapped below
                    chunk = f.read(min(left, 1 << 22))
                    if not chunk:
                        raise PreparedCacheError("damaged (shorter than its header says)")
                    crc = zlib.crc32(chunk, crc)
                    left -= len(chunk)
                continue
            buf = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
            if t.numel() and f.readinto(buf) != len(buf):
                raise PreparedCacheError("damaged (shorter than its header says)")
            crc = zlib.crc32(buf, crc)
            tensors[name] = t
        rest = f.read()
        crc = zlib.crc32(rest, crc)
    if crc != crc32:
        raise PreparedCacheError("damaged (checksum differs)")
    for name, (offset, dtype, shape) in mapped.items():
        # copy-on-write: writable for torch, never written back; pages come in as rows are looked up
        raw = np.memmap(path, dtype=np.uint8, mode="c", offset=offset, shape=(math.prod(shape) * dtype.itemsize,))
        tensors[name] = torch.from_numpy(raw).view(dtype).view(shape)
    return tensors


def load_prepared(path: Path, sidecar: Path, fingerprint: str, config) -> torch.nn.Module:
    """The model of ``config`` filled from its prepared file (read into memory, never mapped)."""
    import torch.ao.nn.quantized.dynamic as nnqd
    from transformers import AutoModel

    side = check_prepared(path, sidecar, fingerprint)
    try:
        qnames = json.loads(side["int8"])
        halves = json.loads(side["float16_lookups"])
        crc32 = int(side["crc32"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PreparedCacheError(f"damaged sidecar ({exc})") from None
    tensors = read_tensors(path, crc32, frozenset(f"{_PLAIN}{name}.weight" for name in halves))
    with torch.device("meta"):
        model = AutoModel.from_config(config, dtype=torch.float32)
    model.eval()
    try:
        for name in qnames:
            w = tensors.pop(f"{_INT8}{name}/weight")
            with warnings.catch_warnings():  # torch marks quantized tensors deprecated (core/models/quant.py)
                warnings.simplefilter("ignore")
                qw = torch._make_per_channel_quantized_tensor(
                    w, tensors.pop(f"{_INT8}{name}/scales"), tensors.pop(f"{_INT8}{name}/zero_points"), 0
                )
            bias = tensors.pop(f"{_INT8}{name}/bias", None)
            # made at 1x1 and then given its weight: packing is most of the load, so it is done once
            q = nnqd.Linear(1, 1, bias_=bias is not None, dtype=torch.qint8)
            q.set_weight_bias(qw, bias)
            q.in_features, q.out_features = int(w.shape[1]), int(w.shape[0])
            _set_submodule(model, name, q)
            del w, qw
        for key in list(tensors):
            if not key.startswith(_PLAIN):
                raise PreparedCacheError(f"stale (unexpected tensor {key})")
            owner, _, attr = key[len(_PLAIN) :].rpartition(".")
            mod = model.get_submodule(owner)
            t = tensors.pop(key)
            if attr in mod._parameters:
                mod._parameters[attr] = torch.nn.Parameter(t, requires_grad=False)
            elif attr in mod._buffers:
                mod._buffers[attr] = t
            else:
                raise PreparedCacheError(f"stale (the model has no tensor {key[len(_PLAIN):]})")
    except PreparedCacheError:
        raise
    except Exception as exc:  # a file that passed its checksum but does not fit the model
        raise PreparedCacheError(f"does not fit the model ({type(exc).__name__}: {exc})") from None
    for name in halves:
        model.get_submodule(name).__class__ = Float16Lookup
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise PreparedCacheError(f"incomplete ({len(left)} tensors missing, e.g. {left[0]})")
    give_back_freed_memory()
    return model


def prepared_int8_model(folder: Path, config, fingerprint: str, cache_dir: Path, quantize) -> torch.nn.Module:
    """The "fast" model of ``folder``: from its prepared file in ``cache_dir``, made first (from the float
    weights, with ``quantize`` on each tower) when missing, damaged or stale."""
    from transformers import AutoModel

    path, sidecar = prepared_paths(cache_dir, fingerprint)
    try:
        return load_prepared(path, sidecar, fingerprint, config)
    except PreparedCacheError as exc:
        log.info("preparing %s for int8 (%s: %s)", folder, path, exc)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    for tower in ("vision_model", "text_model"):
        sub = getattr(model, tower, None)
        if isinstance(sub, torch.nn.Module):
            setattr(model, tower, quantize(sub))
    vocab = int(getattr(config.text_config, "vocab_size", 0) or 0)
    from safetensors import SafetensorError

    try:
        write_prepared(model, vocab, fingerprint, path, sidecar, source=str(Path(folder).resolve()))
    except (OSError, SafetensorError) as exc:  # safetensors reports a failed write as its own error
        # A cache that cannot be written (disk full, read-only): this start uses what it just made.
        # A full disk is said once, by the store, when it next writes; anything else is worth a warning.
        full = getattr(exc, "errno", None) == errno.ENOSPC or "os error 28" in str(exc)
        (log.info if full else log.warning)(
            "the prepared model cannot be saved in %s (%s); it is made again at the next start", path, exc
        )
        halve_token_tables(model, vocab)
        own_memory(model)
        return model
    del model
    return load_prepared(path, sidecar, fingerprint, config)
