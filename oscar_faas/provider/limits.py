"""A function's watchdog settings and its concurrency bound.

The classic watchdog's settings (``exec_timeout``, ``combine_output``, ``content_type``,
``max_inflight``) plus this provider's ``max_queue`` are read leniently from a function's
``envVars``; :class:`Limiter` holds calls to ``max_inflight`` at once with a bounded,
first-come-first-served wait queue.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Mapping

from .. import contract as c
from ..contract import parse_duration

#: Default bound of the wait queue per function (``max_queue`` env of the function).
DEFAULT_MAX_QUEUE = 100

def _parse_count(value: str | None) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def default_max_inflight() -> int:
    """Concurrency when a function sets no ``max_inflight`` (or 0): 4 per CPU.

    The classic watchdog treats 0 as unlimited, but there it is one container with its own
    limits; here every function shares the host, so an unbounded fork storm is not an option.
    """
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class WatchdogConfig:
    """The watchdog settings of one function, read from its ``envVars``."""

    exec_timeout: float = 0.0
    combine_output: bool = True
    content_type: str | None = None
    max_inflight: int = 1
    max_queue: int = DEFAULT_MAX_QUEUE

    @classmethod
    def from_env(cls, env: Mapping[str, str], fallback_inflight: int | None = None
                 ) -> WatchdogConfig:
        """Parse leniently, as the classic watchdog does: a bad value means the default."""
        combine = env.get(c.WATCHDOG_COMBINE_OUTPUT)
        inflight = _parse_count(env.get(c.WATCHDOG_MAX_INFLIGHT)) or 0
        queue = _parse_count(env.get(c.WATCHDOG_MAX_QUEUE))
        return cls(
            exec_timeout=parse_duration(env.get(c.WATCHDOG_EXEC_TIMEOUT)) or 0.0,
            combine_output=True if combine is None else c.is_true(combine),
            content_type=env.get("content_type") or None,
            max_inflight=inflight or fallback_inflight or default_max_inflight(),
            max_queue=DEFAULT_MAX_QUEUE if queue is None else queue,
        )


class QueueFull(Exception):
    """Every slot is busy and the wait queue is full: the caller answers 429."""


class Limiter:
    """At most ``max_inflight`` holders; up to ``max_queue`` callers wait, first come first
    served (a freed slot is handed to the oldest waiter directly, so late arrivals cannot
    overtake it)."""

    def __init__(self, max_inflight: int, max_queue: int) -> None:
        self.max_inflight = max(1, max_inflight)
        self.max_queue = max(0, max_queue)
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[threading.Lock] = deque()

    @property
    def running(self) -> int:
        """Calls holding a slot now (the provider's busy gauge)."""
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed.

        :raises QueueFull: no slot and no room left in the queue.
        """
        with self._lock:
            if self._running < self.max_inflight and not self._waiters:
                self._running += 1
                return
            if len(self._waiters) >= self.max_queue:
                raise QueueFull()
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by release(), which hands us its slot

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._running -= 1
