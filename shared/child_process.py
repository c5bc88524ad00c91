"""Child processes that die with the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover  (runs in the child before exec)
    """A `preexec_fn`: the child gets SIGTERM when its parent dies, however it dies, so a
    SIGKILLed supervisor leaves no orphan behind (Linux; elsewhere it does nothing).

    The kernel ties this to the parent's thread that forked: fork from a thread that
    lives as long as the parent does.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
