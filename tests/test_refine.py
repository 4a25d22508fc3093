"""Query-time refinement: it must really localise, batch per step, cache, report per hit and cancel."""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import no_text_reading, scene_photos
from PIL import Image

from sorce_desktop.core.models.base import Embedder
from sorce_desktop.core.photos.images import DecodedImage
from sorce_desktop.core.regions import Box
from sorce_desktop.core.search.answer import PhotoHit
from sorce_desktop.core.search.refine import (
    DETAIL_STRATEGY,
    LEVEL_CHUNK,
    RefineCache,
    Refiner,
    RefineStrategy,
    polish_windows,
    refine_hits,
    rerank_by_refined,
    windows,
)


# -- a random model that responds to content -------------------------------------------------------------
def build_patch_matcher(folder: Path, seed: int = 0, plain_weight: float = 0.3) -> Path:
    """A small randomly initialised SigLIP that sees a photo as a bag of vivid colour patches.

    Plain random transformers are dominated by what every input shares (position embeddings, biases,
    layer norms that blow near-constant patches up to full size): the tile holding a pasted patch scores
    no higher than the others, and a photo full of saturated colours (a COCO photo has a lunch box in
    bright magenta, yellow and blue) beats a photo with a small patch. Here the architecture is the real
    one and every weight is still random, only placed: no position embeddings and no attention mixing
    (each image patch on its own), and one MLP layer of random "cone" features, each centred on a random
    fully saturated hue and switched on only for image patches whose colour lies close to it. The
    features write into dimensions of their own, and the last layer norm keeps only ``plain_weight`` of
    the plain patch content: an image patch of an ordinary colour adds a little mass that points nowhere
    in particular, a vivid one a feature. The pooling head averages over all patches (uniform attention).
    A crop's similarity to the patch then grows with the share of the crop the patch's colours fill:
    the tile with the patch wins over tiles and photos without it, and zooming in on the patch raises
    the score until the crop is the patch. Checked with model seeds 0-2 on the six positions below: 16
    of 18 (seed 1 misses two), so the test pins seed 0.
    """
    from transformers import SiglipModel

    from sorce_desktop.bench.synthetic import SPECS, build_dual_encoder

    SPECS.setdefault(
        "test-patch-matcher",
        dict(
            arch="siglip", image_size=96, patch=4, width=256, layers=1, heads=2, text_vocab=None, text_len=16
        ),
    )
    build_dual_encoder(folder, "test-patch-matcher", seed=seed)
    model = SiglipModel.from_pretrained(folder)
    vm = model.vision_model
    g = torch.Generator().manual_seed(seed)
    plain = 64  # dimensions holding the plain patch content; the features get the rest
    gain, cone = 50.0, 0.98  # a feature fires when the cosine to its centre exceeds 0.98 (~11 degrees)
    with torch.no_grad():
        vm.embeddings.position_embedding.weight.zero_()
        emb = vm.embeddings.patch_embedding
        emb.bias.zero_()
        emb.weight[plain:].zero_()
        # zero mean over dimensions, so the layer norms shift nothing into the features' dimensions
        emb.weight[:plain].sub_(emb.weight[:plain].mean(dim=0, keepdim=True))
        layer = vm.encoder.layers[0]
        layer.self_attn.out_proj.weight.zero_()
        layer.self_attn.out_proj.bias.zero_()
        fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
        n = fc1.out_features
        # centres: random fully saturated colours (one channel at the top, one at the bottom, one anywhere)
        centres = torch.rand(n, 3, generator=g) * 2 - 1
        order = torch.argsort(torch.rand(n, 3, generator=g), dim=1)
        centres.scatter_(1, order[:, :1], 1.0)
        centres.scatter_(1, order[:, 1:2], -1.0)
        p = vm.config.patch_size
        u = layer.layer_norm2(emb(centres[:, :, None, None].expand(-1, 3, p, p)).flatten(1))
        u = u / u.norm(dim=1, keepdim=True)
        fc1.weight.copy_(gain * u / vm.config.hidden_size**0.5)  # the layer norm's output has norm sqrt(D)
        fc1.bias.fill_(-gain * cone)
        fc2.weight.normal_(0, 1000.0 * n**-0.5, generator=g)
        fc2.bias.zero_()
        fc2.weight[:plain].zero_()
        fc2.weight[plain:].sub_(fc2.weight[plain:].mean(dim=0, keepdim=True))
        vm.post_layernorm.weight.fill_(1.0)
        vm.post_layernorm.weight[:plain].fill_(plain_weight)
        vm.post_layernorm.bias.zero_()
        head = vm.head
        d = head.attention.embed_dim
        head.attention.in_proj_weight[: 2 * d].zero_()  # uniform attention: the mean over patches
        head.attention.in_proj_bias.zero_()
        head.attention.out_proj.bias.zero_()
        head.mlp.fc2.weight.zero_()
        head.mlp.fc2.bias.zero_()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def matcher(tmp_path_factory):
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    return DualEncoderEmbedder(build_patch_matcher(tmp_path_factory.mktemp("patch-matcher")))


