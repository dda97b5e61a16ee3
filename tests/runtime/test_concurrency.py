"""Bounded concurrency and the bounded wait queue; ordering by files, never by sleeps."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.supervisor.conftest import b64, make_env

from .conftest import RuntimeFactory, gate_script, started_marks, wait_for


def test_calls_run_in_parallel_up_to_max_inflight(runtime: RuntimeFactory, tmp_path: Path,
                                                  gate: dict[str, str]) -> None:
    marks = Path(gate["MARKS"])
    # Each call waits until both have started: it can only finish if they run at once.
    script = 'touch "$MARKS/started-$$"\nwhile [ "$(ls "$MARKS" | wc -l)" -lt 2 ]; do sleep 0.01; done\necho ok'
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp", max_inflight="2", **gate))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: requests.post(rt.url, data=b64("x"), timeout=120), range(2)))
    assert [(a.status_code, a.text) for a in answers] == [(200, "ok\n")] * 2
    assert started_marks(marks) == 2


def test_full_queue_answers_429(runtime: RuntimeFactory, tmp_path: Path,
                                gate: dict[str, str]) -> None:
    marks = Path(gate["MARKS"])
    env = make_env(gate_script("echo done"), tmpdir=tmp_path / "tmp", max_inflight="1",
                   max_queue="1", **gate)
    rt = runtime(env)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(requests.post, rt.url, data=b64("a"), timeout=120)
        wait_for(lambda: started_marks(marks) == 1, "the first call to run")
        second = pool.submit(requests.post, rt.url, data=b64("b"), timeout=120)
        wait_for(lambda: rt.status()["queued"] == 1, "the second call to wait in the queue")
        third = requests.post(rt.url, data=b64("c"), timeout=120)
        assert third.status_code == 429
        assert "max_queue=1" in third.text
        assert started_marks(marks) == 1  # the queued call has not started
        Path(gate["GATE"]).touch()
        assert (first.result().status_code, first.result().text) == (200, "done\n")
        assert (second.result().status_code, second.result().text) == (200, "done\n")
    assert rt.status() == {"ready": True, "slots": 1, "running": 0, "queued": 0, "max_queue": 1}


def test_no_queue_rejects_at_once(runtime: RuntimeFactory, tmp_path: Path,
                                  gate: dict[str, str]) -> None:
    marks = Path(gate["MARKS"])
    env = make_env(gate_script("echo done"), tmpdir=tmp_path / "tmp", max_inflight="1",
                   max_queue="0", **gate)
    rt = runtime(env)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(requests.post, rt.url, data=b64("a"), timeout=120)
        wait_for(lambda: started_marks(marks) == 1, "the first call to run")
        assert requests.post(rt.url, data=b64("b"), timeout=120).status_code == 429
        assert rt.health() == 200  # health never waits for a slot
        Path(gate["GATE"]).touch()
        assert first.result().status_code == 200
    assert rt.post(b64("c")).status_code == 200


def test_sigterm_kills_running_scripts(runtime: RuntimeFactory, tmp_path: Path,
                                       gate: dict[str, str]) -> None:
    marks = Path(gate["MARKS"])
    rt = runtime(make_env(gate_script("echo never"), tmpdir=tmp_path / "tmp", **gate))
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(requests.post, rt.url, data=b64("a"), timeout=120)
        wait_for(lambda: started_marks(marks) == 1, "the call to run")
        pid = int(next(marks.iterdir()).name.split("-")[1])
        rt.stop()
        try:
            call.result()
        except requests.RequestException:
            pass  # the connection may be cut: what matters is the script
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert list((tmp_path / "tmp").iterdir()) == []
