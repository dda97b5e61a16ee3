"""Deployments and secrets, kept in memory and mirrored to the data dir.

A restart must lose nothing, and a crash half-way through a write must
not corrupt the state, so every file is written to a temporary name, fsynced and renamed over
the old one (``os.replace`` is atomic on POSIX). Layout::

    <data-dir>/functions.json                 every FunctionDeployment + its createdAt
    <data-dir>/secrets.json         (0600)    every secret, base64
    <data-dir>/functions/<name>/secrets/<s>   (0600 files, 0700 dirs) only <name>'s secrets

The per-function secrets folder plays the role of OpenFaaS' ``/var/openfaas/secrets`` mount:
a function sees its own secrets and nothing else. It is rewritten whenever a secret or the
function changes. With :mod:`oscar_faas.launchers.host.isolation` (a provider running as
root), that folder is the function's own in the isolation area instead: root-owned, group =
the function's gid, files 0640, so only that function's user can read it.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...errors import ConfigError, InvalidService, ServiceNotFound
from ...files import atomic_write
from ...launchers.host.isolation import Isolation
from ..errors import FunctionExists, SecretExists
from .types import FunctionDeployment, Secret, format_time, parse_time

log = logging.getLogger(__name__)

FUNCTIONS_FILE = "functions.json"
SECRETS_FILE = "secrets.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class FunctionRecord:
    """A deployed function as stored: what was asked for, and when it was first created."""

    deployment: FunctionDeployment
    created_at: datetime

    @property
    def name(self) -> str:
        return self.deployment.service


class Store:
    """The provider's durable state. Thread-safe; every mutation is persisted before it is
    visible, so a failed write leaves the previous state in place."""

    def __init__(self, data_dir: str | Path, isolation: "Isolation | None" = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.isolation = isolation
        self._lock = threading.RLock()
        self._functions: dict[str, FunctionRecord] = {}
        self._secrets: dict[str, bytes] = {}

    # --- start-up ------------------------------------------------------------------------

    def load(self) -> None:
        """Read the state written by a previous run and refresh every secrets folder.

        :raises ConfigError: a state file exists but cannot be parsed (we refuse to start
            rather than silently forget services).
        """
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.data_dir / "functions").mkdir(mode=0o700, exist_ok=True)
        with self._lock:
            self._secrets = self._read_secrets()
            self._functions = self._read_functions()
            for name in self._functions:
                self._sync_secret_files(name)
            self._remove_orphan_folders()
        log.info("loaded %d function(s) and %d secret(s) from %s",
                 len(self._functions), len(self._secrets), self.data_dir)

    def _read_json(self, name: str) -> Any:
        path = self.data_dir / name
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read provider state {path}: {err}") from None

    def _read_functions(self) -> dict[str, FunctionRecord]:
        data = self._read_json(FUNCTIONS_FILE)
        if data is None:
            return {}
        try:
            records = {}
            for item in data["functions"]:
                fd = FunctionDeployment.from_dict(item["deployment"])
                records[fd.service] = FunctionRecord(fd, parse_time(item["createdAt"]))
            return records
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"corrupt provider state {FUNCTIONS_FILE}: {err}") from None

    def _read_secrets(self) -> dict[str, bytes]:
        data = self._read_json(SECRETS_FILE)
        if data is None:
            return {}
        try:
            return {str(k): base64.b64decode(v) for k, v in data["secrets"].items()}
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ConfigError(f"corrupt provider state {SECRETS_FILE}: {err}") from None

    def _remove_orphan_folders(self) -> None:
        """A crash between saving the state and removing a deleted function's folder leaves
        the folder behind; drop it so stale secrets do not linger on disk."""
        for folder in (self.data_dir / "functions").iterdir():
            if folder.is_dir() and folder.name not in self._functions:
                shutil.rmtree(folder, ignore_errors=True)

    # --- persistence -----------------------------------------------------------------------

    def _save_functions(self, functions: dict[str, FunctionRecord]) -> None:
        items = [{"deployment": r.deployment.to_dict(), "createdAt": format_time(r.created_at)}
                 for r in functions.values()]
        body = json.dumps({"version": STATE_VERSION, "functions": items}, indent=1)
        atomic_write(self.data_dir / FUNCTIONS_FILE, body.encode(), 0o600)

    def _save_secrets(self, secrets: dict[str, bytes]) -> None:
        encoded = {k: base64.b64encode(v).decode() for k, v in secrets.items()}
        body = json.dumps({"version": STATE_VERSION, "secrets": encoded}, indent=1)
        atomic_write(self.data_dir / SECRETS_FILE, body.encode(), 0o600)

    def function_dir(self, name: str) -> Path:
        return self.data_dir / "functions" / name

    def secrets_dir(self, name: str) -> Path:
        """The folder a function gets as ``OSCAR_SECRETS_DIR``."""
        if self.isolation is not None:
            return self.isolation.secrets_dir(name)
        return self.function_dir(name) / "secrets"

    def _sync_secret_files(self, name: str, wanted: list[str] | None = None) -> None:
        """Make ``secrets_dir(name)`` hold exactly the function's existing secrets."""
        if wanted is None:
            wanted = self._functions[name].deployment.secrets
        folder = self.secrets_dir(name)
        owner = None
        if self.isolation is not None:
            self.isolation.user(name)  # its folders, with their owners
            owner = self.isolation.secret_owner(name)
        else:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        keep = {s for s in wanted if s in self._secrets}
        for secret in keep:
            atomic_write(folder / secret, self._secrets[secret], 0o600, owner)
        for path in folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # --- functions ---------------------------------------------------------------------------

    def get(self, name: str) -> FunctionRecord | None:
        return self._functions.get(name)

    def functions(self) -> list[FunctionRecord]:
        return list(self._functions.values())

    def _check_secrets_exist(self, fd: FunctionDeployment) -> None:
        missing = [s for s in fd.secrets if s not in self._secrets]
        if missing:
            raise InvalidService(
                f"validation failed: unable to find secret(s): {', '.join(missing)}")

    def create(self, fd: FunctionDeployment) -> FunctionRecord:
        """:raises FunctionExists: the name is taken.
        :raises InvalidService: a referenced secret does not exist."""
        with self._lock:
            if fd.service in self._functions:
                raise FunctionExists(f"function {fd.service} already exists")
            self._check_secrets_exist(fd)
            record = FunctionRecord(fd, datetime.now(timezone.utc).replace(microsecond=0))
            return self._put(record, created=True)

    def update(self, fd: FunctionDeployment) -> FunctionRecord:
        """Replace the deployment, keeping its ``createdAt`` (as a Kubernetes update does).

        :raises ServiceNotFound: unknown function (faas-cli then falls back to POST)."""
        with self._lock:
            old = self._functions.get(fd.service)
            if old is None:
                raise ServiceNotFound(f"function {fd.service} not found")
            self._check_secrets_exist(fd)
            return self._put(FunctionRecord(fd, old.created_at), created=False)

    def _put(self, record: FunctionRecord, created: bool) -> FunctionRecord:
        try:
            self._sync_secret_files(record.name, record.deployment.secrets)
            functions = {**self._functions, record.name: record}
            self._save_functions(functions)
        except BaseException:
            if created:
                shutil.rmtree(self.function_dir(record.name), ignore_errors=True)
            else:
                self._sync_secret_files(record.name)
            raise
        self._functions = functions
        return record

    def delete(self, name: str) -> FunctionRecord:
        """:raises ServiceNotFound: unknown function."""
        with self._lock:
            record = self._functions.get(name)
            if record is None:
                raise ServiceNotFound(f"function {name} not found")
            functions = {k: v for k, v in self._functions.items() if k != name}
            self._save_functions(functions)
            self._functions = functions
            shutil.rmtree(self.function_dir(name), ignore_errors=True)
            if self.isolation is not None:
                self.isolation.remove(name)
            return record

    # --- secrets -----------------------------------------------------------------------------

    def secret_names(self) -> list[str]:
        return sorted(self._secrets)

    def put_secret(self, secret: Secret, create: bool) -> None:
        """Create (``create=True``) or update a secret and refresh the folders using it.

        :raises SecretExists: creating an existing secret.
        :raises ServiceNotFound: updating an unknown secret.
        """
        with self._lock:
            exists = secret.name in self._secrets
            if create and exists:
                raise SecretExists(f"secret {secret.name} already exists")
            if not create and not exists:
                raise ServiceNotFound(f"secret {secret.name} not found")
            self._commit_secrets({**self._secrets, secret.name: secret.payload}, secret.name)

    def delete_secret(self, name: str) -> None:
        """:raises ServiceNotFound: unknown secret."""
        with self._lock:
            if name not in self._secrets:
                raise ServiceNotFound(f"secret {name} not found")
            self._commit_secrets({k: v for k, v in self._secrets.items() if k != name}, name)

    def _commit_secrets(self, secrets: dict[str, bytes], changed: str) -> None:
        self._save_secrets(secrets)
        self._secrets = secrets
        for record in self._functions.values():
            if changed in record.deployment.secrets:
                self._sync_secret_files(record.name)
