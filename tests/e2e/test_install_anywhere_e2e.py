"""Issue 21: installed in a folder other users cannot enter, run as root, functions work.

The test makes those conditions itself, as ``git clone`` into ``mktemp -d`` or a venv under
``/root`` make them: a ``0700`` folder holding a virtual environment and the project's package,
and ``oscar-faas serve`` started from that venv's ``python`` in that folder. Each function runs
as a uid of its own that could not enter the folder; the provider shows it the installation
(launchers/host/install_view.py), so its runtime starts, its script can call the venv's ``python``
and a warm worker can run on it.
"""

from __future__ import annotations

import base64
import os
import shutil
import site
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.livegateway import LiveGateway
from tests.supervisor.conftest import REPO

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="only a provider run as root runs functions "
                       "as other users (as CI does)"),
]


@pytest.fixture(scope="module")
def closed_install():
    """A ``0700`` folder with a venv whose ``oscar_faas`` is a copy inside the folder (its
    other packages come from this test's own environment)."""
    folder = Path(tempfile.mkdtemp(prefix="oscar-faas-closed-"))
    assert folder.stat().st_mode & 0o777 == 0o700
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")],
                       check=True, timeout=120)
        shutil.copytree(REPO / "oscar_faas", folder / "src" / "oscar_faas",
                        ignore=shutil.ignore_patterns("__pycache__"))
        purelib = subprocess.run([str(folder / "venv/bin/python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        (Path(purelib) / "oscar-faas-test.pth").write_text(
            "\n".join([str(folder / "src"), *site.getsitepackages()]) + "\n")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def gw(closed_install: Path):
    python = closed_install / "venv" / "bin" / "python"
    env = {"RUN_READY_WAIT": "30", "PYTHONPATH": ""}
    (closed_install / "gw").mkdir(mode=0o700)
    with LiveGateway(closed_install / "gw", env=env, python=str(python),
                     cwd=closed_install) as g:
        yield g


def create(gw: LiveGateway, service: dict) -> str:
    resp = requests.post(gw.url + "/system/services", json=service, auth=gw.auth, timeout=60)
    assert resp.status_code == 201, resp.text
    return requests.get(f"{gw.url}/system/services/{service['name']}", auth=gw.auth,
                        timeout=60).json()["token"]


def run(gw: LiveGateway, name: str, token: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.post(f"{gw.url}/run/{name}", data=base64.b64encode(text.encode()),
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
        if resp.status_code == 200:
            return resp.text
        assert resp.status_code == 503 and time.monotonic() < deadline, (
            f"{resp.status_code} {resp.text}\n{gw.log()[-4000:]}")
        time.sleep(0.2)


def test_the_function_user_cannot_enter_the_folder(closed_install: Path) -> None:
    """The condition under test: without the provider's view, a function user is refused."""
    probe = subprocess.run(["ls", str(closed_install)], user=1_499_999_999,
                           group=1_499_999_999, extra_groups=[], capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr


def test_a_service_runs_and_says_hello(gw: LiveGateway) -> None:
    token = create(gw, {"name": "hello", "image": "busybox",
                        "script": 'echo "Hello, $(cat "$INPUT_FILE_PATH")!"\n'})
    assert run(gw, "hello", token, "world").strip() == "Hello, world!"
    assert "functions see it read-only" in gw.log() or "cannot enter" in gw.log()


def test_a_script_calls_the_venvs_python(gw: LiveGateway, closed_install: Path) -> None:
    python = closed_install / "venv" / "bin" / "python"
    token = create(gw, {"name": "venv-python", "image": "busybox", "script": textwrap.dedent(f"""\
        {python} -c 'import os, sys, oscar_faas; print(sys.prefix, os.getuid(), oscar_faas.__file__)' \\
            > "$TMP_OUTPUT_DIR/out.txt"
        """)})
    out = base64.b64decode(run(gw, "venv-python", token, "x")).decode().split()
    assert out[0] == str(closed_install / "venv")
    assert int(out[1]) != 0  # as its own user, not root
    assert out[2].startswith(str(closed_install / "src"))


WORKER = textwrap.dedent("""\
        import shutil, sys
        import oscar_worker

        def setup():
            return sys.prefix

        def handler(input_path, output_dir, env, prefix):
            with open(f"{output_dir}/out.txt", "w") as out:
                out.write(prefix + " " + open(input_path).read())

        oscar_worker.serve(handler, setup)
        """)


def test_a_warm_worker_runs_on_the_venvs_python(gw: LiveGateway, closed_install: Path) -> None:
    """The worker's file is part of the installation (its project folder)."""
    worker = closed_install / "src" / "worker.py"
    worker.write_text(WORKER)
    worker.chmod(0o644)
    python = closed_install / "venv" / "bin" / "python"
    token = create(gw, {"name": "warm-venv", "image": "busybox", "script": "true\n",
                        "environment": {"variables": {"OSCAR_WORKER": f"{python} {worker}"}}})
    answer = base64.b64decode(run(gw, "warm-venv", token, "warm")).decode()
    assert answer == f"{closed_install / 'venv'} warm"


def test_what_a_service_needs_and_cannot_see_is_named(gw: LiveGateway,
                                                      closed_install: Path) -> None:
    """A worker outside the installation, in the closed folder: the call fails at once,
    naming the file and why, with the fix; never a silent wait."""
    private = closed_install / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    (private / "worker.py").write_text(WORKER)
    python = closed_install / "venv" / "bin" / "python"
    token = create(gw, {"name": "warm-hidden", "image": "busybox", "script": "true\n",
                        "environment": {"variables": {
                            "OSCAR_WORKER": f"{python} {private / 'worker.py'}"}}})
    started = time.monotonic()
    while True:
        resp = requests.post(f"{gw.url}/run/warm-hidden", data=b"eA==",
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
        if "worker.py" in resp.text or time.monotonic() - started > 20:
            break
        time.sleep(0.2)
    assert resp.status_code == 503, resp.text
    assert str(private / "worker.py") in resp.text, resp.text
    assert "every user can read" in resp.text, resp.text  # the fix
    assert time.monotonic() - started < 20
