"""``python3 -m oscar_classifier.worker``: the classifier as a warm worker.

The service opts in with one variable in its FDL::

    environment:
      variables:
        OSCAR_WORKER: python3 -m oscar_classifier.worker

The oscar-faas function runtime then starts this once per concurrency slot: it loads the
model once (``setup``), says ready, and answers each call through
:func:`oscar_classifier.classify_into`, the function ``python3 -m oscar_classifier
--output-dir`` (``script.sh``) uses, so a call answers the same JSON either way. An input
that is not an image fails that call (``InputImageError: cannot read an image ...``) and the
worker goes on. Where no runtime reads ``OSCAR_WORKER`` (OSCAR's own faas-supervisor), the
script runs once per call as before.

``oscar_worker`` is the runtime's helper module (protocol v1), which the runtime puts on the
worker's ``PYTHONPATH``; where oscar-faas itself is installed it is also
``oscar_faas.runtime.oscar_worker``.
"""

from __future__ import annotations

import os

from . import Classifier, classify_into, load_image, threads_from_env

try:
    import oscar_worker
except ImportError:  # run by hand next to an installed oscar-faas
    try:
        from oscar_faas.runtime import oscar_worker
    except ImportError:
        raise SystemExit(
            "oscar_classifier.worker: no module oscar_worker; this is a warm worker, started by "
            "the oscar-faas function runtime (service variable OSCAR_WORKER), which provides it"
        ) from None


def setup() -> Classifier:
    """Load the model once, with ``CLASSIFIER_NUM_THREADS`` from the function's env."""
    return Classifier(num_threads=threads_from_env(os.environ))


def handle(input_path: str, output_dir: str, env: dict[str, str], classifier: Classifier) -> None:
    """One call: ``$INPUT_FILE_PATH`` -> ``$TMP_OUTPUT_DIR/<name>.json``."""
    classify_into(classifier, load_image(input_path), input_path, output_dir)


def main() -> None:
    oscar_worker.serve(handle, setup)


if __name__ == "__main__":
    main()
