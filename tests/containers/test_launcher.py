"""ContainerLauncher (the provider's ``--runtime container`` launcher) against a real engine
(Podman here): the real static runtime in an offline busybox image, limits, secrets, labels,
output into the function log, stop, death and adoption by a second launcher."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from oscar_faas.launchers.containers.launcher import LABEL_RUNTIME, ContainerLauncher
from oscar_faas.launchers.containers.engine import LABEL_FUNCTION, LABEL_PROVIDER, LABEL_SPEC
from oscar_faas.launchers.launch import FUNCTION_LOGGER, LaunchError, RuntimeSpec
from oscar_faas.provider.logs import FunctionLogs

from .conftest import INVOKE_PATH, RUNTIME_SERVES, b64

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(not RUNTIME_SERVES, reason="needs oscar_faas.runtime")]

READY_TIMEOUT = 60
SCRIPT = """cat /image-marker
cat /var/openfaas/secrets/token; echo
touch /var/openfaas/secrets/new 2>/dev/null && echo secrets-writable || echo secrets-read-only
echo "secrets dir: $OSCAR_SECRETS_DIR"
echo "input: $(cat "$INPUT_FILE_PATH")"
echo "path: $PATH"
"""


def wait_ready(handle: Any, timeout: float = READY_TIMEOUT) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if requests.get(handle.url + "/_/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        assert handle.alive(), handle.output_tail()
        time.sleep(0.05)
    raise AssertionError(f"not ready within {timeout} s:\n{handle.output_tail()}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def launcher(docker_client: Any, runtime_build: dict[str, Any],
             data_dir: Path) -> Iterator[ContainerLauncher]:
    launcher = ContainerLauncher(data_dir, runtime_dir=runtime_build["dir"], client=docker_client)
    yield launcher
    launcher.engine.remove_all()


@pytest.fixture
def function_logs() -> Iterator[FunctionLogs]:
    logs = FunctionLogs("openfaas-fn")
    logger = logging.getLogger(FUNCTION_LOGGER)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logs.attach(logger)
    yield logs
    logs.detach()
    logger.setLevel(level)


def spec_for(image: str, secrets_dir: Path, name: str = "fn", **options: Any) -> RuntimeSpec:
    env = {"SCRIPT": b64(SCRIPT), "LOG_LEVEL": "DEBUG", **options.pop("env", {})}
    return RuntimeSpec(name=name, image=image, env=env, secrets_dir=secrets_dir, **options)


def test_runtime_runs_in_its_image_with_limits_secrets_and_labels(
        launcher: ContainerLauncher, busybox_image: str, docker_client: Any, tmp_path: Path,
        function_logs: FunctionLogs, record_property: Any) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "token").write_text("s3cr3t")
    (secrets_dir / "token").chmod(0o600)
    spec = spec_for(busybox_image, secrets_dir, memory="64Mi", cpu="500m")
    started = time.monotonic()
    handle = launcher.start(spec)
    seconds = wait_ready(handle) + (time.monotonic() - started)
    record_property("container_start_to_ready_seconds", round(seconds, 2))
    print(f"\ncontainer start to ready: {seconds:.2f} s")

    answer = requests.post(handle.url + INVOKE_PATH, data=b64("hello"), timeout=60)
    assert answer.status_code == 200, answer.text
    assert "busybox test image" in answer.text  # a file only the image has
    assert "s3cr3t" in answer.text
    assert "secrets-read-only" in answer.text
    assert "secrets dir: /var/openfaas/secrets" in answer.text
    assert "input: hello" in answer.text
    assert "/work" not in answer.text.split("path: ")[1]  # the image's PATH, not the host's

    attrs = docker_client.api.inspect_container(handle.container_id)
    assert attrs["HostConfig"]["Memory"] == 64 * 2**20
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_FUNCTION] == "fn"
    assert labels[LABEL_PROVIDER] == launcher.provider_id
    assert labels[LABEL_SPEC] == spec.fingerprint == handle.fingerprint
    assert labels[LABEL_RUNTIME] == launcher.runtime_id
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/var/openfaas/secrets"]["RW"] is False
    assert mounts["/oscar"]["RW"] is False
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert "OPENFAAS_PASSWORD" not in env and "DOCKER_HOST" not in env

    # the container's output reaches the function's log: the runtime's lines and, at
    # LOG_LEVEL=DEBUG, the script's
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = b"".join(function_logs.query("fn")).decode()
        if "busybox test image" in text:
            break
        time.sleep(0.1)
    assert "listening on" in text and "busybox test image" in text, text
    assert "listening on" in handle.output_tail()

    handle.stop()
    assert not handle.alive()
    assert not docker_client.containers.list(all=True, filters={"id": handle.container_id})
    handle.stop()  # idempotent


def test_a_killed_container_is_not_alive(launcher: ContainerLauncher, busybox_image: str,
                                         docker_client: Any, tmp_path: Path) -> None:
    handle = launcher.start(spec_for(busybox_image, tmp_path / "secrets"))
    wait_ready(handle)
    docker_client.api.kill(handle.container_id)
    deadline = time.monotonic() + 10
    while handle.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not handle.alive()  # the engine does not restart it: the manager does
    handle.stop()


def test_a_second_launcher_on_the_same_data_dir_adopts_the_containers(
        launcher: ContainerLauncher, busybox_image: str, docker_client: Any,
        runtime_build: dict[str, Any], data_dir: Path, tmp_path: Path) -> None:
    spec = spec_for(busybox_image, tmp_path / "secrets")
    handle = launcher.start(spec)
    wait_ready(handle)
    launcher.close()

    again = ContainerLauncher(data_dir, runtime_dir=runtime_build["dir"], client=docker_client)
    assert again.provider_id == launcher.provider_id
    adopted = again.adopt()
    assert set(adopted) == {"fn"}
    assert adopted["fn"].url == handle.url
    assert adopted["fn"].fingerprint == spec.fingerprint
    assert adopted["fn"].alive()
    answer = requests.post(adopted["fn"].url + INVOKE_PATH, data=b64("again"), timeout=60)
    assert "input: again" in answer.text

    other = ContainerLauncher(tmp_path / "other-data", runtime_dir=runtime_build["dir"],
                              client=docker_client)
    assert other.adopt() == {}  # another provider never takes them

    # a provider with another runtime binary adopts it with a fingerprint matching no spec
    newer = tmp_path / "runtime-newer"
    newer.mkdir()
    upgraded = ContainerLauncher(data_dir, runtime_dir=newer, client=docker_client)
    assert upgraded.adopt()["fn"].fingerprint == ""
    adopted["fn"].stop()


def test_a_missing_image_is_a_clear_error(launcher: ContainerLauncher, tmp_path: Path) -> None:
    image = "localhost/oscar-faas-no-such-image:never"
    with pytest.raises(LaunchError) as info:
        launcher.start(spec_for(image, tmp_path / "secrets"))
    assert image in str(info.value)
    assert "cannot be pulled" in str(info.value)


def test_host_network_reaches_the_hosts_loopback(docker_client: Any,
                                                 runtime_build: dict[str, Any],
                                                 busybox_image: str, tmp_path: Path) -> None:
    """OSCAR_FAAS_CONTAINER_NETWORK=host: a function reaches a service on the host's
    127.0.0.1 (MinIO, for a gateway started with MINIO_ENDPOINT=http://127.0.0.1:9000)."""
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b"from the host's loopback\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    launcher = ContainerLauncher(tmp_path / "data", env={"OSCAR_FAAS_CONTAINER_NETWORK": "host"},
                                 runtime_dir=runtime_build["dir"], client=docker_client)
    try:
        script = f"wget -q -O - http://127.0.0.1:{server.server_address[1]}/\n"
        handle = launcher.start(RuntimeSpec(name="fn", image=busybox_image,
                                            env={"SCRIPT": b64(script)},
                                            secrets_dir=tmp_path / "secrets"))
        wait_ready(handle)
        answer = requests.post(handle.url + INVOKE_PATH, data=b64("x"), timeout=60)
        assert answer.status_code == 200, answer.text
        assert "from the host's loopback" in answer.text
        mode = docker_client.api.inspect_container(handle.container_id)["HostConfig"]
        assert mode["NetworkMode"] == "host"
    finally:
        launcher.engine.remove_all()
        server.shutdown()


def test_an_engine_that_does_not_answer_leaves_the_container_taken_as_alive(
        tmp_path: Path) -> None:
    """Podman's containers run on without its API service: no restart storm, and stop()
    does not raise (it says how to remove the container by hand)."""
    import docker

    from oscar_faas.launchers.containers.launcher import ContainerHandle
    from oscar_faas.launchers.containers.specs import FunctionContainer

    dead = docker.DockerClient(base_url=f"unix://{tmp_path / 'no-engine.sock'}", timeout=2,
                                version="1.41")
    launcher = ContainerLauncher(tmp_path / "data", runtime_dir=tmp_path, client=dead)
    handle = ContainerHandle(launcher, FunctionContainer(
        "fn", "0" * 64, "oscar-faas-fn-000000", "http://127.0.0.1:9", "fp"), "fp")
    assert handle.alive()
    handle.stop()
    assert not handle.alive()
