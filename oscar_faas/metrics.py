"""Prometheus metrics of the gateway and of the embedded provider (``prometheus_client``).

Gateway (``GET /metrics`` on the gateway), per service:

* ``oscar_faas_run_requests_total{service, code}``: ``/run`` calls by answer status;
* ``oscar_faas_run_duration_seconds{service}``: from the request to the end of the answer;
* ``oscar_faas_run_in_flight{service}``: calls being answered now;
* ``oscar_faas_run_ready_retries_total{service}``: re-sends while a fresh function answered
  "not ready" (503);
* ``oscar_faas_run_upstream_errors_total{service, kind}``: ``unreachable``, ``timeout``
  (RUN_TIMEOUT), ``openfaas_timeout`` (OpenFaaS' empty 502 after a while), ``bad_gateway``
  (its empty 502 at once), ``not_ready``.

gunicorn runs several worker processes, each with its own counters, so the gateway uses
``prometheus_client``'s multiprocess mode: ``oscar-faas serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers start, every worker writes
its values there (memory-mapped files), and ``/metrics``, whichever worker answers it, adds
them up. Without the variable (one process, tests) the process's own registry is used.

Labels carry service names and status codes only, never a token, credential or header.
Calls to a service that does not exist are counted under ``service="(unknown)"`` so that
random names cannot grow the label set, and a deleted service's series leave ``/metrics``:
the scrape passes the services that exist (:func:`exposition`), the process drops the others'
series it holds, and in multiprocess mode (where the workers' files keep a key until the
worker ends) they are filtered out of the answer.

Provider (``GET /metrics`` on the provider, one process): what the OpenFaaS gateway exports
and its Prometheus queries read, with the same names and labels, so ``invocationCount`` works
when Prometheus scrapes the provider:

* ``gateway_function_invocation_total{function_name="<name>.openfaas-fn", code}``;
* ``gateway_functions_seconds{function_name, code}`` (histogram);
* ``gateway_function_invocation_started{function_name}``;
* ``gateway_service_count{function_name}`` (replicas), and per function the calls running
  (``oscar_faas_function_busy``) and waiting for a slot (``oscar_faas_function_queue_depth``).

A deleted function's series are dropped at the next scrape (the functions that exist are
read then), so churning functions does not grow the provider's ``/metrics`` either.
"""

from __future__ import annotations

import os
import time
import threading
from typing import Any, Awaitable, Callable, Collection, Iterable, MutableMapping

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Gauge, Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .usage import caller


def is_basic(header: str) -> bool:
    return header.strip().lower().startswith("basic ")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Answers that mean no call ran: refused credentials, no such service.
NOT_EXECUTED = frozenset({0, 401, 403, 404})
UNKNOWN = "(unknown)"
#: From a few ms (a no-op script) to RUN_TIMEOUT's 300 s.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               120.0, 300.0)


def exposition(registry: CollectorRegistry | None = None,
               live_services: Collection[str] | None = None) -> tuple[bytes, str]:
    """The text format of every metric: this process's (``registry``, default the global
    one), or, in multiprocess mode, all the workers' added up.

    :param live_services: the services that exist: series labelled with another
        ``service`` are left out (and this process's own are dropped); None keeps all.
    """
    if registry is None and os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    source: Any = registry or REGISTRY
    if live_services is not None:
        live = {*live_services, UNKNOWN}
        if _RUN_METRICS:
            _RUN_METRICS[0].forget_except(live)
        source = _LiveServices(source, live)
    return generate_latest(source), CONTENT_TYPE_LATEST


class _LiveServices:
    """A registry view without the samples of services outside ``live``."""

    def __init__(self, registry: Any, live: set[str]) -> None:
        self.registry, self.live = registry, live

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples
                              if s.labels.get("service", UNKNOWN) in self.live]
            yield family


