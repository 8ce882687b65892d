"""How `zoo` stops on SIGTERM: as on Ctrl-C, by unwinding, so locks are released and the
local Ray runtime is shut down before the process exits."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


def exit_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit(SIGTERM) in the main thread, as Ray's driver handler
    does (a SIGTERM that lands while Ray's C++ core waits on tasks is still taken by the core,
    which aborts with a native stack dump). Returns the previous handler, None off the main
    thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: object) -> None:
    sys.exit(signum)
