"""Entry point of the static function runtime binary (``build-runtime.sh``).

The embedded provider's container runtime bind-mounts this binary, read-only, into the
function's own image (any image with ``/bin/sh``: glibc, musl or busybox-only) and runs
``/oscar/runtime --host 0.0.0.0 --port 8080``. Thin on purpose: it runs the function runtime
(``python -m oscar_faas.runtime``, issue 13) when this tree has it, else the one-shot
supervisor (``python -m oscar_faas.supervisor``: body on stdin, answer on stdout), so the
build and the containers can be proven before the runtime lands.

Like ``supervisor_entry.py`` it first gives child processes the image's own environment back
(PyInstaller's bootloader points ``LD_LIBRARY_PATH`` at the bundled libraries), and drops the
variables staticx's bootloader sets (``STATICX_BUNDLE_DIR``, ``STATICX_PROG_PATH``).
"""

from __future__ import annotations

import os
import sys

from supervisor_entry import restore_system_env, use_baked_script

#: Set by staticx's bootloader for the program it runs; nothing the function needs.
STATICX_VARIABLES = ("STATICX_BUNDLE_DIR", "STATICX_PROG_PATH")


def main() -> int:
    restore_system_env(os.environ)
    for key in STATICX_VARIABLES:
        os.environ.pop(key, None)
    try:
        from oscar_faas.runtime.__main__ import main as runtime_main
    except ModuleNotFoundError as err:  # the runtime (issue 13) is not in this tree yet
        if err.name not in ("oscar_faas.runtime", "oscar_faas.runtime.__main__"):
            raise  # the runtime is there but broken: say so, never fall back silently
        runtime_main = None
    if sys.argv[1:] == ["--version"]:
        import oscar_faas

        mode = "runtime" if runtime_main is not None else "supervisor (stand-in)"
        print(f"oscar-faas {oscar_faas.__version__} {mode}")
        return 0
    if runtime_main is not None:
        return runtime_main()
    use_baked_script(os.environ)
    from oscar_faas.supervisor.__main__ import main as supervisor_main

    return supervisor_main()


if __name__ == "__main__":
    sys.exit(main())
