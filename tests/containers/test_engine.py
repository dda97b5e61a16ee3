"""ContainerEngine against a real engine (Podman here), with real containers of images built
offline and the static runtime binary bind-mounted read-only: the function runs inside its
image, limits and secrets are applied, and remove and adoption behave."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from oscar_faas.launchers.containers.specs import FunctionContainer
from oscar_faas.launchers.containers.engine import ContainerEngine
from oscar_faas.launchers.containers.engine_api import FunctionNotReady, ImageUnavailable

from .conftest import INVOKE_PATH, STANDIN_COMMAND, b64

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

READY_TIMEOUT = 60


def run_function(engine: ContainerEngine, image: str, script: str, name: str = "fn",
                 **options: Any) -> FunctionContainer:
    """Start a function whose script is ``script`` and wait until it is ready."""
    env = {"SCRIPT": b64(script), "LOG_LEVEL": "INFO", **options.pop("env", {})}
    fc = engine.start(name, image, env, command=STANDIN_COMMAND, **options)
    engine.wait_ready(fc, READY_TIMEOUT)
    return fc


def invoke(fc: FunctionContainer, body: bytes = b"hello") -> str:
    answer = requests.post(fc.url + INVOKE_PATH, data=b64(body), timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_static_runtime_runs_in_busybox_and_musl_images(
        docker_client: Any, runtime_build: dict[str, Any], busybox_image: str,
        musl_image: str, glibc_image: str, record_property: Any) -> None:
    size = runtime_build["binary"].stat().st_size
    record_property("runtime_megabytes", round(size / 1e6, 1))
    if runtime_build["seconds"] is not None:
        record_property("runtime_build_seconds", round(runtime_build["seconds"], 1))
    print(f"\nstatic runtime: {size / 1e6:.1f} MB, built in "
          f"{runtime_build['seconds'] or 0:.0f} s (0: cached)")
    for image in (busybox_image, musl_image, glibc_image):
        # As an unprivileged user too: the binary unpacks itself to /tmp, not to /oscar.
        for user in ("0:0", "65534:65534"):
            out = docker_client.containers.run(
                image, ["/oscar/runtime", "--version"], remove=True, user=user,
                volumes={str(runtime_build["dir"]): {"bind": "/oscar", "mode": "ro"}})
            assert out.decode().startswith("oscar-faas "), (image, user, out)


def test_function_runs_inside_its_busybox_image(engine: ContainerEngine, busybox_image: str,
                                                record_property: Any) -> None:
    started = time.monotonic()
    fc = run_function(engine, busybox_image,
                      'cat /image-marker\necho "input: $(cat "$INPUT_FILE_PATH")"\n')
    seconds = time.monotonic() - started
    record_property("container_start_to_ready_seconds", round(seconds, 2))
    print(f"\ncontainer start to ready: {seconds:.2f} s")
    answer = invoke(fc, b"hello")
    assert "busybox test image" in answer  # a file only the image has
    assert "input: hello" in answer


def test_function_runs_inside_a_musl_image(engine: ContainerEngine, musl_image: str) -> None:
    fc = run_function(engine, musl_image, "cat /image-marker\n/lib/ld-musl-x86_64.so.1 2>&1\n"
                                          "true\n")
    answer = invoke(fc)
    assert "musl test image" in answer
    assert "musl libc" in answer


def test_function_runs_inside_a_glibc_image(engine: ContainerEngine, glibc_image: str) -> None:
    # The image's own dynamically linked programs run beside the static runtime (that no
    # variable of the frozen build reaches them is checked in the env test).
    fc = run_function(engine, glibc_image, "cat /image-marker\n"
                                           "/usr/bin/glibc-true && echo glibc-program-ran\n")
    answer = invoke(fc)
    assert "glibc test image" in answer
    assert "glibc-program-ran" in answer


def test_memory_and_cpu_limits_are_applied(engine: ContainerEngine, busybox_image: str) -> None:
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
              "|| cat /sys/fs/cgroup/memory.max\n")
    fc = run_function(engine, busybox_image, script, memory="64Mi", cpu="500m")
    host = engine.inspect(fc)["HostConfig"]
    assert host["Memory"] == 64 * 2**20
    if host.get("NanoCpus"):
        assert host["NanoCpus"] == 500_000_000
    else:  # Podman reports the CFS quota it set
        assert host["CpuQuota"] / host["CpuPeriod"] == pytest.approx(0.5)
    # and the kernel enforces it inside the container
    assert invoke(fc).split() == [str(64 * 2**20)]


def test_env_and_secrets_only_what_the_function_is_given(
        engine: ContainerEngine, busybox_image: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSCAR_FAAS_PROVIDER_ONLY", "provider-secret")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "token").write_text("s3cr3t")
    script = ('echo "secret: $(cat /var/openfaas/secrets/token)"\n'
              'echo "mine: $MINE"\n'
              'echo "provider: ${OSCAR_FAAS_PROVIDER_ONLY:-unset}"\n'
              '(echo x > /var/openfaas/secrets/token) 2>/dev/null && echo writable '
              '|| echo read-only\n'
              '(echo x > /oscar/runtime) 2>/dev/null && echo writable || echo read-only\n'
              # nothing of the frozen build's own environment reaches the script
              'env | grep -E "^(LD_LIBRARY_PATH|_PYI|STATICX)|_MEI" || echo clean\n')
    fc = run_function(engine, busybox_image, script, env={"MINE": "yes"},
                      secrets_dir=secrets_dir)
    lines = invoke(fc).splitlines()
    assert lines[:3] == ["secret: s3cr3t", "mine: yes", "provider: unset"]
    assert lines[3:] == ["read-only", "read-only", "clean"]


def test_remove_removes_the_container_and_returns_its_output(
        engine: ContainerEngine, docker_client: Any, busybox_image: str) -> None:
    fc = run_function(engine, busybox_image, "true\n", name="gone")
    invoke(fc)
    out = engine.start("gone", busybox_image, {}, command=[
        "/bin/sh", "-c", "echo out-marker; echo err-marker >&2; exec sleep 600"])
    deadline = time.monotonic() + 30
    while "err-marker" not in engine.logs("gone") and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = engine.logs("gone")
    assert "out-marker" in logs and "err-marker" in logs
    output = engine.remove("gone")
    assert "out-marker" in output and "err-marker" in output
    for container_id in (fc.id, out.id):
        assert docker_client.containers.list(all=True, filters={"id": container_id}) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(fc.url + "/_/health", timeout=5)


def test_a_restarted_provider_adopts_its_containers(
        engine: ContainerEngine, docker_client: Any, runtime_build: dict[str, Any],
        busybox_image: str, provider_id: str) -> None:
    running = run_function(engine, busybox_image, "cat /image-marker\n", name="kept")
    stopped = run_function(engine, busybox_image, "cat /image-marker\n", name="stopped")
    docker_client.containers.get(stopped.id).stop(timeout=2)

    restarted = ContainerEngine(runtime_build["dir"], provider_id=provider_id,
                                client=docker_client)
    found = restarted.adopt()
    assert sorted(found) == ["kept", "stopped"]
    assert found["kept"].id == running.id and found["kept"].url == running.url
    assert found["kept"].spec == running.spec
    assert found["stopped"].url == stopped.url
    for fc in found.values():
        restarted.wait_ready(fc, READY_TIMEOUT)
        assert "busybox test image" in invoke(fc)
    # another provider's engine sees none of them
    other = ContainerEngine(runtime_build["dir"], provider_id=provider_id + "-other",
                            client=docker_client)
    assert other.adopt() == {}


def test_a_runtime_that_exits_is_reported_with_its_output(engine: ContainerEngine,
                                                         busybox_image: str) -> None:
    fc = engine.start("crash", busybox_image, {},
                      command=["/bin/sh", "-c", "echo runtime-crashed >&2; exit 3"])
    with pytest.raises(FunctionNotReady, match="runtime-crashed"):
        engine.wait_ready(fc, 30)


def test_host_network_mode(engine: ContainerEngine, busybox_image: str) -> None:
    fc = run_function(engine, busybox_image, "cat /image-marker\n", name="hostnet",
                      network="host")
    assert "busybox test image" in invoke(fc)


def test_missing_image_that_cannot_be_pulled(engine: ContainerEngine) -> None:
    image = "localhost:1/oscar-faas-missing:never"
    with pytest.raises(ImageUnavailable) as caught:
        engine.ensure_image(image)
    message = str(caught.value)
    assert image in message and "cannot be pulled" in message
    assert "login" in message  # says what to do
    with pytest.raises(ImageUnavailable):
        engine.start("nope", image, {})
    assert engine._containers("nope") == []


# --------------------------------------------------------------------------- pulls

@pytest.fixture
def tls_registry(docker_client: Any, tmp_path: Path) -> Any:
    """A registry on 127.0.0.1 that the engine trusts: its certificate in
    /etc/containers/certs.d/127.0.0.1:PORT/ (Podman reads it on every pull; engines require
    TLS, and nothing else reaches a registry here)."""
    from .conftest import unavailable
    from .registry import Registry, self_signed_cert

    names = [c.get("Name", "") for c in docker_client.version().get("Components", [])]
    certs_root = Path("/etc/containers/certs.d")
    if not any("podman" in name.lower() for name in names):
        unavailable("the pull test trusts its registry through Podman's "
                    "/etc/containers/certs.d; this engine is not Podman")
    try:
        certs_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        unavailable(f"cannot write {certs_root} to trust a test registry: {err}")
    certfile, keyfile = self_signed_cert(str(tmp_path))
    with Registry(certfile, keyfile) as registry:
        trusted = certs_root / f"127.0.0.1:{registry.port}"
        trusted.mkdir()
        (trusted / "ca.crt").write_bytes(Path(certfile).read_bytes())
        try:
            yield registry
        finally:
            import docker.errors

            for reference in registry.references:
                try:
                    docker_client.images.remove(reference, force=True)
                except docker.errors.ImageNotFound:
                    pass
            for path in trusted.iterdir():
                path.unlink()
            trusted.rmdir()


def test_a_missing_image_is_pulled_with_progress_then_runs(
        engine: ContainerEngine, tls_registry: Any, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from oscar_faas.launchers.containers import engine as containers

    from .conftest import _rootfs_tar, _static_busybox

    monkeypatch.setattr(containers, "PULL_PROGRESS_EVERY", 0)  # a line per event
    image = tls_registry.add("oscar/pulled", "v1",
                             _rootfs_tar(_static_busybox(), "pulled test image\n", {}))
    caplog.set_level("INFO", logger="oscar_faas.launchers.containers.engine")
    fc = run_function(engine, image, "cat /image-marker\n", name="pulled")  # start pulls
    assert "pulled test image" in invoke(fc)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith(f"pulling image {image} (not on this machine)") for m in messages)
    assert any("layers done" in m for m in messages)
    assert any(m.startswith(f"pulled image {image}") for m in messages)
    assert any("/blobs/" in request for request in tls_registry.requests)


def test_an_image_the_registry_does_not_have(engine: ContainerEngine, tls_registry: Any) -> None:
    image = f"127.0.0.1:{tls_registry.port}/oscar/absent:v9"
    with pytest.raises(ImageUnavailable) as caught:
        engine.ensure_image(image)
    assert image in str(caught.value) and "cannot be pulled" in str(caught.value)


# --------------------------------------------------------------------------- warm workers

#: A line-protocol v1 worker in busybox sh: answers every call with a file naming the image,
#: and whether the runtime gave it the Python helper (bundled into the frozen build as a file).
SH_WORKER = r"""
eval "exec 3<&$OSCAR_WORKER_IN_FD 4>&$OSCAR_WORKER_OUT_FD"
helper=absent
for folder in $(echo "$PYTHONPATH" | tr ':' ' '); do
    [ -f "$folder/oscar_worker.py" ] && helper=present
