"""The GUI's view of one data folder: a Qt bridge over its library controller (core/controller.py).

The controller decides (which model and layout, what a change of settings means, adding and removing
folders as jobs of the indexing service, each hit's outline); this runs its slow calls off the UI thread
and turns its events into Qt signals. The UI thread never touches the store directly, because an indexing
batch or a vector-index save holds the store's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from sorce_desktop.core.controller import (
    EventKind,
    IndexEvent,
    LibraryController,
    ModelMismatch,
    ModelRequest,
    SettingsPlan,
    Settled,
)
from sorce_desktop.core.enums import StrEnum
from sorce_desktop.core.indexing.indexer import Phase, Progress
from sorce_desktop.core.library import Library, LibraryStatus
from sorce_desktop.core.models.download import DownloadCancelled, DownloadProgress
from sorce_desktop.core.quiet import quiet_third_party_loggers
from sorce_desktop.core.regions import Box
from sorce_desktop.core.search import refine
from sorce_desktop.core.search.answer import MatchedRegion, PhotoHit, SearchAnswer
from sorce_desktop.gui.qt import QtCore, Signal
from sorce_desktop.gui.tasks import lower_thread_priority, on_done, run_task, to_main

log = logging.getLogger(__name__)

#: how many photos a search shows (the grid scrolls through them lazily)
RESULTS_TOP = 500
#: how many of the first results are refined (and re-ranked, when asked) even before they are scrolled to
REFINE_FIRST = 24


@dataclass(frozen=True)
class Query:
    """What the user asked for: text, or an image (a crop of it, for "find similar" on a region)."""

    text: str | None = None
    image: str | None = None
    crop: Box | None = None
    label: str = ""  # how the search field shows an image query
    after: str | None = None  # the period filter (as --after/--before take it)
    before: str | None = None
    sort: str = "relevance"  # or 'date' (newest first)
    folder: str | None = None  # only photos under this watched folder (the folder list's selection)

    @property
    def key(self) -> tuple:
        return (
            self.text, self.image, self.crop.as_list() if self.crop else None,
            self.after, self.before, self.sort, self.folder,
        )  # fmt: skip


@dataclass
class ResultItem:
    """One photo in the grid: the core's hit plus what the grid needs to show it."""

    hit: PhotoHit
    thumb_key: str  # content hash (the thumbnail cache key)
    size_bytes: int = 0
    mtime_ns: int = 0
    refining: bool = False
    detail_refined: bool = False  # refined with the harder strategy of the detail view

    @property
    def shown_box(self) -> Box:
        """The best match's outline, as core decides it (:attr:`PhotoHit.shown_box`)."""
        return self.hit.shown_box

    def outlines(self) -> list[tuple[str, Box, MatchedRegion | None]]:
        """Every matched region to outline, the best first (:meth:`PhotoHit.outlines`)."""
        return self.hit.outlines()


@dataclass
class SearchResult:
    generation: int
    query: Query
    items: list[ResultItem]
    vector: np.ndarray | None
    seconds: float
    indexed: int  # photos searchable when it ran
    pending: int
    answer: SearchAnswer | None = None  # the core's answer this renders
    searched_with: object = None  # the search service that answered (its vector is reused while it serves)


class LoadState(StrEnum):
    """Where getting the model ready stands (ModelState.state)."""

    IDLE = "idle"
    LOADING = "loading"
    DOWNLOADING = "downloading"
    READY = "ready"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass
class ModelState:
    state: LoadState
    model: str = ""
    message: str = ""
    done_bytes: int = 0
    total_bytes: int = 0
    mismatch: bool = False  # the index holds another model's vectors: re-indexing is the way out
    reason: str = ""  # a failed download: 'offline' | 'disk_full' | 'not_found' | 'other' (core DownloadFailed)
    eta_s: float | None = None  # downloading: seconds left at the rate so far


