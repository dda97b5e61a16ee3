"""``oscar-faas serve`` as a user starts it: its flags, and the embedded provider it starts
(credentials, lifetime, what functions inherit from it)."""

from __future__ import annotations

import base64
import os
import signal
import stat
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.livegateway import LiveGateway

pytestmark = pytest.mark.slow


def provider_of(gateway: LiveGateway) -> tuple[int, dict[str, str], str]:
    """The embedded provider process serve started: pid, environment and URL (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == gateway.proc.pid and b"oscar_faas.provider" in cmdline:
            env = dict(item.decode().split("=", 1) for item in environ.split(b"\0")
                       if b"=" in item)
            port = cmdline[cmdline.index(b"--port") + 1].decode()
            return int(entry.name), env, f"http://127.0.0.1:{port}"
    raise AssertionError(f"no embedded provider under {gateway.proc.pid}:\n{gateway.log()}")


def provider_credentials(gateway: LiveGateway) -> tuple[str, str]:
    """The credentials serve gave its provider (in a 0600 file, not in its environment)."""
    user, password = (gateway.workdir / "data" / "provider.credentials").read_text().split()
    return user, password


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_embedded_provider_gets_random_credentials_it_enforces(tmp_path):
    passwords = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        with LiveGateway(tmp_path / run) as gw:
            _, env, url = provider_of(gw)
            user, password = provider_credentials(gw)
            # not in the environment it was started with (/proc/<pid>/environ)
            assert "OPENFAAS_PASSWORD" not in env and password not in str(env)
            assert "OSCAR_PASSWORD" not in env and gw.password not in str(env)
            assert stat.S_IMODE((gw.workdir / "data" / "provider.credentials").stat()
                                .st_mode) == 0o600
            passwords.append(password)
            assert len(password) >= 24 and password not in (gw.password, "oscar", user)
            assert requests.get(url + "/system/functions", timeout=10).status_code == 401
            assert requests.get(url + "/system/functions", auth=(user, "oscar"),
                                timeout=10).status_code == 401
            assert requests.get(url + "/system/functions", auth=(user, password),
                                timeout=10).status_code == 200
            # ... and the gateway itself, holding them, works.
            assert requests.get(gw.url + "/system/services", auth=gw.auth,
                                timeout=10).status_code == 200
    assert passwords[0] != passwords[1]  # fresh for every start


def test_the_embedded_provider_stops_when_the_gateway_exits(tmp_path):
    gw = LiveGateway(tmp_path)
    with gw:
        pid, _, url = provider_of(gw)
        assert requests.get(url + "/healthz", timeout=10).status_code == 200
        try:
            gw.proc.send_signal(signal.SIGTERM)  # the gateway alone, not its process group
            gw.proc.wait(timeout=30)
            deadline = time.monotonic() + 20
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(pid), "the embedded provider outlived the gateway"
            # Stopped by the gateway (SIGTERM: it ends its functions and says so), not
            # killed along with the process group.
            log = (tmp_path / "data" / "provider.log").read_text()
            assert log.rstrip().endswith("oscar_faas.provider: stopped"), log[-500:]
        finally:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_serve_host_binds_that_address_only(tmp_path):
    with LiveGateway(tmp_path, host="127.0.0.2", args=["--host", "127.0.0.2"]) as gw:
        assert requests.get(gw.url + "/health", timeout=10).text.strip() == "Ok"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{gw.port}/health", timeout=10)


def test_a_port_in_use_fails_at_once_naming_the_port_and_the_flag(tmp_path):
    """Before the banner and before any provider: one line, exit 1, no gunicorn retries."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENFAAS_")}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "oscar_faas.cli", "serve", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            env=env, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""  # no banner: nothing was started
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {port}" in lines[0] and "already in use" in lines[0]
    assert "--port" in lines[0]
    assert "Connection in use" not in done.stderr and took < 15
    assert not (tmp_path / "data" / "provider.log").exists()  # no provider was started


SCRIPT = """\
#!/bin/sh
env > "$TMP_OUTPUT_DIR/env.txt"
"""


