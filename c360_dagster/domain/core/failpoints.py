"""Named failpoints for fault-injection tests: `C360_FAILPOINT=<name>` kills the process there.

Every write boundary calls `failpoint(name)`. When the environment variable names that point,
the process sends itself SIGKILL (no cleanup, no `finally`, exactly like a power cut of the
process); when it is unset, the call is one dictionary lookup. Names are listed in
docs/governance.md ("Atomic generations and failpoints").
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "C360_FAILPOINT"


def failpoint(name: str) -> None:
    """Die here, by SIGKILL, when `C360_FAILPOINT` equals `name`."""
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