_COLOURS = np.array(
    [
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 0),
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 128, 0),
        (128, 0, 255),
        (0, 255, 128),
    ]
)


def make_patch(side: int, seed: int) -> Image.Image:
    """A small distinctive patch: 3x3 blocks of nine saturated colours (a part of it looks different
    from the whole, so zooming into it must lower the score)."""
    rng = np.random.default_rng(seed)
    blocks = _COLOURS[rng.permutation(len(_COLOURS))].reshape(3, 3, 3).astype(np.uint8)
    return Image.fromarray(blocks).resize((side, side), Image.NEAREST)


# -- geometry ------------------------------------------------------------------------------------------
def test_windows_reach_past_the_box_and_stop_at_the_floor():
    s = RefineStrategy(grid=3, zoom=0.6, margin=0.25)
    tile = Box(213, 160, 427, 320)
    ws = windows(tile, 640, 480, s)
    assert len(ws) == 9
    for w in ws:
        assert 0 <= w.x0 < w.x1 <= 640 and 0 <= w.y0 < w.y1 <= 480
        assert abs(w.width - 0.6 * tile.width) <= 1 and abs(w.height - 0.6 * tile.height) <= 1
    # windows cross the tile's borders (an object cut by a grid line can be found whole)
    assert min(w.x0 for w in ws) < tile.x0 and max(w.x1 for w in ws) > tile.x1
    assert min(w.y0 for w in ws) < tile.y0 and max(w.y1 for w in ws) > tile.y1
    # at the photo's edge they stay inside it
    assert all(w.x0 >= 0 and w.y0 >= 0 for w in windows(Box(0, 0, 213, 160), 640, 480, s))
    # below the floor there is nothing left to try
    assert windows(Box(0, 0, 20, 20), 640, 480, s) == []
    assert windows(Box(0, 0, 40, 40), 640, 480, RefineStrategy(min_area_frac=0.01)) == []
    for w in polish_windows(Box(600, 0, 640, 40), 640, 480, s):
        assert 0 <= w.x0 < w.x1 <= 640 and 0 <= w.y0 < w.y1 <= 480


# -- the test that matters: it really localises --------------------------------------------------------
PATCH = 96  # 3 % of a 640x480 photo; a grid3 tile is 213x160, so its IoU with the patch is at most 0.27
# (x, y) of the patch's top-left corner in a 640x480 photo, whose 3x3 grid lines are at x=213, 427 and
# y=160, 320: inside a tile, in the middle tile, across a vertical border, across a horizontal border,
# across a corner where four tiles meet, and at the photo's corner.
POSITIONS = [(40, 40), (280, 190), (213 - 48, 60), (480, 320 - 45), (213 - 45, 160 - 50), (544, 384)]


@pytest.fixture(scope="module")
def pasted_sources():
    return [p for p in scene_photos(40) if Image.open(p).size == (640, 480)]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(POSITIONS)))
