"""Fixtures for the container runtime tests: a real engine (Docker Engine API at DOCKER_HOST;
Podman here, see scripts/setup-podman.sh), the static runtime binary built once (and cached),
and test images built offline once per session (no registry is reachable on CI).

A machine without an engine (or without busybox-static, PyInstaller, staticx) skips these
tests with the reason; with ``OSCAR_FAAS_REQUIRE_CONTAINERS=1`` (CI sets it) that is a failure.
Without an engine, the tests that need one are left out at collection and the reason is said
once at the end of the run (not once per test).

``OSCAR_FAAS_RUNTIME_BINARY`` names a prebuilt static runtime to use instead of building one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Where scripts/setup-podman.sh puts Podman's API socket (used when DOCKER_HOST is unset).
SETUP_SOCKET = "/run/oscar-faas-podman.sock"
REQUIRE = os.environ.get("OSCAR_FAAS_REQUIRE_CONTAINERS") == "1"
MUSL_LOADER = Path("/lib/ld-musl-x86_64.so.1")

#: Until the function runtime (oscar_faas.runtime, issue 13) is in the tree, the static binary
#: is the one-shot supervisor; the containers then run this stand-in server instead: busybox
#: httpd serving the same readiness path and running the binary as a CGI program for every
#: POST, as the classic watchdog runs it. Once the runtime lands, RUNTIME_SERVES is true and
#: the tests run the real `/oscar/runtime --host H --port P` with no other change.
RUNTIME_SERVES = (ROOT / "oscar_faas" / "runtime" / "__main__.py").is_file()
STANDIN = """
mkdir -p /tmp/www/cgi-bin /tmp/www/_
echo ok > /tmp/www/_/health
printf '#!/bin/sh\\necho "Content-Type: text/plain"\\necho\\nexec /oscar/runtime\\n' \\
    > /tmp/www/cgi-bin/run
chmod 0755 /tmp/www/cgi-bin/run
exec httpd -f -v -p {host}:{port} -h /tmp/www
"""
STANDIN_COMMAND = None if RUNTIME_SERVES else ["/bin/sh", "-c", STANDIN]
#: A path both the stand-in and the real runtime answer POSTs on.
INVOKE_PATH = "/cgi-bin/run"


def unavailable(reason: str) -> None:
    """Skip (or, under OSCAR_FAAS_REQUIRE_CONTAINERS=1, fail) with ``reason``."""
    if REQUIRE:
        pytest.fail(f"{reason} (OSCAR_FAAS_REQUIRE_CONTAINERS=1: containers are required)")
    pytest.skip(reason)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): pytest-timeout's per-test limit")


def _use_setup_socket() -> None:
    if not os.environ.get("DOCKER_HOST") and Path(SETUP_SOCKET).is_socket():
        os.environ["DOCKER_HOST"] = f"unix://{SETUP_SOCKET}"


def engine_problem() -> str | None:
    """Why no container engine can be used here, or None when one answers."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK is not installed (pip install docker)"
    _use_setup_socket()
    from oscar_faas.launchers.containers.engine_api import EngineUnavailable, connect

    try:
        connect(timeout=10).close()
    except EngineUnavailable as err:
        return f"no container engine: {err}"
    return None


#: The one line said at the end when the engine tests were left out.
_LEFT_OUT: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without an engine, leave out every test that needs one and say why once, at the end
    (under OSCAR_FAAS_REQUIRE_CONTAINERS=1 they stay, and fail)."""
    here = Path(__file__).parent
    needing = [item for item in items if item.path.is_relative_to(here)
               and "docker_client" in getattr(item, "fixturenames", ())]
    if not needing or REQUIRE:
        return
    problem = engine_problem()
    if problem is None:
        return
    left_out = set(needing)
    items[:] = [item for item in items if item not in left_out]
    config.hook.pytest_deselected(items=needing)
    how = "" if "setup-podman.sh" in problem else " Set up Podman with scripts/setup-podman.sh."
    _LEFT_OUT.append(f"{len(needing)} container tests not run: {problem}.{how} "
                     f"(OSCAR_FAAS_REQUIRE_CONTAINERS=1 makes this a failure)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _LEFT_OUT:
        terminalreporter.write_sep("-", "container tests skipped")
        terminalreporter.write_line(line)


# --------------------------------------------------------------------------- engine

@pytest.fixture(scope="session")
def docker_client() -> Any:
    """A client of the engine; skips (fails under REQUIRE) when there is none."""
    try:
        import docker  # noqa: F401
    except ImportError:
        unavailable("the docker SDK is not installed (pip install docker)")
    _use_setup_socket()
    from oscar_faas.launchers.containers.engine_api import EngineUnavailable, connect

    try:
        client = connect(timeout=120)
    except EngineUnavailable as err:
        unavailable(f"no container engine: {err}")
    yield client
    client.close()


# --------------------------------------------------------------------------- static runtime

@pytest.fixture(scope="session")
def runtime_build() -> dict[str, Any]:
    """The static runtime binary in a folder of its own (mounted at /oscar): what the
    container launcher uses (oscar_faas.launchers.containers.runtime_binary:
    OSCAR_FAAS_RUNTIME_BINARY, or built with build-runtime.sh once and cached in
    ~/.cache/oscar-faas/ by the digest of its sources), so the tests and a provider started by
    them share one build."""
    from oscar_faas.launchers.containers import runtime_binary

    folder = runtime_binary.planned_dir()
    cached = (folder / "runtime").is_file()
    if not cached and not os.environ.get(runtime_binary.ENV_BINARY):
        missing = runtime_binary.missing_tools()
        if missing:
            unavailable(f"cannot build the static runtime: {', '.join(missing)} missing "
                        "(pip install 'oscar-faas[container]')")
    started = time.monotonic()
    folder = runtime_binary.ensure_runtime()
    seconds = None if cached else time.monotonic() - started
    return {"dir": folder, "binary": folder / "runtime", "seconds": seconds, "cached": cached}


# --------------------------------------------------------------------------- offline images

def _static_busybox() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            head = candidate.read_bytes()[:8192]
            if b"ld-linux" not in head and b"ld-musl" not in head:
                return candidate
    unavailable("no static busybox on this machine (apt-get install busybox-static; "
                "scripts/setup-podman.sh installs it)")
    raise AssertionError("unreachable")


def _rootfs_tar(busybox: Path, marker: str, extra: dict[str, Path]) -> bytes:
    """A root file system: busybox and its applet links, /image-marker, /tmp, /etc/passwd,
    plus ``extra`` files (path in the image -> file on this machine)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for name in ("bin", "etc", "lib", "proc", "sys", "dev", "root", "var"):
            add_dir(name)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        add_file("image-marker", marker.encode())
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                               b"nobody:x:65534:65534:nobody:/tmp:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nnobody:x:65534:\n")
        made = {"bin", "etc", "lib", "proc", "sys", "dev", "root", "var", "tmp"}
        for name, source in extra.items():
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    made.add(folder)
                    add_dir(folder)
            add_file(name, source.read_bytes(), 0o755)
    return out.getvalue()


