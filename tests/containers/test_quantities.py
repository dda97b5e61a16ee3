"""OSCAR/OpenFaaS resource quantities as container limits (no engine needed)."""

from __future__ import annotations

import pytest

from oscar_faas.errors import InvalidService
from oscar_faas.quantities import memory_bytes, nano_cpus


@pytest.mark.parametrize("text, expected", [
    ("512Mi", 512 * 2**20), ("1Gi", 2**30), ("1.5Gi", 3 * 2**29), ("256M", 256_000_000),
    ("129e6", 129_000_000), ("134217728", 134217728), (" 64Mi ", 64 * 2**20),
])
def test_memory(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("0.5", 500_000_000), ("500m", 500_000_000), ("2", 2_000_000_000), ("1.0", 10**9),
    ("0.2", 200_000_000), ("100m", 100_000_000),
])
def test_cpu(text: str, expected: int) -> None:
    assert nano_cpus(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "Mi", "1e", "1.2.3", "nan"])
def test_not_a_quantity(text: str) -> None:
    with pytest.raises(InvalidService, match="not a resource quantity"):
        memory_bytes(text)


def test_memory_in_milli_says_what_was_meant() -> None:
    with pytest.raises(InvalidService, match="did you mean 128Mi"):
        memory_bytes("128m")


def test_zero_cpu() -> None:
    with pytest.raises(InvalidService, match="more than 0"):
        nano_cpus("0")
