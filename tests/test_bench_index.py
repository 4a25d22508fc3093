"""bench index, end to end: the index command runs in fresh processes with its stages timed, text
reading on beside picture only, and says when photos became searchable (the probe once broke silently
when a function it times moved: this runs it)."""

from __future__ import annotations

import math
import shutil

import pytest
from conftest import scene_photos

from sorce_desktop.bench.index import _time_to_share, end_to_end


def test_time_to_share_counts_photos_across_commits():
    commits = [(2.0, 4), (1.0, 4), (3.5, 2)]
    assert _time_to_share(commits, 10, 0.1) == 1.0  # the first photo
    assert _time_to_share(commits, 10, 0.5) == 2.0
    assert _time_to_share(commits, 10, 1.0) == 3.5
    assert math.isnan(_time_to_share([(1.0, 3)], 10, 1.0))  # never all of them


@pytest.mark.slow
def test_end_to_end_times_each_stage_and_when_photos_became_searchable(tmp_path, tiny_siglip):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in scene_photos(3, 60):
        shutil.copy2(p, folder / p.name)
    models = tmp_path / "user-models"
    out = end_to_end({"few": folder}, tiny_siglip, 1, lambda *_: None, models)
    res = out["sets"]["few"]
    text, picture = res["text"], res["picture_only"]
    assert res["photos"] == 3
    # the first load quantised once and saved it in the shared per-user cache the runs then read
    # (the prepared file and its sidecar), and wrote the query encoder beside it (query/)
    prepared = models / "prepared"
    assert out["first_start"]["process_peak_memory_mb"] > 0
    assert len([p for p in prepared.iterdir() if p.is_file()]) == 2 and any((prepared / "query").iterdir())
    for mode in (text, picture):
        assert mode["photos_per_s"] > 0
        assert 0 < mode["model_resident_mb"] <= mode["process_peak_memory_mb"]
        assert mode["seconds_per_photo"]["picture_model"] > 0 and mode["seconds_per_photo"]["decode"] > 0
        assert mode["seconds_per_photo"]["commit"] > 0
    assert text["seconds_per_photo"]["text_read"] > 0 and picture["seconds_per_photo"]["text_read"] == 0
    assert text["text_stages_seconds_per_photo"]["detect"] > 0
    tts = text["time_to_searchable_s"]
    assert 0 < tts["picture"]["first"] <= tts["picture"]["all"] <= tts["text"]["all"]
    assert tts["picture"]["first"] <= tts["text"]["first"]  # a photo's picture is committed before its text
    assert set(picture["time_to_searchable_s"]) == {"picture"}


def test_the_cpus_vector_features_are_named_beside_the_figures():
    """An AVX2-only CPU runs float32 at about half the rate of one with AVX-512 and int8 without VNNI:
    the figures name which the machine has."""
    from sorce_desktop.bench.index import cpu_vector_features

    avx2 = "processor\t: 0\nflags\t\t: fpu sse4_2 fma avx avx2 bmi2\n"
    assert cpu_vector_features(avx2) == "AVX2 FMA (no AVX-512)"
    vnni = "flags\t: fma avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
    assert cpu_vector_features(vnni) == "AVX2 FMA AVX512F AVX512_VNNI AVX512_BF16"
    assert cpu_vector_features("") and cpu_vector_features()  # no flags line: torch says what it can


def test_a_photo_set_asked_for_with_no_photos_is_left_out(tmp_path, monkeypatch):
    """`--e2e-photos 0` times the camera photos alone (it once divided by zero); both 0 is refused."""
    from argparse import Namespace

    from sorce_desktop.bench import index as bench_index

    photos = scene_photos(2, 60)
    monkeypatch.setattr(bench_index, "hires_photos", lambda cache: photos)
    sets = bench_index._e2e_sets(Namespace(e2e_photos=0, e2e_hires=2), photos, tmp_path, tmp_path / "w")
    assert list(sets) == [bench_index.CAMERA_SET] and len(list(sets[bench_index.CAMERA_SET].iterdir())) == 2
    sets = bench_index._e2e_sets(Namespace(e2e_photos=1, e2e_hires=0), photos, tmp_path, tmp_path / "w2")
    assert list(sets) == [bench_index.COCO_SET] and len(list(sets[bench_index.COCO_SET].iterdir())) == 1
    with pytest.raises(ValueError, match="not both 0"):
        bench_index.run(Namespace(parts="e2e", e2e_photos=0, e2e_hires=0))
