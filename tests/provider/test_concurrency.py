"""max_inflight: excess calls wait in a bounded queue, 429 only when it is full."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import requests

from .conftest import ProviderProcess


def wait_for(predicate: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_max_inflight_serialises_calls(shared_provider: ProviderProcess, fn_name: str,
                                       script: Callable[[str, str], str],
                                       tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    shared_provider.deploy(fn_name, script("serial", f"""
        echo "start $$" >> {journal}
        sleep 0.2
        echo "end $$" >> {journal}
        cat
    """), envVars={"max_inflight": "1"})
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda i: shared_provider.invoke(fn_name, f"call{i}".encode()),
                                range(5)))
    assert [r.status_code for r in results] == [200] * 5
    assert sorted(r.text for r in results) == [f"call{i}" for i in range(5)]
    events = journal.read_text().split("\n")[:-1]
    assert len(events) == 10
    for start, end in zip(events[::2], events[1::2]):  # never two runs at once
        assert start.startswith("start ") and end == "end " + start.split()[1]


def blocking_function(provider: ProviderProcess, name: str, script: Callable[[str, str], str],
                      tmp_path: Path, **env: str) -> tuple[Path, Path]:
    started, go = tmp_path / f"{name}.started", tmp_path / f"{name}.go"
    provider.deploy(name, script(f"block-{name}", f"""
        touch {started}
        while [ ! -f {go} ]; do sleep 0.02; done
        echo done
    """), envVars=env)
    return started, go


def test_full_queue_is_429(shared_provider: ProviderProcess, fn_name: str,
                           script: Callable[[str, str], str], tmp_path: Path) -> None:
    p = shared_provider
    started, go = blocking_function(p, fn_name, script, tmp_path, max_inflight="1",
                                    max_queue="0")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(p.invoke, fn_name)
        wait_for(started.exists)
        rejected = p.invoke(fn_name)
        assert rejected.status_code == 429
        assert "Concurrent request limit exceeded" in rejected.text
        go.touch()
        assert first.result().status_code == 200
    assert p.invoke(fn_name).status_code == 200  # the slot was given back


def test_queued_calls_wait_then_run(shared_provider: ProviderProcess, fn_name: str,
                                    script: Callable[[str, str], str], tmp_path: Path) -> None:
    """max_inflight 1, max_queue 1, one call running: of two more calls, exactly one waits
    (and runs once the slot is free) and the other is answered 429 at once."""
    p = shared_provider
    started, go = blocking_function(p, fn_name, script, tmp_path, max_inflight="1",
                                    max_queue="1")
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(p.invoke, fn_name)
        wait_for(started.exists)
        more = [pool.submit(p.invoke, fn_name) for _ in range(2)]
        done, waiting = wait(more, timeout=20, return_when=FIRST_COMPLETED)
        assert len(done) == 1 and len(waiting) == 1, "expected one rejected, one queued"
        rejected = done.pop()
        assert rejected.result().status_code == 429
        assert not first.done()  # the function is still blocked: nothing was let through
        go.touch()
        assert first.result().status_code == 200
        assert waiting.pop().result().status_code == 200


def test_many_concurrent_slow_calls(shared_provider: ProviderProcess, fn_name: str,
                                    script: Callable[[str, str], str],
                                    tmp_path: Path) -> None:
    """Default concurrency (unset max_inflight) serves parallel long calls, none rejected:
    each call waits until as many calls as the default limit (4 x CPUs) have started, which
    only happens if they really run at the same time (serialised, the first never ends)."""
    together = min(12, 4 * (os.cpu_count() or 1))
    room = tmp_path / "room"
    room.mkdir(mode=0o1777)
    room.chmod(0o1777)  # the function writes here (as root it runs as a user of its own)
    shared_provider.deploy(fn_name, script("rendezvous", f"""
        touch {room}/$$
        n=0
        while [ "$(ls {room} | wc -l)" -lt {together} ]; do
          n=$((n + 1)); [ $n -lt 1000 ] || {{ echo "alone after 20 s" >&2; exit 1; }}
          sleep 0.02
        done
        cat
    """))
    barrier = threading.Barrier(12)

    def call(i: int) -> requests.Response:
        barrier.wait()
        return shared_provider.invoke(fn_name, str(i).encode())

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    assert [r.status_code for r in results] == [200] * 12, [r.text for r in results]
    assert [r.text for r in results] == [str(i) for i in range(12)]