done
echo '{"ready": true}' >&4
while read -r line <&3; do
    id=$(echo "$line" | sed 's/.*"id": *"\([^"]*\)".*/\1/')
    out=$(echo "$line" | sed 's/.*"TMP_OUTPUT_DIR": *"\([^"]*\)".*/\1/')
    echo "warm: $(cat /image-marker) helper: $helper" > "$out/answer.txt"
    echo "{\"id\": \"$id\", \"ok\": true}" >&4
done
"""


@pytest.mark.skipif(STANDIN_COMMAND is not None,
                    reason="the function runtime (oscar_faas.runtime, issue 13) is not in this "
                           "tree yet; the stand-in has no warm workers")
def test_a_warm_worker_runs_inside_the_image(engine: ContainerEngine,
                                             busybox_image: str) -> None:
    fc = engine.start("warm", busybox_image, {"OSCAR_WORKER": "sh -c 'eval \"$SH_WORKER\"'",
                                              "SH_WORKER": SH_WORKER})
    engine.wait_ready(fc, READY_TIMEOUT)
    answer = base64.b64decode(invoke(fc))
    assert answer == b"warm: busybox test image helper: present\n"


@pytest.mark.skipif(STANDIN_COMMAND is not None,
                    reason="the function runtime (oscar_faas.runtime, issue 13) is not in this "
                           "tree yet; the stand-in has no warm workers")
def test_warm_workers_follow_the_containers_cpu_limit(engine: ContainerEngine,
                                                      busybox_image: str) -> None:
    """No max_inflight: one worker per CPU the container may use (its cgroup's limit)."""
    from oscar_faas.runtime.sizing import cores
    if cores() < 2:
        pytest.skip("needs 2 CPUs")
    env = {"OSCAR_WORKER": "sh -c 'eval \"$SH_WORKER\"'", "SH_WORKER": SH_WORKER}
    for name, cpu, slots in (("warm-all", None, cores()), ("warm-one", "1", 1)):
        fc = engine.start(name, busybox_image, env, cpu=cpu)
        engine.wait_ready(fc, READY_TIMEOUT)
        assert requests.get(fc.url + "/_/status", timeout=30).json()["slots"] == slots
        assert base64.b64decode(invoke(fc)) == b"warm: busybox test image helper: present\n"
