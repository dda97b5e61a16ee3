"""The watchdog HTTP contract and the OSCAR I/O contract, through a real runtime process."""

from __future__ import annotations

import base64
import io
import os
import socket
import zipfile
from pathlib import Path

from tests.supervisor.conftest import b64, make_env

from .conftest import RuntimeFactory

COPY_TO_OUTPUT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result.bin"\n'


def test_base64_in_one_output_file_out(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env(COPY_TO_OUTPUT + "echo chatter", tmpdir=tmp_path / "tmp"))
    res = rt.post("aGVsbG8gd29ybGQ=")
    assert res.status_code == 200
    assert res.content == b"aGVsbG8gd29ybGQ=\n"
    assert float(res.headers["X-Duration-Seconds"]) >= 0


def test_large_body_streams_both_ways(runtime: RuntimeFactory, tmp_path: Path) -> None:
    data = os.urandom((3 << 20) + 1)  # larger than every read and flush size, not a multiple of 3
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp"))
    res = rt.post(base64.encodebytes(data))  # wrapped at 76 columns, as `base64 file` prints
    assert res.status_code == 200
    assert res.headers.get("Transfer-Encoding") == "chunked"  # streamed, not gathered
    assert res.content.count(b"\n") == 1
    assert base64.b64decode(res.content[:-1], validate=True) == data


def test_json_body_is_stored_as_sent(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env('cat "$INPUT_FILE_PATH"', tmpdir=tmp_path / "tmp"))
    body = b'  \n{"a":1,  "b" : [1,2]}\n'
    res = rt.post(body, headers={"Content-Type": "application/json"})
    assert (res.status_code, res.content) == (200, body)
    assert res.headers["Content-Type"] == "application/json"


def test_several_outputs_give_a_base64_zip(runtime: RuntimeFactory, tmp_path: Path) -> None:
    script = ('printf one > "$TMP_OUTPUT_DIR/a.txt"\nmkdir -p "$TMP_OUTPUT_DIR/sub"\n'
              'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/sub/c.bin"\n')
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp"))
    res = rt.post(b64(b"\x00\xffbin"))
    assert res.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(res.content[:-1], validate=True)))
    assert sorted(archive.namelist()) == ["a.txt", "sub/c.bin"]
    assert archive.read("sub/c.bin") == b"\x00\xffbin"


def test_no_output_gives_the_script_output(runtime: RuntimeFactory, tmp_path: Path) -> None:
    script = "echo to-stdout\necho to-stderr >&2\nprintf 'no newline'"
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp", LOG_LEVEL="DEBUG"))
    res = rt.post(b64("x"))
    assert (res.status_code, res.content) == (200, b"to-stdout\nto-stderr\nno newline")
    assert "DEBUG" not in res.text  # log lines go to stderr, never into the body
    assert "script: to-stderr" in rt.log()


def test_failing_script_is_a_500_with_its_output(runtime: RuntimeFactory, tmp_path: Path) -> None:
    script = 'echo partial\necho "it broke" >&2\ntouch "$TMP_OUTPUT_DIR/half.txt"\nexit 3'
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp"))
    res = rt.post(b64("x"))
    assert res.status_code == 500
    assert res.content == b"exit status 3\npartial\nit broke\n"
    assert "status 3" in rt.log()


def test_script_output_is_logged_at_every_log_level(runtime: RuntimeFactory,
                                                    tmp_path: Path) -> None:
    """log_level governs the runtime's own lines; the script's output always reaches the
    log (issue 22.4), cut past SCRIPT_LOG_LIMIT, and never the body of a failed call."""
    script = ('echo "to-stdout"\necho "why it broke" >&2\n'
              'head -c 40000 /dev/zero | tr "\\0" x\nexit 3')
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp", LOG_LEVEL="CRITICAL"))
    res = rt.post(b64("x"))
    assert res.status_code == 500
    log = rt.log()
    assert "script: to-stdout" in log and "script: why it broke" in log
    assert "more bytes of output not logged" in log
    assert "status 3" not in log  # the runtime's own ERROR line stays below CRITICAL


