"""The first call to a container runtime gets its whole body (issue 22, item 1).

A container is running (so the provider hands out its address) a few seconds before the
runtime inside listens; the proxy used to read the call's body, find the port closed, and
send the call again without it: a 200 computed on an empty input, on the first call after
every create, update and provider restart. Real Podman containers of the busybox test image.
"""

from __future__ import annotations

import base64
import pytest

from oscar_faas.contract import SUPERVISOR_PROCESS
from tests.provider.test_whole_calls import ECHO, distinctive, in_pieces

from .conftest import RUNTIME_SERVES, b64
from .test_provider_containers import ContainerProvider, container_provider  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(not RUNTIME_SERVES, reason="needs oscar_faas.runtime")]

#: raw input sizes, 1 byte to 10 MB (above and below the proxy's inline size)
SIZES = {"one-byte": 1, "small": 40_000, "ten-mb": 10 * 1024 * 1024}


def deploy(p: ContainerProvider, name: str, image: str, method: str, version: str) -> None:
    resp = p.request(method, "/system/functions", json={
        "service": name, "image": image, "envProcess": SUPERVISOR_PROCESS,
        "envVars": {"SCRIPT": b64(ECHO), "LOG_LEVEL": "INFO", "VERSION": version}})
    assert resp.status_code in (200, 202), resp.text


def check(p: ContainerProvider, name: str, raw: bytes, chunked: bool = False) -> None:
    encoded = base64.b64encode(raw)
    resp = p.invoke(name, data=in_pieces(encoded) if chunked else encoded, timeout=120)
    assert resp.status_code == 200, (resp.status_code, resp.text[:300], p.log()[-3000:])
    got = base64.b64decode(resp.content)
    assert got == raw, f"{name}: the script got {len(got)} bytes, not the {len(raw)} sent"


def test_the_first_call_to_a_container_gets_its_whole_body(
        container_provider: ContainerProvider, busybox_image: str) -> None:  # noqa: F811
    p = container_provider
    for label, size in SIZES.items():
        deploy(p, label, busybox_image, "POST", "1")  # no wait for ready
        check(p, label, distinctive(size, f"{label}-create"))
    for label, size in SIZES.items():
        deploy(p, label, busybox_image, "PUT", "2")  # a new container replaces the old
        check(p, label, distinctive(size, f"{label}-update"), chunked=True)
    p.restart()  # the containers are adopted or recreated: the first calls race them
    for label, size in SIZES.items():
        check(p, label, distinctive(size, f"{label}-restart"))
