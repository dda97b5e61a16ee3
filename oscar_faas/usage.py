"""Request counts per hour, service, kind and user: the source of ``/system/metrics``.

OSCAR counts requests from its log lines (``[GIN-EXECUTIONS-LOGGER]`` through Loki or pod
logs); oscar-faas counts them where it answers them: ``/run`` (``sync``) and exposed
services' paths (``exposed``) on the event loop, ``/job`` (``async``) in Flask. Each gateway
worker adds to an in-memory tally (a dict update on the call path) and a background thread
adds the tally to a small SQLite file every :data:`FLUSH_INTERVAL` seconds and when the
worker stops, so counts survive restarts and every worker (and every gateway sharing the
file) adds to the same rows. ``oscar-faas serve`` keeps the file in its data dir
(``USAGE_DB``); with no file the counts live in memory and ``/system/metrics`` says so.

Rows are kept per hour (the resolution of ``start``/``end``) for :data:`RETENTION_DAYS`
days, then dropped, so the file stays small however many services come and go.
"""

from __future__ import annotations

import atexit
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SYNC, ASYNC, EXPOSED = "sync", "async", "exposed"
#: Seconds between two writes of a worker's tally.
FLUSH_INTERVAL = 2.0
#: Days of counts kept.
RETENTION_DAYS = 400
#: OSCAR's user for calls made with a service token (no OIDC identity).
TOKEN_USER = "oscar"

_SCHEMA = """CREATE TABLE IF NOT EXISTS counts (
    hour INTEGER NOT NULL, service TEXT NOT NULL, kind TEXT NOT NULL, user TEXT NOT NULL,
    auth TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (hour, service, kind, user, auth))"""

Key = tuple[int, str, str, str, str]


@dataclass(frozen=True)
class Row:
    """``n`` requests of ``kind`` to ``service`` by ``user`` in the hour starting ``hour``
    (Unix seconds); ``auth`` is how they authenticated (``service_token``, ``basic``, or
    empty for exposed services)."""

    hour: int
    service: str
    kind: str
    user: str
    auth: str
    n: int


class UsageStore:
    """One worker's view of the counts file (or of memory, with ``path`` None)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = str(path) if path else None
        self._pending: dict[Key, int] = {}
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_flush: float | None = None
        self._last_prune = 0.0

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path or ":memory:", timeout=10,
                                 check_same_thread=False, isolation_level=None)
            if self.path:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def record(self, service: str, kind: str, user: str = "", auth: str = "") -> None:
        """Count one request (cheap: the call path only updates a dict)."""
        hour = int(time.time()) // 3600 * 3600
        key = (hour, service, kind, user, auth)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._flusher is None:
                self._start_flusher()

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_loop, name="usage-flush",
                                         daemon=True)
        self._flusher.start()
        atexit.register(self.close)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            try:
                self.flush()
            except sqlite3.Error:
                pass  # kept in memory; the next round tries again

    def flush(self) -> None:
        """Add this worker's tally to the file.

        :raises sqlite3.Error: the file cannot be written (the tally is kept).
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            with self._db_lock:
                db = self._connect()
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(
                        "INSERT INTO counts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                        "(hour, service, kind, user, auth) DO UPDATE SET n = n + excluded.n",
                        [(*key, n) for key, n in pending.items()])
                    if time.time() - self._last_prune > 3600:
                        db.execute("DELETE FROM counts WHERE hour < ?",
                                   (int(time.time()) - RETENTION_DAYS * 86400,))
                        self._last_prune = time.time()
        except sqlite3.Error:
            with self._lock:
                for key, n in pending.items():
                    self._pending[key] = self._pending.get(key, 0) + n
            raise
        self.last_flush = time.time()

    def rows(self, start: datetime, end: datetime, service: str | None = None) -> list[Row]:
        """The rows of the hours that overlap ``[start, end]`` (this worker's tally
        included)."""
        self.flush()
        first = int(start.timestamp()) // 3600 * 3600
        last = int(end.timestamp())
        query = "SELECT hour, service, kind, user, auth, n FROM counts WHERE hour BETWEEN ? AND ?"
        args: list[object] = [first, last]
        if service is not None:
            query += " AND service = ?"
            args.append(service)
        with self._db_lock:
            return [Row(*r) for r in self._connect().execute(query, args).fetchall()]

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._stop.set()
        try:
            self.flush()
        except sqlite3.Error:
            pass


def last_updated(store: UsageStore) -> str | None:
    if store.last_flush is None:
        return None
    return datetime.fromtimestamp(store.last_flush, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def caller(authorization: str | None, basic_user: str | None) -> tuple[str, str]:
    """``(user, auth)`` of a call: a Bearer service token is OSCAR's default user
    (``oscar``), Basic credentials their user name."""
    if authorization and authorization.strip().lower().startswith("bearer "):
        return TOKEN_USER, "service_token"
    if basic_user:
        return basic_user, "basic"
    return "", ""
