"""The query's text tower without torch or transformers: an ONNX graph run by onnxruntime, the token table
looked up from a float16 memory map, the tokenizer through the ``tokenizers`` library.

A text query needs only the text tower, yet loading the model for it meant importing torch and
transformers' modelling stack and packing the int8 weights: ~14 s for a cold ``search`` on a 2-core
AVX2 laptop-class CPU, and a warm query's text tower (PyTorch dynamic int8) cost twice the search of 100k
photos. When the model is loaded in full (to index, or a first search), the text tower is also written
out (core/models/query_export.py) as three files in ``<models>/prepared/query/``, keyed by the model's
fingerprint, its tokenizer files and the precision:

- ``<key>.onnx``: the tower from the token embeddings to the projected text vector, at the model's fixed
  sequence length, batch 1, ONNX opset 20; in "fast" its linear layers are onnxruntime dynamic int8 with
  7-bit signed weights and a scale per output channel (full-range signed weights saturate without VNNI:
  cosine 0.92 on AVX2, docs/history/picture-kernels-2026-12-07.md; query_export.INT8_WEIGHTS); the last
  layer works on the pooled position alone;
- ``<key>.table.npy``: the token embedding table in float16 (as the loaded model keeps it), mapped, so
  only the rows of the query's tokens become resident;
- ``<key>.tokenizer.json``: the tokenizer exactly as transformers configured it for this model (special
  tokens, lowercasing, truncation and padding to the model's length), so the ids are the same;
- ``<key>.json``, written last: what made them (fingerprint, format, precision), each file's size and
  CRC-32, the pooling rule, the prompt template and the model's match calibration.

A file that is missing, damaged (size or checksum) or stale is never used: the query is then embedded
by the loaded model, which writes the files again. Measured: docs/benchmarks.md, "Query latency".
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sorce_desktop.core.models.base import Embedder, ModelError, RegionEmbedding, normalize
from sorce_desktop.core.models.fingerprint import crc32_of, folder_fingerprint, weights_source
from sorce_desktop.core.photos.images import DecodedImage
from sorce_desktop.core.regions import RegionLayout

log = logging.getLogger(__name__)

#: bumped whenever what the files hold, or how, changes: older files are then stale
QUERY_FORMAT = 2  # 2: opset 20 (one GELU operator), 7-bit signed int8 weights
#: the model families whose text tower is exported (their pooling: SigLIP the last position, CLIP the
#: end-of-text token)
SUPPORTED_TYPES = ("siglip", "clip")
_FILES = ("onnx", "table", "tokenizer")
_SUFFIX = {"onnx": ".onnx", "table": ".table.npy", "tokenizer": ".tokenizer.json"}


class QueryEncoderUnavailable(Exception):
    """No usable query encoder for a model (not written yet, damaged or stale), with the reason."""


def precision_for(int8: bool) -> str:
    """The query encoder's precision for an indexing speed: int8 where the loaded model runs int8."""
    return "int8" if int8 else "float32"


