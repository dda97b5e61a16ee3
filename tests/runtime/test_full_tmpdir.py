"""A full ``TMPDIR``: the answer names it (was a bare 500), and a script that failed after
writing megabytes answers the end of its output, not all of it (issue 23.8). ``TMPDIR`` is a
1 MiB tmpfs, so these run as root (mount) only."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from oscar_faas.supervisor.outputs import ERROR_TAIL
from tests.supervisor.conftest import make_env

from .conftest import RuntimeFactory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end (requested before ``runtime``, so after its
    runtimes have stopped)."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_an_input_larger_than_tmpdir_is_a_507_naming_it(small_tmpdir: Path,
                                                        runtime: RuntimeFactory) -> None:
    rt = runtime(make_env("echo never\n", {"name": "full"}, small_tmpdir))
    res = rt.post(base64.b64encode(os.urandom(2 << 20)))
    assert res.status_code == 507
    assert f"no space left in TMPDIR {small_tmpdir}" in res.text
    # the folder is usable again for the next call (what the failed one wrote is gone)
    ok = rt.post(base64.b64encode(b"small"))
    assert (ok.status_code, ok.text) == (200, "never\n")


def test_a_script_that_fills_tmpdir_answers_the_cause_and_its_last_output(
        small_tmpdir: Path, runtime: RuntimeFactory) -> None:
    # head fails once the folder is full; its message cannot be written there either
    script = "yes 0123456789abcdef | head -c 12000000\nexit 3\n"
    rt = runtime(make_env(script, {"name": "full"}, small_tmpdir))
    res = rt.post(b"")
    assert res.status_code == 500
    lines = res.text.splitlines()
    assert lines[0] == "exit status 3"
    assert lines[1].startswith(f"no space left in TMPDIR {small_tmpdir}")
    assert lines[2].startswith("[the first ") and "bytes of the script's output are left out]" \
        in lines[2]
    tail = res.text.split("left out]\n", 1)[1]  # was the whole partial output (~1 MiB here)
    assert len(tail) == ERROR_TAIL and set(tail) <= set("0123456789abcdef\n")


def test_a_failing_script_with_room_left_answers_its_whole_small_output(
        small_tmpdir: Path, runtime: RuntimeFactory) -> None:
    rt = runtime(make_env("echo some error\nexit 2\n", {"name": "roomy"}, small_tmpdir))
    res = rt.post(b"")
    assert (res.status_code, res.text) == (500, "exit status 2\nsome error\n")
