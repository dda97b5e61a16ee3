"""Fixtures for the whole suite.

As root, the embedded provider runs every function as a user of its own (host mode
isolation, ``oscar_faas/provider/isolation.py``), and pytest's temporary folders are ``0700``
root. The scripts and files a test hands to its functions live there, so, as root, each
test's ``tmp_path`` is opened to them (``1777``, like ``/tmp``, with its parents crossable),
as a container would get them mounted. A provider's data dir inside it is still made ``0700``
by the provider itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def _open_to_functions(path: Path, base: Path) -> None:
    if os.geteuid() != 0:
        return
    for folder in path.parents:  # up to pytest-of-<user> (``base``) included
        if not folder.is_relative_to(base):
            break
        os.chmod(folder, os.stat(folder).st_mode | stat.S_IXOTH)
    os.chmod(path, 0o1777)


@pytest.fixture
def tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _open_to_functions(tmp_path, tmp_path_factory.getbasetemp().parent)
    return tmp_path
