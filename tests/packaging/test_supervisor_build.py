"""The standalone supervisor the function image runs, built here with PyInstaller exactly as
the template's builder stages build it (build-supervisor.sh), then run like the watchdog
runs it: request body on stdin, response on stdout, exit code = HTTP status class."""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from oscar_faas.stack import prepare_template

from .conftest import TEMPLATE_DIR, missing_tool

BUILD_TIMEOUT = 900
#: The module's first test that asks for the frozen build pays for it (pytest-timeout counts
#: fixture set-up), so these tests get the build's bound instead of the default.
needs_build = pytest.mark.timeout(BUILD_TIMEOUT + 60)


def load_entry() -> Any:
    spec = importlib.util.spec_from_file_location("supervisor_entry",
                                                  TEMPLATE_DIR / "supervisor_entry.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- entry script


def test_entry_prefers_script_env(tmp_path: Path) -> None:
    entry = load_entry()
    baked = tmp_path / "script.sh"
    baked.write_text("echo baked\n")
    env = {"SCRIPT": "ZWNobyBlbnYK", "OSCAR_SCRIPT_FILE": str(baked)}
    entry.use_baked_script(env)
    assert env["SCRIPT"] == "ZWNobyBlbnYK"
    env = {"SCRIPT": "", "OSCAR_SCRIPT_FILE": str(baked)}
    entry.use_baked_script(env)
    assert base64.b64decode(env["SCRIPT"]) == b"echo baked\n"
    env = {"OSCAR_SCRIPT_FILE": str(tmp_path / "missing.sh")}
    entry.use_baked_script(env)
    assert "SCRIPT" not in env


def test_entry_restores_the_images_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = load_entry()
    env = {"LD_LIBRARY_PATH": "/frozen/_internal:/opt/x", "LD_LIBRARY_PATH_ORIG": "/opt/x",
           "_PYI_ARCHIVE_FILE": "/oscar/bin/supervisor", "_PYI_PARENT_PROCESS_LEVEL": "1",
           "KEEP": "1"}
    entry.restore_system_env(env)
    assert "LD_LIBRARY_PATH_ORIG" in env, "only a frozen build touches the environment"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    entry.restore_system_env(env)
    assert env == {"LD_LIBRARY_PATH": "/opt/x", "KEEP": "1"}
    env = {"LD_LIBRARY_PATH": "/frozen/_internal"}
    entry.restore_system_env(env)
    assert env == {}


# --------------------------------------------------------------------------- frozen build


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Freeze the supervisor once for this module; skip when this machine cannot."""
    if importlib.util.find_spec("PyInstaller") is None:
        missing_tool("PyInstaller is not installed (pip install pyinstaller)")
    if shutil.which("objdump") is None:
        missing_tool("PyInstaller needs objdump (apt-get install binutils)")
    work = tmp_path_factory.mktemp("frozen")
    source = prepare_template(work / "template")
    wrapper = work / "pyinstaller"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m PyInstaller "$@"\n')
    wrapper.chmod(0o755)
    started = time.monotonic()
    result = subprocess.run(["sh", str(source / "build-supervisor.sh"), str(work / "dist"),
                             str(source)], env=dict(os.environ, PYINSTALLER=str(wrapper)),
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    folder = work / "dist" / "supervisor"
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    # /oscar/bin/supervisor is a symlink into the build folder, as in the image.
    (work / "bin").mkdir()
    link = work / "bin" / "supervisor"
    link.symlink_to(folder / "supervisor")
    return {"folder": folder, "executable": link, "seconds": seconds, "bytes": size,
            "work": work}


def invoke(frozen: dict[str, Any], body: bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run the frozen supervisor as the watchdog does, with a clean environment."""
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LOG_LEVEL": "CRITICAL",
            "TMPDIR": str(frozen["work"])}
    return subprocess.run([str(frozen["executable"])], input=body, env={**base, **env},
                          capture_output=True, timeout=60)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.slow
@needs_build
def test_build_size_and_time(frozen: dict[str, Any],
                             record_property: Any) -> None:
    megabytes = frozen["bytes"] / 1e6
    record_property("pyinstaller_build_seconds", round(frozen["seconds"], 1))
    record_property("supervisor_megabytes", round(megabytes, 1))
    print(f"\nfrozen supervisor: {megabytes:.1f} MB in {frozen['seconds']:.1f} s")
    assert (frozen["folder"] / "supervisor").is_file()
    assert megabytes < 80, "a stripped build is about 25 MB; much more means a leak of deps"


@pytest.mark.slow
@needs_build
def test_one_output_file_is_returned_as_base64(frozen: dict[str, Any]) -> None:
    script = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/out.txt"\necho log line\n'
    result = invoke(frozen, b64("hello world").encode(), SCRIPT=b64(script))
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout) == b"hello world"


@pytest.mark.slow
@needs_build
def test_no_output_returns_the_script_output(frozen: dict[str, Any]) -> None:
    script = 'printf "got %s" "$(cat "$INPUT_FILE_PATH")"\n'
    result = invoke(frozen, b64("plant.jpg").encode(), SCRIPT=b64(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"got plant.jpg"


@pytest.mark.slow
@needs_build
def test_invalid_base64_is_an_error(frozen: dict[str, Any]) -> None:
    result = invoke(frozen, b"not base64 %%%", SCRIPT=b64("echo never\n"))
    assert result.returncode != 0
    assert b"invalid base64" in result.stdout
    assert b"never" not in result.stdout


@pytest.mark.slow
@needs_build
def test_failing_script_is_an_error(frozen: dict[str, Any]) -> None:
    result = invoke(frozen, b64("x").encode(), SCRIPT=b64("echo oops\nexit 3\n"))
    assert result.returncode == 3
    assert b"oops" in result.stdout


@pytest.mark.slow
@needs_build
def test_baked_script_runs_when_script_is_unset(frozen: dict[str, Any], tmp_path: Path) -> None:
    baked = tmp_path / "script.sh"
    baked.write_text("echo from the image\n")
    result = invoke(frozen, b"", OSCAR_SCRIPT_FILE=str(baked))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"from the image\n"
    result = invoke(frozen, b"", OSCAR_SCRIPT_FILE=str(baked), SCRIPT=b64("echo env wins\n"))
    assert result.stdout == b"env wins\n"


@pytest.mark.slow
@needs_build
def test_user_script_gets_the_images_environment(frozen: dict[str, Any]) -> None:
    script = 'env | grep -E "^(LD_LIBRARY_PATH|_PYI_)" | sort\n'
    result = invoke(frozen, b"", SCRIPT=b64(script), LD_LIBRARY_PATH="/opt/image/lib")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"LD_LIBRARY_PATH=/opt/image/lib\n"
    result = invoke(frozen, b"", SCRIPT=b64(script))
    assert result.stdout == b""


@pytest.mark.slow
@needs_build
def test_select_script_accepts_the_real_build(frozen: dict[str, Any], tmp_path: Path) -> None:
    candidates = tmp_path / "candidates"
    shutil.copytree(frozen["folder"], candidates / "glibc" / "supervisor", symlinks=True)
    (candidates / "musl" / "supervisor").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    result = subprocess.run(
        ["sh", str(TEMPLATE_DIR / "select-supervisor.sh"), str(candidates),
         str(tmp_path / "out")],
        env=dict(os.environ, OSCAR_LIBDIR=str(tmp_path / "lib")), capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "supervisor" / "LIBC").read_text() == "glibc\n"
