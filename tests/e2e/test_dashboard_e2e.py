"""Issue 23, items 1 and 3, on a real ``oscar-faas serve`` (2 gunicorn workers, the embedded
provider): followed log streams must not lock the management API out, and deleted services
must not leave metrics series or log files behind."""

from __future__ import annotations

import base64
import socket
import time

import pytest
import requests

from tests.livegateway import LiveGateway

from .test_serve_e2e import provider_of

pytestmark = pytest.mark.slow

#: Followers per worker in these tests (2 workers of 32 threads each).
CAP = 40


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("dashboard"),
                     env={"MAX_LOG_FOLLOWERS": str(CAP)}) as gateway:
        yield gateway


def create(gw: LiveGateway, name: str) -> str:
    body = {"name": name, "image": "alpine", "cpu": "0.1", "memory": "64Mi",
            "script": "cat \"$INPUT_FILE_PATH\"\n", "log_level": "INFO"}
    resp = requests.post(f"{gw.url}/system/services", json=body, auth=gw.auth, timeout=60)
    assert resp.status_code == 201, resp.text
    return requests.get(f"{gw.url}/system/services/{name}", auth=gw.auth,
                        timeout=30).json()["token"]


def follower(gw: LiveGateway, name: str) -> tuple[socket.socket, int]:
    """A raw ``logs --follow`` request; returns the socket and the answer's status."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    creds = base64.b64encode(f"{gw.user}:{gw.password}".encode()).decode()
    sock.sendall(f"GET /system/services/{name}/logs?follow=true HTTP/1.1\r\n"
                 f"Host: x\r\nAuthorization: Basic {creds}\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, int(head.split()[1])


def timed_listing(gw: LiveGateway) -> float:
    start = time.monotonic()
    resp = requests.get(f"{gw.url}/system/services", auth=gw.auth, timeout=30)
    assert resp.status_code == 200
    return time.monotonic() - start


def test_dropped_followers_do_not_lock_the_management_api(gw):
    create(gw, "followed")
    # more than the 2 x 32 WSGI threads that used to hold one each until they timed out
    socks = [follower(gw, "followed") for _ in range(70)]
    statuses = [status for _, status in socks]
    assert statuses.count(200) >= CAP and set(statuses) <= {200, 429}
    assert timed_listing(gw) < 2.0  # while they are all open
    for sock, _ in socks:
        sock.close()  # dropped, as a killed `oscar-faas logs --follow`
    assert timed_listing(gw) < 2.0


def test_followers_are_capped_and_freed_when_clients_leave(gw):
    create(gw, "capped")
    socks = [follower(gw, "capped") for _ in range(3 * CAP)]
    statuses = [status for _, status in socks]
    assert statuses.count(429) >= CAP and set(statuses) <= {200, 429}
    assert statuses.count(200) <= 2 * CAP
    assert timed_listing(gw) < 2.0
    for sock, _ in socks:
        sock.close()
    time.sleep(1.0)
    # the gateway noticed every client leave: a full worker's worth opens again
    again = [follower(gw, "capped") for _ in range(CAP)]
    assert [status for _, status in again] == [200] * CAP
    for sock, _ in again:
        sock.close()


def test_churned_services_leave_no_series_and_no_log_files(gw):
    _, _, provider_url = provider_of(gw)
    logs = gw.workdir / "data" / "logs"

    def churn(names: list[str]) -> None:
        for name in names:
            token = create(gw, name)
            run = requests.post(f"{gw.url}/run/{name}", data=b"aGk=", timeout=60,
                                headers={"Authorization": f"Bearer {token}"})
            assert run.status_code == 200, run.text
            assert requests.delete(f"{gw.url}/system/services/{name}", auth=gw.auth,
                                   timeout=60).status_code == 204

    def sizes() -> tuple[int, int]:
        gateway = requests.get(f"{gw.url}/metrics", timeout=10).text
        provider = requests.get(f"{provider_url}/metrics", timeout=10).text
        return len(gateway), len(provider)

    churn(["churn-warm"])
    base_gateway, base_provider = sizes()
    names = [f"churn-{i}" for i in range(15)]
    churn(names)
    gateway_text = requests.get(f"{gw.url}/metrics", timeout=10).text
    provider_text = requests.get(f"{provider_url}/metrics", timeout=10).text
    assert not [n for n in names if f'"{n}"' in gateway_text or f'"{n}.' in provider_text]
    after_gateway, after_provider = sizes()
    # each churned service used to add ~1.5 KB here and ~2.3 KB on the provider
    assert after_gateway <= base_gateway + 1024, (base_gateway, after_gateway)
    assert after_provider <= base_provider + 1024, (base_provider, after_provider)
    left = sorted(p.name for p in logs.glob("churn-*"))
    assert left == [], left
    # the usage history keeps them (OSCAR's metrics count requests of deleted services)
    deadline = time.monotonic() + 10
    while True:  # each worker adds its tally to the counts file every 2 s
        summary = requests.get(f"{gw.url}/system/metrics", auth=gw.auth, timeout=10).json()
        if summary["totals"]["requests_count_sync"] >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert summary["totals"]["requests_count_sync"] >= 16
    assert summary["totals"]["services_count_total"] >= 16
