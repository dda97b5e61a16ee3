"""The provider's ``/metrics``: the OpenFaaS gateway's metric names and labels, over HTTP."""

from __future__ import annotations

import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ProviderProcess


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = requests.get(url + "/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def test_invocations_by_function_and_code(shared_provider: ProviderProcess, fn_name: str,
                                          script) -> None:
    p = shared_provider
    p.deploy(fn_name, script("fails", "read x\n[ \"$x\" = ok ]\n"))
    for body in (b"ok\n", b"ok\n", b"no\n"):
        p.invoke(fn_name, body)
    p.invoke("no-such-function", b"x")  # unknown: not counted (no label for it)
    got = samples(p.url)
    label = f"{fn_name}.openfaas-fn"
    key = "gateway_function_invocation_total"
    assert got[(key, (("code", "200"), ("function_name", label)))] == 2
    assert got[(key, (("code", "500"), ("function_name", label)))] == 1
    assert got[("gateway_functions_seconds_count",
                (("code", "200"), ("function_name", label)))] == 2
    assert got[("gateway_function_invocation_started_total",
                (("function_name", label),))] == 3
    assert got[("gateway_service_count", (("function_name", label),))] == 1
    assert not any("no-such-function" in str(k) for k in got)
    # the count OpenFaaS' list shows agrees
    status = p.request("GET", f"/system/function/{fn_name}").json()
    assert status["invocationCount"] == 3


def test_busy_and_queue_depth(make_provider, fn_name: str, tmp_path) -> None:
    """With max_inflight=1, one call running and one waiting show up while they last."""
    p = make_provider()
    gate = tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "wait.sh").write_text(f"while [ ! -e {gate}/open ]; do sleep 0.05; done\n")
    p.deploy(fn_name, f"sh {tmp_path / 'wait.sh'}", envVars={"max_inflight": "1"})
    threads = [threading.Thread(target=p.invoke, args=(fn_name, b"")) for _ in range(2)]
    for t in threads:
        t.start()
    label = (("function_name", f"{fn_name}.openfaas-fn"),)
    deadline = time.monotonic() + 30
    try:
        while True:  # until both calls have arrived (poll the state, no fixed sleep)
            got = samples(p.url)
            if got[("oscar_faas_function_queue_depth", label)] == 1:
                break
            assert time.monotonic() < deadline, "the second call never queued"
        assert got[("oscar_faas_function_busy", label)] == 1
    finally:
        (gate / "open").touch()
        for t in threads:
            t.join(30)
    got = samples(p.url)
    assert got[("oscar_faas_function_busy", label)] == 0
    assert got[("oscar_faas_function_queue_depth", label)] == 0


def test_busy_and_queue_depth_of_a_runtime(shared_provider, fn_name: str, tmp_path) -> None:
    """An OSCAR function's busy and queued calls are its runtime's (read from /_/status)."""
    import base64
    p = shared_provider
    gate = tmp_path / "gate"
    gate.mkdir()
    script = f"while [ ! -e {gate}/open ]; do sleep 0.05; done\n"
    p.deploy(fn_name, "/oscar/bin/supervisor", envVars={
        "SCRIPT": base64.b64encode(script.encode()).decode(), "max_inflight": "1"})
    threads = [threading.Thread(target=p.invoke, args=(fn_name, b"")) for _ in range(2)]
    for t in threads:
        t.start()
    label = (("function_name", f"{fn_name}.openfaas-fn"),)
    deadline = time.monotonic() + 30
    try:
        while True:  # until both calls have reached the runtime
            got = samples(p.url)
            if got[("oscar_faas_function_queue_depth", label)] == 1:
                break
            assert time.monotonic() < deadline, "the second call never queued"
        assert got[("oscar_faas_function_busy", label)] == 1
    finally:
        (gate / "open").touch()
        for t in threads:
            t.join(30)
    got = samples(p.url)
    assert got[("oscar_faas_function_busy", label)] == 0
    assert got[("oscar_faas_function_queue_depth", label)] == 0


def test_metrics_need_no_credentials_and_hold_no_secret(make_provider, fn_name) -> None:
    p = make_provider(auth=("admin", "pw-secret-1"))
    p.deploy(fn_name, "cat", envVars={"API_KEY": "do-not-leak"})
    p.invoke(fn_name, b"hi")
    text = requests.get(p.url + "/metrics", timeout=10).text
    assert fn_name in text
    assert "do-not-leak" not in text and "pw-secret-1" not in text


def test_server_timing_of_a_forked_function(shared_provider: ProviderProcess,
                                            fn_name: str) -> None:
    """A plain process per call: its queue wait and its run (``script``)."""
    shared_provider.deploy(fn_name, "cat")
    resp = shared_provider.invoke(fn_name, b"x")
    assert resp.status_code == 200
    names = [p.split(";")[0].strip() for p in resp.headers["Server-Timing"].split(",")]
    assert names == ["queue", "script"]
