"""A real S3 server for tests: a moto server process on 127.0.0.1, with real credentials.

Usage::

    from tests.s3server import S3Server

    @pytest.fixture(scope="session")
    def s3():
        with S3Server() as server:
            yield server

    def test_x(s3):
        s3.client().make_bucket("my-bucket")   # minio.Minio bound to the server
        ... s3.endpoint, s3.access_key, s3.secret_key, s3.region ...

API (keep it small, other test packages rely on it):

* ``S3Server(*, iam_auth=True, log_path=None, startup_timeout=30.0)``: a context manager
  (or call ``start()``/``stop()``). With ``iam_auth`` (the default) the server checks
  signatures like real MinIO/S3: an IAM user with an allow-all policy is created and its key pair
  is ``access_key``/``secret_key``; any other key pair is rejected (``InvalidAccessKeyId``,
  ``SignatureDoesNotMatch``). With ``iam_auth=False`` any key pair is accepted.
* Attributes: ``endpoint`` (``http://127.0.0.1:PORT``), ``host`` (``127.0.0.1:PORT``),
  ``access_key``, ``secret_key``, ``region`` (``us-east-1``), ``log_path`` (the server log).
* ``client(access_key=None, secret_key=None)``: a ``minio.Minio`` for the server.
* ``gateway_env()``: the gateway's ``MINIO_*`` settings that point at the server.
* ``moto_endpoint(**kwargs)``: a context manager that yields just the endpoint URL.

The server listens on a port the OS picks (``-p 0``), read back from its startup line, so there
is no race for a free port. Its output goes to a log file, never to a pipe that could fill up.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import requests

_RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class S3Server:
    """A moto S3 server process; see the module docstring for the API."""

    region = "us-east-1"

    def __init__(
        self,
        *,
        iam_auth: bool = True,
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.iam_auth = iam_auth
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.endpoint = ""
        self.host = ""
        self.access_key = "testing"
        self.secret_key = "testing"
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server, wait until it answers, and (with ``iam_auth``) turn auth on."""
        if self.log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="s3server-")
            self.log_path = Path(self._tmpdir.name) / "moto.log"
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            port = self._wait_for_port()
            self.host = f"127.0.0.1:{port}"
            self.endpoint = f"http://{self.host}"
            self._wait_until_answering()
            if self.iam_auth:
                self._enable_iam_auth()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop) and remove its temp dir."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def gateway_env(self) -> dict[str, str]:
        """The gateway's settings that make this server its MinIO."""
        return {"MINIO_ENDPOINT": self.endpoint, "MINIO_ACCESS_KEY": self.access_key,
                "MINIO_SECRET_KEY": self.secret_key}

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A ``minio.Minio`` client for this server (the server's own keys by default)."""
        from minio import Minio

        return Minio(
            self.host,
            access_key=access_key or self.access_key,
            secret_key=secret_key or self.secret_key,
            secure=False,
            region=self.region,
        )

    def _wait_for_port(self) -> int:
        assert self._proc is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            found = _RUNNING.search(self.log_path.read_bytes())
            if found:
                return int(found.group(1))
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"moto server did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                requests.get(f"{self.endpoint}/moto-api/data.json", timeout=2).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _enable_iam_auth(self) -> None:
        """Create an admin IAM user, take its key pair, then make moto check every request."""
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="allow-all", PolicyDocument=json.dumps(_ALLOW_ALL))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        # From now on no request is exempt from authentication (moto's reset-auth endpoint).
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()


@contextmanager
def moto_endpoint(**kwargs: Any) -> Iterator[str]:
    """Run an :class:`S3Server` and yield its endpoint URL (``http://127.0.0.1:PORT``)."""
    with S3Server(**kwargs) as server:
        yield server.endpoint
