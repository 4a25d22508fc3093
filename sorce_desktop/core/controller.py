"""The library controller: what the front ends call, one library's policy in one place.

One ``LibraryController`` per open library (a data folder). It owns the library's indexing service (the one
writer of the index) and its folder watcher, and is the one place that:

- opens the library (:meth:`LibraryController.open`);
- settles which model and layout the index is made with (:meth:`settle`): the index's own, a first one, or
  another one when re-indexing is asked for; another model without it is refused, the same in every front
  end; and whether the text in the photos goes on alone when no picture model can be had
  (:meth:`text_only_allowed`);
- turns a change of settings into a :class:`SettingsPlan` (what is re-embedded, re-read, kept) that the
  window shows before carrying it out;
- adds and removes folders as jobs of the indexing service (the service is the only writer; the watcher
  only reports what it sees);
- keeps the facts "indexing" and "paused" (from the service's events) for every front end to read;
- answers a query (:meth:`answer`): each hit's outline is decided in core (:attr:`PhotoHit.shown_box`,
  :meth:`PhotoHit.outlines`, :meth:`PhotoHit.refinable`), so the front ends only draw it.

The command line's commands parse their arguments, call this and print; the window's Session bridges it to
Qt signals. Neither imports the service, the store or the watcher (import-linter checks it): the names they
need from those are re-exported here. No Qt here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.indexing.indexer import Indexer, Phase
from sorce_desktop.core.indexing.scanner import existing_folder

# The names the front ends use from the service, the store and the watcher, so that they import this module
# alone (the contract "front ends import the controller" in pyproject.toml).
from sorce_desktop.core.indexing.service import EventCallback, EventKind, IndexEvent, IndexingService
from sorce_desktop.core.indexing.watcher import POLL_INTERVAL_S, RECONCILE_EVERY_S, SETTLE_S, Watcher
from sorce_desktop.core.library import Library, photos_to_redo, variants_to_redo
from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.regions import RegionLayout
from sorce_desktop.core.search.answer import SearchAnswer, SearchService
from sorce_desktop.core.settings import Settings
from sorce_desktop.core.store.catalog import CATALOG_NAME, WriterLock, display_path
from sorce_desktop.core.store.errors import (
    ModelMismatch,
    StoreError,
    StoreLocked,
    damaged_message,
    is_damage,
)

__all__ = [
    "CATALOG_NAME",
    "POLL_INTERVAL_S",
    "RECONCILE_EVERY_S",
    "SETTLE_S",
    "EventKind",
    "IndexEvent",
    "LibraryController",
    "LibraryReader",
    "ModelMismatch",
    "ModelRequest",
    "NothingIndexed",
    "SearchModel",
    "Settled",
    "SettingsPlan",
    "StoreError",
    "StoreLocked",
    "WriterLock",
    "damaged_message",
    "display_path",
    "is_damage",
]


# -- which model the index is made with ------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRequest:
    """What a front end asks for: a model and layout (None: the index's own, else the settings'), whether the
    index may be made again with another one (``reindex``), and the speed to index at (None: the settings')."""

    model: str | None = None
    layout: str | None = None
    reindex: bool = False
    speed: str | None = None


class ModelStep(StrEnum):
    """What settling a request does to the index."""

    KEEP = "keep"  # the index's own model and layout: nothing changes
    BIND = "bind"  # a first model, or another model or layout with re-indexing asked for


@dataclass
class Settled:
    """The model and layout the index is made with from now on. ``embedder`` None: no picture model (the
    text in the photos alone, ``text_only_reason`` says why); a function when it loads on first use."""

    embedder: Embedder | Callable[[], Embedder] | None
    layout: RegionLayout | None
    rebound: bool = False  # the index was just bound to another model or layout: its pictures are redone
    text_only_reason: str | None = None

    @property
    def model_id(self) -> str | None:
        e = self.embedder
        return e.model_id if isinstance(e, Embedder) else None


# -- what a change of settings means for the index ---------------------------------------------------------
class Redo(StrEnum):
    """What a change of settings redoes."""

    PICTURES = "pictures"  # every photo's picture vectors (another model or layout)
    SPEED = "speed"  # the picture vectors another speed made
    TEXT = "text"  # the words read with other text settings are read again
    RELOAD = "reload"  # the model loads again (another device or speed); the index is kept


@dataclass(frozen=True)
class SettingsPlan:
    """A change of settings, as the index sees it: what is made again and what is kept. Shown by the window
    (how many photos, how long) before it is carried out (:meth:`LibraryController.carry_out`). The words
    read in the photos are kept by every change but a change of the text settings themselves."""

    model: str
    layout: str
    speed: str
    rebind: bool = False  # another model or layout: every photo's picture vectors are made again
    layout_only: bool = False  # ... and it is the layout alone that changes
    pictures: int = 0  # photos whose picture vectors another model or layout made
    speed_changed: bool = False
    speed_redo: int = 0  # photos another speed made (re-embedded only if the user agrees: redo_speed)
    redo_speed: bool = False
    reread_text: bool = False  # reading text was switched on or off, or made more or less thorough
    reload: bool = False  # another device or speed: the model loads again

    @property
    def redoes(self) -> list[Redo]:
        out = []
        if self.rebind:
            out.append(Redo.PICTURES)
        elif self.redo_speed and self.speed_redo:
            out.append(Redo.SPEED)
        if self.reread_text and not self.rebind:
            out.append(Redo.TEXT)
        if self.reload and not self.rebind and not (self.redo_speed and self.speed_redo):
            out.append(Redo.RELOAD)
        return out

    def without_speed_redo(self) -> SettingsPlan:
        """The new speed for new and changed photos only."""
        from dataclasses import replace

        return replace(self, redo_speed=False)


# -- answering queries alone (no writer) --------------------------------------------------------------------
class NothingIndexed(StoreError):
    """A search in a library that holds neither picture vectors nor text read in photos."""


@dataclass
class SearchModel:
    """What a query is answered with: the picture model (None: the text read in the photos alone) and, when
    it is the text alone, what to tell the user (``note``, one line; empty otherwise)."""

    embedder: Embedder | None
    note: str = ""


class LibraryReader:
    """A library opened to answer queries and report on it: no indexing service, no writer lock (a window
    or `watch` may be writing to it meanwhile). :class:`LibraryController` is one that also writes."""

    def __init__(self, library: Library):
        self.lib = library
        self.settings: Settings = library.settings

    @classmethod
    def open_reader(cls, data_dir: str | os.PathLike | None = None) -> LibraryReader:
        """Open the library in ``data_dir`` to read it (a read-only one too: a mount, another user's)."""
        return LibraryReader(Library(data_dir, writer=False))

    @property
    def store(self):
        return self.lib.store

    def close(self) -> None:
        self.lib.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load(self, model: str | None = None, **kw) -> Embedder:
        """Load ``model`` (default: the index's own, else the settings'); ``progress``, ``cancel`` and
        ``speed`` as :meth:`Library.load_embedder` takes them."""
        return self.lib.load_embedder(model, **kw)

    def query_encoder(self) -> Embedder | None:
        """The index's model's query encoder: text queries embedded without loading the model (no torch,
        no transformers), where one was written when the model last loaded in full; None when the index has
        no model yet or no encoder was written."""
        if self.store.binding() is None:
            return None
        return self.lib.query_encoder()

    def search_model(
        self,
        text: str | None,
        image=None,
        *,
        refine: bool = False,
        progress=None,
        before_load: Callable[[str], None] | None = None,
    ) -> SearchModel:
        """The model a query is answered with, the one rule for a command's search: the index's own model
        when the query needs one (not for quoted words alone); for a text query that is not refined, its
        query encoder where one was written (refining zooms with the whole model); none when the index was
        made without one, or when it cannot be had and the text read in the photos can answer (a query by
        text only; a query by photo needs the model: its ModelError stands). Raises :class:`NothingIndexed`
        when nothing is indexed."""
        from sorce_desktop.core.models.base import ModelError

        has_text = self.store.count_read() > 0
        if self.store.binding() is None:
            if not has_text:
                raise NothingIndexed("nothing is indexed yet")
            return SearchModel(None, self.lib.text_only_note("none was available when indexing"))
        if not self.lib.needs_picture_model(text, image):
            return SearchModel(None)
        try:
            # a text query needs only the text tower: its query encoder, where the model wrote one
            encoder = self.lib.query_encoder() if image is None and not refine else None
            if encoder is not None:
                return SearchModel(encoder)
            model = self.lib.model_id()
            if before_load is not None:
                before_load(model)
            return SearchModel(self.load(model, progress=progress))
        except ModelError as exc:
            if not has_text or image is not None:
                raise
            return SearchModel(None, self.lib.text_only_note(getattr(exc, "problem", str(exc))))

    def report(self) -> dict:
        """The library at a glance, as ``status --json`` gives it (its field names are the command's): the
        folders (offline ones marked: :meth:`Library.status`), the counts, the model and layout, the
        settings that shape the index, the store's notices."""
        st = self.store
        b = st.binding()
        status = self.lib.status()
        return {
            "data_dir": str(self.lib.paths.index.parent),
            "folders": [
                {"path": f.path, "online": f.online, "indexed": f.indexed, "pending": f.pending, "failed": f.failed}
                for f in status.folders
            ],
            "indexed": status.indexed,
            "pending": status.pending,
            "failed": status.failed,
            "model": b.model_id if b else None,
            "layout": b.layout if b else None,
            "vectors": st.vectors.count if st.vectors else 0,
            "with_place": st.count_placed(),
            "index_bytes": st.size_on_disk(),
            "notices": st.notices,
            "speed": self.settings.speed,
            "text_read": st.count_read(),
            "reads_text": self.lib.ocr_enabled(),
        }

    def first_run(self) -> bool:
        """Whether the window opens on the first-run questions (which model, which folder): only while the
        settings say they were never answered and the library has no folder yet. A library given folders
        from the command line (`index FOLDER`) opens on those and the model it was indexed with; the window
        then saves the questions as answered."""
        if self.settings.first_run_done:
            return False
        if self.store.folders():
            self.settings.first_run_done = True
            return False
        return True

    def errors(self, folder: str | None = None) -> list[tuple[str, str]]:
        """The files that cannot be indexed (under ``folder``: None, all), with why: (path, reason)."""
        return self.store.errors(folder)

    def not_understood(self, text: str | None, *, after: str | None = None, before: str | None = None) -> list[str]:
        """What a query (``text``; None for a query by photo) and its period hold that cannot be understood,
        one line each: a date that does not parse, a place the gazetteer does not know, ``in:`` a folder not
        in the library. Needs no model: checked before one loads."""
        service = SearchService(self.store, None)
        search = service.understand(text, after=after, before=before)
        service.allowed_photos(search)
        return list(search.problems)

    def search_folder(self, path: str) -> str:
        """The folder a search is limited to: one that exists, or one under a remembered folder that is
        offline (an unplugged drive keeps its photos in the index). FileNotFoundError for any other."""
        from sorce_desktop.core.paths import is_under

        folder = os.path.abspath(path)
        if os.path.isdir(folder):
            return folder
        for root in self.store.folders():
            if not os.path.isdir(root) and is_under(folder, root):
                return folder
        existing_folder(path)  # raises, in its words
        return folder

    # -- search ---------------------------------------------------------------------------------------------
    def search_service(self, embedder: Embedder | None) -> SearchService:
        """Search with the picture model and the text in photos (``embedder`` None: the text alone)."""
        return self.lib.search_service(embedder)

    @staticmethod
    def answer(
        service: SearchService, text: str | None = None, *, image=None, vector=None, **kw
    ) -> SearchAnswer:
        """The whole answer to a query, each hit's outline decided (:class:`PhotoHit`); what cannot be
        asked (an empty query, a photo with no picture model) is refused by :meth:`SearchService.answer`
        alone. ``vector``: the query's picture vector already embedded (the same query again: live results
        reuse it instead of embedding the text again)."""
        return service.answer(text, image=image, vector=vector, **kw)


# -- the controller ------------------------------------------------------------------------------------------
class LibraryController(LibraryReader):
    """See the module docstring. Thread-safe where the service is; the methods that load a model or wait for
    a job block, and a window calls them off its UI thread."""

    def __init__(self, library: Library, *, worker_setup: Callable[[], object] | None = None):
        super().__init__(library)
        self.service: IndexingService = library.indexing_service()
        self.watcher: Watcher | None = None
        self._indexing = False
        self._indexing_lock = threading.Lock()
        self.service.subscribe(self._track)  # first: the facts are current when the other listeners hear
        if worker_setup is not None:
            self.service.call(worker_setup)
        self.service.start()

    @classmethod
    def open(cls, data_dir: str | os.PathLike | None = None, *, holder: str = "", **kw) -> LibraryController:
        """Open the library in ``data_dir`` for writing (the writer lock: StoreLocked when another process
        writes to it)."""
        return cls(Library(data_dir, writer=True, holder=holder), **kw)

    # -- events and the facts they report --------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> None:
        """Every event of the index (the service's and the watcher's), on the worker thread, in order."""
        self.service.subscribe(callback)

    def _track(self, ev: IndexEvent) -> None:
        with self._indexing_lock:
            if ev.kind in (EventKind.PROGRESS, EventKind.PAUSED) and ev.progress is not None:
                if ev.progress.phase in (Phase.SCANNING, Phase.EMBEDDING, Phase.PAUSED):
                    self._indexing = True
            elif ev.kind == EventKind.IDLE:
                self._indexing = False

    @property
    def indexing(self) -> bool:
        """The one fact "indexing is running" (paused included): from a scan asked for, or a run's progress,
        until the service's queue is empty (its ``idle`` event)."""
        return self._indexing

    @property
    def paused(self) -> bool:
        """The one fact "indexing is paused" (kept by the service's pause gate)."""
        return self.service.paused

    def pause(self) -> None:
        self.service.pause()

    def resume(self) -> None:
        self.service.resume()

    def cancel_current(self) -> None:
        self.service.cancel_current()

    # -- the model ------------------------------------------------------------------------------------
    def step_for(self, request: ModelRequest) -> ModelStep:
        """Whether ``request`` keeps the index's model and layout or binds another one. Another model or
        layout without ``reindex`` is refused (ModelMismatch) once the index holds picture vectors, in every
        front end alike and before anything loads."""
        b = self.store.binding()
        if b is None:
            return ModelStep.BIND
        same_model = request.model is None or request.model == b.model_id
        same_layout = request.layout is None or request.layout == b.layout
        if same_model and same_layout and not request.reindex:
            return ModelStep.KEEP
        vectors = self.store.vectors  # kept in step with the catalog's picture vectors when opened
        if not request.reindex and vectors is not None and vectors.count > 0:  # none yet: nothing is mixed
            n = self.store.counts()["indexed"]
            asked = request.model or b.model_id
            if not same_layout:
                raise ModelMismatch(
                    f"{b.model_id} ({b.layout} layout)",
                    f"{asked} ({request.layout} layout)",
                    n,
                    models=None if same_model else (b.model_id, asked),
                    layouts=(b.layout, request.layout),
                )
            raise ModelMismatch(b.model_id, asked, n)
        return ModelStep.BIND

    def text_only_allowed(self, request: ModelRequest, *, window: bool = False) -> bool:
        """Whether indexing and search go on with the text in the photos alone when no picture model can be
        had. A command (``index``, ``watch``) does so only on a first run with no model named (else the user
        fixes the model first: the index names one); the window, which stays open and loads the model again
        when asked, whenever the text is read."""
        if window:
            return self.lib.ocr_enabled()
        return self.lib.indexes_text_without_model(request.model)

    def settle(
        self,
        request: ModelRequest,
        *,
        progress=None,
        cancel: threading.Event | None = None,
        lazy: bool = False,
        before_load: Callable[[str], None] | None = None,
    ) -> Settled:
        """The model and layout to index and search with, the index bound to them (in turn with the
        indexing jobs; binding another layout or model drops the old picture vectors, and the job in
        progress stops first). ``lazy``: with the index's own model, load it only when a job needs it.
        ``before_load(model)``: called just before a model loads (a front end's note). A model that cannot
        be had raises (ModelError): where :meth:`text_only_allowed` says so, the front end goes on with the
        text alone (:meth:`text_only`)."""

        def load(model: str | None) -> Embedder:
            if before_load is not None:
                before_load(model or self.lib.model_id())
            return self.load(model, progress=progress, cancel=cancel, speed=request.speed)

        if self.step_for(request) == ModelStep.KEEP:
            b = self.store.binding()

            def embedder() -> Embedder:
                e = load(b.model_id)
                self.lib.check_embedder(e)
                return e

            return Settled(embedder if lazy else embedder(), self.lib.layout())
        e = load(request.model)
        layout = self.lib.layout_for(e, request.layout)
        if request.reindex:
            self.service.cancel_current()  # the job in progress embeds with the old model or layout
        rebound = self._wait(self.service.call(lambda: self.lib.bind(e, layout, reindex=request.reindex)))
        return Settled(e, layout, bool(rebound))

    @staticmethod
    def text_only(reason: str) -> Settled:
        """No picture model: the text in the photos alone is indexed and searched (``reason``: why)."""
        return Settled(None, None, text_only_reason=reason)

    def use(self, settled: Settled, *, batch_size: int | None = None) -> Future:
        """Index with ``settled`` (and the text settings) from now on: the job in progress with the old
        ones stops first (a scan afterwards redoes what it leaves)."""
        kw = {"batch_size": batch_size} if batch_size else {}
        embedder, layout, text_source = settled.embedder, settled.layout, self.text_source()

        def prepare() -> Indexer:
            return self.lib.indexer(embedder, layout, text_source=text_source, **kw)

        return self.service.configure(prepare)

    _text_source = None

    def text_source(self):
        """The OCR region source indexing uses beside the picture model (None: OCR is off); made once, its
        models load on first use. :meth:`text_settings_changed` makes it again."""
        if not self.lib.ocr_enabled():
            return None
        if self._text_source is None:
            self._text_source = self.lib.text_source()
        return self._text_source

    def text_settings_changed(self) -> None:
        self._text_source = None

    # -- settings -----------------------------------------------------------------------------------------
    def settings_in_use(self) -> Settings:
        """The settings as this library runs them, what a settings dialog starts from: the model and layout
        its index is made with (`index --model DIR` binds one without saving it as the setting), else the
        saved ones. Changing nothing then plans nothing (:meth:`plan`)."""
        return replace(self.settings, model=self.lib.model_id(), layout=self.lib.layout().name)

    def plan(self, new: Settings, variants: dict | None = None, *, keep_binding: bool = False) -> SettingsPlan:
        """What changing the library's settings to ``new`` means for the index. ``variants``: the photos with
        picture vectors by the variant that made them (LibraryStatus.variants; read from the store when
        None). ``keep_binding``: the user keeps the index's model and layout (no re-index for them)."""
        old = self.settings
        if variants is None:
            variants = self.store.visual_variants()
        rebind = not keep_binding and (new.model != self.lib.model_id() or new.layout != self.lib.layout().name)
        speed_changed = new.speed != old.speed and not rebind
        return SettingsPlan(
            model=new.model,
            layout=new.layout,
            speed=new.speed,
            rebind=rebind,
            layout_only=rebind and new.model == self.lib.model_id(),
            pictures=photos_to_redo(variants, binding_changes=True) if rebind else 0,
            speed_changed=speed_changed,
            speed_redo=photos_to_redo(variants, speed=new.speed) if speed_changed else 0,
            redo_speed=speed_changed,
            reread_text=(new.ocr, new.ocr_thorough) != (old.ocr, old.ocr_thorough),
            reload=new.device != old.device or speed_changed,
        )

    def requeue_speed(self, speed: str) -> Future:
        """Set the photos another speed made back to waiting (their picture vectors are made again; their
        text is kept), in turn with the indexing jobs."""

        def requeue() -> int:
            return self.store.requeue_variants(variants_to_redo(self.store.visual_variants(), speed))

        return self.service.call(requeue)

    # -- folders ------------------------------------------------------------------------------------------
    def add_folder(self, path: str | os.PathLike, *, index: bool = False) -> tuple[str, Future]:
        """Remember a folder (a job of the service) and watch it if the library is watched; ``index``: scan
        it after. Returns the folder as it is kept and the job's future. Raises FileNotFoundError at once
        for a folder that is not there (or is a file)."""
        folder = existing_folder(path)
        fut = self.service.add_folder(folder)
        if self.watcher is not None:
            self.watcher.watch(folder, reconcile=False)
        if index:
            self.scan([folder])
        return folder, fut

    def remove_folder(self, folder: str) -> Future:
        """Stop watching a folder and forget its photos (the files are never touched): the indexing job in
        progress stops first, so it cannot write photos of that folder back."""
        if self.watcher is not None:
            self.watcher.remove_folder(folder, forget=False)
        return self.service.remove_folder(folder)

    def scan(self, folders: list[str] | None = None) -> Future:
        """Bring the index in line with ``folders`` (None: all of the library's)."""
        with self._indexing_lock:
            self._indexing = True
        return self.service.scan(folders)

    def call(self, fn: Callable[[], object]) -> Future:
        """Any other write to the store, in turn with the indexing jobs."""
        return self.service.call(fn)

    # -- watching -----------------------------------------------------------------------------------------
    def watch(self, **kw) -> Watcher:
        """Watch the library's folders (started): what changes is handed to the indexing service. ``kw``:
        :class:`Watcher`'s options. Once, for the library's lifetime."""
        if self.watcher is None:
            self.watcher = Watcher(self.service, **kw)
            self.watcher.start()
        return self.watcher

    # -- closing --------------------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        """The watcher hands in the changes it has seen and the service finishes them (up to ``timeout``
        seconds each, then the job in progress is cancelled; what is left is found by the next scan)."""
        if self.watcher is not None:
            self.watcher.stop(timeout=timeout)
        self.service.stop(timeout=timeout)

    def close(self) -> None:
        self.stop()
        self.lib.close()

    @staticmethod
    def _wait(fut: Future):
        """A job's result, waiting in short steps so Ctrl+C reaches the main thread at once."""
        from concurrent.futures import TimeoutError as FutureTimeout

        while True:
            try:
                return fut.result(timeout=0.25)
            except FutureTimeout:
                continue
