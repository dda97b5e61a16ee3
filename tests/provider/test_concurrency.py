"""max_inflight: excess calls wait in a bounded queue, 429 only when it is full."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    p = shared_provider
    started, go = blocking_function(p, fn_name, script, tmp_path, max_inflight="1",
                                    max_queue="1")

    def count() -> int:
        status = p.request("GET", f"/system/function/{fn_name}").json()
        return int(status.get("invocationCount", 0))

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(p.invoke, fn_name)
        wait_for(started.exists)
        queued = pool.submit(p.invoke, fn_name)
        wait_for(lambda: count() == 2)
        time.sleep(0.3)  # lets the second call reach the queue (ordering aid, not an assert)
        assert p.invoke(fn_name).status_code == 429
        go.touch()
        assert first.result().status_code == 200
        assert queued.result().status_code == 200


def test_many_concurrent_slow_calls(shared_provider: ProviderProcess, fn_name: str,
                                    script: Callable[[str, str], str]) -> None:
    """Default concurrency (unset max_inflight) serves parallel long calls, none rejected."""
    shared_provider.deploy(fn_name, script("sleepy", "sleep 0.5\ncat\n"))
    barrier = threading.Barrier(12)

    def call(i: int) -> requests.Response:
        barrier.wait()
        return shared_provider.invoke(fn_name, str(i).encode())

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    assert [r.text for r in results] == [str(i) for i in range(12)]
