"""The processes a runtime starts die with it, however it dies (SIGKILL and the OOM killer
included).

Per-call scripts (``/bin/sh`` and whatever they start: ``sleep 30``, a converter) and the
server of an exposed service each run in a process group of their own, so that killing one
call's group stops its whole tree and nothing else. Until now that group was also a *session*
of its own, out of reach of the provider, which stops the runtime's group: a runtime killed
with ``kill -9`` left its running scripts alive under the function's uid.

``PR_SET_PDEATHSIG`` alone does not fix it: it reaches only the process it is set on (``sh``,
not the ``sleep`` it started), and it fires when the *thread* that forked exits, which for a
runtime forking from a pool of call threads is not the runtime's death.

So:

* the runtime leads a session (the embedded provider starts it with a session of its own);
  each process it starts gets a process group of its own *inside* that session
  (:func:`own_group`), which a process can leave only by calling ``setsid`` itself;
* at start, the runtime forks a guardian (:func:`start`): a small child, in a group of its
  own, blocked reading a pipe whose write end only the runtime holds. When the runtime ends,
  however it ends, the kernel closes that end: the guardian reads EOF, SIGKILLs every process
  still in the runtime's session (a few rounds, for a script that forks meanwhile), says so on
  the runtime's stderr (the function's log) and exits.

A runtime that does not lead its session (started by hand from a shell) starts no guardian:
its session is the shell's.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

#: Sweeps of the session after the runtime died (a forking script may add processes while
#: one sweep kills).
SWEEPS = 20
#: Seconds between two sweeps that still found processes.
SWEEP_PAUSE = 0.02

#: The pipe's write end: held (never written) for the life of the runtime.
_lifeline: list[int] = []


def own_group(preexec: Callable[[], object] | None = None) -> dict[str, Any]:
    """``Popen`` arguments that give the child a process group of its own in the runtime's
    session (then ``preexec``, if any)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0, "preexec_fn": preexec}

    def setpgid_then() -> None:  # Python 3.10: no process_group argument
        os.setpgid(0, 0)
        if preexec is not None:
            preexec()
    return {"preexec_fn": setpgid_then}


def start() -> int | None:
    """Fork the guardian when this process leads its session; its pid, else None.

    Call it before any thread starts: the child runs Python after ``fork``.
    """
    session = os.getpid()
    if os.getsid(0) != session:
        return None
    read_end, write_end = os.pipe()  # not inherited by exec'd children (O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the guardian
        code = 1
        try:
            os.close(write_end)
            _guard(read_end, session)
            code = 0
        finally:
            os._exit(code)
    os.close(read_end)
    _lifeline.append(write_end)
    return pid


def _guard(read_end: int, session: int) -> None:
    os.setpgid(0, 0)  # out of the runtime's group, which its launcher signals to stop it
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # stderr (2) stays: the function's log
    os.closerange(3, read_end)
    os.closerange(read_end + 1, 1 << 16)
    while True:
        try:
            if not os.read(read_end, 1):
                break
        except InterruptedError:
            continue
    killed = sweep(session)
    if killed:
        os.write(2, f"guardian: the runtime (pid {session}) is gone; killed {killed} process(es)"
                    f" it had started\n".encode())


def sweep(session: int) -> int:
    """SIGKILL every process of ``session`` but this one (and their groups); how many."""
    me, killed = os.getpid(), set()
    for _ in range(SWEEPS):
        victims = [(pid, group) for pid, group in _members(session) if pid != me]
        if not victims:
            break
        for pid, group in victims:
            try:
                if group != os.getpgid(0):
                    os.killpg(group, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            killed.add(pid)
        time.sleep(SWEEP_PAUSE)
    return len(killed)


def _members(session: int) -> list[tuple[int, int]]:
    """``(pid, process group)`` of the live (not zombie) processes of ``session``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": state, ppid, pgrp, session
        if len(fields) > 3 and int(fields[3]) == session and fields[0] not in (b"Z", b"X"):
            found.append((int(entry), int(fields[2])))
    return found
