"""The screenful schedules `sorce-desktop bench refine` compares with the product's (core.refine.refine_hits)."""

from __future__ import annotations

from dataclasses import replace

from test_refine import Recording

from sorce_desktop.bench.refine import SCHEDULES
from sorce_desktop.core.search.refine import LEVEL_CHUNK, Refiner, RefineStrategy, refine_hits, windows


def test_the_benchs_schedules_find_the_products_boxes(clip_embedder, hits_and_query):
    hits, q = hits_and_query
    strategy = RefineStrategy(grid=3, max_steps=3, polish=1)
    product = refine_hits(Refiner(clip_embedder, strategy), [replace(h) for h in hits], q)

    seen: list[int] = []
    rec = Recording(clip_embedder)
    one_by_one = SCHEDULES["sequential"](
        Refiner(rec, strategy), [replace(h) for h in hits], q, on_result=lambda i, h, r: seen.append(i)
    )
    assert [r.box for r in one_by_one] == [r.box for r in product]
    assert seen == list(range(len(hits)))  # strictly in list order, each hit through its own batches
    assert rec.batches[0] == 1 + len(windows(hits[0].box, hits[0].width, hits[0].height, strategy))

    rec = Recording(clip_embedder)
    together = SCHEDULES["together"](Refiner(rec, strategy), [replace(h) for h in hits], q)
    assert [r.box for r in together] == [r.box for r in product]
    # the top hit too is refined level by level: the first model call holds step 0 of every hit
    first_level = sum(1 + len(windows(h.box, h.width, h.height, strategy)) for h in hits)
    assert rec.batches[0] == min(LEVEL_CHUNK, first_level)
