"""Warm workers: long-lived processes that serve calls over the line protocol v1.

A service opts in with ``OSCAR_WORKER`` (a command line, split with shlex). The runtime keeps
one worker per concurrency slot. Each worker gets two pipe descriptors of its own, named in
its env: ``OSCAR_WORKER_IN_FD`` (request lines in) and ``OSCAR_WORKER_OUT_FD`` (answer lines
out). Its stdout and stderr are not the protocol: both go, line by line, to the runtime's
stderr (the function log), and the last :data:`TAIL_BYTES` are kept for error answers.

Lines are UTF-8 JSON objects ending in ``\\n``:

* worker -> runtime, once when loaded: ``{"ready": true}`` (``"fork": true`` from a template);
* runtime -> worker, per call: ``{"id": "<call id>", "env": {"INPUT_FILE_PATH": ..., ...}}``;
* worker -> runtime, per call: ``{"id": "<same id>", "ok": true}`` or
  ``{"id": "<same id>", "ok": false, "error": "<message>"}`` (``"out_of_memory": true`` when
  the failure was the memory limit).

One model, many workers: with more than one slot the first process is offered a control
socket (:mod:`.prefork`); a worker that can fork runs ``setup()`` once and forks the serving
workers, which share what it loaded. Others get one process per slot.

A worker that exits, or does not answer within ``exec_timeout``, fails that call and is killed
(its whole process group); :class:`WorkerPool` starts a replacement at once. A worker that
writes on its answer pipe between calls, or lines that are not its answer during one, is
replaced without failing a call; an answer line must end within
:data:`~.worker_io.LINE_DEADLINE` of its first byte. Each process may use the service's
``memory`` (``RLIMIT_DATA``); a call that runs out of it fails naming the limit and its worker
is replaced. A worker that exits before it is ready is retried on the next call of its slot.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Mapping, Sequence

from ..supervisor.logs import SupervisorLog
from .prefork import TemplateGone, can_fork
from .settings import RuntimeSettings
from .worker_io import TAIL_BYTES
from .worker_process import Worker, WorkerError, helper_path

__all__ = ["TAIL_BYTES", "Worker", "WorkerError", "WorkerPool", "helper_path"]


class WorkerPool:
    """``slots`` workers; a call takes an idle one (waiting while none is) and gives it back.
    The last one given back is taken first: at low concurrency one worker keeps serving with
    warm caches, and the others stay asleep.

    A worker that failed a call is replaced in the background before it is idle again, so
    callers wait for the replacement instead of hitting a dead process. With forking, the
    template (:attr:`template`, the process that ran ``setup()``) forks every replacement in
    milliseconds; when it is gone, the next replacement starts a new one.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], slots: int,
                 log: SupervisorLog, workdir: Path,
                 settings: RuntimeSettings | None = None) -> None:
        self.log = log
        if settings is None:
            settings = RuntimeSettings.from_env(env)
        pythonpath = helper_path(workdir)
        memory = settings.memory_limit

        def new(index: int) -> Worker:
            return Worker(index, argv, env, log, pythonpath, memory)

        self._new = new
        self.workers = [new(i) for i in range(max(1, slots))]
        self._idle: queue.LifoQueue[Worker] = queue.LifoQueue()
        self._closed = False
        #: offer the first process a control socket (one setup() for every worker)
        self.forking = settings.fork and len(self.workers) > 1 and can_fork()
        self.template: Worker | None = None
        self._candidate: Worker | None = None  # a template being started (killed by close)
        self._template_lock = threading.Lock()

    def start(self) -> None:
        """Start every worker in the background; :attr:`ready` tells when all are up."""
        if not self.forking:
            for worker in self.workers:
                self._bring_up(worker)
            return
        threading.Thread(target=self._start_forking, name="start-workers", daemon=True).start()

    def _start_forking(self) -> None:
        try:
            template = self._template(first=True)
        except WorkerError as err:
            self.log.error("worker template could not start: %s",
                           str(err).strip().replace("\n", " | "))
            for worker in self.workers:  # calls answer the template's failure (503)
                worker.error = str(err)
                self._idle.put(worker)
            return
        for worker in self.workers if template is not None else self.workers[1:]:
            self._bring_up(worker)

    def _template(self, first: bool = False) -> Worker | None:
        """The live template, started (``setup()`` runs) when there is none; None when the
        worker cannot fork: forking is then off (at the first start, that process becomes
        slot 0's worker).

        :raises WorkerError: the template could not start.
        """
        with self._template_lock:
            if not self.forking:
                return None
            current = self.template
            if current is not None and current.alive and current.control is not None:
                return current
            if current is not None:
                current.close()
                self.template = None
            candidate = self._candidate = self._new(0)
            try:
                candidate.start(control=True)
            except WorkerError:
                candidate.close()
                raise
            finally:
                self._candidate = None
            if candidate.forks:
                candidate.rename("worker template")
                self.template = candidate
                return candidate
            self.log.info("worker 0 does not fork: one process per slot")
            self.forking = False
            if first:
                self.workers[0] = candidate
                self._idle.put(candidate)
            else:
                candidate.close()
            return None

    def _start(self, worker: Worker) -> None:
        """Start ``worker``: forked by the template when there is one, else spawned."""
        for _ in range(2):
            template = self._template()
            if template is None or template.control is None:
                worker.start()
                return
            try:
                worker.start(template=template.control)
                return
            except TemplateGone as err:  # start a new template, once
                self.log.warning("worker template: %s", err)
                with self._template_lock:
                    if self.template is template:
                        template.close()
                        self.template = None
        raise WorkerError(503, f"{worker.name}: the worker template cannot fork (see the log)\n")

    @property
    def ready(self) -> bool:
        return not self._closed and all(w.ready for w in self.workers)

    def acquire(self) -> Worker:
        """An idle worker. One that exited, or wrote on its answer pipe, while idle is replaced
        (in the background) and another is taken: its end or its noise must not fail the next
        call."""
        while True:
            worker = self._idle.get()
            if not worker.ready:
                return worker  # the call answers its start failure (503)
            if not worker.alive:
                self.log.warning("%s exited between calls: replacing it", worker.name)
            elif junk := worker.stray():
                self.log.warning("%s wrote %r on its answer pipe between calls: replacing it",
                                 worker.name, junk[:200])
            else:
                return worker
            worker.kill()
            self._bring_up(worker)

    def release(self, worker: Worker) -> None:
        if worker.misbehaved and worker.ready:
            self.log.warning("%s wrote lines that were not its answer: replacing it",
                             worker.name)
            worker.kill()
        if worker.alive and worker.ready:
            self._idle.put(worker)
        else:
            self._bring_up(worker)

    def _bring_up(self, worker: Worker) -> None:
        def run() -> None:
            try:
                self._start(worker)
                worker.error = ""
            except WorkerError as err:
                worker.error = str(err)
                self.log.error("%s could not start: %s", worker.name,
                               str(err).strip().replace("\n", " | "))
            finally:
                self._idle.put(worker)

        if not self._closed:
            threading.Thread(target=run, name=f"start-{worker.name}", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        for worker in self.workers:
            worker.close()
        for template in (self._candidate, self.template):  # no lock: a setup may be running
            if template is not None:
                template.close()
