"""PyInstaller entry point of the standalone oscar supervisor (``/oscar/bin/supervisor``).

The function image's base (the user's FDL image) may have no Python at all, or one too old
for oscar_faas, so the supervisor is frozen with its own interpreter. This script is what
PyInstaller freezes; it behaves exactly as ``python -m oscar_faas.supervisor`` (same env
contract: ``SCRIPT``, ``FUNCTION_CONFIG``, ``LOG_LEVEL``, ...), plus one fallback: when
``SCRIPT`` is unset or empty, a script baked into the image by faas-cli (the handler folder's
``script.sh``, copied to ``/oscar/function/``) is used, so a stack can carry the script as a
file rather than as base64 in an env var. ``SCRIPT`` always wins.

It also undoes what the frozen build does to the environment before the user script
inherits it: PyInstaller's bootloader points ``LD_LIBRARY_PATH`` at the bundled libraries
(libssl, libz, ...) and sets ``_PYI_*`` variables. Left alone, every program the user script
runs (the image's own python, TensorFlow, ...) would load our bundled libraries instead of
its own and could crash. The supervisor process itself keeps working: the dynamic loader
read ``LD_LIBRARY_PATH`` when the process started.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import MutableMapping

#: Where the template copies the handler folder's script; ``OSCAR_SCRIPT_FILE`` overrides it.
BAKED_SCRIPT = "/oscar/function/script.sh"


def restore_system_env(env: MutableMapping[str, str]) -> None:
    """Give child processes the environment the image had, not PyInstaller's."""
    if not getattr(sys, "frozen", False):
        return
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        env["LD_LIBRARY_PATH"] = original
    else:
        env.pop("LD_LIBRARY_PATH", None)
    for key in [key for key in env if key.startswith("_PYI_")]:
        del env[key]


def use_baked_script(env: MutableMapping[str, str]) -> None:
    """Fill ``SCRIPT`` from the baked-in script file when the env carries none."""
    if env.get("SCRIPT"):
        return
    path = Path(env.get("OSCAR_SCRIPT_FILE") or BAKED_SCRIPT)
    try:
        env["SCRIPT"] = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        pass  # no baked script either: the supervisor answers as OSCAR's does without one


def main() -> int:
    # The supervisor reads os.environ in its __main__, so the fallback is applied there
    # (this process runs one invocation and exits: nothing else shares that environment).
    restore_system_env(os.environ)
    use_baked_script(os.environ)
    from oscar_faas.supervisor.__main__ import main as supervisor_main

    return supervisor_main()


if __name__ == "__main__":
    sys.exit(main())