def _tokenizer_digest(folder: Path) -> str:
    """A hash of the tokenizer files of a model folder (they are not in the weights' fingerprint)."""
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(Path(folder).iterdir()):
        name = f.name
        if f.is_file() and (
            name.startswith(("tokenizer", "special_tokens_map", "vocab", "merges", "added_tokens"))
            or name.endswith(".model")
        ):
            h.update(name.encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def query_key(folder: Path, precision: str) -> str:
    h = hashlib.blake2b(digest_size=10)
    made_from = f"{weights_source(folder)}|{_tokenizer_digest(folder)}|{precision}|query|{QUERY_FORMAT}"
    h.update(made_from.encode())
    return h.hexdigest()


def query_paths(cache_dir: Path, key: str) -> tuple[dict[str, Path], Path]:
    """(the data files by kind, the sidecar) of the query encoder ``key`` in ``cache_dir``."""
    base = Path(cache_dir) / "query"
    return {k: base / f"{key}{_SUFFIX[k]}" for k in _FILES}, base / f"{key}.json"


def read_sidecar(sidecar: Path, files: dict[str, Path], key: str, fmt: int = QUERY_FORMAT) -> dict:
    """The sidecar of the files of ``key`` (written in format ``fmt``), checked against their sizes;
    :class:`QueryEncoderUnavailable` with the reason otherwise (the checksums are checked as the files are
    read)."""
    try:
        side = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QueryEncoderUnavailable("not written yet") from None
    except (OSError, ValueError) as exc:
        raise QueryEncoderUnavailable(f"its sidecar is unreadable ({exc})") from None
    if not isinstance(side, dict) or side.get("format") != fmt or side.get("key") != key:
        raise QueryEncoderUnavailable("stale (made by another format or for other files)")
    for kind, path in files.items():
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise QueryEncoderUnavailable(f"{path.name} is missing ({exc.strerror or exc})") from None
        if size != side.get("files", {}).get(kind, {}).get("size"):
            raise QueryEncoderUnavailable(
                f"{path.name} is damaged ({size} bytes, not the size it was written with)"
            )
    return side


def cpu_session(path: Path, threads: int | None = None, arena: bool = True):
    """An onnxruntime CPU session of the graph at ``path``, as the app's encoders run: one operator at a time,
    ``threads`` for each (onnxruntime's default where None), and threads that do not spin after a run: they
    would take the cores from what follows it (a query's vector search: 12.1 -> 7.0 ms at 100k photos on
    AVX2; the text reader after a photo's pictures, as core/text/ocr.py's sessions). ``arena`` False: a run's
    buffers go back to the heap instead of staying reserved."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_cpu_mem_arena = arena
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _checked_bytes(path: Path, crc: int) -> bytes:
    data = path.read_bytes()
    if zlib.crc32(data) != crc:
        raise QueryEncoderUnavailable(f"{path.name} is damaged (checksum differs)")
    return data


class QueryEncoder(Embedder):
    """Text queries into the model's vector space, without torch or transformers. It has the loaded
    model's fingerprint (its vectors search the same index) and match calibration; it embeds no pictures."""

    kind = "dual"

    def __init__(
        self, folder: Path, model_id: str, cache_dir: Path, precision: str, threads: int | None = None
    ):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.model_id = model_id
        self.precision = precision
        self.key = query_key(folder, precision)
        files, sidecar = query_paths(cache_dir, self.key)
        side = read_sidecar(sidecar, files, self.key)
        try:
            crcs = {k: int(side["files"][k]["crc32"]) for k in _FILES}
            self.dim = int(side["dim"])
            self.length = int(side["length"])
            self.pool = str(side["pool"])
            self.eos_id = int(side.get("eos_token_id") or 0)
            self.pad_id = int(side.get("pad_token_id") or 0)
            self.template = str(side["template"])
            cal = side.get("calibration")
            self._calibration = (float(cal[0]), float(cal[1])) if cal else None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise QueryEncoderUnavailable(f"its sidecar is damaged ({exc})") from None
        if self.pool not in ("last", "eos", "argmax"):
            raise QueryEncoderUnavailable(f"stale (pooling {self.pool!r})")
        try:
            self.tokenizer = Tokenizer.from_str(
                _checked_bytes(files["tokenizer"], crcs["tokenizer"]).decode("utf-8")
            )
            for kind in ("onnx", "table"):  # checked, then opened by path: onnxruntime given the bytes
                if crc32_of(files[kind]) != crcs[kind]:  # kept a second copy of the weights (187 vs 105 MB)
                    raise QueryEncoderUnavailable(f"{files[kind].name} is damaged (checksum differs)")
            self.table = np.load(files["table"], mmap_mode="r")  # only the looked-up rows become resident
            self.session = cpu_session(files["onnx"], threads)
        except QueryEncoderUnavailable:
            raise
        except Exception as exc:  # a file that passed its checksum and still does not open
            raise QueryEncoderUnavailable(f"it cannot be opened ({type(exc).__name__}: {exc})") from None
        if self.table.ndim != 2 or self.table.dtype != np.float16:
            raise QueryEncoderUnavailable("its token table is not a float16 matrix")
        self._fingerprint = f"{model_id}@{folder_fingerprint(folder)}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def variant(self) -> str:
        return f"query-{self.precision}"

    def match_calibration(self) -> tuple[float, float] | None:
        return self._calibration

    # -- text ----------------------------------------------------------------------------------------
    def token_ids(self, prompt: str) -> list[int]:
        """The ids the model reads for ``prompt`` (the template already applied): as transformers'
        tokenizer gives them for this model, padded and truncated as the loaded model's own path does."""
        return list(self.tokenizer.encode(prompt).ids)

    def _inputs(self, ids: list[int]) -> dict[str, np.ndarray]:
        if self.pool == "last":
            if len(ids) != self.length:
                raise ModelError(
                    f"the query's tokens ({len(ids)}) do not fill the model's length ({self.length})"
                )
            pool = self.length - 1  # SigLIP reads the last position, padding included (as it was trained)
        else:
            # CLIP: the end-of-text token's position, found as transformers finds it
            arr = np.asarray(ids)
            pool = int(np.argmax(arr == self.eos_id)) if self.pool == "eos" else int(np.argmax(arr))
            # its attention is causal: what follows the pooled position never reaches it
            ids = (ids + [self.pad_id] * self.length)[: self.length]
        table = self.table
        if max(ids) >= table.shape[0] or min(ids) < 0:
            raise ModelError("a token id is outside the model's vocabulary")
        embeds = np.asarray(table[np.asarray(ids)], dtype=np.float32)[None]
        return {"embeds": embeds, "pool": np.array([pool], np.int64)}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for t in texts:
            ids = self.token_ids(self.template.format(t.strip()))
            out.append(self.session.run(None, self._inputs(ids))[0][0])
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return normalize(np.stack(out))

    # -- no pictures ---------------------------------------------------------------------------------
    def layouts(self) -> list[str]:
        return []

    def _no_pictures(self):
        raise ModelError(
            f"The query encoder of {self.model_id} embeds text only: pictures need the model loaded."
        )

    def embed_photos(
        self, photos: Sequence[DecodedImage], layout: RegionLayout
    ) -> list[list[RegionEmbedding]]:
        self._no_pictures()

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self._no_pictures()


def open_query_encoder(folder: Path, model_id: str, cache_dir: Path, int8: bool) -> QueryEncoder:
    """The query encoder of the model in ``folder`` for the precision its speed runs (``int8``), from
    ``cache_dir`` (the prepared models' folder); :class:`QueryEncoderUnavailable` with the reason when none
    can be used (the loaded model then embeds the query, and writes it)."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        raise QueryEncoderUnavailable(f"onnxruntime or tokenizers is not installed ({exc})") from None
    try:
        return QueryEncoder(folder, model_id, cache_dir, precision_for(int8))
    except OSError as exc:
        raise QueryEncoderUnavailable(f"unreadable ({exc})") from None


# -- the words' meaning (all-MiniLM-L6-v2, core/text/ocr.py TextEmbedder) ----------------------------------
class SentenceQueryEncoder:
    """A query's sentence embedding for matching the words read in photos by meaning, as
    ``TextEmbedder.embed`` gives it (mean of the token states, unit length), from an ONNX export of the
    same model (float32, any length up to 128 tokens) run by onnxruntime: no torch, no transformers.
    Written and checked by core/models/query_export.py when the model is loaded in full."""

    def __init__(self, folder: Path, cache_dir: Path, model_id: str):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.key = sentence_key(folder)
        files, sidecar = sentence_paths(cache_dir, self.key)
        side = read_sidecar(sidecar, files, self.key)
        try:
            crcs = {k: int(side["files"][k]["crc32"]) for k in files}
            self.dim = int(side["dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryEncoderUnavailable(f"its sidecar is damaged ({exc})") from None
        try:
            self.tokenizer = Tokenizer.from_str(
                _checked_bytes(files["tokenizer"], crcs["tokenizer"]).decode("utf-8")
            )
            if crc32_of(files["onnx"]) != crcs["onnx"]:
                raise QueryEncoderUnavailable(f"{files['onnx'].name} is damaged (checksum differs)")
            self.session = cpu_session(files["onnx"])
        except QueryEncoderUnavailable:
            raise
        except Exception as exc:
            raise QueryEncoderUnavailable(f"it cannot be opened ({type(exc).__name__}: {exc})") from None
        self.model_id = model_id
        self.fingerprint = f"{model_id}@{self.dim}"  # as TextEmbedder's: the lines' vectors are comparable

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for t in texts:
            ids = np.asarray([self.token_ids(t)], np.int64)
            states = self.session.run(None, {"input_ids": ids, "token_type_ids": np.zeros_like(ids)})[0]
            out.append(states[0].mean(axis=0))
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return normalize(np.stack(out))


def sentence_key(folder: Path) -> str:
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{weights_source(folder)}|{_tokenizer_digest(folder)}|sentence|{QUERY_FORMAT}".encode())
    return h.hexdigest()


def sentence_paths(cache_dir: Path, key: str) -> tuple[dict[str, Path], Path]:
    base = Path(cache_dir) / "query"
    return {"onnx": base / f"{key}.onnx", "tokenizer": base / f"{key}.tokenizer.json"}, base / f"{key}.json"


def open_sentence_encoder(folder: Path, cache_dir: Path, model_id: str) -> SentenceQueryEncoder:
    """The sentence query encoder of the model in ``folder``; :class:`QueryEncoderUnavailable` when none can
    be used (the model is then loaded with transformers, and writes it)."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        raise QueryEncoderUnavailable(f"onnxruntime or tokenizers is not installed ({exc})") from None
    try:
        return SentenceQueryEncoder(folder, cache_dir, model_id)
    except OSError as exc:
        raise QueryEncoderUnavailable(f"unreadable ({exc})") from None
