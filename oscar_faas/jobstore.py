"""Job records and logs of asynchronous invocations, where every gateway replica sees them.

OSCAR keeps a job as a Kubernetes Job and its log as the pod's; the gateway has neither, so it
keeps small objects per job: ``<service>/<job>.json`` (made at submit), ``.started`` (its
start), ``.done`` (the final record) and ``.log`` (the script's output), each written once by
the event it records (see :class:`JobStore`). With MinIO configured they live in the
gateway's own bucket (``JOBS_BUCKET``), so replicas share them and a restart loses none;
without MinIO, in a folder (``JOBS_DIR``; ``serve`` uses ``<data dir>/jobs``), which survives
a restart but is seen by the gateways of one machine only.

Status moves one way, Pending -> Running -> Succeeded | Failed: a late or repeated callback
(a queue that redelivers) never takes a finished job back.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Protocol

from .config import DEFAULT_DATA_DIR, Settings
from .contract import JOB_FAILED, JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED
from .errors import StorageError

#: A job name as OSCAR makes them (service name, ``-``, UUID4): nothing else is a key.
_JOB_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,120})")
#: The most of a job's answer kept as its log (the rest is cut, saying so).
MAX_LOG = 4 * 1024 * 1024
_FINAL = (JOB_SUCCEEDED, JOB_FAILED)


def valid_job_name(name: str) -> bool:
    return bool(_JOB_NAME.fullmatch(name))


def rfc3339(when: float | None) -> str | None:
    """``metav1.Time`` as OSCAR's JSON shows it: UTC, whole seconds."""
    return None if when is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


@dataclass
class JobRecord:
    """One job: what ``GET /system/logs/<svc>`` lists, plus the function's answer status."""

    name: str
    service: str
    status: str = JOB_PENDING
    creation_time: float = 0.0
    start_time: float | None = None
    finish_time: float | None = None
    #: the function's HTTP status (``X-Function-Status``), once finished
    function_status: int | None = None

    def info(self) -> dict[str, str]:
        """OSCAR's ``JobInfo``: nil times omitted."""
        out = {"status": self.status}
        for key in ("creation_time", "start_time", "finish_time"):
            value = rfc3339(getattr(self, key))
            if value is not None:
                out[key] = value
        return out

    @property
    def final(self) -> bool:
        return self.status in _FINAL


class Blobs(Protocol):
    """Small named objects: the two places a job can be kept."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def names(self, prefix: str) -> list[str]: ...
    def delete(self, keys: Iterable[str]) -> None: ...


class DiskBlobs:
    """A folder; every write replaces the file whole (readers never see half of one)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # logs may be private
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def names(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        try:
            return [prefix + p.name for p in folder.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            return []

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)


class MinioBlobs:
    """The gateway's bucket on MinIO (created on first use)."""

    def __init__(self, settings: Settings) -> None:
        from .storage import minio_client
        self.client = minio_client(settings)
        self.bucket = settings.jobs_bucket
        self._ready = False

    def _call(self, what: str, fn, *args, **kwargs):
        from minio.error import MinioException, S3Error
        import urllib3
        try:
            if not self._ready:
                if not self.client.bucket_exists(self.bucket):
                    self.client.make_bucket(self.bucket)
                self._ready = True
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise StorageError(f"job store: cannot {what} in bucket '{self.bucket}' "
                               f"(JOBS_BUCKET): {exc.code}: {exc.message}") from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"job store: cannot {what} in bucket '{self.bucket}' "
                               f"(JOBS_BUCKET): {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        self._call(f"write {key}", self.client.put_object, self.bucket, key,
                   io.BytesIO(data), len(data))

    def put_stream(self, key: str, stream: BinaryIO, size: int) -> None:
        self._call(f"write {key}", self.client.put_object, self.bucket, key, stream, size)

    def get(self, key: str) -> bytes | None:
        def read() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        return self._call(f"read {key}", read)

    def names(self, prefix: str) -> list[str]:
        return self._call(f"list {prefix}", lambda: [
            o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix)]) or []

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._call(f"delete {key}", self.client.remove_object, self.bucket, key)