def mark_process_dead(pid: int) -> None:
    """gunicorn's ``child_exit`` hook: drop a dead worker's live gauges (in-flight)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _StatusOf:
    """An ASGI ``send`` that remembers the status of the answer it carries (0 until the
    answer starts), for counting it once the call is over."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send, self.status = send, 0

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class RunMetrics:
    """The gateway's ``/run`` metrics; one per worker process (the metric objects are
    process-global in ``prometheus_client``, so :func:`run_metrics` hands out one)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter("oscar_faas_run_requests", "/run calls by answer status",
                                ["service", "code"], registry=registry)
        self.duration = Histogram("oscar_faas_run_duration_seconds",
                                  "/run calls, from the request to the end of the answer",
                                  ["service"], buckets=RUN_BUCKETS, registry=registry)
        self.in_flight = Gauge("oscar_faas_run_in_flight", "/run calls being answered",
                               ["service"], multiprocess_mode="livesum", registry=registry)
        self.ready_retries = Counter("oscar_faas_run_ready_retries",
                                     "/run re-sends while the function was not ready (503)",
                                     ["service"], registry=registry)
        self.upstream_errors = Counter("oscar_faas_run_upstream_errors",
                                       "/run calls that failed between the gateway and the "
                                       "function", ["service", "kind"], registry=registry)
        #: :class:`~oscar_faas.usage.UsageStore` the calls are counted in, or None
        self.usage: Any = None
        #: the gateway's Basic user (callers with Basic credentials are counted as it)
        self.basic_user = ""
        # label children, cached: ``labels()`` takes a lock and builds a tuple each time
        self._children: dict[tuple[Any, ...], Any] = {}
        self._metrics = {id(m): m for m in (self.requests, self.duration, self.in_flight,
                                            self.ready_retries, self.upstream_errors)}

    def forget_except(self, live: Collection[str]) -> None:
        """Drop this process's series of services outside ``live`` (deleted ones)."""
        for key in [k for k in list(self._children) if k[1] not in live]:
            self._children.pop(key, None)
            try:
                self._metrics[key[0]].remove(*key[1:])
            except KeyError:
                pass

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def ready_retry(self, service: str) -> None:
        self._child(self.ready_retries, service).inc()

    def upstream_error(self, service: str, kind: str) -> None:
        self._child(self.upstream_errors, service, kind).inc()

    def started(self, service: str) -> None:
        self._child(self.in_flight, service).inc()

    def finished(self, service: str) -> None:
        self._child(self.in_flight, service).dec()

    async def track(self, run: Callable[..., Awaitable[None]], scope: Any, receive: Any,
                    send: Send, name: str, known: Callable[[str], bool]) -> None:
        """Answer one ``/run`` with ``run`` and count it (status, duration)."""
        answer = _StatusOf(send)
        start = time.perf_counter()
        try:
            await run(scope, receive, answer, name)
        finally:
            elapsed = time.perf_counter() - start
            status = answer.status
            service = name if status != 404 or known(name) else UNKNOWN
            self._child(self.requests, service, str(status or 499)).inc()
            self._child(self.duration, service).observe(elapsed)
            if service != UNKNOWN and status not in NOT_EXECUTED:
                self._count(name, "sync", scope)

    def _count(self, name: str, kind: str, scope: Any) -> None:
        """One request in the usage counts (``/system/metrics``), with its caller."""
        if self.usage is None:
            return
        user = auth = ""
        if kind != "exposed":
            for key, value in scope["headers"]:
                if key == b"authorization":
                    header = value.decode("latin-1")
                    user, auth = caller(header, self.basic_user if is_basic(header) else None)
                    break
        self.usage.record(name, kind, user, auth)

    async def track_exposed(self, serve: Callable[..., Awaitable[None]], scope: Any,
                            receive: Any, send: Send, target: tuple[str, str],
                            known: Callable[[str], bool]) -> None:
        """Answer one request to an exposed service with ``serve`` and count it."""
        answer = _StatusOf(send)
        try:
            await serve(scope, receive, answer, *target)
        finally:
            status = answer.status
            if status and (status != 404 or known(target[0])):
                self._count(target[0], "exposed", scope)

    def count_exposed(self, name: str, known: Callable[[str], bool]) -> None:
        """A WebSocket opened to an exposed service counts as one request."""
        if known(name):
            self._count(name, "exposed", {"headers": []})


