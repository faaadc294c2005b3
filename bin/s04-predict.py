#!/usr/bin/env python
"""Predict segmentation masks for a folder of images, with a segmentation run's checkpoint or its ONNX file (both
predict whole images of any size tile by tile, the same way). Writes <out>/<image stem>.png (the training masks'
pixel values, e.g. 0 / 255) and <out>/predictions.json.

    python bin/s04-predict.py --model=runs/<name> --images=<folder> --out=masks            (the run's best checkpoint)
    python bin/s04-predict.py --model=runs/<name> --export --images=<folder>                (writes runs/<name>/model.onnx, predicts with it)
    python bin/s04-predict.py --model=runs/<name> --export --quantize=static --images=...   (and model.int8.onnx, calibrated on training tiles)
    python bin/s04-predict.py --model=runs/<name>/model.onnx --images=a.png,b.png --overlays --probabilities

The same as the `reprlab-predict` command that `pip install` puts on the PATH (reprlab.cli.predict_main); ONNX needs
`pip install "reprlab[onnx]"`.
"""
import sys

from reprlab.cli import predict_main

if __name__ == "__main__":
    sys.exit(predict_main())
