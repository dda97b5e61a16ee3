"""``POST /async-function/<name>``: OpenFaaS's asynchronous invocation, with a queue on disk.

As OpenFaaS's gateway and queue-worker do it: the call is queued and answered ``202`` with its
``X-Call-Id``; later a worker makes the same call to ``/function/<name>`` (so a job takes the
synchronous path: runtime, script, warm workers, input decoding, output uploads) and POSTs the
answer to ``X-Callback-Url`` with ``X-Function-Status``, ``X-Duration-Seconds``,
``X-Function-Name`` and ``X-Call-Id``. What this queue adds to the CE queue-worker:

* it is a folder in the provider's data dir (``async/``): queued jobs survive a restart;
* each function runs up to its own ``max_inflight`` jobs at once (CE: one job at a time);
* a call id it has seen (queued, running or done) is not run again: a redelivered call
  answers ``202`` and nothing more (CE runs it twice, openfaas/faas#1108);
* a job is run at most once: one that was running when the provider stopped is reported
  failed (503) on restart rather than run again (OSCAR's jobs have ``backoffLimit: 0``);
* it calls back when it starts a job (:data:`~oscar_faas.contract.HEADER_JOB_EVENT`), so the
  gateway can show it ``Running``; and the answer is kept until the callback is delivered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable

import requests

from ..contract import (HEADER_CALL_ID, HEADER_CALLBACK_URL, HEADER_DURATION,
                        HEADER_FUNCTION_NAME, HEADER_FUNCTION_STATUS, HEADER_JOB_EVENT,
                        HOP_BY_HOP, JOB_EVENT_STARTED)
from ..files import atomic_write
from .http.messages import Request, Response, text_response

log = logging.getLogger("oscar_faas.provider.async")

#: Largest queued request body (OpenFaaS CE's NATS limit is 1 MB; this queue is a disk).
MAX_ASYNC_BODY = 64 * 1024 * 1024
#: Largest function answer passed to the callback.
MAX_ANSWER = 64 * 1024 * 1024
#: How long an answer's callback is retried while the gateway does not take it (refused
#: connections, 5xx), the first pause between tries, doubling up to the last.
CALLBACK_PATIENCE, CALLBACK_PAUSE, CALLBACK_MAX_PAUSE = 3600.0, 0.5, 30.0
#: Done markers are forgotten after this many seconds (a redelivery comes long before),
#: looked for every :data:`PRUNE_EVERY` seconds.
DONE_KEPT, PRUNE_EVERY = 24 * 3600, 3600.0
_CALLBACK = re.compile(r"https?://[^/\s]+(/\S*)?")
_NOT_SENT = HOP_BY_HOP | {"host", "content-length", HEADER_CALLBACK_URL.lower()}


def _private(path: Path) -> Any:
    """A new file only its owner can read (queued calls carry the caller's credentials)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _stem(call_id: str) -> str:
    """A file name for any call id (it is the client's string)."""
    return hashlib.sha256(call_id.encode("utf-8", "replace")).hexdigest()[:40]


class AsyncQueue:
    """The queue and its dispatcher. ``concurrency(name)`` is a function's max_inflight."""

    def __init__(self, data_dir: str | Path, concurrency: Callable[[str], int]) -> None:
        self.root = Path(data_dir) / "async"
        self.done_dir = self.root / "done"
        self.concurrency = concurrency
        self.base_url = ""
        self._queues: dict[str, deque[str]] = {}
        self._running: dict[str, int] = {}
        self._known: set[str] = set()  # stems queued or running
        self._cond = threading.Condition()
        self._stopping = False
        self._session = requests.Session()
        self._session.trust_env = False
        self._thread = threading.Thread(target=self._dispatch, name="async-queue", daemon=True)

    # --- start and stop ---------------------------------------------------------------------

    def start(self, base_url: str) -> None:
        """Load what a previous run left and start dispatching; calls go to ``base_url``."""
        self.base_url = base_url.rstrip("/")
        self.done_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prune()
        metas = []
        for path in self.root.glob("*.json"):
            try:
                metas.append(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                log.warning("async: dropping unreadable queued call %s", path.name)
                self._remove(path.stem)
        for meta in sorted(metas, key=lambda m: m["queued_ns"]):
            stem = _stem(meta["call_id"])
            if (self.root / f"{stem}.result").exists():
                self._spawn(self._deliver, meta)  # ran: only its callback is left
            elif (self.root / f"{stem}.started").exists():
                self._spawn(self._interrupted, meta)
            else:
                self._enqueue(meta)
        if metas:
            log.info("async: %d call(s) left by a previous run resumed", len(metas))
        self._thread.start()

    def _prune(self) -> None:
        """Forget call ids done more than :data:`DONE_KEPT` seconds ago."""
        now = time.time()
        for marker in self.done_dir.iterdir():
            try:
                if now - marker.stat().st_mtime > DONE_KEPT:
                    marker.unlink()
            except OSError:
                pass  # removed meanwhile

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._session.close()

    # --- submit -------------------------------------------------------------------------

    def submit(self, name: str, req: Request) -> Response:
        call_id = req.header(HEADER_CALL_ID) or str(uuid.uuid4())
        stem = _stem(call_id)
        answer = {HEADER_CALL_ID: call_id}
        callback = req.header(HEADER_CALLBACK_URL)
        if callback and not _CALLBACK.match(callback):  # as the OpenFaaS gateway: 400
            req.body.drain()
            return text_response(f"invalid {HEADER_CALLBACK_URL}: {callback!r}", 400, answer)
        with self._cond:
            seen = stem in self._known or (self.done_dir / stem).exists()
            if not seen:
                self._known.add(stem)
        if seen:
            log.info("async: call %s for %s already queued or run: not queued again",
                     call_id, name)
            req.body.drain()
            return Response(202, headers=answer)
        try:
            size = 0
            with _private(self.root / f"{stem}.body") as handle:
                while chunk := req.body.read(65536):
                    size += len(chunk)
                    if size > MAX_ASYNC_BODY:
                        raise ValueError
                    handle.write(chunk)
        except ValueError:
            self._forget(stem)
            return text_response(f"request body larger than {MAX_ASYNC_BODY} bytes: put the "
                                 f"input in storage", 413, answer)
        except BaseException:
            self._forget(stem)
            raise
        raw_path = req.params.get("rest") or ""
        meta = {"call_id": call_id, "function": name, "path": raw_path, "query": req.query,
                "method": req.method, "callback": callback,
                "headers": [(k, v) for k, v in req.headers if k.lower() not in _NOT_SENT],
                "queued_ns": time.time_ns()}
        # whole or not at all, 0600: the headers carry the service's token
        atomic_write(self.root / f"{stem}.json", json.dumps(meta).encode(), 0o600)
        self._enqueue(meta)
        return Response(202, headers=answer)

    def _forget(self, stem: str) -> None:
        with self._cond:
            self._known.discard(stem)
        self._remove(stem)

    def _remove(self, stem: str) -> None:
        for suffix in (".json", ".body", ".started", ".result", ".answer"):
            (self.root / f"{stem}{suffix}").unlink(missing_ok=True)

    def _enqueue(self, meta: dict[str, Any]) -> None:
        with self._cond:
            self._known.add(_stem(meta["call_id"]))
            self._queues.setdefault(meta["function"], deque()).append(json.dumps(meta))
            self._cond.notify_all()

    # --- dispatch -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start jobs while their function has room; wait for a submit or a finish."""
        pruned = time.monotonic()
        while True:
            if time.monotonic() - pruned > PRUNE_EVERY:
                self._prune()
                pruned = time.monotonic()
            with self._cond:
                if self._stopping:
                    return
                started = False
                for name, queue in list(self._queues.items()):
                    if not queue:
                        del self._queues[name]
                        continue
                    if self._running.get(name, 0) < self._limit(name):
                        self._running[name] = self._running.get(name, 0) + 1
                        self._spawn(self._run, json.loads(queue.popleft()))
                        started = True
                if not started:
                    self._cond.wait(1.0)

    def _limit(self, name: str) -> int:
        try:
            return max(1, self.concurrency(name))
        except Exception:  # noqa: BLE001 - a deleted function: its calls answer 404 anyway
            return 1

    def _spawn(self, target: Callable[[dict[str, Any]], None], meta: dict[str, Any]) -> None:
        threading.Thread(target=target, args=(meta,), daemon=True,
                         name=f"async-{meta['function']}").start()

    def _run(self, meta: dict[str, Any]) -> None:
        stem = _stem(meta["call_id"])
        try:
            _private(self.root / f"{stem}.started").close()
            if meta["callback"]:  # not waited for: the gateway ignores a late one
                threading.Thread(target=self._post, daemon=True, args=(
                    meta["callback"], b"", {HEADER_CALL_ID: meta["call_id"],
                                            HEADER_JOB_EVENT: JOB_EVENT_STARTED}, 1.0)).start()
            status, headers, body, duration = self._call(meta, stem)
            if self._stopping:  # its runtime was stopped under it: reported on restart
                return
            result = {"status": status, "headers": headers, "duration": duration}
            self._keep_result(stem, body, result)
        finally:
            with self._cond:
                self._running[meta["function"]] -= 1
                self._cond.notify_all()
        if not self._stopping:
            self._deliver(meta)

    def _call(self, meta: dict[str, Any], stem: str
              ) -> tuple[int, list[tuple[str, str]], bytes, float]:
        """The synchronous call, through this provider's own ``/function/<name>``."""
        url = f"{self.base_url}/function/{meta['function']}{meta['path']}"
        if meta["query"]:
            url += f"?{meta['query']}"
        started = time.monotonic()
        try:
            with open(self.root / f"{stem}.body", "rb") as body:
                resp = self._session.request(meta["method"], url, data=body,
                                             headers=dict(meta["headers"]), stream=True,
                                             timeout=(10, None))
                try:
                    answer = resp.raw.read(MAX_ANSWER, decode_content=True)
                finally:
                    resp.close()
            headers = [(k, v) for k, v in resp.headers.items()
                       if k.lower() not in _NOT_SENT]
            return resp.status_code, headers, answer, time.monotonic() - started
        except (requests.RequestException, OSError) as err:
            log.warning("async: call %s to %s failed: %s", meta["call_id"], meta["function"],
                        err)
            return 503, [], f"the call failed: {err}\n".encode(), time.monotonic() - started

    def _interrupted(self, meta: dict[str, Any]) -> None:
        stem = _stem(meta["call_id"])
        text = b"the provider stopped while this job ran; it is not run again\n"
        self._keep_result(stem, text, {"status": 503, "headers": [], "duration": 0.0})
        self._deliver(meta)

    def _keep_result(self, stem: str, body: bytes, result: dict[str, Any]) -> None:
        """The answer, until its callback is delivered (``.result`` last: it says so)."""
        with _private(self.root / f"{stem}.answer") as handle:
            handle.write(body)
        with _private(self.root / f"{stem}.result") as handle:
            handle.write(json.dumps(result).encode())

    def _deliver(self, meta: dict[str, Any]) -> None:
        """POST the kept answer to the callback (retried), then mark the call done."""
        stem = _stem(meta["call_id"])
        result = json.loads((self.root / f"{stem}.result").read_text())
        body = (self.root / f"{stem}.answer").read_bytes()
        if meta["callback"]:
            headers = dict(result["headers"])
            headers.update({HEADER_CALL_ID: meta["call_id"],
                            HEADER_FUNCTION_STATUS: str(result["status"]),
                            HEADER_FUNCTION_NAME: meta["function"],
                            HEADER_DURATION: f"{result['duration']:f}"})
            if not self._post(meta["callback"], body, headers, CALLBACK_PATIENCE):
                if self._stopping:
                    return  # kept: delivered on the next start
                log.warning("async: the callback of call %s was not delivered; dropped",
                            meta["call_id"])
        log.info("async: call %s to %s done: %d", meta["call_id"], meta["function"],
                 result["status"])
        (self.done_dir / stem).touch()
        self._remove(stem)
        with self._cond:
            self._known.discard(stem)

    def _post(self, url: str, body: bytes, headers: dict[str, str], patience: float) -> bool:
        """POST until the gateway takes it (2xx: True) or refuses it (4xx: False), trying
        again for ``patience`` seconds while it cannot be reached or answers 5xx."""
        pause, attempt = CALLBACK_PAUSE, 0
        deadline = time.monotonic() + patience
        while True:
            attempt += 1
            try:
                resp = self._session.post(url, data=body, headers=headers, timeout=30)
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        log.warning("async: callback %s answered %d", url.split("?")[0],
                                    resp.status_code)
                    return resp.status_code < 400
                failure = f"status {resp.status_code}"
            except requests.RequestException as err:
                failure = str(err)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("async: callback failed (%s), attempt %d; trying again",
                            failure, attempt)
            if self._stopping or time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, CALLBACK_MAX_PAUSE)


def async_function(backend: Any, req: Request) -> Response:
    """The route: queue the call on the backend's queue (set by :func:`.http.startup.make_server`)."""
    queue: AsyncQueue | None = getattr(backend, "async_queue", None)
    if queue is None:
        return text_response("asynchronous invocation is not enabled on this provider", 501)
    name, _, namespace = req.params["name"].partition(".")
    if namespace not in ("", "openfaas-fn"):
        return text_response(f"function {req.params['name']} not found", 404)
    return queue.submit(name, req)
