"""Multimodal-LLM backend: the SORCE paper's Regional Prompts (ReP) with a shared image prefix.

A photo is embedded by a multimodal LLM (LLaVA-NeXT such as E5-V / e5-v-ReP, or Qwen2-VL) prompted
to "Summarize above image in one word: "; the embedding is the last token's final hidden state,
L2-normalised (E5-V). Regional prompts replace "above image" with "the left upper corner in the above
image" and so on, giving one embedding per region of a prompt-set layout (``regions.PROMPT_LAYOUTS``).

The paper's code runs one full forward pass per prompt. All prompts of a photo share every token up
to the regional words (chat header, all image tokens, the newline, "Summarize"), and prefill of those
thousands of image tokens is nearly all the cost. So the shared prefix runs once for a batch of
photos, its key/value cache is repeated once per prompt, and only the short regional suffixes run on
top of it, batched together: five embeddings cost little more than one.

Templates and image-token settings follow the authors' code exactly; each constant says where it
comes from. The prompts are data: a new prompt-set layout needs no change here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sorce_desktop.core.models.base import Embedder, ModelError, RegionEmbedding, normalize
from sorce_desktop.core.models.dual import folder_fingerprint, pick_device, pick_dtype
from sorce_desktop.core.photos.images import DecodedImage
from sorce_desktop.core.regions import PROMPT_LAYOUTS, PromptLayout, RegionLayout

log = logging.getLogger(__name__)

# -- prompt templates --------------------------------------------------------------------------------
# MCG-NJU/SORCE, eval_sorce.py (module constants `llama3_template`, `qwen2_template`; the same
# `llama3_template` is in kongds/E5-V retrieval.py and the royokong/e5-v model card).
LLAMA3_TEMPLATE = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
QWEN2_TEMPLATE = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"

#: The words the regional prompts replace (eval_sorce.py, emb_data_position:
#: ``prompt.replace('above image', 'the left upper corner in the above image')``).
GLOBAL_SUBJECT = "above image"
#: Stands for the query text in a sentence prompt (eval_sorce.py: ``prompt.replace('<sent>', text)``).
SENT = "<sent>"


@dataclass(frozen=True)
class PromptFamily:
    """A model family's image and sentence prompts, before regional words and query text go in."""

    name: str
    image_prompt: str
    text_prompt: str
    #: the placeholder the processor expands into the image tokens
    image_placeholder: str


# eval_sorce.py, main(): `if llava_llama3:` (E5-V and e5-v-ReP run as llava_llama3), `elif qwen2vl:`,
# and the LLaVA-NeXT Mistral prompt of its `else:` branch. Note E5-V's model card writes "Summary above
# image"; the SORCE code (whose numbers the paper reports) writes "Summarize", which is what we use.
PROMPT_FAMILIES: dict[str, PromptFamily] = {
    "llama3": PromptFamily(
        "llama3",
        LLAMA3_TEMPLATE.format("<image>\nSummarize above image in one word: "),
        LLAMA3_TEMPLATE.format("<sent>\nSummarize above sentence in one word: "),
        "<image>",
    ),
    "qwen2": PromptFamily(
        "qwen2",
        QWEN2_TEMPLATE.format(
            "<|vision_start|><|image_pad|><|vision_end|>\nSummarize above image in one word:"
        ),
        QWEN2_TEMPLATE.format("<sent>\nSummarize above sentence in one word:"),
        "<|image_pad|>",
    ),
    "mistral": PromptFamily(
        "mistral",
        "[INST] <image>\nSummarize above image in one word: [/INST]",
        "[INST] <sent>\nSummarize above sentence in one word: [/INST]",
        "<image>",
    ),
}

# eval_sorce.py, init_model_and_transform(): Qwen2VLProcessor.from_pretrained(..., min_pixels=256 * 28 * 28,
# max_pixels=1800 * 28 * 28): between 256 and 1800 merged image tokens per photo.
QWEN2VL_MIN_PIXELS = 256 * 28 * 28
QWEN2VL_MAX_PIXELS = 1800 * 28 * 28


def regional_prompt(image_prompt: str, subject: str) -> str:
    """The image prompt for one region, built exactly as eval_sorce.py builds it."""
    return image_prompt.replace(GLOBAL_SUBJECT, subject)


def sentence_prompt(text_prompt: str, text: str) -> str:
    return text_prompt.replace(SENT, text)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


@dataclass
class _Split:
    """Where a prompt set's token sequences part: the shared prefix ends ``len(suffix)`` tokens before
    the end of each prompt (the image tokens, whose count depends on the photo, all lie before)."""

    prompts: list[str]
    suffixes: list[list[int]]


