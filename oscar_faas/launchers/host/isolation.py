"""Host mode isolation: each function's processes run as a user of their own.

When the provider runs as root, every function gets a dedicated unprivileged uid (and a gid
of the same number), allocated once from a high range and recorded in the data dir
(``users.json``), so it is stable across restarts. No ``/etc/passwd`` entry is needed to run
as it. The function's runtime (host launcher) and its per-call processes (classic
watchdog) run as that uid, with no supplementary groups, umask 077, and:

* ``HOME`` = ``TMPDIR`` = a private folder (``0700``, owned by the uid);
* its secrets folder owned by root, group = its gid (``0750``; files ``0640``): readable by
  it, by nobody else but root;
* the data dir is ``0700`` root: the state, the logs, ``secrets.json`` and the other
  functions' folders are out of reach.

A different uid is also what keeps the provider's and the gateway's ``/proc/<pid>/environ``
(and the right to signal them) out of the function's reach.

The function folders live in one *area*, outside the data dir (whose parents may not be
traversable, e.g. a root-only home): ``<tmp>/oscar-faas-fn-XXXX`` (``0711`` root: it can be
crossed, not listed), removed when the provider stops; a provider that died leaves it, and
the next start takes it over (its path is kept in the data dir)::

    <area>/<function>/          0750 root:<gid>
    <area>/<function>/secrets/  0750 root:<gid>, files 0640 root:<gid>
    <area>/<function>/home/     0700 <uid>:<gid>    HOME and TMPDIR
"""

from __future__ import annotations

import json
import logging
import os
import secrets as pyrandom
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ... import SOURCE_ROOT
from ...contract import ENV_ISOLATED
from ...files import atomic_write
from .install_view import InstallView, namespaces_work

log = logging.getLogger("oscar_faas.launchers.host.isolation")

#: First uid (and gid) given to functions, and how many there are to pick from: far above
#: login users, system users and the usual subordinate-id ranges (100000 + 65536 * n).
UID_BASE = 1_500_000_000
UID_SPAN = 100_000_000
USERS_FILE = "users.json"
AREA_FILE = "isolation-area"


@dataclass(frozen=True)
class FunctionUser:
    """Who a function's processes run as, and where they may write."""

    uid: int
    gid: int
    #: the private folder: HOME, TMPDIR and the working directory
    home: Path
    #: the folder holding only its secrets (OSCAR_SECRETS_DIR)
    secrets_dir: Path

    def env(self, name: str) -> dict[str, str]:
        """Variables that point the function at its own folder."""
        login = f"oscar-fn-{self.uid}"
        return {"HOME": str(self.home), "TMPDIR": str(self.home), "USER": login,
                "LOGNAME": login, ENV_ISOLATED: "1"}


#: ``off`` runs functions as the provider's own user even as root (not isolated).
ENV_ISOLATION = "OSCAR_FAAS_ISOLATION"
#: The uid (and gid) that tries whether a function user can run the runtime's Python.
PROBE_UID = UID_BASE - 1