class JobStore:
    """The jobs of every service, over :class:`Blobs`; safe for any number of gateway
    workers and replicas (no object is read, changed and written back)."""

    def __init__(self, blobs: Blobs, ttl: int, where: str, answer_deadline: int = 0) -> None:
        self.blobs = blobs
        self.ttl = ttl
        #: seconds an unfinished job waits for its answer (0: for ever), see :meth:`_settle`
        self.answer_deadline = answer_deadline
        #: said in logs and errors: which place this is
        self.where = where

    @classmethod
    def from_settings(cls, settings: Settings) -> "JobStore":
        if settings.minio_configured:
            return cls(MinioBlobs(settings), settings.ttl_job,
                       f"MinIO bucket {settings.jobs_bucket}", settings.job_answer_deadline)
        root = Path(settings.jobs_dir or Path(DEFAULT_DATA_DIR) / "jobs").resolve()
        return cls(DiskBlobs(root), settings.ttl_job, f"folder {root}",
                   settings.job_answer_deadline)

    # --- records -------------------------------------------------------------------------
    #
    # Each event writes its own object, never read-modify-write: the start and the answer of
    # a quick job reach different gateway workers (or replicas) at the same moment, and
    # neither may undo the other. ``<job>.json``: created (Pending); ``<job>.started``: its
    # start (Running); ``<job>.done``: the whole final record (Succeeded/Failed).

    def _key(self, service: str, name: str, kind: str) -> str:
        return f"{service}/{name}.{kind}"

    def _load(self, service: str, name: str, kind: str) -> dict | None:
        raw = self.blobs.get(self._key(service, name, kind))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None  # cut by a crash: as if it were not there
        return doc if isinstance(doc, dict) else None

    def _read(self, service: str, name: str, kinds: set[str] | None = None
              ) -> JobRecord | None:
        """The job as its objects tell it; ``kinds``: the ones known to exist (a listing),
        so a finished job costs one read."""
        try:
            if kinds is None or "done" in kinds:
                done = self._load(service, name, "done")
                if done is not None:
                    return JobRecord(**done)
            created = self._load(service, name, "json")
            if created is None:
                return None
            record = JobRecord(**created)
            if kinds is None or "started" in kinds:
                started = self._load(service, name, "started")
                if started is not None:
                    record.status, record.start_time = JOB_RUNNING, started["start_time"]
            return record
        except (TypeError, KeyError):
            return None

    def _settle(self, service: str, record: JobRecord, now: float) -> JobRecord:
        """An unfinished job past the answer deadline is Failed: its answer will not come
        (the queue lost it, or its callback gave up). Written once, like any answer; a late
        answer then changes nothing."""
        since = record.start_time or record.creation_time
        if record.final or not self.answer_deadline or now - since <= self.answer_deadline:
            return record
        log = (f"no answer within {self.answer_deadline} s (JOB_ANSWER_DEADLINE) of its "
               f"{'start' if record.start_time else 'submission'}: the queue or its callback "
               f"was lost (a queue-worker or provider stopped); submit it again\n").encode()
        self.finished(service, record.name, 504, log)
        return self._read(service, record.name) or record

    def _expired(self, record: JobRecord, now: float) -> bool:
        """OSCAR's ``ttlSecondsAfterFinished``: a finished job goes TTL_JOB seconds later."""
        return bool(self.ttl and record.finish_time is not None
                    and now - record.finish_time > self.ttl)

    def create(self, service: str, name: str) -> JobRecord:
        record = JobRecord(name=name, service=service, creation_time=time.time())
        self.blobs.put(self._key(service, name, "json"), json.dumps(asdict(record)).encode())
        return record

    def get(self, service: str, name: str) -> JobRecord | None:
        """The job, or None when unknown or expired (an expired one is removed now)."""
        if not valid_job_name(name):
            return None
        record = self._read(service, name)
        if record is not None and self._expired(record, time.time()):
            self.delete(service, name)
            return None
        return None if record is None else self._settle(service, record, time.time())

    def started(self, service: str, name: str) -> bool:
        """Pending -> Running; False when the job is unknown or already finished."""
        record = self._read(service, name)
        if record is None or record.final:
            return False
        self.blobs.put(self._key(service, name, "started"),
                       json.dumps({"start_time": time.time()}).encode())
        return True

    def claim(self, service: str, name: str) -> bool:
        """The first delivery of a job to its function claims it (and it is Running); False
        for a later one, an unknown or a finished job, whose delivery must not run. Not
        atomic across gateway replicas on MinIO (no compare-and-swap there); redeliveries
        come the queue's ``ack_wait`` (30 s and more) apart."""
        record = self._read(service, name)
        key = self._key(service, name, "claimed")
        if record is None or record.final or self.blobs.get(key) is not None:
            return False
        self.blobs.put(key, json.dumps({"claim_time": time.time()}).encode())
        return self.started(service, name)

    def finished(self, service: str, name: str, function_status: int, log: bytes) -> bool:
        """Record the answer; False (nothing changes) for an unknown or finished job, so a
        redelivered callback cannot rewrite a result."""
        record = self._read(service, name)
        if record is None or record.final:
            return False
        now = time.time()
        record.status = JOB_SUCCEEDED if 200 <= function_status < 300 else JOB_FAILED
        record.function_status = function_status
        record.start_time = record.start_time or now
        record.finish_time = now
        if len(log) > MAX_LOG:
            log = log[:MAX_LOG] + f"\n[cut at {MAX_LOG} bytes]\n".encode()
        self.blobs.put(self._key(service, name, "log"), log)  # before the status says so
        self.blobs.put(self._key(service, name, "done"), json.dumps(asdict(record)).encode())
        self.blobs.delete([self._key(service, name, "input")])  # read by the function
        return True

    def put_input(self, service: str, name: str, stream: BinaryIO, size: int
                  ) -> tuple[str, str] | None:
        """Keep a job's body for the function to read: ``(bucket, key)``, or None when the
        store is not on MinIO (then the body has to travel with the call)."""
        if not isinstance(self.blobs, MinioBlobs):
            return None
        key = f"{service}/{name}.input"
        self.blobs.put_stream(key, stream, size)
        return self.blobs.bucket, key

    def log(self, service: str, name: str) -> bytes:
        return self.blobs.get(f"{service}/{name}.log") or b""

    # --- listing and deleting --------------------------------------------------------------

    def _kinds(self, service: str) -> dict[str, set[str]]:
        """Every job of ``service`` with the kinds of object it has (one listing)."""
        prefix = f"{service}/"
        jobs: dict[str, set[str]] = {}
        for key in self.blobs.names(prefix):
            name, _, kind = key[len(prefix):].rpartition(".")
            jobs.setdefault(name, set()).add(kind)
        return {name: kinds for name, kinds in jobs.items() if "json" in kinds}

    def names(self, service: str) -> list[str]:
        return sorted(self._kinds(service))

    def page(self, service: str, after: str, limit: int
             ) -> tuple[list[JobRecord], str, int]:
        """Up to ``limit`` jobs whose names sort after ``after``; the next page's token
        (the last name, empty at the end) and how many jobs remain after this page."""
        kinds = self._kinds(service)
        names = sorted(n for n in kinds if n > after)
        now, records, used = time.time(), [], 0
        for name in names:
            if len(records) >= limit:
                break
            used += 1
            record = self._read(service, name, kinds[name])
            if record is None:
                continue
            if self._expired(record, now):
                self.delete(service, name)
                continue
            records.append(self._settle(service, record, now))
        left = len(names) - used
        if not left:
            return records, "", 0
        return records, records[-1].name if records else after, left

    def delete(self, service: str, name: str) -> None:
        # the record first: a job half deleted is gone from listings
        self.blobs.delete([self._key(service, name, kind)
                           for kind in ("json", "done", "started", "claimed", "log",
                                        "input")])

    def delete_many(self, service: str, every: bool) -> int:
        """Succeeded jobs (OSCAR's ``DELETE /system/logs/<svc>``), or all with ``every``."""
        count = 0
        for name, kinds in self._kinds(service).items():
            record = None if every else self._read(service, name, kinds)
            if every or record is None or record.status == JOB_SUCCEEDED:
                self.delete(service, name)
                count += 1
        return count
