"""One data folder's services wired together: paths, settings, store, model, indexer and search.

The command line and the GUI both go through this, so neither re-implements the wiring.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from sorce_desktop.core.indexing.indexer import Indexer, ProgressCallback
from sorce_desktop.core.indexing.scanner import folder_offline
from sorce_desktop.core.indexing.service import IndexingService
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.models.download import ProgressCallback as DownloadCallback
from sorce_desktop.core.models.loader import load_embedder
from sorce_desktop.core.paths import AppPaths, DataDirError
from sorce_desktop.core.regions import RegionLayout, get_layout
from sorce_desktop.core.search.answer import SearchService
from sorce_desktop.core.settings import Settings
from sorce_desktop.core.store.catalog import ModelBinding, Store


@dataclass
class FolderInfo:
    path: str
    indexed: int = 0
    pending: int = 0
    failed: int = 0
    online: bool = True


@dataclass
class LibraryStatus:
    folders: list[FolderInfo] = field(default_factory=list)
    indexed: int = 0
    pending: int = 0
    failed: int = 0
    notices: list[str] = field(default_factory=list)
    text_only_note: str = ""  # searching the text in photos alone (no visual model): what to tell the user
    variants: dict = field(default_factory=dict)  # photos with picture vectors, by the variant that made them


class Library:
    def __init__(self, data_dir: str | os.PathLike | None = None, *, writer: bool = True, holder: str = ""):
        self.paths = AppPaths.resolve(data_dir)
        try:
            self.paths.ensure()
        except DataDirError:
            # A reader needs only the index: a read-only library (a mount, another user's folder) still
            # searches when its other folders cannot be created.
            if writer or not self.paths.index.is_dir():
                raise
        self.settings = Settings.load(self.paths.settings)
        #: settings that could not be used, one line each (the front end says them; see Settings.load)
        self.settings_problems: list[str] = list(self.settings.problems)
        self.store = Store(self.paths.index, writer=writer, holder=holder)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the index was made with ----------------------------------------------------------------
    def model_id(self) -> str:
        b = self.store.binding()
        return b.model_id if b else self.settings.model

    def layout(self) -> RegionLayout:
        b = self.store.binding()
        return get_layout(b.layout if b else self.settings.layout)

    def load_embedder(
        self,
        model: str | None = None,
        *,
        download: bool = True,
        progress: DownloadCallback | None = None,
        cancel: threading.Event | None = None,
        speed: str | None = None,
    ) -> Embedder:
        from sorce_desktop.core.models.speed import get_speed

        return load_embedder(
            model or self.model_id(),
            self.paths.models,
            device=self._device(),
            download=download,
            progress=progress,
            cancel=cancel,
            # "fast" or "thorough" indexing (core/models/speed.py); the settings say which by default
            speed=get_speed(speed or self.settings.speed),
        )

    def query_encoder(self, model: str | None = None) -> Embedder | None:
        """The query encoder of the library's model: text queries embedded without loading the model (no
        torch, no transformers), where one was written when the model was last loaded in full; None
        otherwise (then :meth:`load_embedder`, which writes it)."""
        from sorce_desktop.core.models.loader import load_query_encoder
        from sorce_desktop.core.models.speed import get_speed

        return load_query_encoder(model or self.model_id(), self.paths.models, speed=get_speed(self.settings.speed))

    def _device(self) -> str:
        """The settings' device, if this computer has it; else "auto" (said in settings_problems)."""
        name = self.settings.device
        if name in ("cuda", "mps"):
            import torch

            backend = torch.cuda if name == "cuda" else getattr(torch.backends, "mps", None)
            if backend is None or not backend.is_available():
                problem = (
                    f"the setting device = {name!r} in {self.paths.settings / 'settings.json'} cannot be used "
                    f"(no {name.upper() if name == 'cuda' else 'Apple silicon'} GPU is available here); using 'auto'"
                )
                if problem not in self.settings_problems:
                    self.settings_problems.append(problem)
                return "auto"
        return name

    def layout_for(self, embedder: Embedder, requested: str | None = None) -> RegionLayout:
        """The region layout a new index with ``embedder`` uses: the one asked for, else the index's own,
        else the settings' (a multimodal LLM: its own first layout); always one the model supports."""
        if requested:
            name = requested
        elif embedder.kind == "mllm":
            name = embedder.layouts()[0]
        else:
            b = self.store.binding()
            name = b.layout if b else self.settings.layout
        if name not in embedder.layouts():
            name = embedder.layouts()[0]
        return get_layout(name)

    def bind(self, embedder: Embedder, layout: RegionLayout, *, reindex: bool = False) -> bool:
        if layout.name not in embedder.layouts():
            raise ValueError(
                f"the layout {layout.name!r} does not apply to {embedder.model_id}; "
                f"it supports: {', '.join(embedder.layouts())}"
            )
        return self.store.bind_model(
            ModelBinding(embedder.model_id, embedder.fingerprint, layout.name, embedder.dim), reindex=reindex
        )

    def check_embedder(self, embedder: Embedder) -> None:
        """Refuse to search an index with vectors from another model."""
        b = self.store.binding()
        if b is not None and b.fingerprint != embedder.fingerprint:
            from sorce_desktop.core.store.catalog import ModelMismatch

            raise ModelMismatch(b.model_id, embedder.model_id, self.store.counts()["indexed"])

    def indexer(
        self,
        embedder: Embedder,
        layout: RegionLayout | None = None,
        on_progress: ProgressCallback | None = None,
        **kw,
    ) -> Indexer:
        # text_source=lib.text_source() in kw adds OCR beside the visual embedder (embedder None: text only)
        return Indexer(
            self.store,
            embedder,
            layout or self.layout(),
            skip_dirs=[str(p) for p in self.paths.roots()],
            on_progress=on_progress,
            **kw,
        )

    def indexing_service(self, indexer: Indexer | None = None) -> IndexingService:
        """The library's single writer (start it with ``.start()``); see core/indexing/service.py."""
        return IndexingService(self.store, indexer)

    def status(self, text_only_reason: str | None = None) -> LibraryStatus:
        """Folders with their counts and whether each is online (:func:`folder_offline`, the one rule), the
        totals, and the store's notices."""
        st = self.store
        folders = []
        for f in st.folders():
            c = st.counts(f)
            folders.append(FolderInfo(f, c["indexed"], c["pending"], c["failed"], not folder_offline(st, f)))
        c = st.counts()
        note = self.text_only_note(text_only_reason) if text_only_reason is not None else ""
        return LibraryStatus(
            folders, c["indexed"], c["pending"], c["failed"], list(st.notices), note, st.visual_variants()
        )

    def needs_picture_model(self, text: str | None, image: object = None) -> bool:
        """Whether answering this query needs the picture model: not for quoted words only (``"stop"``)
        where the text read in the photos is searched (SearchService.answer answers those from the words
        alone), so a front end can answer them before, or without, loading it."""
        if image is not None or text is None:
            return True
        from sorce_desktop.core.search.answer import clean_query
        from sorce_desktop.core.search.textsearch import parse_query

        return not (parse_query(clean_query(text)).words_only and self.text_searcher() is not None)

    def search_service(self, embedder: Embedder | None) -> SearchService:
        """Search with the visual model and the text in photos. ``embedder`` None (no visual model
        downloaded yet): text in photos only, see :meth:`text_only_note`."""
        if embedder is not None:
            self.check_embedder(embedder)
        return SearchService(self.store, embedder, self.text_searcher())

    # -- text in photos (OCR) --------------------------------------------------------------------------
    def ocr_enabled(self) -> bool:
        """Whether the text in photos is read (Settings.ocr)."""
        return self.settings.ocr

    def text_source(self):
        """The OCR region source for :meth:`indexer` (``text_source=``), or None when switched off.
        Its models load on first use; a missing package is reported by the index run (text_error)."""
        if not self.ocr_enabled():
            return None
        from sorce_desktop.core.text.ocr import DEFAULT_OCR, THOROUGH_READING, TextSource

        def loaded(model) -> None:
            from sorce_desktop.core.models.loader import write_sentence_query_encoder

            write_sentence_query_encoder(model, self.paths.models)

        return TextSource(config=THOROUGH_READING if self.settings.ocr_thorough else DEFAULT_OCR, on_embedder=loaded)

    def text_searcher(self):
        """Search over text read in photos (None when OCR is off and no text was ever read)."""
        from sorce_desktop.core.search.textsearch import TextSearcher

        if not self.ocr_enabled() and self.store.count_lines() == 0:
            return None

        def embedder():
            from sorce_desktop.core.models.loader import load_sentence_embedder

            return load_sentence_embedder(self.paths.models)

        return TextSearcher(self.store, embedder)

    def indexes_text_without_model(self, requested_model: str | None) -> bool:
        """Whether indexing goes on with the text in the photos alone when no picture model can be loaded:
        only on a first run (no index yet names a model), when no model was asked for by name, and when
        the text is read at all. `index` and `watch` share this one rule."""
        return self.store.binding() is None and requested_model is None and self.ocr_enabled()

    def text_only_note(self, reason: str | None = None) -> str:
        """What to tell the user when searching without a visual model."""
        from sorce_desktop.core.words import photos

        n = self.store.count_read()
        why = f" ({reason})" if reason else ""
        return (
            f"No visual model is available{why}: searching only the text read in {photos(n)}. "
            f"Download {self.model_id()} to search by what the photos show."
        )


def photos_to_redo(
    variants: dict[str | None, int], *, binding_changes: bool = False, speed: str | None = None
) -> int:
    """How many photos a settings change really indexes again: only picture vectors are redone (the
    words read in a photo are kept until the file changes), and only those of photos that have some.

    ``variants``: :meth:`Store.visual_variants`. A new model or layout redoes every photo's picture
    vectors; a new ``speed`` only those another speed made (photos recorded before speeds existed were
    made at full precision, i.e. "thorough"). Photos with no picture vectors yet (text read, no model
    until now) are indexed for the first time, not again: they count for nothing here."""
    from sorce_desktop.core.models.speed import THOROUGH, speed_of_variant

    if binding_changes:
        return sum(variants.values())
    if speed is None:
        return 0
    return sum(n for v, n in variants.items() if (speed_of_variant(v) or THOROUGH.name) != speed)


def variants_to_redo(variants: dict[str | None, int], speed: str) -> list[str | None]:
    """The variants :func:`photos_to_redo` counts for a change to ``speed``."""
    from sorce_desktop.core.models.speed import THOROUGH, speed_of_variant

    return [v for v in variants if (speed_of_variant(v) or THOROUGH.name) != speed]

