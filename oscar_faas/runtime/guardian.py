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
* at start, the runtime starts a guardian (:func:`start`): a few lines of ``/bin/sh``
  (:data:`GUARDIAN`, under 1 MB; a forked Python kept 5 MB of its own), in a group of its
  own, blocked reading a pipe whose write end only the runtime holds. When the runtime ends,
  however it ends, the kernel closes that end: the guardian reads EOF, SIGKILLs every process
  still in the runtime's session and their groups (a few rounds, for a script that forks
  meanwhile), says so on the runtime's stderr (the function's log) and exits.

A runtime that does not lead its session (started by hand from a shell) starts no guardian:
its session is the shell's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable

#: The guardian: ``$1`` is the runtime's session, stdin the pipe from the runtime. POSIX
#: sh (dash, busybox), builtins only but ``sleep`` between rounds: for every process of
#: the session but itself, ``/proc/<pid>/stat`` after the last ``) `` is ``state ppid pgrp
#: session ...`` (the command name before it may hold spaces and parentheses).
GUARDIAN = r"""
trap '' INT TERM HUP
while read -r _; do :; done
sid=$1 killed=0 round=0
while [ $round -lt 20 ]; do
    found=0
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [ "$pid" = $$ ] && continue
        read -r line 2>/dev/null <"$dir/stat" || continue
        set -f; set -- ${line##*) }; set +f
        [ "$4" = "$sid" ] || continue
        case $1 in Z|X) continue ;; esac
        [ "$3" = $$ ] || kill -s KILL -- "-$3" 2>/dev/null
        kill -s KILL "$pid" 2>/dev/null
        found=$((found + 1))
    done
    [ $found -eq 0 ] && break
    [ $round -eq 0 ] && killed=$found
    round=$((round + 1))
    sleep 0.02 2>/dev/null || sleep 1
done
[ $killed -eq 0 ] || echo "guardian: the runtime (session $sid) is gone; killed the $killed" \
    "process(es) it left" >&2
"""

#: The pipe's write end: held (never written) for the life of the runtime.
_lifeline: list[int] = []
_guardian: list[subprocess.Popen[bytes]] = []


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
    """Start the guardian when this process leads its session; its pid, else None (also
    when there is no ``/bin/sh``: a runtime in a container, where the container's end is
    the end of all its processes anyway). Only the first call starts one."""
    session = os.getpid()
    if _lifeline or os.getsid(0) != session:
        return None
    read_end, write_end = os.pipe()  # not inherited by other children (O_CLOEXEC)
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", GUARDIAN, "oscar-faas-runtime-guardian",
                                 str(session)], stdin=read_end, stdout=subprocess.DEVNULL,
                                **own_group())  # out of the group its launcher signals
    except OSError:
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    _lifeline.append(write_end)
    _guardian.append(proc)
    return proc.pid

