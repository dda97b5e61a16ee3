"""``python -m oscar_faas.supervisor``: the classic watchdog's ``fprocess``.

SIGTERM becomes ``SystemExit`` so the script's process group is killed and the temporary
directories are removed, instead of both being left behind.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from .core import supervise


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    return supervise(sys.stdin.buffer, sys.stdout.buffer, os.environ)


if __name__ == "__main__":
    sys.exit(main())