_RUN_METRICS: list[RunMetrics] = []


def run_metrics() -> RunMetrics:
    """The process's :class:`RunMetrics` (created on first use: metric names can be
    registered only once per process)."""
    if not _RUN_METRICS:
        folder = os.environ.get(MULTIPROC_ENV)
        if folder:  # gunicorn started without ``serve`` (the image): make sure it exists
            os.makedirs(folder, exist_ok=True)
        _RUN_METRICS.append(RunMetrics())
    return _RUN_METRICS[0]


# --- the embedded provider ---------------------------------------------------------------------

class ProviderMetrics:
    """The OpenFaaS gateway's function metrics, kept by the provider (one process)."""

    def __init__(self, load: Callable[[], Iterable[tuple[str, int, int, int]]],
                 namespace: str) -> None:
        """:param load: ``(name, replicas, running, waiting)`` for every function, read at
        scrape time (nothing is kept up to date on the call path for it)."""
        self.registry = CollectorRegistry()
        self.namespace = namespace
        # registered first, so each scrape drops deleted functions before the rest is read
        self.registry.register(_LoadCollector(load, namespace, self.forget_except))
        self._codes: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.invocations = Counter("gateway_function_invocation", "function calls by status",
                                   ["function_name", "code"], registry=self.registry)
        self.seconds = Histogram("gateway_functions_seconds", "function call duration",
                                 ["function_name", "code"], buckets=RUN_BUCKETS,
                                 registry=self.registry)
        self.started_calls = Counter("gateway_function_invocation_started",
                                     "function calls started", ["function_name"],
                                     registry=self.registry)

    def label(self, name: str) -> str:
        return f"{name}.{self.namespace}"

    def started(self, name: str) -> None:
        with self._lock:
            self._codes.setdefault(name, set())
        self.started_calls.labels(self.label(name)).inc()

    def observe(self, name: str, status: int, seconds: float) -> None:
        label, code = self.label(name), str(status)
        with self._lock:
            self._codes.setdefault(name, set()).add(code)
        self.invocations.labels(label, code).inc()
        self.seconds.labels(label, code).observe(seconds)

    def forget_except(self, live: Collection[str]) -> None:
        """Drop the series of functions outside ``live`` (deleted since the last scrape)."""
        with self._lock:
            gone = {name: self._codes.pop(name) for name in list(self._codes)
                    if name not in live}
        for name, codes in gone.items():
            label = self.label(name)
            for metric, labels in [(self.started_calls, (label,))] + [
                    (m, (label, code)) for code in codes
                    for m in (self.invocations, self.seconds)]:
                try:
                    metric.remove(*labels)
                except KeyError:
                    pass

    def exposition(self) -> tuple[bytes, str]:
        return exposition(self.registry)


class _LoadCollector:
    """Replicas, busy slots and queue depth per function, read when Prometheus scrapes."""

    def __init__(self, load: Callable[[], Iterable[tuple[str, int, int, int]]],
                 namespace: str, prune: Callable[[Collection[str]], None]) -> None:
        self.load, self.namespace, self.prune = load, namespace, prune

    def collect(self) -> Iterable[GaugeMetricFamily]:
        rows = list(self.load())
        self.prune({row[0] for row in rows})
        replicas = GaugeMetricFamily("gateway_service_count", "replicas of a function",
                                     labels=["function_name"])
        busy = GaugeMetricFamily("oscar_faas_function_busy",
                                 "calls of a function running now", labels=["function_name"])
        queued = GaugeMetricFamily("oscar_faas_function_queue_depth",
                                   "calls of a function waiting for a slot (max_inflight)",
                                   labels=["function_name"])
        for name, count, running, waiting in rows:
            label = [f"{name}.{self.namespace}"]
            replicas.add_metric(label, count)
            busy.add_metric(label, running)
            queued.add_metric(label, waiting)
        return [replicas, busy, queued]
