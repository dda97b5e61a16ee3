"""The Python a test hands to its functions (worker and server commands).

As root, the embedded provider runs each function as an unprivileged user of its own
(host mode isolation), who may not be able to run this interpreter (pyenv's under a 0700
``/root``): the provider then gives functions the system's Python of the same version, with
this installation's packages; tests use the same one. Otherwise it is ``sys.executable``.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=None)
def function_python() -> str:
    if os.geteuid() != 0:
        return sys.executable
    from oscar_faas.provider.isolation import function_python as find
    return find(Path(tempfile.mkdtemp(prefix="oscar-faas-test-python-")))[0]
