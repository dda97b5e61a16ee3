"""Fixtures for the whole suite.

As root, the embedded provider runs every function as a user of its own (host mode
isolation, ``oscar_faas/launchers/host/isolation.py``), and pytest's temporary folders are ``0700``
root. The scripts and files a test hands to its functions live there, so, as root, each
test's ``tmp_path`` is opened to them (``1777``, like ``/tmp``, with its parents crossable),
as a container would get them mounted. A provider's data dir inside it is still made ``0700``
by the provider itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def _open_to_functions(path: Path, base: Path) -> None:
    if os.geteuid() != 0:
        return
    for folder in path.parents:  # up to pytest-of-<user> (``base``) included
        if not folder.is_relative_to(base):
            break
        os.chmod(folder, os.stat(folder).st_mode | stat.S_IXOTH)
    os.chmod(path, 0o1777)


@pytest.fixture
def tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _open_to_functions(tmp_path, tmp_path_factory.getbasetemp().parent)
    return tmp_path


# --------------------------------------------------------------------------- leftovers

#: Set in this run's environment, so every gateway, provider and runtime a test starts
#: carries it (each copies ``os.environ``; a provider's host runtimes are found as its
#: descendants): a process found with it at the end was left behind by this run. A user's
#: own ``oscar-faas serve`` does not have it, and another run has a value of its own.
#: A host runtime whose provider died is nobody's descendant any more, and its environment
#: is the function's (no mark): such orphans count when they started after this run did.
LEFTOVER_MARK = "OSCAR_FAAS_TEST_RUN"
#: How long processes still stopping get before they count as left behind.
LEFTOVER_GRACE = float(os.environ.get("OSCAR_FAAS_TEST_LEFTOVER_GRACE") or 15)


def pytest_configure(config: pytest.Config) -> None:
    os.environ[LEFTOVER_MARK] = f"{os.getpid()}-{os.urandom(6).hex()}"


def _processes() -> dict[int, tuple[int, str, bytes, int]]:
    """Every live process: pid -> (parent pid, state, command line, start time in clock
    ticks since boot)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (int(fields[1]), fields[0], cmdline, int(fields[19]))
    return found


def _marked(pid: int, mark: bytes) -> bool:
    try:
        return mark in (Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False


def left_behind(mark: str) -> dict[int, str]:
    """oscar-faas processes (gateway, provider, runtime) this run started that still run:
    those with ``mark`` in their environment, and their descendants."""
    procs = _processes()
    ours = {os.getpid(), *_ancestors(os.getpid(), procs)}
    marked = {pid for pid in procs if pid not in ours
              and _marked(pid, f"{LEFTOVER_MARK}={mark}".encode())}
    born = procs[os.getpid()][3] if os.getpid() in procs else 0
    marked |= {pid for pid, (ppid, _, cmdline, started) in procs.items()
               if ppid == 1 and started >= born and b"oscar_faas.runtime" in cmdline}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo, found = list(marked), set()
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return {pid: procs[pid][2].replace(b"\0", b" ").decode(errors="replace").strip()
            for pid in sorted(found)
            if procs[pid][1] != "Z" and any(word in procs[pid][2] for word in
                                            (b"oscar_faas", b"oscar-faas", b"/oscar/"))}


def _ancestors(pid: int, procs: dict[int, tuple[int, str, bytes]]) -> list[int]:
    out = []
    while pid in procs and procs[pid][0] > 1:
        pid = procs[pid][0]
        out.append(pid)
    return out


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test left an oscar-faas process running (after the fixtures'
    teardown and a grace period), and end those processes (found by this run's mark only)."""
    import signal
    import time

    mark = os.environ.get(LEFTOVER_MARK)
    if not mark or not Path("/proc/self/environ").exists():
        return
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (leftovers := left_behind(mark)) and time.monotonic() < deadline:
        time.sleep(0.25)
    if not leftovers:
        return
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    lines = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in leftovers.items())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (f"the tests left {len(leftovers)} oscar-faas process(es) running (now killed):"
               f"\n{lines}")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "processes left behind", red=True)
        reporter.write_line(message)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
