"""``python -m oscar_faas.runtime --host H --port P`` (the same as ``oscar-faas runtime``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import DEFAULT_HOST, DEFAULT_PORT, DESCRIPTION


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oscar_faas.runtime", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from .server import serve
    return serve(args.host, args.port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})")


if __name__ == "__main__":
    sys.exit(main())
