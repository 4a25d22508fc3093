"""Reading the text in photos: the detector and recogniser pipeline (ocr) and the detector network's folding of
constant scales into its convolutions (onnxfold)."""
