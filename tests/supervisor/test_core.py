"""The OSCAR sync contract, checked in-process and as a subprocess (``run`` fixture)."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oscar_faas.contract import EXIT_BAD_INPUT
from oscar_faas.supervisor.outputs import ERROR_TAIL

from .conftest import REPO, Runner, b64, make_env, run_inprocess

COPY_TO_OUTPUT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result.bin"\n'


def test_one_output_file_gives_its_base64(run: Runner, tmp_path: Path) -> None:
    res = run(b"aGVsbG8gd29ybGQ=", make_env(COPY_TO_OUTPUT + "echo chatter", tmpdir=tmp_path))
    assert res.rc == 0
    assert res.stdout == b"aGVsbG8gd29ybGQ=\n"


def test_binary_round_trip_across_chunk_boundaries(run: Runner, tmp_path: Path) -> None:
    # 2 MiB + 1: larger than the read and encode chunks and not a multiple of 3.
    data = os.urandom((2 << 20) + 1)
    body = base64.encodebytes(data)  # wrapped at 76 columns, as `base64 file` prints it
    res = run(body, make_env(COPY_TO_OUTPUT, tmpdir=tmp_path))
    assert res.rc == 0
    assert res.stdout.endswith(b"\n") and res.stdout.count(b"\n") == 1
    assert base64.b64decode(res.stdout[:-1], validate=True) == data


def test_several_output_files_give_a_base64_zip(run: Runner, tmp_path: Path) -> None:
    script = (
        'printf one > "$TMP_OUTPUT_DIR/a.txt"\n'
        'mkdir -p "$TMP_OUTPUT_DIR/sub/deeper"\n'
        'printf two > "$TMP_OUTPUT_DIR/sub/b.txt"\n'
        'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/sub/deeper/c.bin"\n'
    )
    res = run(b64(b"\x00\xffbinary"), make_env(script, tmpdir=tmp_path))
    assert res.rc == 0
    assert res.stdout.count(b"\n") == 1
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(res.stdout[:-1], validate=True)))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == ["a.txt", "sub/b.txt", "sub/deeper/c.bin"]
    assert archive.read("a.txt") == b"one"
    assert archive.read("sub/b.txt") == b"two"
    assert archive.read("sub/deeper/c.bin") == b"\x00\xffbinary"


def test_no_output_file_gives_the_merged_script_output(run: Runner, tmp_path: Path) -> None:
    script = "echo to-stdout\necho to-stderr >&2\nprintf 'last line, no newline'"
    res = run(b64("x"), make_env(script, tmpdir=tmp_path))
    assert res.rc == 0
    assert res.stdout == b"to-stdout\nto-stderr\nlast line, no newline"


def test_json_body_is_stored_byte_for_byte(run: Runner, tmp_path: Path) -> None:
    body = b'  \n{"a":1,  "b" : [1,2]}\n'
    res = run(body, make_env('cat "$INPUT_FILE_PATH"', tmpdir=tmp_path))
    assert res.rc == 0
    assert res.stdout == body


def test_json_array_body(run: Runner, tmp_path: Path) -> None:
    body = b'[{"message": "Hi there"}]'
    res = run(body, make_env('cat "$INPUT_FILE_PATH"', tmpdir=tmp_path))
    assert (res.rc, res.stdout) == (0, body)


def test_empty_body_gives_an_empty_input_file(run: Runner, tmp_path: Path) -> None:
    script = 'test -f "$INPUT_FILE_PATH" && printf "size=%s" "$(wc -c < "$INPUT_FILE_PATH")"'
    res = run(b"", make_env(script, tmpdir=tmp_path))
    assert (res.rc, res.stdout) == (0, b"size=0")


def test_invalid_base64_is_a_one_line_error(run: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "script-ran"
    res = run(b"aGVsbG8%gd29y", make_env(f'touch "{marker}"', tmpdir=tmp_path / "work"))
    assert res.rc == EXIT_BAD_INPUT  # the provider's 400
    assert res.stdout.startswith(b"invalid base64 input:")
    assert b"offset 7" in res.stdout
    assert res.stdout.count(b"\n") == 1 and res.stdout.endswith(b"\n")
    assert not marker.exists()


def test_invalid_json_is_a_one_line_error(run: Runner, tmp_path: Path) -> None:
    res = run(b'{"a": 1,}', make_env("echo never", tmpdir=tmp_path))
    assert res.rc == EXIT_BAD_INPUT
    assert res.stdout.startswith(b"invalid JSON input:")
    assert res.stdout.count(b"\n") == 1


def test_failing_script_is_an_error_with_its_output(run: Runner, tmp_path: Path) -> None:
    script = 'echo partial\necho "it broke" >&2\ntouch "$TMP_OUTPUT_DIR/half.txt"\nexit 3'
    res = run(b64("x"), make_env(script, tmpdir=tmp_path))
    assert res.rc == 3
    assert res.stdout == b"partial\nit broke\n"
    assert "status 3" in res.stderr


def test_a_failing_scripts_long_output_is_cut_to_its_end(run: Runner, tmp_path: Path) -> None:
    script = 'head -c 10000 /dev/zero | tr "\\0" a\necho " the end"\nexit 1'
    res = run(b64("x"), make_env(script, tmpdir=tmp_path))
    assert res.rc == 1
    note, tail = res.stdout.split(b"\n", 1)
    assert note == b"[the first 5913 of 10009 bytes of the script's output are left out]"
    assert tail == b"a" * (ERROR_TAIL - 9) + b" the end\n"


def test_debug_logs_never_reach_stdout(run: Runner, tmp_path: Path) -> None:
    env = make_env(COPY_TO_OUTPUT + "echo script-line", {"log_level": "INFO"}, tmp_path, LOG_LEVEL="DEBUG")
    res = run(b"aGk=", env)
    assert res.rc == 0
    assert res.stdout == b"aGk=\n"
    assert "DEBUG" in res.stderr and "script: script-line" in res.stderr


def test_log_level_from_config_silences_info(run: Runner, tmp_path: Path) -> None:
    res = run(b"aGk=", make_env("echo ok", {"log_level": "CRITICAL"}, tmp_path))
    assert (res.rc, res.stdout, res.stderr) == (0, b"ok\n", "")


def test_script_env_and_service_variables(run: Runner, tmp_path: Path) -> None:
    script = (
        'echo "input=$INPUT_FILE_PATH"\necho "in=$TMP_INPUT_DIR"\necho "out=$TMP_OUTPUT_DIR"\n'
        'echo "var=$INPUT_TYPE"\necho "http=$Http_Method"\n'
    )
    env = make_env(script, tmpdir=tmp_path, INPUT_TYPE="json", Http_Method="POST")
    res = run(b64("x"), env)
    assert res.rc == 0
    lines = dict(line.split("=", 1) for line in res.stdout.decode().splitlines())
    assert Path(lines["input"]).parent == Path(lines["in"])
    assert Path(lines["input"]).name.startswith("event-file-")
    assert Path(lines["out"]).parent == Path(lines["in"]).parent
    assert Path(lines["in"]).is_relative_to(tmp_path)
    assert (lines["var"], lines["http"]) == ("json", "POST")


def test_no_script_gives_empty_output(run: Runner, tmp_path: Path) -> None:
    res = run(b"aGk=", make_env(None, tmpdir=tmp_path))
    assert (res.rc, res.stdout) == (0, b"")
    assert "No user script found" in res.stderr


def test_invalid_function_config_is_a_one_line_error(run: Runner, tmp_path: Path) -> None:
    env = make_env("echo never", tmpdir=tmp_path, FUNCTION_CONFIG="%%%not-base64")
    res = run(b"aGk=", env)
    assert res.rc == 1
    assert res.stdout.startswith(b"invalid FUNCTION_CONFIG")


def test_temporary_dirs_are_removed(run: Runner, tmp_path: Path) -> None:
    work = tmp_path / "work"
    script = 'mkdir -p "$TMP_OUTPUT_DIR/ro"; touch "$TMP_OUTPUT_DIR/ro/f"; chmod 500 "$TMP_OUTPUT_DIR/ro"'
    res = run(b"aGk=", make_env(script, tmpdir=work))
    assert res.rc == 0
    assert list(work.iterdir()) == []


def test_inprocess_leaves_environ_and_cwd_alone(tmp_path: Path) -> None:
    before_env, before_cwd = dict(os.environ), os.getcwd()
    res = run_inprocess(b"aGk=", make_env("cd /; echo done", tmpdir=tmp_path, SOME_VAR="x"))
    assert (res.rc, res.stdout) == (0, b"done\n")
    assert dict(os.environ) == before_env and os.getcwd() == before_cwd


def test_concurrent_calls_do_not_mix(tmp_path: Path) -> None:
    """Threads with different envs, bodies and log levels each get their own result."""
    script = (
        'sleep 0.2\nprintf "%s:" "$WHO" > "$TMP_OUTPUT_DIR/o.txt"\n'
        'cat "$INPUT_FILE_PATH" >> "$TMP_OUTPUT_DIR/o.txt"\n'
    )

    def call(i: int):  # type: ignore[no-untyped-def]
        level = "DEBUG" if i % 2 else "CRITICAL"
        env = make_env(script, tmpdir=tmp_path / str(i), WHO=f"caller-{i}", LOG_LEVEL=level)
        return i, run_inprocess(b64(f"body-{i}"), env)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, range(12)))
    for i, res in results:
        assert res.rc == 0
        assert base64.b64decode(res.stdout) == f"caller-{i}:body-{i}".encode()
        if i % 2:
            assert "DEBUG" in res.stderr
        else:
            assert res.stderr == ""


def _start_time(pid: int) -> str | None:
    """``pid``'s start time (in clock ticks since boot), None when it is gone or a zombie:
    with the start time a recycled pid (they wrap at 32768 here) is not mistaken for it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: int, start_time: str | None = None) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone); with
    ``start_time``, only while it is still that very process."""
    now = _start_time(pid)
    return now is not None and (start_time is None or now == start_time)


def test_sigterm_kills_the_script_and_cleans_up(tmp_path: Path) -> None:
    """The watchdog's SIGTERM must not leave the script running or the temp dirs behind."""
    started = tmp_path / "started"
    work = tmp_path / "work"
    script = f'sleep 300 &\necho $! > "{started}.tmp" && mv "{started}.tmp" "{started}"\nwait\n'
    env = dict(make_env(script, tmpdir=work), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "oscar_faas.supervisor"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sleeper = int(started.read_text())
        born = _start_time(sleeper)
        assert born is not None
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(work.iterdir()) == []
    deadline = time.monotonic() + 30
    while _alive(sleeper, born) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(sleeper, born)


def test_environment_secrets_come_from_the_secret_file(run: Runner, tmp_path: Path) -> None:
    """environment.secrets reach the script through the storage secret, not OpenFaaS env."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "oscar-storage-svc").write_text('{"environment": {"DB_PASS": "hunter2"}}')
    env = make_env('echo "pass=$DB_PASS"', tmpdir=tmp_path / "tmp",
                   OSCAR_STORAGE_SECRET="oscar-storage-svc", OSCAR_SECRETS_DIR=str(secrets))
    result = run("", env)
    assert result.rc == 0 and result.stdout == b"pass=hunter2\n"