def test_functions_inherit_none_of_the_gateways_or_providers_secrets(tmp_path):
    """The gateway holds OSCAR_PASSWORD, MINIO_SECRET_KEY and the provider's OPENFAAS_PASSWORD;
    the provider is started without them (its credentials come in a 0600 file). None of them
    reaches a function's environment."""
    secrets = {"OSCAR_PASSWORD": "gateway-secret-pw", "MINIO_ACCESS_KEY": "minio-access-id",
               "MINIO_SECRET_KEY": "minio-secret-key-value",
               # Configured, never contacted: the service has no MinIO paths.
               "MINIO_ENDPOINT": "http://127.0.0.1:9"}
    gw = LiveGateway(tmp_path, env=secrets)
    gw.password = secrets["OSCAR_PASSWORD"]
    (tmp_path / "env.sh").write_text(SCRIPT)
    fdl = tmp_path / "env.yaml"
    fdl.write_text(textwrap.dedent("""\
        functions:
          oscar:
          - oscar-cluster:
              name: printenv
              image: alpine
              cpu: '0.1'
              log_level: CRITICAL
              script: env.sh
        """))
    with gw:
        _, provider_env, _ = provider_of(gw)
        assert not {"OSCAR_PASSWORD", "MINIO_SECRET_KEY", "MINIO_ACCESS_KEY"} & set(provider_env)
        _, provider_password = provider_credentials(gw)
        client = gw.oscar_python_client()
        assert client.create_service(str(fdl)).status_code == 201
        token = client.get_service("printenv").json()["token"]
        resp = requests.post(gw.url + "/run/printenv", data=base64.b64encode(b"x"),
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert resp.status_code == 200, resp.text
    env_text = base64.b64decode(resp.content).decode()
    names = {line.split("=", 1)[0] for line in env_text.splitlines() if "=" in line}
    assert "INPUT_FILE_PATH" in names and "PATH" in names  # it is the function's env
    for name in ("OSCAR_PASSWORD", "MINIO_SECRET_KEY", "MINIO_ACCESS_KEY",
                 "OPENFAAS_PASSWORD", "OPENFAAS_USERNAME"):
        assert name not in names, name
    for value in (*secrets.values(), provider_password):
        if value.startswith("http"):
            continue
        assert value not in env_text, value


class HoldingOpenFaaS:
    """A loopback OpenFaaS stand-in that holds every request until released, counting
    how many are being held at once: the gateway's concurrency made visible."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        with conn:
            conn.settimeout(60)
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            with self.lock:
                self.held += 1
            self.release.wait(60)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.mark.parametrize("threads", [2, 4])
def test_serve_threads_bounds_concurrent_management_calls(tmp_path, threads):
    """--threads T: at most T management calls run at once in a worker; the rest wait for
    a thread (a bound, not a duration, is asserted: more never arrive while T are held)."""
    from concurrent.futures import ThreadPoolExecutor

    fake = HoldingOpenFaaS()
    # no start-up look for orphan secrets: only the calls below may reach the fake
    env = {"OPENFAAS_URL": fake.url, "OPENFAAS_USERNAME": "a", "OPENFAAS_PASSWORD": "b",
           "CLEAN_ORPHAN_SECRETS": "false"}
    try:
        with LiveGateway(tmp_path, env=env, args=["--workers", "1", "--threads",
                                                  str(threads)]) as gw, \
                ThreadPoolExecutor(6) as pool:
            calls = [pool.submit(requests.get, f"{gw.url}/system/services/svc{i}",
                                 auth=gw.auth, timeout=60) for i in range(6)]
            deadline = time.monotonic() + 20
            while fake.held < threads:
                assert time.monotonic() < deadline, f"only {fake.held} calls arrived"
                time.sleep(0.02)
            time.sleep(1.0)  # room for more to arrive, were more threads there
            assert fake.held == threads
            fake.release.set()
            assert [c.result().status_code for c in calls] == [404] * 6
            assert fake.held == 6
    finally:
        fake.close()
