"""Files written whole or not at all: the provider's state, secrets, the isolation area's
own files and the gateway's credentials.

A reader (a function reading its secret, a restarted provider reading its state) must see the
old file or the new one, never half of one, and a secret must never be readable by others,
not even for a moment. This module sits at the package's top level because both the provider
and the launchers write such files, and neither should import the other for it.
"""

from __future__ import annotations

import os
import secrets as pyrandom
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644,
                 owner: tuple[int, int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    The temporary file is created with ``mode`` already set, so a secret is never readable by
    others, not even for a moment. ``owner`` = ``(uid, gid, mode)`` is applied before the
    file takes its name (only root may give a file away).
    """
    tmp = path.with_name(f".{path.name}.{pyrandom.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if owner is not None:
                os.fchown(handle.fileno(), owner[0], owner[1])
                os.fchmod(handle.fileno(), owner[2])
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
