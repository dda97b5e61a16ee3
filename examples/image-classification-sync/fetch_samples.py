#!/usr/bin/env python3
"""Copy sample photographs that ship inside PyPI packages into a folder.

The repository commits no pictures: the samples are taken at run time from the
installed ``scikit-image`` (``pip install scikit-image==0.26.0``) or, for
``china``/``flower``, ``scikit-learn``.  The packages are located with
:func:`importlib.util.find_spec`, which does not import them, so this script
needs nothing but the standard library and runs with any Python 3 that has
the package installed.

Usage::

    python fetch_samples.py DEST [NAME ...]      # default NAME: chelsea
    python fetch_samples.py --list

Prints the path of every copied file, one a line.  Exit code 2 when a package
holding a requested sample is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """A photograph inside an installed package."""

    package: str  # import name
    pip_name: str
    relpath: str  # relative to the package folder
    description: str
    licence: str


SAMPLES: dict[str, Sample] = {
    "chelsea": Sample(
        "skimage",
        "scikit-image",
        "data/chelsea.png",
        "Chelsea the cat (tabby); expected ImageNet class: a cat (281-285)",
        "CC0, photographer Stefan van der Walt",
    ),
    "coffee": Sample(
        "skimage",
        "scikit-image",
        "data/coffee.png",
        "a cup of coffee; expected ImageNet class: espresso (967)",
        "CC0, photographer Rachel Michetti (courtesy of Pikolo Espresso Bar)",
    ),
    "rocket": Sample(
        "skimage",
        "scikit-image",
        "data/rocket.jpg",
        "Falcon 9 launch; expected ImageNet class: missile (657/744)",
        "public domain, SpaceX",
    ),
    "china": Sample(
        "sklearn",
        "scikit-learn",
        "datasets/images/china.jpg",
        "a Chinese temple",
        "CC BY 2.0, Flickr user danielbuechele (sklearn/datasets/images/README.txt)",
    ),
    "flower": Sample(
        "sklearn",
        "scikit-learn",
        "datasets/images/flower.jpg",
        "a flower",
        "CC BY 2.0, Flickr user vultilion (sklearn/datasets/images/README.txt)",
    ),
}


class MissingPackageError(LookupError):
    """The package that holds a sample is not installed for this interpreter."""


def sample_path(name: str) -> Path:
    """Return the installed path of sample ``name`` without importing its package.

    Raises:
        KeyError: unknown sample name.
        MissingPackageError: the package (or the file inside it) is absent.
    """
    sample = SAMPLES[name]
    spec = importlib.util.find_spec(sample.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"sample {name!r} needs the {sample.pip_name!r} package: pip install {sample.pip_name}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / sample.relpath
        if path.is_file():
            return path
    raise MissingPackageError(f"{sample.pip_name} is installed but has no {sample.relpath}")


def fetch(dest: str | Path, names: Sequence[str] = ("chelsea",)) -> list[Path]:
    """Copy the samples ``names`` into ``dest`` (created if needed); return the new paths."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        src = sample_path(name)
        out = target / src.name
        shutil.copyfile(src, out)
        copied.append(out)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dest", nargs="?", help="folder to copy the samples into")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(SAMPLES)}")
    parser.add_argument("--list", action="store_true", help="list the known samples and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, s in SAMPLES.items():
            print(f"{name:8} {s.pip_name}:{s.relpath}  {s.description}  [{s.licence}]")
        return 0
    if not args.dest:
        parser.error("DEST is required")
    unknown = [n for n in args.names if n not in SAMPLES]
    if unknown:
        parser.error(f"unknown sample(s) {', '.join(unknown)}; known: {', '.join(SAMPLES)}")
    try:
        for path in fetch(args.dest, args.names or ["chelsea"]):
            print(path)
    except MissingPackageError as exc:
        print(f"fetch_samples.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