def wanted(env: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Isolation is on when the provider runs as root (it can change uid then), unless
    ``OSCAR_FAAS_ISOLATION=off``."""
    env = os.environ if env is None else env
    return os.geteuid() == 0 and (env.get(ENV_ISOLATION) or "").strip().lower() != "off"


def _package_paths() -> list[str]:
    """Where this oscar_faas and its dependencies are imported from."""
    import site
    import sysconfig
    root = str(SOURCE_ROOT)
    paths = [root, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths += site.getsitepackages()
    seen: list[str] = []
    for path in paths:
        if path not in seen and Path(path).is_dir():
            seen.append(path)
    return seen


def _probe(python: str, pythonpath: str | None, view: InstallView | None = None) -> bool:
    """An unprivileged user can run ``python`` and import the runtime with ``pythonpath``
    (inside ``view``, when there is one)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    argv = [python, "-c", "import oscar_faas.runtime.server"]
    as_user: dict[str, Any] = {"user": PROBE_UID, "group": PROBE_UID, "extra_groups": []}
    if view is not None and view.needed:
        argv, as_user = view.command(argv, PROBE_UID, PROBE_UID), {}
    try:
        return subprocess.run(
            argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=60, **as_user).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


SITECUSTOMIZE = """\
# Written by the oscar-faas provider: this Python's site folders are those of the
# installation the provider runs from (its .pth files, editable installs included), ahead of
# the system's own (as in a virtual environment).
import site
import sys
before = list(sys.path)
for folder in {folders!r}:
    site.addsitedir(folder)
sys.path[:] = [p for p in sys.path if p not in before] + before
"""


def function_python(helper_dir: Path,
                    env: "os._Environ[str] | dict[str, str] | None" = None,
                    view: InstallView | None = None) -> tuple[str, str | None]:
    """A Python a function user can run the runtime with, and the ``PYTHONPATH`` it needs
    (None: the inherited one).

    The provider's own interpreter when others can run it (in the :class:`InstallView`, if
    the installation needs one); else (no mount namespaces here) the system's ``python3`` of the same version, with this
    installation's package folders added as site folders by a ``sitecustomize`` written in
    ``helper_dir`` (so their ``.pth`` files count, editable installs included): the runtime
    and the workers it starts with ``python3`` both see them.

    :raises ConfigError: none works (the message says what to do).
    """
    env = os.environ if env is None else env
    inherited = env.get("PYTHONPATH") or None
    if _probe(sys.executable, inherited, view):
        return sys.executable, None
    helper_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(helper_dir, 0o755)
    atomic_write(helper_dir / "sitecustomize.py",
                 SITECUSTOMIZE.format(folders=_package_paths()).encode(), 0o644)
    extra = os.pathsep.join([str(helper_dir), *([inherited] if inherited else [])])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if Path(candidate).is_file() and _probe(candidate, extra):
            log.warning("%s cannot be run by unprivileged users; function runtimes use %s",
                        sys.executable, candidate)
            return candidate, extra
    from ...errors import ConfigError
    raise ConfigError(
        f"functions run as unprivileged users of their own when the provider runs as root, "
        f"but such a user cannot run {sys.executable} with oscar_faas (its files are not "
        f"readable by others{', even in a mount namespace' if view and view.needed else ''}"
        f"?), and no python{version} of the system can either. Make the installation's "
        f"files readable by others (chmod -R o+rX), run the provider as another user, or "
        f"set {ENV_ISOLATION}=off to run functions as root (not isolated)")


def _traversable(path: Path) -> bool:
    """Every folder from ``/`` down to ``path`` can be crossed by any user."""
    path = path.resolve()
    for folder in (path, *path.parents):
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _area_parent() -> Path:
    for candidate in (Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")):
        if candidate.is_dir() and _traversable(candidate):
            return candidate
    raise OSError("no temporary folder every user can traverse for the functions' folders")


class Isolation:
    """The function users of one provider (see the module's documentation). Thread-safe."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._lock = threading.Lock()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._uids: dict[str, int] = self._read_users()
        self.area = self._old_area() or Path(
            tempfile.mkdtemp(prefix="oscar-faas-fn-", dir=_area_parent()))
        os.chmod(self.area, 0o711)
        self._write(AREA_FILE, str(self.area).encode())
        self._python: tuple[str, str | None] | None = None
        log.info("functions run as users of their own (uids from %d); their folders are in %s",
                 UID_BASE, self.area)
        self.view = self._view()

    def _view(self) -> InstallView:
        """The installation as function users will see it (:mod:`.install_view`)."""
        view = InstallView.of_this_installation(self.area)
        if not view.needed:
            return view
        problem = namespaces_work()
        if problem is not None:
            log.warning("the installation is in folders function users cannot enter (%s), "
                        "and private mount namespaces cannot be made here: %s; functions "
                        "get only what they can read", view.describe(), problem)
            return InstallView()
        log.info("the installation is in folders function users cannot enter: each "
                 "function sees it read-only, at its own paths, in a mount namespace of its "
                 "own; covered: %s", view.describe())
        return view

    def popen_args(self, user: FunctionUser, argv: Sequence[str]
                   ) -> tuple[list[str], dict[str, Any]]:
        """The command line and ``subprocess.Popen`` keywords that run ``argv`` as the
        function's user: no supplementary groups, umask 077, its private folder as working
        directory, and the installation in view."""
        extra: dict[str, Any] = {"umask": 0o077, "cwd": str(user.home)}
        if self.view.needed:  # started as root; the view's shell drops to the user
            return self.view.command(argv, user.uid, user.gid), extra
        extra.update(user=user.uid, group=user.gid, extra_groups=[])
        return list(argv), extra

    def runtime_python(self) -> tuple[str, str | None]:
        """The interpreter function users run the runtime with, and the ``PYTHONPATH`` it
        needs (None: the inherited one); found once (:func:`function_python`).

        :raises ConfigError: there is none.
        """
        with self._lock:
            if self._python is None:
                self._python = function_python(self.area / ".python", view=self.view)
            return self._python

    # --- state ----------------------------------------------------------------------------

    def _write(self, name: str, data: bytes) -> None:
        atomic_write(self.data_dir / name, data, 0o600)

    def _read_users(self) -> dict[str, int]:
        try:
            data = json.loads((self.data_dir / USERS_FILE).read_bytes())
            return {str(k): int(v) for k, v in data["uids"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            from ...errors import ConfigError
            raise ConfigError(f"corrupt provider state {USERS_FILE}: {err}") from None

    def _old_area(self) -> Path | None:
        """The area a provider that died left behind, still ours (root's, a real folder):
        reused, so the secrets folders keep their paths (containers left running are
        adopted only when nothing of their definition changed)."""
        try:
            old = Path((self.data_dir / AREA_FILE).read_text().strip())
            info = os.lstat(old)
        except (OSError, ValueError):
            return None
        if (old.name.startswith("oscar-faas-fn-") and stat.S_ISDIR(info.st_mode)
                and info.st_uid == 0):
            return old
        return None

    def uid(self, name: str) -> int:
        """The function's uid (= gid), allocated on first use and kept while the function
        exists (across updates and restarts); a deleted function's uid is forgotten
        (:meth:`remove`), so churning services leaves nothing behind."""
        with self._lock:
            uid = self._uids.get(name)
            if uid is None:
                taken = set(self._uids.values())
                while True:
                    uid = UID_BASE + pyrandom.randbelow(UID_SPAN)
                    if uid not in taken:
                        break
                uids = {**self._uids, name: uid}
                self._write(USERS_FILE, json.dumps({"version": 1, "uids": uids},
                                                   indent=1).encode())
                self._uids = uids
            return uid

    # --- folders ----------------------------------------------------------------------------

    def folder(self, name: str) -> Path:
        return self.area / name

    def secrets_dir(self, name: str) -> Path:
        return self.folder(name) / "secrets"

    def _dir(self, path: Path, mode: int, uid: int, gid: int) -> None:
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)

    def user(self, name: str) -> FunctionUser:
        """The function's user, its folders created (or fixed) with the right owners."""
        uid = self.uid(name)
        folder = self.folder(name)
        self._dir(folder, 0o750, 0, uid)
        self._dir(folder / "secrets", 0o750, 0, uid)
        self._dir(folder / "home", 0o700, uid, uid)
        return FunctionUser(uid, uid, folder / "home", folder / "secrets")

    def secret_owner(self, name: str) -> tuple[int, int, int]:
        """``(uid, gid, mode)`` of a secret file of ``name``: root, its group, 0640."""
        return 0, self.uid(name), 0o640

    def remove(self, name: str) -> None:
        """Drop the function's folders and its uid (one picked at random from 100 million
        again later is as unlikely to meet a leftover file of it as any other)."""
        shutil.rmtree(self.folder(name), ignore_errors=True)
        with self._lock:
            if name in self._uids:
                uids = {k: v for k, v in self._uids.items() if k != name}
                self._write(USERS_FILE, json.dumps({"version": 1, "uids": uids},
                                                   indent=1).encode())
                self._uids = uids

    def close(self) -> None:
        """Remove the area (at provider stop)."""
        shutil.rmtree(self.area, ignore_errors=True)
        try:
            (self.data_dir / AREA_FILE).unlink()
        except OSError:
            pass
