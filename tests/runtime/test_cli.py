"""``oscar-faas runtime`` is the same server as ``python -m oscar_faas.runtime``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.supervisor.conftest import REPO, make_env

from .conftest import RuntimeFactory

CLI = [sys.executable, "-c", "import sys; from oscar_faas.cli import main; sys.exit(main())"]


def test_cli_subcommand_serves(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env('cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/r"', tmpdir=tmp_path / "tmp"),
                 command=CLI + ["runtime"])
    res = rt.post("aGk=")
    assert (res.status_code, res.content) == (200, b"aGk=\n")


def test_help_names_the_environment() -> None:
    for command in (CLI + ["runtime", "--help"], [sys.executable, "-m", "oscar_faas.runtime", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 0
        for word in ("--port", "max_inflight", "max_queue", "exec_timeout", "OSCAR_WORKER",
                     "/_/health"):
            assert word in done.stdout
