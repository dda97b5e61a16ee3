"""The lifeline: a runtime started by the embedded provider holds its stdin, and stops when
it closes, however the provider ended. It must hold even when the runtime was started by a
provider that was itself stopping: that provider ignored SIGTERM, an ignored signal stays
ignored across exec, and the lifeline stops the runtime with SIGTERM."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys

import pytest

from oscar_faas.contract import ENV_RUNTIME_LIFELINE
from tests.supervisor.conftest import REPO

#: How long a runtime gets to stop once its lifeline is cut (its graceful stop takes < 5 s).
STOP_WITHIN = 20


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@pytest.mark.parametrize("parent_ignored_sigterm", [False, True])
def test_a_runtime_stops_when_its_lifeline_is_cut_at_once(parent_ignored_sigterm: bool) -> None:
    """stdin closed before the runtime is even up, as when a provider is killed while it
    starts a runtime: it stops, also when it was started with SIGTERM ignored (it used to
    miss that SIGTERM and run on, its provider gone, for good)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **{ENV_RUNTIME_LIFELINE: "stdin"},
               SCRIPT=base64.b64encode(b"echo hi\n").decode())
    proc = subprocess.Popen([sys.executable, "-m", "oscar_faas.runtime", "--host",
                             "127.0.0.1", "--port", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True,
                            preexec_fn=_ignore_sigterm if parent_ignored_sigterm else None)
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the runtime still ran {STOP_WITHIN} s after its lifeline was cut")
