"""A 100 MB body streams through ``cat`` without being held in the provider's memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .conftest import ProviderProcess

SIZE = 100 * 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB
#: Generous: the body alone is 100 MiB; the provider idles around 30 MiB.
RSS_LIMIT_KB = 80 * 1024


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_100mb_through_cat(make_provider: Callable[..., ProviderProcess]) -> None:
    p = make_provider()
    p.deploy("big-cat", "cat")
    assert p.proc is not None
    sent = hashlib.sha256()

    def body() -> Iterator[bytes]:  # chunked, no Content-Length, as oscar-cli streams
        for _ in range(SIZE // len(BLOCK)):
            sent.update(BLOCK)
            yield BLOCK

    received, size = hashlib.sha256(), 0
    with p.invoke("big-cat", body(), stream=True, timeout=300) as resp:
        assert resp.status_code == 200
        assert int(resp.headers["Content-Length"]) == SIZE
        for chunk in resp.iter_content(1 << 20):
            received.update(chunk)
            size += len(chunk)
    assert size == SIZE and received.hexdigest() == sent.hexdigest()
    peak = peak_rss_kb(p.proc.pid)
    print(f"provider peak RSS after 100 MiB through cat: {peak / 1024:.1f} MiB")
    assert peak < RSS_LIMIT_KB
