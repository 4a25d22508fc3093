"""One data folder's services wired together: paths, settings, store, model, indexer and search.

The command line and the GUI both go through this, so neither re-implements the wiring.
"""

from __future__ import annotations

import os
import threading

from sorce_desktop.core.indexer import Indexer, ProgressCallback
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.models.download import ProgressCallback as DownloadCallback
from sorce_desktop.core.models.loader import load_embedder
from sorce_desktop.core.paths import AppPaths
from sorce_desktop.core.regions import RegionLayout, get_layout
from sorce_desktop.core.scanner import canonical_folder
from sorce_desktop.core.search import SearchService
from sorce_desktop.core.settings import Settings
from sorce_desktop.core.store import ModelBinding, Store


class Library:
    def __init__(self, data_dir: str | os.PathLike | None = None, *, writer: bool = True):
        self.paths = AppPaths.resolve(data_dir).ensure()
        self.settings = Settings.load(self.paths.settings)
        self.store = Store(self.paths.index, writer=writer)

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
    ) -> Embedder:
        return load_embedder(
            model or self.model_id(),
            self.paths.models,
            device=self.settings.device,
            download=download,
            progress=progress,
            cancel=cancel,
        )

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
            from sorce_desktop.core.store import ModelMismatch

            raise ModelMismatch(b.model_id, embedder.model_id, self.store.counts()["indexed"])

    # -- folders -------------------------------------------------------------------------------------
    def add_folder(self, folder: str | os.PathLike) -> str:
        path = canonical_folder(folder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"The folder {folder} does not exist.")
        return self.store.add_folder(path)

    def indexer(
        self,
        embedder: Embedder,
        layout: RegionLayout | None = None,
        on_progress: ProgressCallback | None = None,
        **kw,
    ) -> Indexer:
        return Indexer(
            self.store,
            embedder,
            layout or self.layout(),
            skip_dirs=[str(p) for p in self.paths.roots()],
            on_progress=on_progress,
            **kw,
        )

    def search_service(self, embedder: Embedder) -> SearchService:
        self.check_embedder(embedder)
        return SearchService(self.store, embedder)
