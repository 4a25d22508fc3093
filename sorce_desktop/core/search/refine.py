"""Query-time refinement: outline the matched object, not the whole tile.

The index keeps one box per region, so a hit's box is a whole tile (a ninth of the photo on a 3x3
grid). For the hits a user looks at, :class:`Refiner` zooms into that box: it cuts finer overlapping
windows around the current box, embeds them with the same model in one batch, keeps the best, and
repeats while the score keeps rising and the windows stay above a floor. Windows may reach a little
beyond the current box (``margin``), so an object cut by a tile border is still found whole.

Refinement never changes the ranking by itself; :func:`rerank_by_refined` does that when the user
turns on "re-rank by zoomed score" (``Settings.rerank_by_zoom``).

Everything here is plain Python: the GUI calls :func:`refine_hits` from a worker thread with a
callback per hit and a cancel event (a new query sets it), and keeps a :class:`RefineCache`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.photos.images import DecodedImage, ImageError, load_image
from sorce_desktop.core.regions import Box
from sorce_desktop.core.search.answer import PhotoHit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineStrategy:
    """How hard to look. The defaults are the preset "screen-g2-48" of ``sorce-desktop bench refine``
    (at most 9 crops of 48 px per hit) for a screenful on a CPU, with the app's default indexing profile
    and :func:`refine_hits`' default schedule; its timings are in docs/benchmarks.md.
    :data:`DETAIL_STRATEGY` looks harder, for one photo opened."""

    #: windows per axis at each step (grid x grid windows per batch)
    grid: int = 2
    #: a window's side as a share of the current box's side
    zoom: float = 0.6
    #: how far windows may reach beyond the current box, as a share of its side (crosses tile borders)
    margin: float = 0.15
    #: at most this many zoom steps per hit
    max_steps: int = 2
    #: after zooming stops, up to this many batches of small moves and size/shape changes, each
    #: taken while it raises the score (hill climbing; see polish_windows); 0 turns it off
    polish: int = 0
    #: floor: windows smaller than this share of the photo's area are not tried
    min_area_frac: float = 0.002
    #: floor: nor windows whose short side is under this many pixels of the full-resolution photo
    min_side_px: int = 16
    #: embed the windows at this square input side (None: the model's own); cost grows with its square
    input_side: int | None = 48


#: For one photo the user opened: no screenful to share the time with, so look harder.
DETAIL_STRATEGY = RefineStrategy(grid=3, zoom=0.6, margin=0.25, max_steps=4, polish=4, input_side=128)


@dataclass
class RefineResult:
    """The refined box of one hit, with the scores that chose it.

    ``tile_score`` is the hit's own box scored the same way as the windows (same input side), so
    ``score`` and ``tile_score`` compare; the index's score (``PhotoHit.score``) may be on another
    scale when the windows are embedded at a reduced input side.
    """

    box: Box  # upright full-resolution pixels
    score: float
    tile_box: Box
    tile_score: float
    steps: int  # zoom steps taken (0: the tile was already the best)
    crops: int = 0  # windows embedded
    seconds: float = 0.0
    trail: list[tuple[Box, float]] = field(default_factory=list)  # the box after each step
    cancelled: bool = False

    @property
    def shrink(self) -> float:
        """How many times smaller in area the refined box is than the tile."""
        return self.tile_box.area / max(1, self.box.area)


def clamp_box(box: Box, width: int, height: int) -> Box:
    x0, y0 = min(max(box.x0, 0), width - 1), min(max(box.y0, 0), height - 1)
    return Box(x0, y0, max(x0 + 1, min(box.x1, width)), max(y0 + 1, min(box.y1, height)))


def _positions(lo: float, hi: float, size: float, count: int) -> list[float]:
    """``count`` window starts spread evenly so the windows span ``[lo, hi)``."""
    if count <= 1 or hi - lo <= size:
        return [lo + (hi - lo - size) / 2]
    step = (hi - lo - size) / (count - 1)
    return [lo + i * step for i in range(count)]


def _grid_windows(box: Box, width: int, height: int, zoom: float, grid: int, margin: float) -> list[Box]:
    w, h = box.width * zoom, box.height * zoom
    mx, my = box.width * margin, box.height * margin
    ax0, ax1 = max(0.0, box.x0 - mx), min(float(width), box.x1 + mx)
    ay0, ay1 = max(0.0, box.y0 - my), min(float(height), box.y1 + my)
    return [
        clamp_box(Box.from_list((x, y, x + w, y + h)), width, height)
        for y in _positions(ay0, ay1, h, grid)
        for x in _positions(ax0, ax1, w, grid)
    ]


def _above_floor(b: Box, width: int, height: int, s: RefineStrategy) -> bool:
    return b.area >= s.min_area_frac * width * height and min(b.width, b.height) >= s.min_side_px


def _unique(boxes: list[Box], box: Box, width: int, height: int, s: RefineStrategy) -> list[Box]:
    out: list[Box] = []
    seen = {box}
    for b in boxes:
        if b not in seen and _above_floor(b, width, height, s):
            seen.add(b)
            out.append(b)
    return out


def windows(box: Box, width: int, height: int, strategy: RefineStrategy) -> list[Box]:
    """The candidate windows of one zoom step around ``box``: ``grid`` x ``grid`` windows of
    ``zoom`` times its size spread over the box widened by ``margin`` (deduplicated, inside the
    photo, above the floor)."""
    s = strategy
    return _unique(_grid_windows(box, width, height, s.zoom, s.grid, s.margin), box, width, height, s)


def polish_windows(
    box: Box, width: int, height: int, strategy: RefineStrategy, step: float = 0.25
) -> list[Box]:
    """Small corrections once zooming stops: the box moved by ``step`` of its size each way, grown or
    shrunk about its centre, and made wider, narrower, taller or shorter (a grid of windows keeps the
    tile's shape and position steps; an object has its own)."""
    cx, cy = box.center
    w, h = box.width, box.height
    g, k = 1 + step, 1 / (1 + step)
    out = [
        (box.x0 + dx * w, box.y0 + dy * h, box.x1 + dx * w, box.y1 + dy * h)
        for dx, dy in ((-step, 0), (step, 0), (0, -step), (0, step))
    ]
    for fw, fh in ((g, g), (k, k), (g, 1), (k, 1), (1, g), (1, k)):
        out.append((cx - fw * w / 2, cy - fh * h / 2, cx + fw * w / 2, cy + fh * h / 2))
    moved = []
    for b in (Box.from_list(v) for v in out):  # keep the size when shifting against the photo's edge
        sx = max(0, -b.x0) - max(0, b.x1 - width)
        sy = max(0, -b.y0) - max(0, b.y1 - height)
        moved.append(clamp_box(Box(b.x0 + sx, b.y0 + sy, b.x1 + sx, b.y1 + sy), width, height))
    return _unique(moved, box, width, height, strategy)


def decode_side_for(hit: PhotoHit, box: Box, strategy: RefineStrategy, model_side: int) -> int | None:
    """The short side to decode the photo at: enough that the smallest window still fills the model
    input, no more (a reduced JPEG decode of a 24 MP photo is several times faster)."""
    side = strategy.input_side or model_side
    smallest = max(1.0, min(box.width, box.height) * strategy.zoom**strategy.max_steps)
    short = max(1, min(hit.width, hit.height))
    need = int(np.ceil(short * min(1.0, side / smallest)))
    return None if need >= short else max(need, side)


StepCallback = Callable[[RefineResult], None]


class _Walk:
    """One hit's refinement as a sequence of batches of windows, fed their scores one batch at a time.

    :meth:`Refiner.refine` walks one hit through its batches; :meth:`RefineRun.level_by_level` walks
    a screenful level by level, one model call for the same step of every hit (a CPU does several
    times more arithmetic per second on one batch of 100 crops than on 20 batches of 5)."""

    def __init__(self, hit: PhotoHit, img: DecodedImage, strategy: RefineStrategy, t0: float):
        self.img, self.s, self.t0 = img, strategy, t0
        W, H = img.width, img.height
        tile = hit.box
        if (hit.width, hit.height) not in ((W, H), (0, 0)):
            # The photo changed size since it was indexed: carry the box over proportionally.
            tile = Box.from_list(hit.box.scaled(W / hit.width, H / hit.height))
        tile = clamp_box(tile, W, H)
        self.result = RefineResult(tile, float("nan"), tile, float("nan"), 0)
        # Step 0 scores the tile itself in the same batch, at the same input side as the windows.
        self.cands: list[Box] = [tile] + windows(tile, W, H, strategy)
        self.cur, self.cur_score = tile, float("nan")
        self.zooms, self.polishes, self.move = 0, 0, 0.25

    @property
    def done(self) -> bool:
        return not self.cands

    def crops(self) -> list:
        return [self.img.crop(b) for b in self.cands]

    def feed(self, scores: np.ndarray) -> bool:
        """Take the scores of the current batch (in ``cands`` order); choose the next batch.
        Returns whether the box moved (an outline worth showing)."""
        s, r = self.s, self.result
        W, H = self.img.width, self.img.height
        cands = self.cands
        r.crops += len(cands)
        if np.isnan(self.cur_score):
            self.cur_score = r.tile_score = r.score = float(scores[0])
            cands, scores = cands[1:], scores[1:]
        i = int(np.argmax(scores)) if len(cands) else -1
        improved = i >= 0 and float(scores[i]) > self.cur_score
        if improved:
            self.cur, self.cur_score = cands[i], float(scores[i])
            r.box, r.score = self.cur, self.cur_score
            r.steps += 1
            r.trail.append((self.cur, self.cur_score))
        r.seconds = time.perf_counter() - self.t0
        if self.polishes == 0:
            self.zooms += improved
            # Zoom again while it helps and the step budget lasts.
            nxt = windows(self.cur, W, H, s) if improved and self.zooms < s.max_steps else []
            if nxt:
                self.cands = nxt
                return improved
        elif not improved:
            self.move /= 2  # nothing better one quarter away: look closer
        # Then small corrections while they help (each batch one step of a hill climb).
        self.cands = polish_windows(self.cur, W, H, s, self.move) if self.polishes < s.polish else []
        self.polishes += 1
        return improved


class Refiner:
    """Zooms into a hit's box with the same model that found it. One batch of windows per step."""

    def __init__(self, embedder: Embedder, strategy: RefineStrategy | None = None):
        self.embedder = embedder
        self.strategy = strategy or RefineStrategy()

    def _embed(self, crops: list) -> np.ndarray:
        side = self.strategy.input_side
        if side:
            return self.embedder.embed_images_at(crops, side)
        return self.embedder.embed_images(crops)

    def load(self, hit: PhotoHit) -> DecodedImage:
        min_side = decode_side_for(hit, hit.box, self.strategy, self.embedder.input_size())
        return load_image(hit.path, min_side)

    def refine(
        self,
        hit: PhotoHit,
        query_vector: np.ndarray,
        cancel: threading.Event | None = None,
        *,
        image: DecodedImage | None = None,
        on_step: StepCallback | None = None,
    ) -> RefineResult:
        """Refine ``hit``'s box for ``query_vector``. Raises :class:`ImageError` when the photo can no
        longer be read. With ``cancel`` set, stops before the next batch and returns what it has,
        marked ``cancelled``. ``on_step`` gets the result so far after every step taken."""
        t0 = time.perf_counter()
        img = image if image is not None else self.load(hit)
        walk = _Walk(hit, img, self.strategy, t0)
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if cancel is not None and cancel.is_set():
            walk.result.cancelled = True
            return walk.result
        while not walk.done:
            if walk.feed(self._embed(walk.crops()) @ q) and on_step is not None:
                on_step(walk.result)
            if cancel is not None and cancel.is_set():
                walk.result.cancelled = True
                break
        walk.result.seconds = time.perf_counter() - t0
        return walk.result


# -- cache ---------------------------------------------------------------------------------------------
def query_key(query_vector: np.ndarray) -> str:
    """A short stable hash of a query vector (two queries with the same vector share refinements)."""
    v = np.ascontiguousarray(np.asarray(query_vector, dtype=np.float32).reshape(-1))
    return hashlib.blake2b(v.tobytes(), digest_size=12).hexdigest()


def photo_key(path: str) -> tuple[str, int] | None:
    """The photo's path and modification time: an edited photo is refined afresh."""
    try:
        return (path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


class RefineCache:
    """Refined boxes per (photo path + mtime, query vector, strategy) while the app runs.

    Thread-safe: the GUI's worker fills it while the UI thread reads it. Least recently used entries
    go first once ``capacity`` is reached.
    """

    def __init__(self, capacity: int = 2048):
        self.capacity = capacity
        self._items: OrderedDict[tuple, RefineResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(path: str, query_vector: np.ndarray, strategy: RefineStrategy) -> tuple | None:
        pk = photo_key(path)
        return None if pk is None else (*pk, query_key(query_vector), strategy)  # frozen: hashable

    def get(self, path: str, query_vector: np.ndarray, strategy: RefineStrategy) -> RefineResult | None:
        k = self.key(path, query_vector, strategy)
        with self._lock:
            r = self._items.get(k) if k is not None else None
            if r is None:
                self.misses += 1
                return None
            self._items.move_to_end(k)
            self.hits += 1
            return r

    def put(
        self, path: str, query_vector: np.ndarray, strategy: RefineStrategy, result: RefineResult
    ) -> None:
        if result.cancelled:
            return  # a half-done refinement is not the answer
        k = self.key(path, query_vector, strategy)
        if k is None:
            return
        with self._lock:
            self._items[k] = result
            self._items.move_to_end(k)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# -- many hits -----------------------------------------------------------------------------------------
#: (index in the list, the hit, its refinement): called once per refined hit when it is done
HitCallback = Callable[[int, PhotoHit, RefineResult], None]
#: (index, the hit, its refinement so far): called after every step that moved a hit's box
HitStepCallback = Callable[[int, PhotoHit, RefineResult], None]
#: (index, the hit, why it could not be refined)
HitErrorCallback = Callable[[int, PhotoHit, str], None]

#: A screenful's schedule (``sorce-desktop bench refine`` compared the ways; see docs/benchmarks.md):
#: this many first hits alone, so the top hit's outline tightens early ...
LEAD_HITS = 1
#: ... then every other hit level by level, the same step of all of them in one model call, cut into
#: chunks of this many crops (the cancel event is checked between chunks).
LEVEL_CHUNK = 32


def apply_refinement(hit: PhotoHit, result: RefineResult) -> PhotoHit:
    hit.refined_box, hit.refined_score = result.box, result.score
    return hit


class RefineRun:
    """The refinement of one list of hits for one query: where each hit is reported, the cache, the
    cancel event, and the two ways to refine some of the hits (one by one, level by level).

    :func:`refine_hits` is the schedule the product uses; ``sorce-desktop bench refine`` puts the same
    parts together in the other ways it compares. Use it as a context manager: it owns the thread that
    decodes photos ahead of the model."""

    def __init__(
        self,
        refiner: Refiner,
        hits: Sequence[PhotoHit],
        query_vector: np.ndarray,
        *,
        on_result: HitCallback | None = None,
        on_error: HitErrorCallback | None = None,
        on_step: HitStepCallback | None = None,
        cancel: threading.Event | None = None,
        cache: RefineCache | None = None,
        apply: bool = True,
    ):
        self.t0 = time.perf_counter()
        self.refiner, self.hits = refiner, hits
        self.q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        self.on_result, self.on_error, self.on_step = on_result, on_error, on_step
        self.cancel, self.cache, self.apply = cancel, cache, apply
        #: each hit's refinement once it is reported (None: not refined, or cancelled first)
        self.out: list[RefineResult | None] = [None] * len(hits)
        self._pool: ThreadPoolExecutor | None = None
        self._decoded: dict[int, Future] = {}

    def __enter__(self) -> RefineRun:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def stopped(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def report(self, i: int, result: RefineResult, fresh: bool) -> None:
        hit = self.hits[i]
        if fresh and self.cache is not None:
            self.cache.put(hit.path, self.q, self.refiner.strategy, result)
        self.out[i] = result
        if self.apply:
            apply_refinement(hit, result)
        if self.on_result is not None:
            self.on_result(i, hit, result)

    def unreadable(self, i: int, exc: ImageError) -> None:
        log.info("cannot refine %s: %s", self.hits[i].path, exc)
        if self.on_error is not None:
            self.on_error(i, self.hits[i], str(exc))

    def from_cache(self) -> list[int]:
        """Report what this query already refined (shown at once); returns the indices of the others."""
        todo: list[int] = []
        for i, hit in enumerate(self.hits):
            if self.stopped():
                return []
            cache = self.cache
            cached = cache.get(hit.path, self.q, self.refiner.strategy) if cache is not None else None
            if cached is not None:
                self.report(i, cached, False)
            else:
                todo.append(i)
        return todo

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start decoding these hits' photos on a background thread (decoding is mostly C code that
        releases the GIL, so it overlaps the model's work)."""
        todo = [i for i in indices if i not in self._decoded]
        if not todo:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refine-decode")
        self._decoded.update({i: self._pool.submit(self.refiner.load, self.hits[i]) for i in todo})

    def one_by_one(self, indices: Sequence[int], each_step: Callable[[], None] | None = None) -> bool:
        """Refine these hits one after another, in order, each through its own batches; ``each_step``
        runs after every step that moved a box, before ``on_step``. False when cancelled."""
        for i in indices:
            if self.stopped():
                return False

            def step(r: RefineResult, i: int = i) -> None:
                if each_step is not None:
                    each_step()
                if self.on_step is not None:
                    self.on_step(i, self.hits[i], r)

            try:
                result = self.refiner.refine(self.hits[i], self.q, self.cancel, on_step=step)
            except ImageError as exc:
                self.unreadable(i, exc)
                continue
            if result.cancelled:
                return False
            self.report(i, result, True)
        return True

    def level_by_level(self, indices: Sequence[int]) -> bool:
        """Refine these hits together: step k of every hit still refining goes through the model in one
        batch (in chunks of :data:`LEVEL_CHUNK` crops); a hit is reported when it is done, so not in
        list order. False when cancelled."""
        self.prefetch(indices)
        walks: dict[int, _Walk] = {}
        for i in indices:
            if self.stopped():
                return False
            try:
                walks[i] = _Walk(self.hits[i], self._decoded[i].result(), self.refiner.strategy, self.t0)
            except ImageError as exc:
                self.unreadable(i, exc)
        while walks:
            order = sorted(walks)
            scores = self._score_level([c for i in order for c in walks[i].crops()])
            if scores is None:
                return False
            self._feed_level(walks, order, scores)
            for i in order:
                if walks[i].done:
                    if self.stopped():
                        return False
                    w = walks.pop(i)
                    w.result.seconds = time.perf_counter() - self.t0
                    self.report(i, w.result, True)
        return True

    def _score_level(self, crops: list) -> np.ndarray | None:
        """The query's score of every crop of one level, chunk by chunk; None when cancelled."""
        scores = np.empty(len(crops), np.float32)
        for k in range(0, len(crops), LEVEL_CHUNK):
            if self.stopped():
                return None
            scores[k : k + LEVEL_CHUNK] = self.refiner._embed(crops[k : k + LEVEL_CHUNK]) @ self.q
        return scores

    def _feed_level(self, walks: dict[int, _Walk], order: list[int], scores: np.ndarray) -> None:
        k = 0
        for i in order:
            w = walks[i]
            n = len(w.cands)
            moved = w.feed(scores[k : k + n])
            k += n
            if moved and self.on_step is not None:
                self.on_step(i, self.hits[i], w.result)


def refine_hits(
    refiner: Refiner,
    hits: Sequence[PhotoHit],
    query_vector: np.ndarray,
    *,
    on_result: HitCallback | None = None,
    on_error: HitErrorCallback | None = None,
    on_step: HitStepCallback | None = None,
    cancel: threading.Event | None = None,
    cache: RefineCache | None = None,
    apply: bool = True,
) -> list[RefineResult | None]:
    """Refine ``hits`` (the first screenful first), reporting each as it is done.

    The first :data:`LEAD_HITS` hits are refined one after another, then all the others level by
    level (:meth:`RefineRun.level_by_level`): a CPU gets several times more done per second on one big
    batch than on many batches of five small crops, and the top hit's outline still tightens first.
    Meanwhile a background thread decodes the other photos. Hits are reported when done, so not in
    list order.

    Runs on the caller's thread (the GUI calls it from a worker). Stops as soon as ``cancel`` is set
    (checked between batches): hits not reported stay ``None`` and nothing unfinished is cached. A
    photo that can no longer be read is reported to ``on_error`` and skipped. ``on_step`` gets every
    intermediate box (progressive outlines). With ``apply``, each hit's ``refined_box``/
    ``refined_score`` are set when it is done. ``RefineResult.seconds`` of a hit refined level by level
    is the time from the start of this call to when it was done (what the user waits for it).
    """
    with RefineRun(
        refiner,
        hits,
        query_vector,
        on_result=on_result,
        on_error=on_error,
        on_step=on_step,
        cancel=cancel,
        cache=cache,
        apply=apply,
    ) as run:
        todo = run.from_cache()
        lead, rest = todo[:LEAD_HITS], todo[LEAD_HITS:]
        # The others' photos are decoded once the top hit's first outline is out: started at once,
        # decoding delayed that outline 3x (bench).
        if run.one_by_one(lead, each_step=lambda: run.prefetch(rest)):
            run.level_by_level(rest)
        return run.out


def rerank_by_refined(hits: Sequence[PhotoHit]) -> list[PhotoHit]:
    """Order hits by their zoomed score (``Settings.rerank_by_zoom``).

    Only refined hits move, and only among themselves: the refined score is on another scale than
    the index's, so unrefined hits keep their places. Ties keep the original order.
    """
    refined = [i for i, h in enumerate(hits) if h.refined_score is not None]
    order = sorted(refined, key=lambda i: (-float(hits[i].refined_score), i))
    out = list(hits)
    for slot, src in zip(refined, order):
        out[slot] = hits[src]
    return out


def refine_pictures(
    refiner: Refiner, hits: Sequence[PhotoHit], query_vector: np.ndarray, **kwargs
) -> list[RefineResult | None]:
    """Refine the picture region of each hit that matched by its picture (:func:`refine_hits`'s
    arguments). A line of words is outlined precisely already, so a hit found by its words alone is left
    as it is, and a hit found both ways zooms from its picture region, not from its words."""
    pairs = [(h, v) for h in hits if (v := h.refinable()) is not None]
    todo, views = [h for h, _ in pairs], [v for _, v in pairs]
    out = refine_hits(refiner, views, query_vector, **kwargs)
    for h, v in zip(todo, views):
        h.refined_box, h.refined_score = v.refined_box, v.refined_score
    return out
