"""Run the user script as OSCAR does: ``/bin/sh <script>``, stdout and stderr merged.

The merged output goes to a file, not memory, so a chatty script cannot exhaust it, and it is
kept byte for byte (OSCAR decoded it as UTF-8 and dropped invalid bytes). The script runs in its
own session so that, if the supervisor is interrupted, the whole process group is killed rather
than left running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Mapping

from .logs import SupervisorLog

#: How many bytes of script output are echoed into the log at DEBUG level.
DEBUG_ECHO_LIMIT = 64 << 10


def run_script(script: Path, env: Mapping[str, str], output: Path, log: SupervisorLog) -> int:
    """Run ``script`` with ``env``; write its merged output to ``output``; return its exit code.

    A script killed by signal N gives 128 + N, as a shell reports it.
    """
    with open(output, "wb") as sink:
        proc = subprocess.Popen(
            ["/bin/sh", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
        try:
            code = proc.wait()
        finally:
            if proc.returncode is None:  # interrupted: do not leave the script running
                _kill_group(proc)
    if log.enabled(logging.DEBUG):
        _echo(output, log)
    return code if code >= 0 else 128 - code


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _echo(output: Path, log: SupervisorLog) -> None:
    """Log the first lines of the script output, as OSCAR does at DEBUG."""
    with open(output, "rb") as text:
        head = text.read(DEBUG_ECHO_LIMIT)
    for line in head.decode("utf-8", "replace").splitlines():
        log.debug("script: %s", line)
