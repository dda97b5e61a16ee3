"""The installation as a function user sees it: readable wherever it was installed.

As root, every function runs as a uid of its own (:mod:`.isolation`), and that uid cannot
enter a folder other users cannot cross: ``/root``, a ``mktemp -d`` folder, a ``0750`` home.
An installation there (the venv, pyenv's Python, the project's clone) is out of its reach:
the runtime cannot import ``uvicorn``, and a script or warm worker that calls the venv's
``python`` gets ``Permission denied``.

Chosen fix: a **private mount namespace** per function process tree, in which each such
folder is covered by a small ``tmpfs`` (mode 0755) and the parts of the installation below it
are bound back **read-only at their own paths**. The function sees the installation exactly
where the provider does (absolute paths in ``pyvenv.cfg``, shebangs and ``.pth`` files keep
working), and nothing else of the covered folder (``/root/.ssh`` stays hidden); nothing on the
disk changes mode, and the mounts vanish with the last process of the function. Why not the
alternatives: the frozen static runtime alone would still leave the venv's ``python`` out of
the scripts' and workers' reach; granting group or ACL access would change the user's own
folders.

It costs nothing when the installation is readable already (the common case: no namespace at
all), and needs ``CAP_SYS_ADMIN`` (root, outside a locked-down container) and util-linux's
``unshare``, ``mount`` and ``setpriv``, which every Debian and Ubuntu has; without them the
provider says so and falls back to what function users can read (:mod:`.isolation`).

What is bound back (:func:`plan`): the folders Python runs from (``sys.prefix``,
``sys.base_prefix``, the real folder of ``sys.executable``, ``sys.path``) and the projects
installed in editable mode (PEP 610 ``direct_url.json``), each as the highest folder on its way
that every user can cross (``/root/.pyenv`` for a pyenv Python, the clone for a project); and
the folders of ``PATH`` themselves (``/root/.cargo/bin``, not ``/root/.cargo``). Files keep
their modes: a ``0600`` file stays unreadable.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ... import SOURCE_ROOT

log = logging.getLogger("oscar_faas.launchers.host.install_view")

#: Size of each covering tmpfs: it holds only the empty folders the binds hang on.
TMPFS_OPTIONS = "mode=0755,size=1m,nosuid,nodev"
#: The tools the view needs (util-linux).
TOOLS = ("unshare", "mount", "setpriv")


def crossable(path: Path) -> bool:
    """Any user may cross ``path`` (its mode has the others' execute bit)."""
    try:
        return bool(os.stat(path).st_mode & stat.S_IXOTH)
    except OSError:
        return False


@dataclass(frozen=True)
class Needs:
    """What a function must see of this installation (module docstring)."""

    #: the installation itself: Python's prefixes, the package, editable projects
    core: tuple[Path, ...]
    #: ``sys.path`` entries (bound back only when they can be entered themselves)
    imports: tuple[Path, ...]
    #: the folders of ``PATH``: bound back as they are, nothing around them
    commands: tuple[Path, ...]


def _folders(raw: Iterable[str]) -> tuple[Path, ...]:
    paths: list[Path] = []
    for item in raw:
        path = Path(item)
        if path.is_file():  # a zip on sys.path
            path = path.parent
        try:
            path = path.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if path.is_dir() and path not in paths:
            paths.append(path)
    return tuple(paths)


def installation_needs(env: Mapping[str, str] | None = None) -> Needs:
    """The folders a function needs to see to run this installation."""
    env = os.environ if env is None else env
    core = _folders([sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                     os.path.dirname(os.path.realpath(sys.executable)),
                     str(SOURCE_ROOT), *_editable_projects()])
    return Needs(core, _folders(p for p in sys.path if p),
                 _folders(p for p in (env.get("PATH") or "").split(os.pathsep) if p))


def _editable_projects() -> list[str]:
    """Folders of the projects installed in editable mode (their source is outside
    site-packages, reached through a finder that ``sys.path`` does not show)."""
    from importlib import metadata
    from urllib.parse import unquote, urlsplit

    roots = []
    for dist in metadata.distributions():
        try:
            raw = dist.read_text("direct_url.json")
            info = json.loads(raw) if raw else None
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and (info.get("dir_info") or {}).get("editable"):
            url = urlsplit(str(info.get("url", "")))
            if url.scheme == "file":
                roots.append(unquote(url.path))
    return roots


@dataclass(frozen=True)
class Cover:
    """One folder no function user can cross, covered by a tmpfs, and what is bound back."""

    folder: Path
    binds: tuple[Path, ...]


def plan(needs: Needs) -> tuple[Cover, ...]:
    """The covers that make what ``needs`` names reachable by any user."""
    covers: dict[Path, list[Path]] = {}
    for kind, paths in (("core", needs.core), ("imports", needs.imports),
                        ("commands", needs.commands)):
        for path in paths:
            chain = [*reversed(path.parents), path]
            top = next((i for i, folder in enumerate(chain) if not crossable(folder)), None)
            if top is None:
                continue  # every user can reach it already
            start = len(chain)  # the highest folder from which everything down is crossable
            while start - 1 > top and crossable(chain[start - 1]):
                start -= 1
            if start == len(chain):  # the folder itself cannot be entered
                if kind != "core":
                    continue  # e.g. the working directory on sys.path: not ours to open
                binds = sorted(p for p in path.iterdir() if not p.is_symlink())
            else:
                binds = [path] if kind == "commands" else [chain[start]]
            covers.setdefault(chain[top], []).extend(binds)
    result = []
    for folder, binds in covers.items():
        unique: list[Path] = []
        for bind in sorted(set(binds), key=lambda p: len(p.parts)):
            if not any(bind.is_relative_to(kept) for kept in unique):
                unique.append(bind)
        result.append(Cover(folder, tuple(unique)))
    return tuple(result)


def _script(covers: Sequence[Cover], stage_parent: Path) -> str:
    """The shell that builds the view in a fresh mount namespace, then drops to the
    function's user (``$1`` uid, ``$2`` gid, ``$3`` umask) and runs the rest of its args.
    ``stage_parent`` must be a folder only root can write (the isolation area): the
    originals are staged there for a moment, out of any function user's reach."""
    q = shlex.quote
    lines = ["set -e", "umask 022",
             f"stage=$(mktemp -d {q(str(stage_parent))}/.view.XXXXXX)",
             'trap \'umount -l "$stage"/* 2>/dev/null; rmdir "$stage"/* "$stage" 2>/dev/null;'
             ' true\' EXIT']
    for i, cover in enumerate(covers):
        lines += [f'mkdir "$stage/{i}"', f'mount --bind {q(str(cover.folder))} "$stage/{i}"']
    for i, cover in enumerate(covers):
        lines.append(f"mount -t tmpfs -o {TMPFS_OPTIONS} oscar-faas-view {q(str(cover.folder))}")
        for bind in cover.binds:
            rel = bind.relative_to(cover.folder)
            target = q(str(bind))
            if bind.is_dir():
                lines.append(f"mkdir -p {target}")
            else:
                lines += [f"mkdir -p {q(str(bind.parent))}", f": > {target}"]
            lines.append(f'mount --bind -o ro "$stage/{i}/"{q(str(rel))} {target}')
    for i, _ in enumerate(covers):
        lines.append(f'umount -l "$stage/{i}"')
    lines += ['rmdir "$stage"/* "$stage"', "trap - EXIT", 'umask "$3"',
              'uid=$1 gid=$2; shift 3',
              'exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"']
    return "\n".join(lines)


class InstallView:
    """The view of one provider: computed once, applied to every function process."""

    def __init__(self, covers: Sequence[Cover] = (), stage_parent: Path = Path("/tmp")
                 ) -> None:
        self.covers = tuple(covers)
        self._script = _script(self.covers, stage_parent) if self.covers else ""

    @classmethod
    def of_this_installation(cls, stage_parent: Path,
                             env: Mapping[str, str] | None = None) -> InstallView:
        return cls(plan(installation_needs(env)), stage_parent)

    @property
    def needed(self) -> bool:
        """False when function users can read the installation as it is."""
        return bool(self.covers)

    def describe(self) -> str:
        return "; ".join(f"{c.folder} (binding back {', '.join(str(b) for b in c.binds)})"
                         for c in self.covers)

    def command(self, argv: Sequence[str], uid: int, gid: int, umask: int = 0o077
                ) -> list[str]:
        """``argv`` run as ``uid``/``gid`` inside the view (start it as root)."""
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                self._script, "oscar-faas-view", str(uid), str(gid), f"{umask:03o}",
                *argv]


def namespaces_work() -> str | None:
    """None when this process can build views, else why not (in words)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} (util-linux) not found"
    import tempfile
    try:
        with tempfile.TemporaryDirectory(prefix="oscar-faas-probe-") as folder:
            proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                                   "mount", "-t", "tmpfs", "-o", "size=4k", "oscar-faas-probe",
                                   folder], stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unshare failed: {err}"
    if proc.returncode != 0:
        return (proc.stderr.strip() or f"unshare exited with {proc.returncode}") + \
            " (private mount namespaces need CAP_SYS_ADMIN)"
    return None
