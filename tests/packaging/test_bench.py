"""The benchmark (``bench/``) is not run by the suite, but it imports the package's internals:
a module moved or renamed in ``oscar_faas`` once broke three of its sections unnoticed. These
tests import every bench module, and check the one measurement in it that is more than
arithmetic: the memory of a group of processes with shared pages counted once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT

BENCH = ROOT / "bench"


def _bench_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports as ``bench/bench.py`` does."""
    return subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH),
                                                                           str(ROOT)])))


def test_every_bench_module_imports() -> None:
    modules = sorted(p.stem for p in BENCH.glob("*.py"))
    assert {"bench", "benchlib", "sec_warm", "sec_gateway"} <= set(modules)
    done = _bench_python(f"import importlib\nfor m in {modules!r}: importlib.import_module(m)")
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_group_counts_the_pages_its_processes_share_once() -> None:
    """A parent touches 64 MiB and forks: the two together hold about 64 MiB, not 128 (their
    RSS sum), and a child that rewrites its copy holds its own 64 MiB on top."""
    code = r"""
import json, os, time
from benchlib import group_resident, proc_status
block = bytearray(os.urandom(64 << 20))
def pair(rewrite):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        if rewrite:
            for i in range(0, len(block), 4096):
                block[i] = (block[i] + 1) % 256
        os.write(write, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(read, 1)
    try:
        rss = proc_status(os.getpid())["VmRSS"] + proc_status(pid)["VmRSS"]
        return group_resident([os.getpid(), pid]), rss
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
print(json.dumps({"alone": group_resident([os.getpid()]), "shared": pair(False),
                  "rewritten": pair(True)}))
"""
    done = _bench_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    if figures["alone"] is None:
        pytest.skip("page frames need CAP_SYS_ADMIN (root): group_resident gives None")
    alone = figures["alone"] / 1024
    (shared, shared_rss), (rewritten, _) = figures["shared"], figures["rewritten"]
    assert alone > 64
    assert shared_rss / 1024 > 2 * 64, "both processes have the block resident"
    assert abs(shared / 1024 - alone) < 16, figures
    assert abs(rewritten / 1024 - alone - 64) < 16, figures