def _import_image(client: Any, name: str, data: bytes) -> str:
    """Load a root file system tarball as image ``name:<digest of it>`` unless it exists."""
    tag = hashlib.sha256(data).hexdigest()[:12]
    reference = f"{name}:{tag}"
    import docker.errors

    try:
        client.images.get(reference)
        return reference
    except docker.errors.ImageNotFound:
        pass
    answer = client.api.import_image_from_data(data, repository=name, tag=tag)
    # Podman's API ignores the tag (it tags :latest): tag it by the id the answer names.
    image_id = ""
    for line in str(answer).splitlines():
        if line.strip():
            event = json.loads(line)
            image_id = event.get("id") or event.get("status") or image_id
    client.images.get(image_id).tag(name, tag)
    client.images.get(reference)
    return reference


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any) -> str:
    """A busybox-only image (no libc at all), with the marker ``busybox test image``."""
    data = _rootfs_tar(_static_busybox(), "busybox test image\n", {})
    return _import_image(docker_client, "localhost/oscar-faas-test-busybox", data)


@pytest.fixture(scope="session")
def musl_image(docker_client: Any) -> str:
    """An image with musl as its C library (``/lib/ld-musl-x86_64.so.1``, as on Alpine; from
    Debian's ``musl`` package) and busybox, with the marker ``musl test image``."""
    if not MUSL_LOADER.exists():
        unavailable(f"no {MUSL_LOADER} on this machine (apt-get install musl; "
                    "scripts/setup-podman.sh installs it)")
    real = MUSL_LOADER.resolve()
    data = _rootfs_tar(_static_busybox(), "musl test image\n",
                       {"lib/ld-musl-x86_64.so.1": real,
                        "lib/libc.musl-x86_64.so.1": real})
    return _import_image(docker_client, "localhost/oscar-faas-test-musl", data)


@pytest.fixture(scope="session")
def glibc_image(docker_client: Any) -> str:
    """An image with glibc (this machine's loader and libc.so.6, at Debian's paths) and a
    dynamically linked glibc program, ``/usr/bin/glibc-true`` (this machine's ``true``),
    besides busybox, with the marker ``glibc test image``. A full Debian root file system
    (debootstrap) would take minutes; this is what the tests need of one."""
    loader = Path("/lib64/ld-linux-x86-64.so.2")
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    program = Path("/bin/true")
    if not (loader.exists() and libc.exists()):
        unavailable("no x86-64 glibc at Debian's paths on this machine")
    needed = subprocess.run(["ldd", str(program)], capture_output=True, text=True).stdout
    if "libc.so.6" not in needed or needed.count("=>") != 1:
        unavailable(f"{program} needs more than libc.so.6 here: {needed!r}")
    data = _rootfs_tar(_static_busybox(), "glibc test image\n",
                       {"lib64/ld-linux-x86-64.so.2": loader.resolve(),
                        "lib/x86_64-linux-gnu/libc.so.6": libc.resolve(),
                        "usr/bin/glibc-true": program})
    return _import_image(docker_client, "localhost/oscar-faas-test-glibc", data)


# --------------------------------------------------------------------------- engines

@pytest.fixture
def provider_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def engine(docker_client: Any, runtime_build: dict[str, Any], provider_id: str) -> Iterator[Any]:
    """A ContainerEngine with a provider id of its own; its containers go at teardown."""
    from oscar_faas.launchers.containers.engine import ContainerEngine

    eng = ContainerEngine(runtime_build["dir"], provider_id=provider_id, client=docker_client)
    yield eng
    eng.remove_all()
