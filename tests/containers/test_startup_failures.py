"""Services that cannot start, with real containers (issue 22.3): an image that is not on the
machine and cannot be pulled, and an image without /tmp. ``oscar-faas apply`` exits 1 naming
the cause, ``oscar-faas run`` gets a 503 naming it at once (not after RUN_READY_WAIT), ``ls``
says Failed with the cause, OSCAR's deployment route says ``failed``; a good service in the
same FDL gets ready and answers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from oscar_faas.launchers.containers.engine import LABEL_PROVIDER
from tests.livegateway import LiveGateway

from .conftest import RUNTIME_SERVES, _import_image, _rootfs_tar, _static_busybox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(not RUNTIME_SERVES, reason="needs oscar_faas.runtime")]

MISSING = "localhost/oscar-faas-no-such-image:never"


@pytest.fixture(scope="module")
def no_tmp_image(docker_client: Any) -> str:
    """The busybox test image without its /tmp folder."""
    data = _rootfs_tar(_static_busybox(), "no tmp image\n", {})
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            if member.name != "tmp":
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return _import_image(docker_client, "localhost/oscar-faas-test-notmp", out.getvalue())


def test_services_that_cannot_start_say_why(docker_client: Any, runtime_build: dict[str, Any],
                                            busybox_image: str, no_tmp_image: str,
                                            tmp_path: Path) -> None:
    services = [{"oscar-cluster": {"name": name, "image": image, "script": "script.sh"}}
                for name, image in (("good", busybox_image), ("noimage", MISSING),
                                    ("notmp", no_tmp_image))]
    (tmp_path / "fdl.yaml").write_text(yaml.safe_dump({"functions": {"oscar": services}}))
    (tmp_path / "script.sh").write_text("cat /image-marker\n")
    with LiveGateway(tmp_path, args=["--runtime", "container"]) as gw:
        env = {**os.environ, "OSCAR_ENDPOINT": gw.url, "OSCAR_USERNAME": gw.user,
               "OSCAR_PASSWORD": gw.password}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "oscar_faas.cli", *args], env=env,
                                  cwd=tmp_path, capture_output=True, text=True, timeout=300)

        try:
            applied = cli("apply", "fdl.yaml", "--timeout", "120")
            words = applied.stdout + applied.stderr
            assert applied.returncode == 1, words
            assert "good: ready" in applied.stdout, words
            assert "noimage: failed: cannot start the container of noimage" in applied.stderr
            assert MISSING in applied.stderr and "cannot be pulled" in applied.stderr, words
            assert "notmp: failed" in applied.stderr, words
            assert "writable /tmp" in applied.stderr.split("notmp: failed", 1)[1], words

            for name, cause in (("noimage", "cannot be pulled"), ("notmp", "writable /tmp")):
                started = time.monotonic()
                ran = cli("run", name, "--text-input", "x")
                took = time.monotonic() - started
                assert ran.returncode == 1 and "503" in ran.stderr, ran.stderr
                assert f"service {name} is not ready: function {name} cannot start" \
                    in ran.stderr and cause in ran.stderr, ran.stderr
                assert took < 10, (name, took)  # RUN_READY_WAIT is 30 s

            assert cli("run", "good", "--text-input", "x").stdout.strip() == "busybox test image"
            listed = cli("ls").stdout
            rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
            assert rows["good"].rstrip().endswith("Ready"), listed
            assert "Failed: cannot start the container of noimage" in rows["noimage"], listed
            assert "Failed:" in rows["notmp"] and "writable" in rows["notmp"], listed

            status = requests.get(f"{gw.url}/system/services/noimage/deployment",
                                  auth=gw.auth, timeout=10).json()
            assert status["state"] == "failed" and MISSING in status["reason"]
            assert status["active_instances"] == 0
        finally:
            provider_id = tmp_path / "data" / "provider-id"
            if provider_id.exists():
                for container in docker_client.containers.list(all=True, filters={
                        "label": f"{LABEL_PROVIDER}={provider_id.read_text().strip()}"}):
                    container.remove(force=True)