class Session(QtCore.QObject):
    model_state = Signal(object)  # ModelState
    index_progress = Signal(object)  # core Progress (phase paused: stopped between photos, true counts)
    index_finished = Signal(object)  # the indexing service has nothing left to do (None)
    status_changed = Signal(object)  # LibraryStatus
    results = Signal(object)  # SearchResult (only the newest query's)
    search_failed = Signal(int, str)  # generation, message
    refined = Signal(int, int)  # generation, photo_id (its ResultItem was updated in place)
    reranked = Signal(int, object)  # generation, every photo id in its new order
    error = Signal(str)  # something to tell the user that has no better place
    watch_event = Signal(object)  # core IndexEvent (what changed in the index), on the UI thread

    def __init__(self, library: Library, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.lib = library
        self.settings = library.settings
        # the library's policy and its one writer: indexing is background work, so its thread (and the
        # decoders it starts) yield to the window; its events arrive on its thread and are posted here
        self.controller = LibraryController(library, worker_setup=lower_thread_priority)
        self.controller.subscribe(lambda ev: to_main(self._service_event, ev))
        self.embedder = None
        self.service = None
        # No visual model (no network, download cancelled, load failed): the text read in the photos is
        # still indexed and searched; this says why there is no visual model (None: there is one, or OCR
        # is off and there is nothing to search).
        self.text_only_reason: str | None = None
        self.state = ModelState(LoadState.IDLE)
        self.status = LibraryStatus()
        self._status_asked = self._status_shown = 0  # refresh_status: its readings, in the order asked
        # photos/second of the picture stage in the last index run (reading text apart: a re-index for
        # another model, layout or speed keeps the words read), overall and by the speed it ran at
        self.last_rate: float | None = None
        self.rates: dict[str, float] = {}
        self._download_cancel = threading.Event()
        self._requeue_speed: str | None = None  # a speed change waiting for the model at that speed
        self._closing = False
        self._live_update_due = False  # photos were indexed while a query is open: run it again soon
        # search
        self._generation = 0
        self._search_running = False
        self._next_search: tuple | None = None  # (generation, query, service or None: the current one)
        self._pending_query: tuple[int, Query] | None = None  # asked before the model was ready
        # the words read in the photos, searchable while the picture model loads (None: not yet, or
        # nothing to search); queries run on it at once and again with the picture model once it is ready
        self._words_service = None
        self.current: SearchResult | None = None
        # refinement
        self._refiner = None
        self._refine_cancel = threading.Event()
        self._refine_cache = None  # core.refine.RefineCache, made with the Refiner
        self._refine_queued: set[int] = set()
        self._last_status_refresh = 0.0

    # -- model ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Show what is in the index at once, make its words searchable, then load the model (in the
        background) and reconcile the folders."""
        self.refresh_status()
        self._search_words_first()
        self.load_model()

    def _search_words_first(self) -> None:
        """While the picture model loads (seconds on a laptop CPU), queries are answered from the words
        read in the photos at once; a query typed meanwhile runs again once pictures can be searched."""

        def ready(service) -> None:
            if service is None or self._closing or self.service is not None:
                return
            if service.embedder is None and self._words_service is not None:
                return  # the query encoder's service came first: it answers the words too
            self._words_service = service
            # bench startup reads these milestones
            log.info("start-up: picture queries answerable" if service.embedder is not None else "start-up: words searchable")
            if self._pending_query is not None:
                gen, q = self._pending_query
                if gen == self._generation and q.image is None:
                    self._search_words(gen, q)

        def words():
            service = self.controller.search_service(None)
            return service if service.text is not None and service.text.has_text() else None

        def pictures():
            # the model's query encoder (no torch, no transformers) answers text queries by the pictures
            # too, long before the model is loaded (a second, after the words)
            encoder = self.controller.query_encoder()
            return self.controller.search_service(encoder) if encoder is not None else None

        run_task(words, ready, lambda e: log.warning("words are not searchable yet: %s", e), lane="search", name="words")
        run_task(pictures, ready, lambda e: log.warning("no query encoder: %s", e), lane="search", name="query encoder")

    def _search_words(self, gen: int, query: Query) -> None:
        """Answer ``query`` from the words now; keep it pending for the picture model if it needs one."""
        answered = (
            self._words_service.embedder is not None
            or (query.text is None and query.image is None)  # a folder or a period alone: no model needed
            or not self.lib.needs_picture_model(query.text)
        )
        self._pending_query = None if answered else (gen, query)
        self._run_search(gen, query, self._words_service)

    def load_model(self, model: str | None = None, *, reindex_layout: str | None = None) -> None:
        """Load ``model`` (default: the one the index was made with) off the UI thread; the controller
        settles it (core/controller.py: the index's own model, a first one, or another one refused).

        ``reindex_layout``: bind the new model with this layout, dropping the old vectors."""
        request = ModelRequest(model, reindex_layout, reindex=reindex_layout is not None)
        model = model or self.lib.model_id()
        self._download_cancel = threading.Event()
        cancel = self._download_cancel
        self._set_state(ModelState(LoadState.LOADING, model, "Getting the model ready…"))

        def progress(p: DownloadProgress) -> None:
            st = ModelState(LoadState.DOWNLOADING, model, p.current_file, p.done_bytes, p.total_bytes, eta_s=p.eta_s)
            to_main(self._set_state, st)

        def load() -> Settled:
            quiet_third_party_loggers()  # a windowed app has no console for transformers' chatter
            return self.controller.settle(request, progress=progress, cancel=cancel)

        def loaded(settled: Settled) -> None:
            if self._closing:
                return
            # The model and libraries are long-lived: move them out of the collector's reach, so the
            # UI thread's full collections (gui/tasks.py) stay short.
            import gc

            gc.freeze()
            self._use(settled.embedder)

        def failed(exc: BaseException) -> None:
            if self._closing:
                return
            if isinstance(exc, ModelMismatch):  # the index belongs to another model
                self._set_state(ModelState(LoadState.ERROR, model, str(exc), mismatch=True))
                return
            if isinstance(exc, DownloadCancelled):
                st = ModelState(LoadState.CANCELLED, model, "The model download was cancelled.")
                reason = "the download was cancelled"
            else:
                st = ModelState(LoadState.ERROR, model, str(exc), reason=getattr(exc, "reason", ""))
                reason = "it could not be loaded"
            # Text first: the window reads text_only_reason when it shows the new state.
            self._use_text_only(reason)
            self._set_state(st)

        run_task(load, loaded, failed, lane="model", name="load model")

    def change_speed(self, speed: str) -> None:
        """Index at ``speed`` from now on and index again the photos another speed made (their picture
        vectors; their text is kept): the model loads at the new speed first."""
        self.settings.speed = speed
        self._requeue_speed = speed
        self.controller.cancel_current()  # the job in progress embeds at the old speed
        self.load_model()

    def _requeue(self, speed: str) -> None:
        # in turn with the indexing jobs: before the scan _use asks for
        on_done(self.controller.requeue_speed(speed), lambda _n: self.refresh_status(), lambda e: self.error.emit(str(e)))

    def carry_out(self, plan: SettingsPlan) -> None:
        """Carry out a change of settings the window showed (core's :class:`SettingsPlan`); the settings
        themselves are already changed."""
        if plan.reread_text and not plan.rebind:
            self.text_settings_changed()
        if plan.rebind:
            self.load_model(plan.model, reindex_layout=plan.layout)
        elif plan.redo_speed and plan.speed_redo:
            self.change_speed(plan.speed)  # loads the model at the new speed, then re-indexes
        elif plan.reload and self.ready:
            self.load_model()

    def cancel_download(self) -> None:
        self._download_cancel.set()

    def _use(self, embedder) -> None:
        try:
            service = self.controller.search_service(embedder)
        except ModelMismatch as exc:  # the index belongs to another model
            self._set_state(ModelState(LoadState.ERROR, embedder.model_id, str(exc), mismatch=True))
            return
        self.text_only_reason = None
        self.embedder, self.service = embedder, service
        self._words_service = None
        if self._requeue_speed is not None:
            self._requeue(self._requeue_speed)
            self._requeue_speed = None
        self._refiner = None
        self._refine_cache = None
        self._set_state(ModelState(LoadState.READY, embedder.model_id, ""))
        log.info("start-up: pictures searchable")
        self._configure_indexing()  # a text-only run in progress stops; the scan below redoes it
        self.request_index()
        self._start_watcher()
        self._run_pending_query()

    def _use_text_only(self, reason: str) -> None:
        """No visual model: search (and keep indexing) the text read in the photos, when OCR is on.

        The out-of-the-box path on a machine with no network: the OCR and text-embedding models install
        with the package. The window shows a note saying so and how to get picture search."""
        if not self.controller.text_only_allowed(ModelRequest(), window=True) or self.embedder is not None:
            self.text_only_reason = None
            return
        service = self.controller.search_service(None)
        if service.text is None:
            self.text_only_reason = None
            return
        self.service = service
        self.text_only_reason = reason
        self.refresh_status()
        self._configure_indexing()
        self.request_index()
        self._start_watcher()
        self._run_pending_query()

    def _run_pending_query(self) -> None:
        """A query typed while no search service was ready runs now (unless a newer one replaced it)."""
        if self._pending_query is not None:
            gen, q = self._pending_query
            self._pending_query = None
            if gen == self._generation:
                self._run_search(gen, q)

    @property
    def text_only(self) -> bool:
        """Searching the text in photos alone (no visual model available)."""
        return self.text_only_reason is not None and self.embedder is None

    def text_source(self):
        """The OCR region source the index runs use beside the visual model (None: OCR is off)."""
        return self.controller.text_source()

    def text_settings_changed(self) -> None:
        """Reading text in photos was switched on or off, or made more or less thorough: later runs
        (and the folder watcher) use the new setting, and an index run brings the text in line now
        (photos read with other settings are read again, in the background)."""
        self.controller.text_settings_changed()
        if self.embedder is not None or self.text_only:
            self._configure_indexing()
        self.request_index()

    def _set_state(self, st: ModelState) -> None:
        self.state = st
        self.model_state.emit(st)

    @property
    def ready(self) -> bool:
        return self.service is not None

    # -- folders -------------------------------------------------------------------------------------
    def add_folder(self, path: str) -> None:
        """Add a folder: a job of the indexing service (the one writer), watched and scanned after it."""
        index = self.embedder is not None or self.text_only  # else the model's arrival scans everything

        def add():
            return self.controller.add_folder(path, index=index)  # checks the folder is there: off the UI thread

        def added(result) -> None:
            folder, fut = result
            if not any(f.path == folder for f in self.status.folders):  # the folder list shows it at once
                from sorce_desktop.core.library import FolderInfo

                self.status.folders = [*self.status.folders, FolderInfo(folder)]
                self.status_changed.emit(self.status)
            on_done(fut, lambda _f: self.refresh_status(), lambda e: self.error.emit(str(e)))

        # One thread: two quick adds are handed in in the order they were made.
        run_task(add, added, lambda e: self.error.emit(str(e)), lane="folders", name="add folder")

    def remove_folder(self, path: str) -> None:
        """Forget the folder's photos (the files are never touched). The indexing service stops the job
        in progress first, so it cannot write photos of the removed folder back."""
        self.status.folders = [f for f in self.status.folders if f.path != path]
        self.status_changed.emit(self.status)

        def removed(_n) -> None:
            self.refresh_status()
            if self.current is not None:
                self.search(self.current.query)  # its photos must leave the grid

        on_done(self.controller.remove_folder(path), removed, lambda e: self.error.emit(str(e)))

    # -- indexing and live folder watching ------------------------------------------------------------
    def _configure_indexing(self) -> None:
        """Index with the current model (None: the text in photos alone) and text settings from now on."""
        if self._closing:
            return
        self.controller.use(Settled(self.embedder, None))

    def _start_watcher(self) -> None:
        """Watch the folders once there is something to index with: new, changed, moved and deleted
        photos are handed to the indexing service as they happen (core.watcher). The model or text
        settings can change later without a new watcher: they belong to the service's indexer."""
        if self._closing:
            return
        self.controller.watch(reconcile_at_start=False)  # request_index scans

    @property
    def indexing_service(self):
        """The controller's indexing service (for tests and tools; the window goes through the controller)."""
        return self.controller.service

    @property
    def _watcher(self):
        return self.controller.watcher

    def _service_event(self, ev: IndexEvent) -> None:
        """An event of the indexing service, on the UI thread."""
        if self._closing:
            return
        if ev.kind in (EventKind.PROGRESS, EventKind.PAUSED) and ev.progress is not None:
            self._progress(ev.progress)
            return
        if ev.kind in (EventKind.PAUSED, EventKind.RESUMED):
            return  # paused or resumed while nothing was being indexed: the window already shows it
        if ev.kind == EventKind.RECONCILED and ev.report is not None:
            self._measure(ev.report)
        if ev.kind == EventKind.IDLE:
            self.refresh_status()
            self.index_finished.emit(None)
            return
        if ev.kind in (EventKind.INDEXED, EventKind.REMOVED, EventKind.MOVED, EventKind.OFFLINE, EventKind.ONLINE):
            self.refresh_status()  # folder counts, offline marks
        # a photo's words committed after its picture re-rank the open results like any other commit
        live = (EventKind.INDEXED, EventKind.TEXT, EventKind.REMOVED, EventKind.MOVED)
        if ev.kind in live and self.current is not None:
            self._live_update()
        self.watch_event.emit(ev)

    def _live_update(self) -> None:
        """Photos indexed, removed or moved while a query is open: run it again (at most once a
        second), so new photos appear where they rank and gone ones leave."""
        if self._live_update_due:
            return
        self._live_update_due = True

        def run() -> None:
            self._live_update_due = False
            res = self.current
            if res is not None and not self._closing:
                # the same query: its picture vector is reused while the same model answers
                same = res.searched_with is not None and res.searched_with is self.service
                self.search(res.query, vector=res.vector if same else None)

        QtCore.QTimer.singleShot(1000, run)

    def _measure(self, report) -> None:
        """The picture stage's rate in a finished run, for the cost of a re-index (what it redoes)."""
        seconds = report.embed_seconds - report.text_seconds
        if self.embedder is None or report.embedded < 1 or seconds <= 0:
            return  # reading text alone says nothing of the picture model's rate
        self.last_rate = report.embedded / seconds
        self.rates[self.settings.speed] = self.last_rate

    def refresh_status(self) -> None:
        reason = self.text_only_reason if self.text_only else None

        self._status_asked += 1
        asked = self._status_asked

        def got(status: LibraryStatus) -> None:
            # counts are read on worker threads and can come back out of order: an older reading never
            # replaces a newer one
            if asked < self._status_shown:
                return
            self._status_shown = asked
            self.status = status
            self.status_changed.emit(status)

        self._last_status_refresh = time.monotonic()
        run_task(lambda: self.lib.status(reason), got, name="status")

    def errors(self, on_done, folder: str | None = None) -> None:
        run_task(lambda: self.controller.errors(folder), on_done, name="errors")

    @property
    def indexing(self) -> bool:
        """The indexing service is scanning or indexing (paused included): the controller's one fact."""
        return self.controller.indexing

    @property
    def paused(self) -> bool:
        return self.controller.paused

    def request_index(self) -> None:
        """Bring the index in line with the folders (start-up, Check Folders Now): a full scan, queued
        after what the service is doing (a full scan already waiting absorbs it)."""
        if self._closing or (self.embedder is None and not self.text_only):
            return  # the model is not ready: _use / _use_text_only ask again
        self.controller.scan()

    def _progress(self, p: Progress) -> None:
        self.index_progress.emit(p)
        start = p.phase == Phase.EMBEDDING and p.done == 0  # the run's photos were just recorded as to do
        if start or time.monotonic() - self._last_status_refresh > 1.0 or p.phase in (Phase.DONE, Phase.CANCELLED, Phase.PAUSED):
            self.refresh_status()

    def pause(self) -> None:
        """Indexing stops after the photo being embedded (within a second) and says so with its counts."""
        self.controller.pause()

    def resume(self) -> None:
        self.controller.resume()

    # -- search --------------------------------------------------------------------------------------
    def search(self, query: Query, *, vector=None) -> int:
        """Run a query; only the newest query's results are ever emitted. Returns its generation.
        ``vector``: its picture vector, already embedded (the same query run again)."""
        self._generation += 1
        gen = self._generation
        self._refine_cancel.set()  # a new query stops the old one's refinement
        if self.service is None:
            if self._words_service is not None and query.image is None:
                self._search_words(gen, query)
            else:
                self._pending_query = (gen, query)
            return gen
        self._run_search(gen, query, vector=vector)
        return gen

    def answer_remote(self, line: bytes, send) -> None:
        """Answer a ``search`` from the command line (core/running.py) off the UI thread; ``send(reply)``
        runs on the UI thread. Before the picture model is ready only quoted words are answered (the
        command answers anything else itself)."""
        from sorce_desktop.core import running
        service = self.service if self.embedder is not None else None
        words = self._words_service if self.service is None else None

        def answer(request: dict) -> dict:
            if service is not None:
                return running.answer_request(service, request)
            if words is not None and request.get("image") is None and (
                words.embedder is not None or not self.lib.needs_picture_model(request.get("text"))
            ):
                return running.answer_request(words, request)
            return {"busy": "the picture model is not ready"}

        def work() -> bytes:
            return running.handle_line(line, answer) or b'{"busy": "not a request"}\n'

        run_task(work, send, lambda e: send(b'{"busy": "failed"}\n'), lane="io", name="answer a search")

    def clear_search(self) -> None:
        self._generation += 1
        self._refine_cancel.set()
        self._pending_query = None
        self._next_search = None
        self.current = None

    def _run_search(self, gen: int, query: Query, service=None, vector=None) -> None:
        if self._search_running:
            self._next_search = (gen, query, service, vector)  # coalesce: only the newest waiting query will run
            return
        self._search_running = True
        service = service or self.service
        store = self.lib.store
        controller = self.controller

        def work() -> SearchResult:
            t = time.perf_counter()
            # The core's whole answer (ranked photos with every matched region and its outline, the
            # parsed query, the vector it searched with, kept for refinement): the window only draws it.
            answer = controller.answer(
                service, query.text, image=query.image, crop=query.crop, top=RESULTS_TOP, folder=query.folder,
                after=query.after, before=query.before, sort=query.sort, vector=vector,
            )  # fmt: skip
            hits, q = answer.hits, answer.vector
            # each hit carries its catalog row as the search read it; only a hit without one is looked up
            missing = [h.photo_id for h in hits if h.photo is None]
            rows = store.photos_by_ids(missing) if missing else {}
            items = []
            for h in hits:
                row = h.photo or rows.get(h.photo_id)
                key = row.hash if row is not None and row.hash else f"{h.path}:{row.size if row else 0}"
                items.append(ResultItem(h, key, row.size if row else 0, row.mtime_ns if row else 0))
            cache, refiner = self._refine_cache, self._refiner
            if cache is not None and refiner is not None:
                for it in items:  # refinements already made for this query (e.g. typing it again)
                    r = cache.get(it.hit.path, q, refiner.strategy)
                    if r is not None:
                        it.hit.refined_box, it.hit.refined_score = r.box, r.score
            c = store.counts()
            return SearchResult(
                gen, query, items, q, time.perf_counter() - t, c["indexed"], c["pending"], answer, service
            )

        def done(res: SearchResult) -> None:
            self._search_finished()
            if res.generation != self._generation:
                return  # a newer query was typed meanwhile: never show stale results
            self._refine_cancel = threading.Event()
            self._refine_queued = set()
            self.current = res
            self.results.emit(res)
            if self.settings.refine:
                self.refine(res.items[:REFINE_FIRST], rerank=self.settings.rerank_by_zoom)

        def failed(exc: BaseException) -> None:
            self._search_finished()
            if gen == self._generation:
                self.search_failed.emit(gen, str(exc))

        run_task(work, done, failed, lane="search", name="search")

    def _search_finished(self) -> None:
        self._search_running = False
        nxt, self._next_search = self._next_search, None
        if nxt is not None and nxt[0] == self._generation:
            self._run_search(*nxt)

    # -- refinement ----------------------------------------------------------------------------------
    def refine(self, items: list[ResultItem], *, rerank: bool = False, detail: bool = False) -> None:
        """Tighten the outline of ``items`` (the visible hits, first screenful first) off the UI thread.

        Each hit shows its tile's outline until its refined box arrives. Refinements are cached per
        (photo, query); a new query cancels what is left. ``rerank``: once these are refined, re-order
        the refined ones by their zoomed score. ``detail``: one opened photo, looked at harder."""
        res = self.current
        if res is None or res.vector is None or self.embedder is None or not self.settings.refine:
            return
        # Only what matched by its picture is zoomed into (core decides: PhotoHit.refinable).
        views = {id(it): v for it in items if (v := it.hit.refinable()) is not None}
        items = [it for it in items if id(it) in views]
        if detail:
            todo = [it for it in items if not it.detail_refined]
        else:
            todo = [
                it
                for it in items
                if it.hit.refined_box is None and it.hit.photo_id not in self._refine_queued
            ]
        if not todo:
            if rerank:
                self._rerank(res.generation)
            return
        if self._refiner is None or self._refiner.embedder is not self.embedder:
            self._refiner = refine.Refiner(self.embedder)
            self._refine_cache = refine.RefineCache()
        refiner = refine.Refiner(self.embedder, refine.DETAIL_STRATEGY) if detail else self._refiner
        cache, cancel, gen, q = self._refine_cache, self._refine_cancel, res.generation, res.vector
        for it in todo:
            if not detail:
                self._refine_queued.add(it.hit.photo_id)
            it.refining = True
        # the worker gets copies, boxed on their picture region; results are applied on the UI thread
        hits = [views[id(it)] for it in todo]

        def on_result(i: int, _hit, r) -> None:
            to_main(self._refined, gen, todo[i], r.box, float(r.score), detail)

        def on_error(i: int, _hit, _reason: str) -> None:
            to_main(self._refined, gen, todo[i], None, None, detail)

        def on_step(i: int, _hit, r) -> None:
            # Progressive: the outline tightens with every step; the hit stays "refining" until done.
            to_main(self._refined, gen, todo[i], r.box, float(r.score), detail, False)

        def work() -> None:
            refine.refine_hits(
                refiner,
                hits,
                q,
                on_result=on_result,
                on_error=on_error,
                on_step=on_step,
                cancel=cancel,
                cache=cache,
                apply=False,
            )

        def done(_r) -> None:
            if rerank and not cancel.is_set():
                self._rerank(gen)

        run_task(work, done, lambda e: log.warning("refinement failed: %s", e), lane="refine", name="refine")

    def _refined(
        self, gen: int, it: ResultItem, box: Box | None, score: float | None, detail: bool, final: bool = True
    ) -> None:
        if final:
            it.refining = False
        if gen != self._generation:
            return
        if box is not None:
            it.hit.refined_box, it.hit.refined_score = box, score
            if detail and final:
                it.detail_refined = True
        self.refined.emit(gen, it.hit.photo_id)

    def _rerank(self, gen: int) -> None:
        """Re-order by zoomed score (Settings.rerank_by_zoom): only refined hits move, among themselves."""
        res = self.current
        if res is None or gen != self._generation:
            return
        by_hit = {id(it.hit): it for it in res.items}
        hits = refine.rerank_by_refined([it.hit for it in res.items])
        res.items = [by_hit[id(h)] for h in hits]
        self.reranked.emit(gen, [it.hit.photo_id for it in res.items])

    # -- closing -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop background work and release the index (the writer lock) for other processes."""
        from sorce_desktop.gui.tasks import lanes

        self._closing = True
        self._download_cancel.set()
        self._refine_cancel.set()
        # The watcher hands in the changes it has seen and the service finishes them (up to 10 s, then
        # the job in progress is cancelled; what is left is found by the next start's scan).
        self.controller.stop(timeout=10)
        if not lanes().shutdown(30000):
            log.warning("background work did not stop in time")
        self.lib.close()
