"""How `zoo` stops on SIGTERM: as on Ctrl-C, by unwinding, so locks are released and the
local Ray runtime is shut down before the process exits."""

from __future__ import annotations

import signal
import threading
from typing import Any

_RECEIVED: list[int] = []  # SIGTERM seen by this process (Ray's core re-raises a bare Ctrl-C)
_INSTALLED: list[bool] = []  # exit_on_sigterm ran in this process


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as Ctrl-C is: the one exception Ray's core unwinds from a blocking wait
    (anything else raised there aborts the process with a native stack dump)."""


def exit_on_sigterm() -> Any:
    """Make SIGTERM raise `Terminated` in the main thread (the CLI, for its run). Returns the
    previous handler, None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _INSTALLED[:] = [True]
    return signal.signal(signal.SIGTERM, _terminate)


def keep_exit_on_sigterm() -> None:
    """Put `exit_on_sigterm`'s handler back where `ray.init` replaced it with Ray's own
    (sys.exit, which Ray's core cannot unwind); nothing where the CLI did not install it."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is not _terminate and _INSTALLED:
        signal.signal(signal.SIGTERM, _terminate)


def restore_sigterm(previous: Any) -> None:
    """Undo `exit_on_sigterm` (given what it returned)."""
    if previous is not None:
        _INSTALLED.clear()
        signal.signal(signal.SIGTERM, previous)


def terminated() -> bool:
    """Whether this process received SIGTERM (a KeyboardInterrupt may stand for it)."""
    return bool(_RECEIVED)


def _terminate(signum: int, frame: object) -> None:
    _RECEIVED.append(signum)
    raise Terminated
