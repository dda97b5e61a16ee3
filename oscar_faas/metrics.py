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
random names cannot grow the label set.

Provider (``GET /metrics`` on the provider, one process): what the OpenFaaS gateway exports
and its Prometheus queries read, with the same names and labels, so ``invocationCount`` works
when Prometheus scrapes the provider:

* ``gateway_function_invocation_total{function_name="<name>.openfaas-fn", code}``;
* ``gateway_functions_seconds{function_name, code}`` (histogram);
* ``gateway_function_invocation_started{function_name}``;
* ``gateway_service_count{function_name}`` (replicas), and per function the calls running
  (``oscar_faas_function_busy``) and waiting for a slot (``oscar_faas_function_queue_depth``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Awaitable, Callable, Iterable, MutableMapping

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Gauge, Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN = "(unknown)"
#: From a few ms (a no-op script) to RUN_TIMEOUT's 300 s.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               120.0, 300.0)


def exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The text format of every metric: this process's (``registry``, default the global
    one), or, in multiprocess mode, all the workers' added up."""
    if registry is None and os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """gunicorn's ``child_exit`` hook: drop a dead worker's live gauges (in-flight)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


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
        # label children, cached: ``labels()`` takes a lock and builds a tuple each time
        self._children: dict[tuple[Any, ...], Any] = {}

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
        status = 0

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await run(scope, receive, send_status, name)
        finally:
            elapsed = time.perf_counter() - start
            service = name if status != 404 or known(name) else UNKNOWN
            self._child(self.requests, service, str(status or 499)).inc()
            self._child(self.duration, service).observe(elapsed)


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
        self.invocations = Counter("gateway_function_invocation", "function calls by status",
                                   ["function_name", "code"], registry=self.registry)
        self.seconds = Histogram("gateway_functions_seconds", "function call duration",
                                 ["function_name", "code"], buckets=RUN_BUCKETS,
                                 registry=self.registry)
        self.started_calls = Counter("gateway_function_invocation_started",
                                     "function calls started", ["function_name"],
                                     registry=self.registry)
        self.registry.register(_LoadCollector(load, namespace))

    def label(self, name: str) -> str:
        return f"{name}.{self.namespace}"

    def started(self, name: str) -> None:
        self.started_calls.labels(self.label(name)).inc()

    def observe(self, name: str, status: int, seconds: float) -> None:
        label, code = self.label(name), str(status)
        self.invocations.labels(label, code).inc()
        self.seconds.labels(label, code).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return exposition(self.registry)


class _LoadCollector:
    """Replicas, busy slots and queue depth per function, read when Prometheus scrapes."""

    def __init__(self, load: Callable[[], Iterable[tuple[str, int, int, int]]],
                 namespace: str) -> None:
        self.load, self.namespace = load, namespace

    def collect(self) -> Iterable[GaugeMetricFamily]:
        replicas = GaugeMetricFamily("gateway_service_count", "replicas of a function",
                                     labels=["function_name"])
        busy = GaugeMetricFamily("oscar_faas_function_busy",
                                 "calls of a function running now", labels=["function_name"])
        queued = GaugeMetricFamily("oscar_faas_function_queue_depth",
                                   "calls of a function waiting for a slot (max_inflight)",
                                   labels=["function_name"])
        for name, count, running, waiting in self.load():
            label = [f"{name}.{self.namespace}"]
            replicas.add_metric(label, count)
            busy.add_metric(label, running)
            queued.add_metric(label, waiting)
        return [replicas, busy, queued]