def test_exec_timeout_kills_the_script(runtime: RuntimeFactory, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f'echo $$ > "{pidfile}"\nexec sleep 600\n'
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp", exec_timeout="1s"))
    res = rt.post(b64("x"))
    assert (res.status_code, res.content) == (408, b"Killed process.\n")
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert rt.post(b64("x")).status_code == 408  # the slot is free again


def test_invalid_base64_is_a_400_and_the_script_does_not_run(
        runtime: RuntimeFactory, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    rt = runtime(make_env(f'touch "{marker}"', tmpdir=tmp_path / "tmp"))
    res = rt.post(b"aGVsbG8%gd29y")
    assert res.status_code == 400
    assert res.text.startswith("invalid base64 input:") and "offset 7" in res.text
    assert not marker.exists()
    assert rt.post(b'{"a": 1,}').status_code == 400  # invalid JSON too
    assert rt.post(b64("ok")).status_code == 200  # and the connection is still usable


def test_script_env_cgi_variables_and_secrets(runtime: RuntimeFactory, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "oscar-storage-svc").write_text('{"environment": {"API_TOKEN": "s3cr3t"}}')
    script = ('echo "method=$Http_Method"\necho "path=$Http_Path"\necho "query=$Http_Query"\n'
              'echo "header=$Http_X_Custom"\necho "var=$INPUT_TYPE"\necho "token=$API_TOKEN"\n'
              'echo "in=$TMP_INPUT_DIR"\necho "input=$INPUT_FILE_PATH"\n')
    env = make_env(script, tmpdir=tmp_path / "tmp", INPUT_TYPE="json",
                   OSCAR_SECRETS_DIR=str(secrets), OSCAR_STORAGE_SECRET="oscar-storage-svc")
    rt = runtime(env)
    res = rt.post(b64("x"), path="/some/path?x=1", headers={"X-Custom": "yes"})
    assert res.status_code == 200
    lines = dict(line.split("=", 1) for line in res.text.splitlines())
    assert lines["method"] == "POST" and lines["path"] == "/some/path"
    assert (lines["query"], lines["header"]) == ("x=1", "yes")
    assert (lines["var"], lines["token"]) == ("json", "s3cr3t")
    assert Path(lines["input"]).parent == Path(lines["in"])
    assert Path(lines["in"]).is_relative_to(tmp_path / "tmp")


def test_call_directories_are_emptied_between_calls(runtime: RuntimeFactory, tmp_path: Path) -> None:
    script = 'ls -A "$TMP_INPUT_DIR" "$TMP_OUTPUT_DIR" | grep -c . ; touch "$TMP_INPUT_DIR/junk"'
    rt = runtime(make_env(script, tmpdir=tmp_path / "tmp", max_inflight="1"))
    first, second = rt.post(b64("x")), rt.post(b64("y"))
    assert first.text == second.text  # the junk of the first call is gone


def test_broken_function_config_is_a_500_that_says_so(runtime: RuntimeFactory, tmp_path: Path) -> None:
    env = make_env("echo never", tmpdir=tmp_path / "tmp")
    env["FUNCTION_CONFIG"] = "%%% not base64"
    rt = runtime(env)
    res = rt.post(b64("x"))
    assert res.status_code == 500
    assert res.text.startswith("invalid FUNCTION_CONFIG")


def test_health_is_ready_for_a_script(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env("true", tmpdir=tmp_path / "tmp"))
    assert rt.health() == 200
    res = rt.session.get(rt.url + "/_/health")
    assert "X-Duration-Seconds" in res.headers
    assert rt.status()["ready"] is True


def test_sigterm_stops_and_cleans_up(runtime: RuntimeFactory, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp))
    assert rt.post("aGk=").status_code == 200
    assert rt.stop() == 0
    assert list(tmp.iterdir()) == []


def test_chunked_request_body(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp"))
    data = os.urandom(300_000)
    encoded = base64.b64encode(data)
    pieces = (encoded[i:i + 7001] for i in range(0, len(encoded), 7001))  # not multiples of 4
    res = rt.session.post(rt.url, data=pieces, timeout=120)  # a generator: sent chunked
    assert res.status_code == 200
    assert base64.b64decode(res.content[:-1], validate=True) == data


def test_read_timeout_when_the_body_stalls(runtime: RuntimeFactory, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    rt = runtime(make_env(f'touch "{marker}"', tmpdir=tmp_path / "tmp", read_timeout="1s"))
    host, port = rt.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\naGVsbG8=")
        reader = conn.makefile("rb")
        answer = b""
        while b"reached" not in answer and len(answer) < 4096:
            line = reader.readline()
            assert line, f"the connection closed: {answer!r}"
            answer += line
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"read_timeout (1s) reached" in answer
    assert not marker.exists()


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_memory_stays_bounded_for_a_large_call(runtime: RuntimeFactory, tmp_path: Path) -> None:
    data = os.urandom(48 << 20)
    encoded = base64.b64encode(data)
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp"))
    before = _vm_hwm_kib(rt.proc.pid)
    pieces = (encoded[i:i + (1 << 20)] for i in range(0, len(encoded), 1 << 20))
    res = rt.session.post(rt.url, data=pieces, stream=True, timeout=300)
    assert res.status_code == 200
    received = b"".join(res.iter_content(1 << 20))
    assert received == encoded + b"\n"
    # 64 MiB in and 64 MiB out: holding either whole would raise the peak by that much.
    assert _vm_hwm_kib(rt.proc.pid) - before < 32 << 10
