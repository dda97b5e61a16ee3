"""Kubernetes resource quantities (``512Mi``, ``0.5``, ``500m``) as the numbers engines take.

Exists so every reader of an FDL's ``cpu``/``memory`` (the container engine's limits
``mem_limit``/``nano_cpus``, a warm service's worker count in :mod:`.runtime.sizing`, the
status route's totals) follows the Kubernetes rules, in one place, testable without an engine;
at the package's top level because the runtime must not import the provider.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, ROUND_CEILING

from .errors import InvalidService

#: The smallest memory limit engines accept (Docker and Podman refuse less than 6 MiB).
MIN_MEMORY = 6 * 1024 * 1024

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``512Mi``, ``1Gi``, ``0.5``, ``500m``, ``129e6``) as a
    number.

    :raises InvalidService: not a quantity.
    """
    value = str(text).strip()
    number, factor = value, Decimal(1)
    if value[-2:] in _BINARY:
        number, factor = value[:-2], Decimal(_BINARY[value[-2:]])
    elif value[-1:] in _DECIMAL and value[-1:] not in "0123456789":
        number, factor = value[:-1], _DECIMAL[value[-1:]]
    try:
        amount = Decimal(number.lstrip("+")) * factor
    except InvalidOperation:
        amount = Decimal(-1)
    if not number or not amount.is_finite() or amount < 0 or number.startswith("-"):
        raise InvalidService(
            f"{text!r} is not a resource quantity such as '512Mi', '1Gi', '0.5' or '500m'")
    return amount


def memory_bytes(text: str) -> int:
    """``512Mi`` -> 536870912 (Kubernetes rules: ``512M`` is 512e6 and ``512m`` is 0.512).

    :raises InvalidService: not a quantity, or below :data:`MIN_MEMORY`.
    """
    amount = int(parse_quantity(text).to_integral_value(ROUND_CEILING))
    if amount < MIN_MEMORY:
        hint = f" ('m' is milli: did you mean {text[:-1]}Mi?)" if text.endswith("m") else ""
        raise InvalidService(
            f"memory {text!r} is {amount} bytes; containers need at least 6Mi{hint}")
    return amount


def nano_cpus(text: str) -> int:
    """``0.5`` or ``500m`` -> 500000000 (CPUs in billionths, Docker's ``NanoCpus``).

    :raises InvalidService: not a quantity, or zero.
    """
    amount = int((parse_quantity(text) * Decimal(10**9)).to_integral_value(ROUND_CEILING))
    if amount <= 0:
        raise InvalidService(f"cpu {text!r} must be more than 0")
    return amount
