"""``python3 -m oscar_classifier``: classify one image in a new process.

Usage::

    python3 -m oscar_classifier IMAGE [-o OUTPUT.json | --output-dir DIR] [-k 5] [--timings]

Without ``-o`` or ``--output-dir`` the JSON goes to stdout. ``--output-dir DIR`` writes
``DIR/<image name without extension>.json``, as an OSCAR call does (``script.sh`` passes
``$TMP_OUTPUT_DIR``). ``CLASSIFIER_NUM_THREADS`` sets torch's intra-op threads.

Exit codes: 0 success, 2 bad usage or an input that is not a readable image (with a
message on stderr, and no output file), 1 any other failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import (
    DEFAULT_TOP_K,
    Classifier,
    InputImageError,
    classify_into,
    document_text,
    load_image,
    threads_from_env,
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m oscar_classifier",
        description="Classify one image with EfficientNet-Lite0 (ImageNet-1k); top-k as JSON.",
    )
    parser.add_argument("image", help="image file (JPEG, PNG, ...; any or no extension)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="write the JSON to this file instead of stdout")
    where.add_argument(
        "--output-dir", help="write DIR/<image name without extension>.json (an OSCAR call)"
    )
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
        print(f"oscar_classifier: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    classifier = Classifier(num_threads=threads_from_env(os.environ))
    t1 = time.perf_counter()
    if args.output_dir:
        classify_into(classifier, img, args.image, args.output_dir, top_k=args.top_k)
    else:
        text = document_text(classifier.predict(img, top_k=args.top_k))
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    t2 = time.perf_counter()
    if args.timings:
        print(
            f"oscar_classifier: model load {t1 - t0:.3f} s, inference {t2 - t1:.3f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
