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

Two more modes, for the ``oscar`` template's image (which has no curl and no Python of its own
to rely on):

* ``--check [URL]``: exit 0 when ``GET URL`` (default ``http://127.0.0.1:8080/_/health``)
  answers 200, else 1; the image's HEALTHCHECK.
* ``--supervisor``: the one-shot supervisor (body on stdin, answer on stdout), what
  ``/oscar/bin/supervisor`` runs so that anything still calling OSCAR's ``envProcess`` path
  gets the same answer as before.

Without ``SCRIPT`` in the environment, the script baked into the image
(``/oscar/function/script.sh``) is used, in every mode.
"""

from __future__ import annotations

import os
import sys

from supervisor_entry import restore_system_env, use_baked_script

#: Set by staticx's bootloader for the program it runs; nothing the function needs.
STATICX_VARIABLES = ("STATICX_BUNDLE_DIR", "STATICX_PROG_PATH")
#: What ``--check`` asks when given no URL: the runtime as the template image starts it.
HEALTH_URL = "http://127.0.0.1:8080/_/health"


def check(url: str) -> int:
    """0 when ``GET url`` answers 200, else 1 (with the reason on stderr)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 (local URL)
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as err:
        print(f"oscar runtime check {url}: {err}", file=sys.stderr)
        return 1


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
    if sys.argv[1:2] == ["--check"] and len(sys.argv) <= 3:
        return check(sys.argv[2] if len(sys.argv) == 3 else HEALTH_URL)
    use_baked_script(os.environ)
    if sys.argv[1:] == ["--supervisor"]:
        del sys.argv[1]
        runtime_main = None
    if sys.argv[1:] == ["--version"]:
        import oscar_faas

        mode = "runtime" if runtime_main is not None else "supervisor (stand-in)"
        print(f"oscar-faas {oscar_faas.__version__} {mode}")
        return 0
    if runtime_main is not None:
        return runtime_main()
    from oscar_faas.supervisor.__main__ import main as supervisor_main

    return supervisor_main()


if __name__ == "__main__":
    sys.exit(main())
