"""The suite's session-end check (tests/conftest.py): a run fails when a test leaves an
oscar-faas process it started running, and names it; a process the run did not start (a
user's own ``serve``) is not counted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A stand-in for a provider: its command line says oscar_faas, it sleeps.
LEFT = (f"subprocess.Popen([{sys.executable!r}, '-c', 'import time; time.sleep(120)', "
        f"'oscar_faas.provider'], start_new_session=True)")


def run_inner(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_inner.py"
    test.write_text(textwrap.dedent(f"""
        import subprocess

        def test_it():
            {body}
        """))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(PYTHONPATH=str(ROOT), OSCAR_FAAS_TEST_LEFTOVER_GRACE="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_process_left_behind_fails_the_run_and_is_ended(tmp_path):
    done = run_inner(tmp_path, LEFT)
    assert done.returncode == 1, done.stdout
    assert "1 passed" in done.stdout
    assert "left 1 oscar-faas process(es) running (now killed)" in done.stdout
    assert "oscar_faas.provider" in done.stdout
    pid = int(done.stdout.split("oscar-faas process(es) running (now killed):\n")[1]
              .split(":")[0])
    assert not Path(f"/proc/{pid}/cmdline").exists() or \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_run_that_cleans_up_passes(tmp_path):
    done = run_inner(tmp_path, f"p = {LEFT}\n            p.kill(); p.wait()")
    assert done.returncode == 0, done.stdout
    assert "left" not in done.stdout


def test_a_process_this_run_did_not_start_is_not_counted(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OSCAR_FAAS_TEST_RUN"}
    users_own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                  "oscar_faas.provider"], env=env, start_new_session=True)
    try:
        done = run_inner(tmp_path, "pass")
        assert done.returncode == 0, done.stdout
        assert users_own.poll() is None  # and it was left alone
    finally:
        users_own.kill()
        users_own.wait()
