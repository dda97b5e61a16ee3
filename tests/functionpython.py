"""The Python a test hands to its functions (worker and server commands): this one.

As root, the embedded provider runs each function as an unprivileged user of its own
(host mode isolation); wherever this interpreter and the project are installed, the
provider shows them to the function (read-only, at their own paths, in a mount namespace
of its own when a folder on the way is closed to other users: oscar_faas/provider/
install_view.py), so the obvious command, the venv's own ``python``, works (issue 21).
"""

from __future__ import annotations

import sys


def function_python() -> str:
    return sys.executable
