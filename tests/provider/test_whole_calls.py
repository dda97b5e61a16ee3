"""A call reaches its script whole, exactly once, or fails loudly (issue 22, item 1).

The provider's proxy used to read the body, find the runtime unreachable (not listening yet
right after a create, an update or a provider restart; or killed with calls in flight) and
send the call again with the body already consumed: a 200 computed on an empty input, and a
script run twice for one call. Real provider, real runtimes, bodies checked byte for byte.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from .conftest import ProviderProcess
from .test_runtimes import deploy, update, wait_ready

#: Raw sizes of the inputs: one byte, around the proxy's inline size, 10 MB.
SIZES = [1, 40_000, 60_000, 1_000_000, 10 * 1024 * 1024]
#: The script copies its input to its output (the answer is that file, in base64).
ECHO = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/echo.bin"\n'


def distinctive(size: int, tag: str) -> bytes:
    """``size`` bytes no other call sends: a tag, then random bytes."""
    head = f"{tag}:".encode()
    return (head + os.urandom(size))[:size] if size > len(head) else os.urandom(size)


def in_pieces(data: bytes, piece: int = 100_000) -> Iterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


def call_and_check(p: ProviderProcess, name: str, raw: bytes, chunked: bool) -> None:
    encoded = base64.b64encode(raw)
    resp = p.invoke(name, in_pieces(encoded) if chunked else encoded)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    got = base64.b64decode(resp.content)
    assert len(got) == len(raw) and got == raw, \
        f"{name}: the script got {len(got)} bytes, not the {len(raw)} sent"


@pytest.mark.parametrize("size", SIZES)
def test_the_first_call_after_create_update_and_restart_gets_its_whole_body(
        make_provider: Callable[..., ProviderProcess], size: int) -> None:
    p = make_provider()
    for framing, chunked in (("sized", False), ("chunked", True)):
        name = f"first-{framing}-{size}"
        deploy(p, name, ECHO)  # no wait: the call is held until the runtime listens
        call_and_check(p, name, distinctive(size, f"{name}-create"), chunked)
        update(p, name, ECHO, MY_VAR="changed")  # a new runtime replaces the old one
        call_and_check(p, name, distinctive(size, f"{name}-update"), chunked)
    p.restart()  # every runtime starts again: the first calls race them
    for framing, chunked in (("sized", False), ("chunked", True)):
        call_and_check(p, f"first-{framing}-{size}",
                       distinctive(size, f"{framing}-restart"), chunked)


def test_a_runtime_killed_with_calls_in_flight_never_answers_a_wrong_200(
        make_provider: Callable[..., ProviderProcess], tmp_path: Path) -> None:
    """Every answer is the call's own output or an error; every script run is one call's."""
    p = make_provider()
    runs = tmp_path / "runs"
    runs.mkdir()
    os.chmod(runs, 0o777)  # a root provider runs scripts as the function's own user
    name = "killed-in-flight"
    # each run leaves a file named after its input (the call's id); the runtime is killed
    # while every call sleeps
    deploy(p, name, f'id=$(cat "$INPUT_FILE_PATH")\n'
                    f'echo run >> "{runs}/call-$id"\n'
                    f'echo $PPID > "{runs}/runtime-pid"\n'
                    f'[ "$id" = warm ] || sleep 3\n' + ECHO)
    wait_ready(p, name)
    calls = 5
    # warm up: as many pooled proxy connections as there will be calls in flight
    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(lambda _: p.invoke(name, base64.b64encode(b"warm")), range(calls)))
    pid = int((runs / "runtime-pid").read_text())
    for path in runs.iterdir():
        path.unlink()

    def one(i: int) -> tuple[int, bytes]:
        resp = requests.post(f"{p.url}/function/{name}", timeout=60, auth=p.auth,
                             data=base64.b64encode(str(i).encode()))
        return resp.status_code, resp.content

    with ThreadPoolExecutor(calls) as pool:
        answers = [pool.submit(one, i) for i in range(calls)]
        deadline = time.monotonic() + 30
        while len(list(runs.glob("call-*"))) < calls:
            assert time.monotonic() < deadline, sorted(runs.iterdir())
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        results = [answer.result() for answer in answers]
    for i, (status, content) in enumerate(results):
        if status == 200:
            assert base64.b64decode(content) == str(i).encode(), f"call {i}: wrong 200"
        else:
            assert status >= 500, (status, content)
    time.sleep(0.5)  # a script of a second delivery would have started by now
    ran = {path.name: path.read_text().count("run") for path in runs.glob("call-*")}
    assert ran == {f"call-{i}": 1 for i in range(calls)}, ran
    # the restarted runtime serves the next call, whole
    call_and_check(p, name, b"after", chunked=False)