def test_refinement_outlines_the_pasted_patch(tmp_path, matcher, pasted_sources, case, indexed_library):
    """A photo with a patch pasted at a known place, indexed with two other photos; the
    patch as an image query finds the photo, and refinement outlines the patch, not the tile."""
    x, y = POSITIONS[case]
    true_box = Box(x, y, x + PATCH, y + PATCH)
    photos = tmp_path / "photos"
    photos.mkdir()
    img = Image.open(pasted_sources[case]).convert("RGB")
    patch = make_patch(PATCH, seed=case)
    img.paste(patch, (x, y))
    path = photos / "pasted.png"
    img.save(path)
    for j in (1, 2):  # distractors: other photos without a patch
        src = pasted_sources[(case + 3 * j) % len(pasted_sources)]
        shutil.copy2(src, photos / f"plain_{j}.jpg")
    lib, _ = indexed_library(photos, model=matcher, batch_size=4)
    with lib:
        service = lib.search_service(matcher)
        hits = service.search(image=patch, top=3)
        assert hits and hits[0].path == str(path), "the image query did not find the photo with the patch"
        hit = hits[0]
        # Without refinement the outline is the tile, which cannot pass the IoU bar below: the index
        # only knows tiles (a ninth of the photo), at most 0.27 IoU with this patch.
        assert hit.box.iou(true_box) < 0.3

        q = service.query_vector(image=patch)
        r = Refiner(matcher, DETAIL_STRATEGY).refine(hit, q)
    assert r.tile_box == hit.box
    assert r.box.iou(true_box) >= 0.5, (hit.box, r.box, true_box, r.trail)
    assert r.score > r.tile_score and r.steps >= 1
    assert r.shrink > 2.0


# -- batching and backends ----------------------------------------------------------------------------
class Recording(Embedder):
    """Wraps an embedder, recording each batch; implements only the abstract interface, so
    ``embed_images_at`` falls back to ``embed_images`` as for a backend that cannot resize (MLLM)."""

    kind = "dual"

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.model_id, self.dim = inner.model_id, inner.dim
        self.batches: list[int] = []

    def layouts(self):
        return self.inner.layouts()

    def embed_photos(self, photos, layout):
        return self.inner.embed_photos(photos, layout)

    def embed_images(self, images):
        self.batches.append(len(images))
        return self.inner.embed_images(images)

    def embed_texts(self, texts):
        return self.inner.embed_texts(texts)

    def input_size(self):
        return self.inner.input_size()


def _hit_for(path: str, box: Box, size=(640, 480)) -> PhotoHit:
    return PhotoHit(path, 0.5, box, "g3_r1c1", 1, size[0], size[1])


