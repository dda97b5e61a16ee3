"""Function logs: faas-provider's logs contract on the embedded provider.

``GET /system/logs?name=&instance=&since=&tail=&follow=`` answers newline-delimited JSON
messages ``{"name", "namespace", "instance", "timestamp", "text"}`` (faas-provider's
``logs.Message``), ``application/x-ndjson``; with ``follow=true`` the answer is a chunked live
stream that ends when the client leaves or after :data:`FOLLOW_LIMIT` seconds, as
faas-provider's handler ends at its timeout.

The lines come from the functions: their runtimes' output (log lines at the service's
``log_level``) and the stderr of forked ``fprocess`` functions (``combine_output=false``), both
through the ``oscar_faas.provider.function.<name>`` loggers. Each function keeps its last
:data:`RING_SIZE` lines in memory and, when a folder is given, appends them to
``<folder>/<name>.log`` (rotated once at :data:`FILE_LIMIT` bytes, to ``<name>.log.1``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from ..launchers.launch import FUNCTION_LOGGER

#: Lines kept in memory per function.
RING_SIZE = 1000
#: A function's log file is rotated past this size.
FILE_LIMIT = 5 * 1024 * 1024
#: Log files kept open at once (the functions that logged last).
OPEN_FILES = 32
#: Longest ``follow=true`` stream, in seconds.
FOLLOW_LIMIT = 300.0
#: A quiet ``follow`` stream sends a blank line this often, to notice a client that left.
HEARTBEAT = 10.0
#: The one instance of a function on this provider (faas-netes would give the pod name).
INSTANCE = "local"


def parse_since(value: str) -> float | None:
    """RFC 3339 (as faas-cli sends it) to a Unix time; ``None`` when empty.

    :raises ValueError: not RFC 3339.
    """
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"since needs a time zone: {value!r}")
    return moment.timestamp()


def _rfc3339(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


@dataclass(frozen=True)
class Message:
    seq: int
    name: str
    namespace: str
    instance: str
    epoch: float
    text: str

    def to_json(self) -> bytes:
        return (json.dumps({"name": self.name, "namespace": self.namespace,
                            "instance": self.instance, "timestamp": _rfc3339(self.epoch),
                            "text": self.text}, separators=(",", ":")) + "\n").encode()


class FunctionLogs:
    """Per-function ring buffers (plus files), and the waiting room of followers."""

    def __init__(self, namespace: str, folder: str | Path | None = None) -> None:
        self.namespace = namespace
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._rings: dict[str, deque[Message]] = {}
        self._seq = 0
        self._changed = threading.Condition()
        self._logger: logging.Logger | None = None
        self._handler: logging.Handler | None = None
        self._files: dict[str, BinaryIO] = {}
        self._files_lock = threading.Lock()

    # --- writing ---------------------------------------------------------------------------

    def append(self, name: str, text: str, epoch: float | None = None) -> None:
        with self._changed:
            self._seq += 1
            message = Message(self._seq, name, self.namespace, INSTANCE,
                              time.time() if epoch is None else epoch, text)
            ring = self._rings.get(name)
            if ring is None:
                ring = self._rings[name] = deque(maxlen=RING_SIZE)
            ring.append(message)
            self._changed.notify_all()
        if self.folder is not None:
            self._to_file(message)

    def _to_file(self, message: Message) -> None:
        """Append to ``<name>.log``, kept open (the most recent :data:`OPEN_FILES` of them):
        every call of a service logs its script's output, so an open and a stat per line
        would cost the calls themselves."""
        path = self.folder / f"{message.name}.log"  # type: ignore[operator]
        data = message.to_json()
        with self._files_lock:
            try:
                handle = self._files.pop(message.name, None)
                if handle is not None:
                    st = os.fstat(handle.fileno())
                    if st.st_nlink == 0 or st.st_size > FILE_LIMIT:  # removed, or to rotate
                        handle.close()
                        handle = None
                        if st.st_nlink:
                            os.replace(path, path.with_name(path.name + ".1"))
                if handle is None:
                    handle = open(path, "ab", buffering=0)
                self._files[message.name] = handle  # the most recent last
                handle.write(data)
                while len(self._files) > OPEN_FILES:
                    self._files.pop(next(iter(self._files))).close()
            except OSError:
                pass  # a full disk must not fail the call; the ring still has the line

    def close_files(self) -> None:
        """Close the log files kept open (they are opened again on the next line)."""
        with self._files_lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()

    def forget(self, name: str) -> None:
        """Drop a deleted function's lines: its ring and its files (issue 23.3)."""
        with self._changed:
            self._rings.pop(name, None)
        if self.folder is not None:
            for path in (self.folder / f"{name}.log", self.folder / f"{name}.log.1"):
                path.unlink(missing_ok=True)

    def attach(self, logger: logging.Logger) -> None:
        """Feed these logs from ``logger``'s ``<FUNCTION_LOGGER>.<name>`` children (until
        :meth:`detach`)."""
        self._handler = _Handler(self)
        self._logger = logger
        logger.addHandler(self._handler)

    def detach(self) -> None:
        if self._logger is not None and self._handler is not None:
            self._logger.removeHandler(self._handler)
        self._logger = self._handler = None
        self.close_files()

    # --- reading ---------------------------------------------------------------------------

    def known(self, name: str) -> bool:
        return name in self._rings

    def query(self, name: str, instance: str = "", since: float | None = None,
              tail: int = 0, follow: bool = False) -> Iterator[bytes]:
        """The messages of ``name`` (NDJSON lines): those kept, filtered by ``since`` and
        cut to the last ``tail`` (<= 0: all); then, with ``follow``, new ones as they come
        until :data:`FOLLOW_LIMIT` seconds have passed."""
        if instance and instance != INSTANCE:
            return
        with self._changed:
            kept = [m for m in self._rings.get(name, ())
                    if since is None or m.epoch >= since]
            last = self._seq
        if tail > 0:
            kept = kept[-tail:]
        for message in kept:
            yield message.to_json()
        if not follow:
            return
        deadline = time.monotonic() + FOLLOW_LIMIT
        while True:
            quiet_until = time.monotonic() + HEARTBEAT
            with self._changed:
                while self._seq == last and time.monotonic() < quiet_until:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(min(remaining, 1.0))
                fresh = [m for m in self._rings.get(name, ()) if m.seq > last]
                last = self._seq
            if not fresh:  # a blank line (JSON whitespace) finds out if the client left
                yield b"\n"
            for message in fresh:
                yield message.to_json()


class _Handler(logging.Handler):
    _PREFIX = FUNCTION_LOGGER + "."

    def __init__(self, logs: FunctionLogs) -> None:
        super().__init__()
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self._PREFIX):
            return
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            name = record.name[len(self._PREFIX):]
            for line in text.splitlines() or [""]:
                self.logs.append(name, f"{record.levelname} {line}", record.created)
        except Exception:  # noqa: BLE001 - a log line must never break a call
            self.handleError(record)
