"""The runtime's settings, read once from the function's environment.

The same variables as the supervisor (``SCRIPT``, ``FUNCTION_CONFIG``, ``LOG_LEVEL``,
``OSCAR_SECRETS_DIR``, ``OSCAR_STORAGE_SECRET``) plus the watchdog's (``max_inflight``,
``exec_timeout``, ``read_timeout``, ``write_timeout``, ``content_type``, ``combine_output``),
``max_queue``, the warm-worker opt-in ``OSCAR_WORKER`` (with ``OSCAR_WORKER_FORK``) and the
classic-watchdog switch ``OSCAR_RUNTIME_CLASSIC`` (with ``fprocess``). Without
``max_inflight`` a warm service gets one worker per CPU it may use (:mod:`.sizing`). Values
are parsed leniently, as the watchdog does: a bad value means the default.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Mapping

from ..contract import (ENV_FPROCESS, ENV_RUNTIME_CLASSIC, WATCHDOG_COMBINE_OUTPUT, is_true,
                        parse_duration)
from .sizing import default_worker_slots, service_resources

#: Bound of the wait queue when ``max_queue`` is unset.
DEFAULT_MAX_QUEUE = 100

def _count(value: str | None) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def default_script_slots() -> int:
    """Concurrency for scripts when ``max_inflight`` is unset or 0: 4 per CPU (the classic
    watchdog's 0 means unlimited, which a shared host cannot afford)."""
    return 4 * (os.cpu_count() or 1)


def script_slots(env: Mapping[str, str]) -> int:
    """Calls a function without warm workers runs at once: its ``max_inflight``, or
    :func:`default_script_slots` when that is unset, 0 or not a number (also the provider's
    bound on a function's queued async calls in flight)."""
    return _count(env.get("max_inflight")) or default_script_slots()


@dataclass(frozen=True)
class RuntimeSettings:
    """What the server needs besides the supervisor's own config."""

    #: concurrent calls (= worker processes when ``worker`` is set)
    slots: int
    #: callers that may wait for a slot; one more gets 429
    max_queue: int = DEFAULT_MAX_QUEUE
    #: seconds a call may run (0 = no limit)
    exec_timeout: float = 0.0
    #: seconds to wait for the next piece of the request body (0 = no limit)
    read_timeout: float = 0.0
    #: seconds to wait for the client to take the next piece of the answer (0 = no limit)
    write_timeout: float = 0.0
    #: ``Content-Type`` of answers (default: the request's, else text/plain)
    content_type: str | None = None
    #: the warm-worker command (``OSCAR_WORKER`` split with shlex), or None for the script
    worker: tuple[str, ...] | None = None
    #: offer warm workers to fork from one ``setup()`` (``OSCAR_WORKER_FORK``, default true)
    fork: bool = True
    #: bytes each warm worker may use (the service's ``memory``), None = no limit
    memory_limit: int | None = None
    #: classic-watchdog mode: the ``fprocess`` command run once per call (split on single
    #: spaces, no shell), or None for the OSCAR I/O contract
    classic: tuple[str, ...] | None = None
    #: classic mode: stderr joins stdout in the answer (else it goes to the log)
    combine_output: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RuntimeSettings:
        """:raises ValueError: ``OSCAR_WORKER`` cannot be split (unbalanced quotes), or the
            classic mode has no ``fprocess``."""
        classic = None
        if is_true(env.get(ENV_RUNTIME_CLASSIC)):
            classic = tuple(a for a in (env.get(ENV_FPROCESS) or "").strip().split(" ") if a)
            if not classic:
                raise ValueError(f"{ENV_RUNTIME_CLASSIC} is set but {ENV_FPROCESS} is empty")
        raw_worker = "" if classic else (env.get("OSCAR_WORKER") or "").strip()
        try:
            worker = tuple(shlex.split(raw_worker)) if raw_worker else None
        except ValueError as err:
            raise ValueError(f"invalid OSCAR_WORKER: {err}") from None
        combine = env.get(WATCHDOG_COMBINE_OUTPUT)
        inflight = (_count(env.get("max_inflight")) or default_worker_slots(env)) if worker \
            else script_slots(env)
        queue = _count(env.get("max_queue"))
        return cls(
            slots=inflight,
            max_queue=DEFAULT_MAX_QUEUE if queue is None else queue,
            exec_timeout=parse_duration(env.get("exec_timeout")) or 0.0,
            read_timeout=parse_duration(env.get("read_timeout")) or 0.0,
            write_timeout=parse_duration(env.get("write_timeout")) or 0.0,
            content_type=env.get("content_type") or None,
            worker=worker or None,
            fork=is_true(env.get("OSCAR_WORKER_FORK") or "true"),
            memory_limit=service_resources(env)[1] if worker else None,
            classic=classic,
            combine_output=True if combine is None else is_true(combine),
        )
