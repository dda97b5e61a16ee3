"""faas-provider's logs contract on the embedded provider, replaying what ``faas-cli logs``
sends (``GET /system/logs?name=&follow=&tail=&since=``, faas-cli's ``proxy/logs.go``)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import requests

from .conftest import ProviderProcess

FAAS_CLI = {"User-Agent": "faas-cli/0.18.12 (openfaas; linux; amd64)"}


def messages(resp: requests.Response) -> list[dict]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in resp.text.splitlines() if line]


def test_stderr_lines_become_messages(shared_provider: ProviderProcess, fn_name, script):
    p = shared_provider
    p.deploy(fn_name, script("noisy", 'echo "to stderr $(cat)" >&2\necho out\n'),
             envVars={"combine_output": "false"})
    assert p.invoke(fn_name, b"one").text == "out\n"
    assert p.invoke(fn_name, b"two").text == "out\n"
    got = messages(p.request("GET", f"/system/logs?name={fn_name}&follow=false",
                             headers=FAAS_CLI))
    texts = [m["text"] for m in got]
    assert texts == ["INFO stderr: to stderr one", "INFO stderr: to stderr two"]
    first = got[0]
    assert first["name"] == fn_name and first["namespace"] == "openfaas-fn"
    assert first["instance"] == "local"
    assert datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).tzinfo
    # tail, since, instance and the namespace suffix, as faas-cli sends them
    tail = messages(p.request("GET", f"/system/logs?name={fn_name}&follow=false&tail=1"))
    assert [m["text"] for m in tail] == ["INFO stderr: to stderr two"]
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert messages(p.request("GET", f"/system/logs?name={fn_name}&since={later}")) == []
    other = p.request("GET", f"/system/logs?name={fn_name}&instance=pod-x")
    assert messages(other) == []
    ns = p.request("GET", f"/system/logs?name={fn_name}&namespace=openfaas-fn&follow=false")
    assert len(messages(ns)) == 2


def test_runtime_log_lines_at_the_services_level(shared_provider: ProviderProcess, fn_name):
    """An OSCAR function's runtime logs into the function's log at its LOG_LEVEL, and the
    head of the script's output at any level (``script: ``)."""
    import base64
    p = shared_provider
    p.deploy(fn_name, "/oscar/bin/supervisor", envVars={
        "SCRIPT": base64.b64encode(b"echo to-the-log >&2\ncat $INPUT_FILE_PATH\n").decode(),
        "LOG_LEVEL": "DEBUG"})
    assert p.invoke(fn_name, base64.b64encode(b"hi")).status_code == 200
    deadline = time.monotonic() + 15  # the call's own line follows its answer
    while True:
        texts = [m["text"] for m in messages(p.request("GET", f"/system/logs?name={fn_name}"))]
        if any(t.startswith("INFO call ") for t in texts) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert any(t.startswith("INFO listening on http://127.0.0.1:") for t in texts), texts
    assert any(t.startswith("INFO call ") and ": 200 in " in t for t in texts), texts
    assert "INFO script: to-the-log" in texts, texts


def test_follow_streams_new_lines(shared_provider: ProviderProcess, fn_name, script):
    p = shared_provider
    p.deploy(fn_name, script("talk", 'echo "said $(cat)" >&2\n'),
             envVars={"combine_output": "false"})
    p.invoke(fn_name, b"before")
    seen: list[dict] = []
    with requests.get(f"{p.url}/system/logs?name={fn_name}&follow=true", stream=True,
                      timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        lines = resp.iter_lines()
        seen.append(json.loads(next(lines)))
        threading.Thread(target=p.invoke, args=(fn_name, b"after")).start()
        seen.append(json.loads(next(lines)))  # arrives while the stream is open
    assert [m["text"] for m in seen] == ["INFO stderr: said before", "INFO stderr: said after"]


def test_bad_requests_and_unknown_functions(shared_provider: ProviderProcess):
    p = shared_provider
    assert p.request("GET", "/system/logs?name=x&tail=many").status_code == 422
    assert p.request("GET", "/system/logs?name=x&since=yesterday").status_code == 422
    assert p.request("GET", "/system/logs").status_code == 422
    assert p.request("GET", "/system/logs?name=never-deployed").status_code == 404


def test_logs_need_credentials_and_persist_to_a_file(make_provider, fn_name, script):
    p = make_provider(auth=("admin", "pw"))
    p.deploy(fn_name, script("f", 'echo kept >&2\n'), envVars={"combine_output": "false"})
    p.invoke(fn_name, b"")
    assert requests.get(f"{p.url}/system/logs?name={fn_name}", timeout=10).status_code == 401
    assert len(messages(p.request("GET", f"/system/logs?name={fn_name}"))) == 1
    logged = (p.data_dir / "logs" / f"{fn_name}.log").read_text().splitlines()
    assert json.loads(logged[0])["text"] == "INFO stderr: kept"


def test_function_log_files_rotate_and_survive_removal(tmp_path, monkeypatch) -> None:
    """The files are kept open between lines: still rotated at FILE_LIMIT, and a file
    removed under them (a deleted service's) is made again by the next line."""
    from oscar_faas.provider import logs as logs_module
    monkeypatch.setattr(logs_module, "FILE_LIMIT", 2000)
    logs = logs_module.FunctionLogs("openfaas-fn", tmp_path)
    try:
        for i in range(40):  # ~100 bytes a line
            logs.append("fn", f"line {i}")
        current, previous = tmp_path / "fn.log", tmp_path / "fn.log.1"
        assert previous.exists() and current.exists()
        lines = [json.loads(x)["text"] for x in
                 (previous.read_text() + current.read_text()).splitlines()]
        assert lines[-1] == "line 39" and lines == sorted(lines, key=lambda t: int(t[5:]))
        current.unlink()
        logs.append("fn", "after removal")
        assert json.loads(current.read_text())["text"] == "after removal"
    finally:
        logs.close_files()
