"""Admission of calls: at most ``slots`` run, up to ``max_queue`` wait in order, the rest are
refused at once (:class:`QueueFull`, answered 429).

Exists so the runtime's one admission rule (``max_inflight``/``max_queue``) reads and tests
apart from the HTTP side (:mod:`.server`) that applies it per request.
"""

from __future__ import annotations

import asyncio
from collections import deque


class QueueFull(Exception):
    """Every slot is busy and the wait queue is full."""


class Limiter:
    """At most ``slots`` holders; up to ``max_queue`` waiters, served first come first served
    (a freed slot is handed to the oldest waiter, so late arrivals cannot overtake it)."""

    def __init__(self, slots: int, max_queue: int) -> None:
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """:raises QueueFull: no free slot and no room in the queue."""
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just before the cancel
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1