class MLLMEmbedder(Embedder):
    kind = "mllm"

    def __init__(
        self,
        folder: str | Path,
        model_id: str | None = None,
        device: str | None = None,
        *,
        dtype: torch.dtype | None = None,
        batch_size: int | None = None,
    ):
        from transformers import AutoConfig

        folder = Path(folder)
        self.folder = folder
        self.model_id = model_id or str(folder)
        try:
            config = AutoConfig.from_pretrained(folder)
        except Exception as exc:
            raise ModelError(f"The model at {folder} cannot be read: {exc}") from exc
        self.model_type = config.model_type
        if self.model_type not in ("llava_next", "qwen2_vl"):
            raise ModelError(f"{self.model_id} is a {self.model_type!r} model, not LLaVA-NeXT or Qwen2-VL.")
        self.device = pick_device(device)
        self.dtype = dtype or pick_dtype(self.device)
        try:
            if self.model_type == "llava_next":
                self._load_llava_next(folder, config)
            else:
                self._load_qwen2_vl(folder, config)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"The model at {folder} cannot be loaded: {exc}") from exc
        self.model.eval()
        self.tokenizer = self.processor.tokenizer
        # eval_sorce.py: `transform.tokenizer.padding_side = "left"`, so the last position of every row is
        # its prompt's last token; Llama 3 has no pad token and pads with end-of-sequence.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
        self.dim = int(self.model.config.get_text_config().hidden_size)
        # Photos per prefill: the key/value cache of one E5-V photo is ~0.4 GB in bf16 and is repeated
        # per prompt for the suffixes; out-of-memory halves this on the fly.
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        self._splits: dict[str, _Split] = {}
        self._fingerprint = f"{self.model_id}@{folder_fingerprint(folder)}"
        self.notice: str | None = None
        if self.device.type == "cpu":
            self.notice = (
                f"{self.model_id} is a multimodal LLM running on the CPU: expect a long time per photo. "
                "A CUDA GPU or Apple silicon makes it practical; a dual encoder is the fast choice on a CPU."
            )
            log.warning(self.notice)

    # -- loading -------------------------------------------------------------------------------------
    def _load_llava_next(self, folder: Path, config) -> None:
        from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

        processor = LlavaNextProcessor.from_pretrained(folder)
        # eval_sorce.py, "BEGIN: transformers 4.48+ fix": E5-V's saved processor predates these settings;
        # without them the processor counts image tokens wrongly (or fails on patch_size=None).
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        processor.num_additional_image_tokens = 1
        vocab = processor.tokenizer.get_vocab()
        if "<|start_header_id|>" in vocab:
            self.family = PROMPT_FAMILIES["llama3"]
        elif "[INST]" in vocab:
            self.family = PROMPT_FAMILIES["mistral"]
        else:
            raise ModelError(
                f"{self.model_id}: unknown LLaVA-NeXT chat format (neither Llama 3 nor Mistral tokens found)."
            )
        model = LlavaNextForConditionalGeneration.from_pretrained(folder, dtype=self.dtype)
        # eval_sorce.py sets `model.config.image_token_index = 128256` for Llama 3: the id the tokenizer
        # gives "<image>". Take it from the tokenizer so any LLaVA-NeXT folder agrees with itself.
        model.config.image_token_index = processor.image_token_id
        self.model = model.to(self.device)
        self.processor = processor
        self._input_size = int(config.vision_config.image_size)
        pinpoints = getattr(config, "image_grid_pinpoints", None) or [[self._input_size] * 2]
        # any-resolution tiling never looks at more than the largest pinpoint's short side
        self._decode_side = int(max(min(p) for p in pinpoints))

    def _load_qwen2_vl(self, folder: Path, config) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration

        image_processor = AutoImageProcessor.from_pretrained(
            folder, min_pixels=QWEN2VL_MIN_PIXELS, max_pixels=QWEN2VL_MAX_PIXELS
        )
        tokenizer = AutoTokenizer.from_pretrained(folder)
        self.processor = _Qwen2VLImageProcessorOnly(image_processor=image_processor, tokenizer=tokenizer)
        self.family = PROMPT_FAMILIES["qwen2"]
        self.model = Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=self.dtype).to(self.device)
        self._input_size = int(math.isqrt(QWEN2VL_MIN_PIXELS))
        self._decode_side = int(math.isqrt(QWEN2VL_MAX_PIXELS))

    # -- interface -----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def variant(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def layouts(self) -> list[str]:
        return list(PROMPT_LAYOUTS)

    def input_size(self) -> int:
        return self._input_size

    def decode_min_side(self, layout: RegionLayout) -> int | None:
        return self._decode_side

    def image_prompts(self, layout: PromptLayout) -> list[str]:
        """The image prompt of every region of ``layout``, in its order."""
        return [regional_prompt(self.family.image_prompt, p.subject) for p in layout.prompts]

    def text_prompt(self, text: str) -> str:
        # A query must not smuggle in an image placeholder: the model would look for an image.
        return sentence_prompt(
            self.family.text_prompt, text.replace(self.family.image_placeholder, " ").strip()
        )

    def embed_photos(
        self, photos: Sequence[DecodedImage], layout: RegionLayout
    ) -> list[list[RegionEmbedding]]:
        """Every prompt of ``layout`` for every photo, the image prefix computed once per photo."""
        return self._embed_photos(photos, layout, shared_prefix=True)

    def embed_photos_full_passes(
        self, photos: Sequence[DecodedImage], layout: RegionLayout
    ) -> list[list[RegionEmbedding]]:
        """The paper's way: one full forward pass per prompt (for the benchmark and the tests)."""
        return self._embed_photos(photos, layout, shared_prefix=False)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Whole images (image queries, refinement crops) with the global prompt."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        images = [im.convert("RGB") for im in images]
        return self._guarded(images, lambda chunk: self._full_pass(chunk, self.family.image_prompt))

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        prompts = [self.text_prompt(t) for t in texts]
        enc = self.tokenizer(prompts, padding=True, return_tensors="pt")
        out = self.model.model(
            input_ids=enc["input_ids"].to(self.device),
            attention_mask=enc["attention_mask"].to(self.device),
            use_cache=False,
        )
        # left padding: position -1 is every row's last prompt token (E5-V's `hidden_states[-1][:, -1, :]`;
        # the inner model's last_hidden_state is that final, normed hidden state without the logits)
        return normalize(out.last_hidden_state[:, -1, :].float().cpu().numpy())

    # -- the work ------------------------------------------------------------------------------------
    def _embed_photos(
        self, photos: Sequence[DecodedImage], layout: RegionLayout, *, shared_prefix: bool
    ) -> list[list[RegionEmbedding]]:
        if not isinstance(layout, PromptLayout):
            raise ValueError(
                f"{self.model_id} embeds regions through prompts; the layout {layout.name!r} is a crop layout "
                f"(use one of: {', '.join(self.layouts())})"
            )
        if not photos:
            return []
        split = self._split(layout)
        images = [p.image.convert("RGB") for p in photos]
        if shared_prefix:
            vectors = self._guarded(images, lambda chunk: self._shared_prefix_pass(chunk, split))
        else:
            vectors = np.concatenate(
                [
                    self._guarded(images, lambda chunk, prompt=prompt: self._full_pass(chunk, prompt))
                    for prompt in split.prompts
                ],
                axis=1,
            )
        r = len(split.prompts)
        vectors = vectors.reshape(len(photos), r, self.dim)
        out = []
        for photo, vecs in zip(photos, vectors):
            specs = layout.regions(photo.width, photo.height)
            out.append([RegionEmbedding(s.name, s.box, vecs[i]) for i, s in enumerate(specs)])
        return out

    def _guarded(self, images: list[Image.Image], run) -> np.ndarray:
        """``run`` over ``images`` in chunks of ``batch_size``; on out-of-memory the chunk is halved
        (and stays halved for later calls) instead of failing. Returns the rows concatenated."""
        out, i = [], 0
        while i < len(images):
            n = min(self.batch_size, len(images) - i)
            try:
                with torch.inference_mode():
                    out.append(run(images[i : i + n]))
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                _free_device_memory(self.device)
                if n == 1:
                    raise ModelError(
                        f"not enough {self.device.type.upper()} memory to embed one photo with {self.model_id}"
                    ) from exc
                self.batch_size = max(1, n // 2)
                log.warning("out of memory with %d photos per batch; retrying with %d", n, self.batch_size)
                continue
            i += n
        return np.concatenate(out, axis=0)

    def _inputs(self, prompts: list[str], images: list[Image.Image]) -> dict:
        enc = self.processor(text=prompts, images=images, return_tensors="pt", padding=True)
        batch = {k: v.to(self.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def _full_pass(self, images: list[Image.Image], prompt: str) -> np.ndarray:
        """One prompt, one full forward pass per photo batch: ``(n, dim)``."""
        batch = self._inputs([prompt] * len(images), images)
        out = self.model.model(**batch, use_cache=False)
        return normalize(out.last_hidden_state[:, -1, :].float().cpu().numpy())

    def _split(self, layout: PromptLayout) -> _Split:
        """Token suffixes of the layout's prompts after their longest common token prefix.

        Tokenizers split special tokens out before anything else, so the text after the image
        placeholder tokenizes the same however many image tokens the processor expands it into: the
        suffixes found here with the placeholder unexpanded are the suffixes of every photo's prompts.
        """
        if layout.name in self._splits:
            return self._splits[layout.name]
        if not layout.prompts or layout.prompts[0].frac != (0.0, 0.0, 1.0, 1.0):
            raise ValueError(f"the prompt layout {layout.name!r} must start with the whole photo")
        prompts = self.image_prompts(layout)
        ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        image_id = self.tokenizer.convert_tokens_to_ids(self.family.image_placeholder)
        common = 0
        while all(len(s) > common for s in ids) and len({s[common] for s in ids}) == 1:
            common += 1
        # every prompt keeps at least its own last token (a prompt set of one, or a prompt that is a
        # prefix of another, still gets its embedding from its own last position)
        common = min(common, min(len(s) for s in ids) - 1)
        last_image = max(i for i, t in enumerate(ids[0]) if t == image_id)
        if common <= last_image:
            raise ValueError(
                f"the prompts of {layout.name!r} differ before the image ends; no prefix to share"
            )
        split = _Split(prompts, [s[common:] for s in ids])
        self._splits[layout.name] = split
        return split

    def _shared_prefix_pass(self, images: list[Image.Image], split: _Split) -> np.ndarray:
        """All prompts of ``split`` for a batch of photos: ``(n, len(prompts) * dim)``.

        1. Prefill: the global prompt minus its suffix, for all photos (left-padded), keeping the cache.
        2. The cache is repeated once per prompt; the suffixes (right-padded, identical for every
           photo) run on top of it in one batch, at the positions they have in the full prompt.
        """
        n, r = len(images), len(split.prompts)
        batch = self._inputs([split.prompts[0]] * n, images)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        tail = torch.tensor(split.suffixes[0], device=ids.device)
        if not bool((ids[:, -len(tail) :] == tail).all()):
            raise RuntimeError("the processor's prompt does not end with the expected suffix")
        p = ids.shape[1] - len(tail)
        prefix = {
            k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")
        }
        prefix["input_ids"], prefix["attention_mask"] = ids[:, :p], mask[:, :p]
        if "mm_token_type_ids" in batch:
            prefix["mm_token_type_ids"] = batch["mm_token_type_ids"][:, :p]

        # positions of the prefix as an unpadded prompt would have them, and where each row's suffix starts
        if self.model_type == "qwen2_vl":
            pos, _ = self.model.model.get_rope_index(
                prefix["input_ids"],
                prefix["mm_token_type_ids"],
                image_grid_thw=prefix.get("image_grid_thw"),
                attention_mask=prefix["attention_mask"],
            )
            start = pos.masked_fill(prefix["attention_mask"][None] == 0, -1).amax(dim=(0, 2)) + 1  # (n,)
        else:
            pos = (prefix["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
            start = prefix["attention_mask"].long().sum(-1)
        out = self.model.model(**prefix, position_ids=pos, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        del out
        cache.batch_repeat_interleave(r)  # row b * r + j: photo b, prompt j

        s = max(len(x) for x in split.suffixes)
        pad = self.tokenizer.pad_token_id
        suf = torch.full((r, s), pad, dtype=ids.dtype, device=ids.device)
        suf_mask = torch.zeros((r, s), dtype=mask.dtype, device=ids.device)
        for j, x in enumerate(split.suffixes):
            suf[j, : len(x)] = torch.tensor(x, dtype=ids.dtype)
            suf_mask[j, : len(x)] = 1
        suf, suf_mask = suf.repeat(n, 1), suf_mask.repeat(n, 1)
        full_mask = torch.cat([prefix["attention_mask"].repeat_interleave(r, 0), suf_mask], dim=1)
        suf_pos = start.repeat_interleave(r)[:, None] + torch.arange(s, device=ids.device)[None, :]
        if self.model_type == "qwen2_vl":
            suf_pos = suf_pos[None].expand(3, -1, -1)  # text tokens: the same position on all three axes
        out = self.model.model(
            input_ids=suf, attention_mask=full_mask, position_ids=suf_pos, cache=cache, use_cache=True
        )
        last = torch.tensor([len(x) - 1 for x in split.suffixes], device=ids.device).repeat(n)
        h = out.last_hidden_state[torch.arange(n * r, device=ids.device), last]
        return normalize(h.float().cpu().numpy()).reshape(n, r * self.dim)


def _qwen2vl_processor_class():
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2VLImageProcessorOnly(Qwen2VLProcessor):
        """Qwen2-VL's processor without its video processor: the stock one cannot be built where
        torchvision is missing (its video-processor lookup fails), and photos never need it."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return Qwen2VLImageProcessorOnly


def _Qwen2VLImageProcessorOnly(**kwargs):
    return _qwen2vl_processor_class()(**kwargs)
