"""The multimodal-LLM backend (Regional Prompts, shared image prefix) on tiny random LLaVA-NeXT and
Qwen2-VL models built from configs: prompts, equivalence with the paper's full passes, boxes, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import no_text_reading, scene_photos
from PIL import Image

from sorce_desktop.core.photos.images import DecodedImage, load_image
from sorce_desktop.core.regions import PROMPT_LAYOUTS, PromptLayout, PromptRegion, get_layout

REP = get_layout("rep")
FAMILIES = ["tiny-llava-next", "tiny-qwen2-vl"]


@pytest.fixture(scope="module", autouse=True)
def _flush_denormals():
    # The tiny models' strong random init drives some activations into denormal floats, which make
    # a CPU tens of times slower; flushing them to zero changes nothing the tests compare.
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def mllm_folders(tmp_path_factory) -> dict:
    from sorce_desktop.bench.synthetic import build_mllm

    return {spec: build_mllm(tmp_path_factory.mktemp(spec), spec, seed=3) for spec in FAMILIES}


@pytest.fixture(scope="module")
def embedders(mllm_folders) -> dict:
    from sorce_desktop.core.models.mllm import MLLMEmbedder

    return {spec: MLLMEmbedder(folder) for spec, folder in mllm_folders.items()}


def _photos() -> list[DecodedImage]:
    """Three photos of different sizes and aspect ratios (landscape, portrait, square)."""
    out = []
    for path, size in zip(scene_photos(3), [(120, 90), (64, 112), (96, 96)]):
        im = Image.open(path).convert("RGB").resize(size)
        out.append(DecodedImage(im, im.width, im.height))
    return out


def _paper_embedding(emb, prompt: str, image: Image.Image | None) -> np.ndarray:
    """One full forward pass exactly as the authors' code does it: the full model, batch of one,
    ``hidden_states[-1][:, -1, :]``, L2-normalised."""
    if image is None:
        inputs = emb.processor.tokenizer([prompt], return_tensors="pt")
    else:
        inputs = emb.processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        h = emb.model(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1][:, -1, :]
    return torch.nn.functional.normalize(h.float(), dim=-1)[0].numpy()


# -- prompts -------------------------------------------------------------------------------------------
# Copied from MCG-NJU/SORCE eval_sorce.py: llama3_template / qwen2_template, img_prompt / text_prompt
# of main(), and emb_data_position's prompt.replace('above image', 'the ... corner in the above image').
PAPER_LLAMA3 = [
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummarize above image in one word: <|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n \n",
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummarize the left upper corner in the above image in "
    "one word: <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummarize the left lower corner in the above image in "
    "one word: <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummarize the right upper corner in the above image in "
    "one word: <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummarize the right lower corner in the above image in "
    "one word: <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
]
PAPER_LLAMA3_TEXT = (
    "<|start_header_id|>user<|end_header_id|>\n\na red kite\nSummarize above sentence in one word: <|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n \n"
)
_QWEN_HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
_QWEN_TAIL = "<|im_end|>\n<|im_start|>assistant\n"
PAPER_QWEN2 = [
    _QWEN_HEAD + "<|vision_start|><|image_pad|><|vision_end|>\nSummarize " + s + " in one word:" + _QWEN_TAIL
    for s in (
        "above image",
        "the left upper corner in the above image",
        "the left lower corner in the above image",
        "the right upper corner in the above image",
        "the right lower corner in the above image",
    )
]
PAPER_QWEN2_TEXT = _QWEN_HEAD + "a red kite\nSummarize above sentence in one word:" + _QWEN_TAIL


@pytest.mark.parametrize(
    "spec, images, text",
    [("tiny-llava-next", PAPER_LLAMA3, PAPER_LLAMA3_TEXT), ("tiny-qwen2-vl", PAPER_QWEN2, PAPER_QWEN2_TEXT)],
)
def test_prompts_are_the_papers_templates_byte_for_byte(embedders, spec, images, text):
    emb = embedders[spec]
    assert [p.encode() for p in emb.image_prompts(REP)] == [p.encode() for p in images]
    assert emb.text_prompt("a red kite").encode() == text.encode()
    assert [r.name for r in REP.regions(640, 480)] == [
        "global",
        "left_upper",
        "left_lower",
        "right_upper",
        "right_lower",
    ]


# -- shared prefix == the paper's five full passes ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("spec", FAMILIES)
def test_shared_prefix_equals_independent_full_passes(embedders, spec):
    emb = embedders[spec]
    photos = _photos()
    emb.batch_size = len(photos)  # all three sizes in one batch: padded prefill, per-row positions
    got = emb.embed_photos(photos, REP)
    prompts = emb.image_prompts(REP)
    for photo, regions in zip(photos, got):
        assert [r.name for r in regions] == [p.name for p in REP.prompts]
        for prompt, region in zip(prompts, regions):
            ref = _paper_embedding(emb, prompt, photo.image)
            assert float(ref @ region.vector) >= 0.9999, (spec, region.name)
        # the regional prompts do change the embedding (a backend ignoring them would pass the above
        # for the global prompt only)
        sims = [float(regions[0].vector @ r.vector) for r in regions[1:]]
        assert max(sims) < 0.99
    # different photos in one batch never leak into each other
    assert float(got[0][0].vector @ got[1][0].vector) < 0.99
    if spec != "tiny-llava-next":
        return  # (the full-pass path is the same code for both families; once is enough)
    # the benchmark's "five full passes" way gives the same vectors too
    full = emb.embed_photos_full_passes(photos, REP)
    for a, b in zip(full, got):
        assert min(float(x.vector @ y.vector) for x, y in zip(a, b)) >= 0.9999


@pytest.mark.parametrize("spec", FAMILIES)
def test_queries_use_sentence_and_global_prompts(embedders, spec):
    emb = embedders[spec]
    texts = ["a red kite", "the cat on the windowsill in the back"]
    vecs = emb.embed_texts(texts)
    assert vecs.shape == (2, emb.dim)
    for t, v in zip(texts, vecs):
        assert float(_paper_embedding(emb, emb.text_prompt(t), None) @ v) >= 0.9999
    photo = _photos()[0]
    image_vec = emb.embed_images([photo.image])[0]
    assert float(image_vec @ emb.embed_photos([photo], REP)[0][0].vector) >= 0.9999


def test_a_new_prompt_region_needs_no_backend_change(embedders):
    emb = embedders["tiny-llava-next"]
    centre = PromptLayout(
        "rep_centre",
        "test: the paper's five plus the centre",
        prompts=REP.prompts
        + (PromptRegion("centre", "the center in the above image", (0.25, 0.25, 0.75, 0.75)),),
    )
    photo = _photos()[0]
    regions = emb.embed_photos([photo], centre)[0]
    assert [r.name for r in regions][-1] == "centre"
    assert regions[-1].box.as_list() == [30, 22, 90, 68]
    prompt = emb.image_prompts(centre)[-1]
    assert prompt.count("Summarize the center in the above image in one word: ") == 1
    assert float(_paper_embedding(emb, prompt, photo.image) @ regions[-1].vector) >= 0.9999


def test_out_of_memory_halves_the_batch(embedders, monkeypatch):
    emb = embedders["tiny-llava-next"]
    photos = _photos()
    emb.batch_size = 3
    want = emb.embed_photos(photos, REP)
    real = emb._shared_prefix_pass
    sizes = []

    def tight(images, split):
        sizes.append(len(images))
        if len(images) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(images, split)

    monkeypatch.setattr(emb, "_shared_prefix_pass", tight)
    emb.batch_size = 3
    got = emb.embed_photos(photos, REP)
    assert sizes == [3, 1, 1, 1] and emb.batch_size == 1
    for a, b in zip(want, got):
        assert min(float(x.vector @ y.vector) for x, y in zip(a, b)) >= 0.9999


def test_crop_layouts_are_refused(embedders):
    emb = embedders["tiny-llava-next"]
    assert emb.layouts()[0] == "rep" and set(emb.layouts()) == set(PROMPT_LAYOUTS)
    with pytest.raises(ValueError, match="crop layout"):
        emb.embed_photos(_photos()[:1], get_layout("grid2"))


# -- boxes after EXIF rotation -------------------------------------------------------------------------
def test_boxes_are_quadrants_of_the_upright_photo(embedders, tmp_path):
    # Stored 120x80 with orientation 6 (shown rotated 90 degrees clockwise): upright it is 80x120.
    # Each upright quadrant has its own colour.
    colours = {
        "left_upper": (255, 0, 0),
        "right_upper": (0, 255, 0),
        "left_lower": (0, 0, 255),
        "right_lower": (255, 255, 0),
    }
    up = Image.new("RGB", (80, 120))
    up.paste(colours["left_upper"], (0, 0, 40, 60))
    up.paste(colours["right_upper"], (40, 0, 80, 60))
    up.paste(colours["left_lower"], (0, 60, 40, 120))
    up.paste(colours["right_lower"], (40, 60, 80, 120))
    stored = up.transpose(Image.Transpose.ROTATE_90)  # undo a clockwise turn: what a camera would store
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    assert Image.open(path).size == (120, 80)

    photo = load_image(path)
    assert (photo.width, photo.height) == (80, 120)
    regions = {r.name: r for r in embedders["tiny-llava-next"].embed_photos([photo], REP)[0]}
    assert regions["global"].box.as_list() == [0, 0, 80, 120]
    assert regions["left_upper"].box.as_list() == [0, 0, 40, 60]
    assert regions["right_lower"].box.as_list() == [40, 60, 80, 120]
    for name, colour in colours.items():
        crop = np.asarray(photo.crop(regions[name].box)).reshape(-1, 3).mean(0)
        assert np.abs(crop - np.array(colour)).max() < 30, name


# -- index -> search through the command line ----------------------------------------------------------
def test_cli_index_and_search_with_an_mllm(mllm_folders, tmp_path, untouched, capsys):
    from sorce_desktop import cli

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in scene_photos(4, start=10):
        shutil.copy2(p, photos / p.name)
    untouched(photos)
    data = no_text_reading(tmp_path / "data")
    model = str(mllm_folders["tiny-llava-next"])

    assert cli.main(["index", str(photos), "--model", model, "--data-dir", data, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == 4 and summary["failed"] == 0

    assert cli.main(["status", "--data-dir", data, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["layout"] == "rep" and status["model"] == model and status["vectors"] == 4 * 5

    assert cli.main(["search", "a dog on the grass", "--data-dir", data, "--json", "--top", "4"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4
    names = {r.name for r in REP.prompts}
    for h in hits:
        assert h["region"] in names
        x0, y0, x1, y1 = h["box"]
        assert 0 <= x0 < x1 and 0 <= y0 < y1

    # an image query (global prompt) finds its own photo first, scored by its own global region
    target = sorted(photos.glob("*.jpg"))[2]
    assert cli.main(["search", "--image", str(target), "--data-dir", data, "--json", "--top", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"].endswith(target.name) and hits[0]["score"] > 0.9999
    assert hits[0]["region"] == "global"


@pytest.mark.slow
def test_bench_mllm_runs_and_reports_both_ways(mllm_folders, capsys):
    from sorce_desktop import cli

    assert (
        cli.main(
            ["bench", "mllm", "--model", str(mllm_folders["tiny-llava-next"]), "--photos", "2", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["photos"] == 2 and out["prompts"] == 5
    assert out["full_photos_per_s"] > 0 and out["shared_photos_per_s"] > 0
    assert out["min_cosine_full_vs_shared"] >= 0.9999


# -- first-run advice ----------------------------------------------------------------------------------
def test_model_advice_follows_the_hardware():
    from sorce_desktop.core.models.advice import Hardware, recommend_model
    from sorce_desktop.core.models.registry import DEFAULT_MODEL, model_info

    big = recommend_model(Hardware("cuda", "NVIDIA H100", 80.0))
    assert big.kind == "mllm" and model_info(big.model_id).kind == "mllm"
    assert big.model_id == "lcxrocks/e5-v-ReP"
    small_gpu = recommend_model(Hardware("cuda", "GeForce GTX 1060", 8.0))
    assert small_gpu.model_id == "Qwen/Qwen2-VL-2B-Instruct"
    tiny_gpu = recommend_model(Hardware("cuda", "GeForce GT 1030", 2.0))
    assert tiny_gpu.kind == "dual" and "GB" in tiny_gpu.reason
    assert recommend_model(Hardware("mps", "Apple arm64", 36.0)).model_id == "lcxrocks/e5-v-ReP"
    assert recommend_model(Hardware("mps", "Apple arm64", 8.0)).kind == "dual"
    cpu = recommend_model(Hardware("cpu", "Intel Core i5", 16.0))
    assert cpu.model_id == DEFAULT_MODEL and cpu.kind == "dual"
    assert "CPU" in cpu.reason and "minutes per photo" in cpu.reason
    assert recommend_model().hardware.device in ("cuda", "mps", "cpu")


def test_cli_warns_of_an_mllm_on_a_cpu(monkeypatch, capsys):
    from sorce_desktop import cli
    from sorce_desktop.core.models import advice

    class Lib:  # only what _mllm_note asks of a library (said before the model loads: settle, search_model)
        def model_id(self):
            return "lcxrocks/e5-v-ReP"

    for device, warned in (("cpu", True), ("cuda", False), ("mps", False)):
        monkeypatch.setattr(advice, "detect_hardware", lambda d=device: advice.Hardware(d, "x", 64.0))
        cli._mllm_note(Lib(), None)
        assert ("minutes per photo" in capsys.readouterr().err) == warned, device
