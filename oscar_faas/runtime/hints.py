"""The fix to name when a function's own command cannot start because of what it can see.

On the embedded provider run as root, a function runs as a uid of its own, which sees only
what every user may read, plus the oscar-faas installation (shown read-only by the provider,
launchers/host/install_view.py). A worker or script stored elsewhere, say beside the venv in a
``0700`` folder, is "No such file or directory" or "Permission denied" to it; the bare error
does not say why, so the runtime adds this (issue 21).
"""

from __future__ import annotations

import os
from typing import Mapping

from ..contract import ENV_ISOLATED


#: What a file out of the function user's sight looks like in an error.
UNSEEN = ("No such file or directory", "Permission denied", "can't open file", "not found")


def isolation_hint(env: Mapping[str, str], error: str) -> str:
    """A sentence naming the cause and the fix when ``error`` looks like a file the function
    cannot see, or "" (not isolated, or another failure)."""
    if (env.get(ENV_ISOLATED) or "") != "1" or not any(w in error for w in UNSEEN):
        return ""
    return (f"(this function runs as uid {os.getuid()}, which sees only what every user may "
            f"read, plus the oscar-faas installation: put what the service runs inside the "
            f"installation's folders or where every user can read it (chmod o+rX on every "
            f"folder on the way), or start the provider with OSCAR_FAAS_ISOLATION=off to run "
            f"functions as root, not isolated)\n")
