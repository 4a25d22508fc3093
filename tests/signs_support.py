"""A library of drawn photos indexed by the tiny random model, with lines of text recorded on some of
them (the store's own text tables, as the OCR pass writes them), placed so the picture ranking and the
word ranking disagree: the photo the picture model likes best for a word carries a *partial* read of
it, and an exact read sits on a photo the picture model ranks low."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conftest import no_text_reading
from gui_support import copy_photos

from sorce_desktop.core.regions import Box
from sorce_desktop.core.store.catalog import TextPhoto
from sorce_desktop.core.text.ocr import TextLine

ENGINE = "test-signs"
N_PHOTOS = 14


def line(text: str, x0: int, y0: int, x1: int, y1: int) -> TextLine:
    return TextLine(text, 0.9, Box(x0, y0, x1, y1), [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


@dataclass
class Signs:
    data: Path
    photos: Path
    exact: dict[str, str]  # word -> path of the photo with the exact whole-word read
    partial: dict[str, str]  # word -> path of the photo with a partial read
    boxes: dict[str, Box]  # path -> box of its line of words


def build_signs_library(tmp_path: Path, model: Path) -> Signs:
    from sorce_desktop.cli import main
    from sorce_desktop.core.library import Library
    from sorce_desktop.core.models.dual import DualEncoderEmbedder

    photos = copy_photos(tmp_path / "photos", N_PHOTOS)
    data = tmp_path / "data"
    no_text_reading(data)
    assert main(["index", str(photos), "--model", str(model), "--layout", "grid3", "--data-dir", str(data)]) == 0
    with Library(data) as lib:
        service = lib.search_service(DualEncoderEmbedder(model))
        exact, partial, boxes, items = {}, {}, {}, []
        used: set[int] = set()
        # "bakery": the picture's favourite reads BAKERV (one slip), an exact BAKERY sits at the bottom.
        # "stop": the picture's favourite reads ISTOP (the word inside another), an exact STOP second.
        for word, wrong, exact_at in (("bakery", "BAKERV", -1), ("stop", "ISTOP", 1)):
            ranked = [h for h in service.search_vector(service.query_vector(word), top=N_PHOTOS) if h.photo_id not in used]
            fav, other = ranked[0], ranked[exact_at]
            used |= {fav.photo_id, other.photo_id}
            for hit, text in ((fav, wrong), (other, word.upper())):
                w, h = hit.width, hit.height
                box = Box(w // 10, h // 2, w // 10 + w // 4, h // 2 + h // 12)
                boxes[hit.path] = box
                items.append(TextPhoto(hit.photo_id, None, [line(text, *box.as_list())]))
            partial[word], exact[word] = fav.path, other.path
        lib.store.commit_text(items, ENGINE, None)
    return Signs(data, photos, exact, partial, boxes)
