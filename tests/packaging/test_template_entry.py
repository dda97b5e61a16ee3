"""The template's entry helpers (``supervisor_entry.py``), which the frozen static runtime
(``runtime_entry.py``, built by ``build-runtime.sh``; tests/containers run it) imports: a
baked script, and the image's own environment given back to child processes."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import TEMPLATE_DIR


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