def test_one_batch_per_step_with_a_backend_that_cannot_resize(matcher):
    rec = Recording(matcher)
    path = str(scene_photos(1)[0])
    w, h = Image.open(path).size
    hit = _hit_for(path, Box(w // 3, h // 3, 2 * w // 3, 2 * h // 3), (w, h))
    q = matcher.embed_texts(["a cup"])[0]
    steps_seen = []
    strategy = RefineStrategy(grid=3, max_steps=2, polish=2)
    r = Refiner(rec, strategy).refine(hit, q, on_step=lambda res: steps_seen.append(res.box))
    # step 0 holds the tile and its windows together; every later batch is one step's windows
    assert rec.batches[0] == 1 + 9
    assert sum(rec.batches) == r.crops and len(rec.batches) <= strategy.max_steps + strategy.polish
    assert all(n <= 10 for n in rec.batches[1:])  # one step's windows, or one polish batch
    assert steps_seen == [b for b, _ in r.trail]
    assert 0 <= r.box.x0 < r.box.x1 <= w and 0 <= r.box.y0 < r.box.y1 <= h


def test_reduced_input_side_matches_the_model_path(clip_embedder, tiny_siglip):
    """embed_images_at is the model's own forward at another size (both dual-encoder families)."""
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    img = Image.open(scene_photos(1)[0]).convert("RGB")
    for e in (clip_embedder, DualEncoderEmbedder(tiny_siglip)):
        full = e.embed_images([img])
        assert np.allclose(e.embed_images_at([img], None), full, atol=1e-6)
        assert np.allclose(e.embed_images_at([img], 10_000), full, atol=1e-6)  # never above the model's
        small = e.embed_images_at([img, img.crop((0, 0, 200, 200))], 16)
        assert small.shape == (2, e.dim) and np.allclose(np.linalg.norm(small, axis=1), 1, atol=1e-5)


# -- many hits: progressive, cancellable, cached -------------------------------------------------------
def test_refine_hits_reports_each_hit_once_top_first_and_caches(clip_embedder, hits_and_query):
    hits, q = hits_and_query
    refiner = Refiner(clip_embedder)
    cache = RefineCache()
    seen = []
    results = refine_hits(refiner, hits, q, on_result=lambda i, h, r: seen.append(i), cache=cache)
    assert seen[0] == 0 and sorted(seen) == list(range(len(hits))) and len(cache) == len(hits)
    for h, r in zip(hits, results):
        assert h.refined_box == r.box and h.refined_score == r.score
    assert [h.score for h in hits] == [0.9, 0.8, 0.7, 0.6, 0.5]  # refinement alone never re-scores

    # the same query again comes from the cache, with the same boxes
    rec = Recording(clip_embedder)
    again = refine_hits(Refiner(rec), hits, q, cache=cache)
    assert rec.batches == [] and [r.box for r in again] == [r.box for r in results]
    # another query, or an edited photo, is refined afresh
    assert cache.get(hits[0].path, q + 0.01, refiner.strategy) is None
    st = os.stat(hits[1].path)
    os.utime(hits[1].path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.get(hits[1].path, q, refiner.strategy) is None
    assert cache.get(hits[2].path, q, refiner.strategy) is not None


def test_cancel_stops_the_list_and_caches_nothing_half_done(clip_embedder, hits_and_query):
    hits, q = hits_and_query
    cancel = threading.Event()
    cache = RefineCache()
    seen = []

    def on_result(i, hit, result):
        seen.append(i)
        if len(seen) == 2:
            cancel.set()  # a new query arrived

    results = refine_hits(Refiner(clip_embedder), hits, q, on_result=on_result, cancel=cancel, cache=cache)
    assert len(seen) == 2 and [i for i, r in enumerate(results) if r is not None] == sorted(seen)
    assert all(h.refined_box is None for i, h in enumerate(hits) if i not in seen) and len(cache) == 2

    # cancelled in the middle of one hit: the result says so and is not cached
    calls = []

    def on_step(result):
        calls.append(result.steps)
        cancel.set()

    cancel.clear()
    # a query that one of the first step's windows answers best (its own crop), so a step is taken
    hit = hits[3]
    first = windows(hit.box, hit.width, hit.height, RefineStrategy())[0]
    q = clip_embedder.embed_images([Image.open(hit.path).convert("RGB").crop(first.as_list())])[0]
    r = Refiner(clip_embedder, RefineStrategy()).refine(hit, q, cancel, on_step=on_step)
    assert r.cancelled and calls == [1] and r.steps == 1
    cache.put(hits[3].path, q, RefineStrategy(), r)
    assert cache.get(hits[3].path, q, RefineStrategy()) is None


def test_together_batches_each_level_across_hits_with_the_same_boxes(clip_embedder, hits_and_query):
    """A screenful level by level: the top hit alone first (its outline comes early), then step k of
    every other hit in one model call (cut in chunks of LEVEL_CHUNK crops), with the boxes the
    one-by-one way finds."""
    hits, q = hits_and_query
    strategy = RefineStrategy(grid=3, max_steps=3, polish=1)
    # one by one, recording each hit's batches
    alone = Recording(clip_embedder)
    per_hit = []
    one_by_one = []
    for h in hits:
        before = len(alone.batches)
        one_by_one.append(Refiner(alone, strategy).refine(h, q))
        per_hit.append(alone.batches[before:])
    events: list[tuple] = []

    class Logged(Recording):
        def embed_images(self, images):
            events.append(("batch", len(images)))
            return super().embed_images(images)

    rec = Logged(clip_embedder)
    results = refine_hits(
        Refiner(rec, strategy),
        [replace(h) for h in hits],
        q,
        on_result=lambda i, h, r: events.append(("result", i)),
        on_step=lambda i, h, r: events.append(("step", i)),
    )
    assert [r.box for r in results] == [r.box for r in one_by_one]
    assert [r.crops for r in results] == [r.crops for r in one_by_one]
    np.testing.assert_allclose([r.score for r in results], [r.score for r in one_by_one], atol=1e-5)
    # the top hit's own batches come first, and it is reported before the others' first batch
    lead_batches = len(per_hit[0])
    assert rec.batches[:lead_batches] == per_hit[0]
    assert events.index(("result", 0)) < [i for i, e in enumerate(events) if e[0] == "batch"][lead_batches]
    # then one model call per level: level k holds the k-th batch of every hit still refining
    rest = per_hit[1:]
    levels = [sum(b[k] for b in rest if len(b) > k) for k in range(max(len(b) for b in rest))]
    chunks = [min(LEVEL_CHUNK, n - k) for n in levels for k in range(0, n, LEVEL_CHUNK)]
    assert rec.batches[lead_batches:] == chunks and len(chunks) < sum(len(b) for b in rest)
    # every step that moved a box was shown, and each hit was reported once
    assert sorted(i for kind, i in events if kind == "result") == list(range(len(hits)))
    for i, r in enumerate(results):
        assert sum(1 for e in events if e == ("step", i)) == r.steps


def test_together_cancel_between_chunks_reports_and_caches_nothing_unfinished(clip_embedder, hits_and_query):
    hits, q = hits_and_query
    cancel = threading.Event()
    cache = RefineCache()
    strategy = RefineStrategy(grid=3)  # the first level of the four hits after the top one: > 1 chunk
    first_level = sum(1 + len(windows(h.box, h.width, h.height, strategy)) for h in hits[1:])
    assert first_level > LEVEL_CHUNK
    lead_batches: list[int] = []

    class CancelInTheFirstLevel(Recording):
        def embed_images(self, images):
            if lead_batches:
                cancel.set()  # a new query arrives while the first chunk of the level is in the model
            return super().embed_images(images)

    rec = CancelInTheFirstLevel(clip_embedder)
    seen = []

    def on_result(i, h, r):
        seen.append(i)
        lead_batches.append(len(rec.batches))

    results = refine_hits(Refiner(rec, strategy), hits, q, on_result=on_result, cancel=cancel, cache=cache)
    # the top hit was done before; the chunk in flight finishes; no further chunk starts
    assert seen == [0] and rec.batches[lead_batches[0] :] == [LEVEL_CHUNK]
    assert results[1:] == [None] * (len(hits) - 1) and len(cache) == 1
    assert all(h.refined_box is None for h in hits[1:])


def test_an_unreadable_photo_is_reported_not_raised(clip_embedder, hits_and_query):
    hits, q = hits_and_query
    os.remove(hits[1].path)
    errors = []
    results = refine_hits(Refiner(clip_embedder), hits, q, on_error=lambda i, h, why: errors.append((i, why)))
    assert errors == [(1, "the file no longer exists")]
    assert results[1] is None and results[0] is not None and results[2] is not None


def test_rerank_moves_only_refined_hits():
    def hit(name, score, refined):
        h = PhotoHit(name, score, Box(0, 0, 10, 10), "global", 0, 10, 10)
        h.refined_score = refined
        return h

    hits = [hit("a", 0.9, 0.5), hit("b", 0.8, 0.7), hit("c", 0.7, None), hit("d", 0.6, 0.6)]
    assert [h.path for h in rerank_by_refined(hits)] == ["b", "d", "c", "a"]
    assert [h.path for h in hits] == ["a", "b", "c", "d"]  # the input list is left as it was


def test_refine_works_on_the_decoded_image_it_is_given(clip_embedder):
    img = Image.open(scene_photos(1)[0]).convert("RGB")
    d = DecodedImage(img, img.width, img.height)
    hit = _hit_for("/nonexistent/photo.jpg", Box(0, 0, img.width // 3, img.height // 3), img.size)
    r = Refiner(clip_embedder).refine(hit, clip_embedder.embed_texts(["a cat"])[0], image=d)
    assert r.crops >= 1 and r.tile_box == hit.box


# -- the command line ----------------------------------------------------------------------------------
def test_cli_search_refine_json(tmp_path, tiny_clip, photo_dir, capsys, untouched):
    from sorce_desktop.cli import main

    untouched(photo_dir)
    data = no_text_reading(tmp_path / "data")
    assert main(["index", str(photo_dir), "--model", str(tiny_clip), "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["search", "a bicycle", "--top", "3", "--refine", "--json", "--data-dir", data]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3
    for h in hits:
        assert {"box", "refined_box", "refined_score"} <= set(h)
        x0, y0, x1, y1 = h["refined_box"]
        assert 0 <= x0 < x1 <= h["width"] and 0 <= y0 < y1 <= h["height"]
        assert isinstance(h["refined_score"], float)
    # without --refine there is no refined box
    assert main(["search", "a bicycle", "--top", "3", "--json", "--data-dir", data]) == 0
    assert all("refined_box" not in h for h in json.loads(capsys.readouterr().out))
