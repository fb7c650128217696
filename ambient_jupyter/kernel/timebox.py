"""Run code that may reach the person's objects, for at most a given time.

State summaries and hints look at live objects, and an object's ``__repr__``,
``__len__``, ``__dir__`` or a property is the person's code: it can sleep, loop or
raise anything. On the kernel's main thread a one-shot ``SIGALRM`` timer cuts such
a call off; the signal is only borrowed when nobody else uses it, and it is always
put back as it was. Off the main thread nothing can interrupt a call, so callers
must not reach arbitrary user code there (:func:`why_no_timer` says so).
"""

from __future__ import annotations

import signal
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["OutOfTime", "why_no_timer", "with_alarm"]

T = TypeVar("T")


class OutOfTime(BaseException):
    """Raised by our SIGALRM handler; not an ``Exception``, so ``except Exception`` in user code lets it pass."""


def _on_alarm(signum: int, frame: types.FrameType | None) -> None:
    raise OutOfTime


def why_no_timer() -> str | None:
    """None if SIGALRM may be borrowed now, else the reason it may not."""
    if not hasattr(signal, "setitimer"):
        return "no SIGALRM on this platform"
    if threading.current_thread() is not threading.main_thread():
        return "not on the main thread"
    # A handler of the user's (or pytest-timeout's), or a timer running: it is theirs.
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN):
        return "SIGALRM is in use"
    if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        return "a timer is running"
    return None


def _disarm(previous: Any) -> None:
    # Disarm first: a pending alarm under SIG_DFL would terminate the kernel.
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def with_alarm(fn: Callable[[], T], seconds: float) -> T:
    """``fn()``, or :class:`OutOfTime` after ``seconds``; the previous handler is restored either way.

    Call only when :func:`why_no_timer` is None. One alarm, not a repeating one: a
    repeating alarm could land again while we restore, leaving a live timer under
    ``SIG_DFL``, which kills the process. The cost: user code that catches
    ``BaseException`` and carries on is not stopped a second time.
    """
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        try:
            # 0 would disarm rather than arm; setitimer counts in microseconds.
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
            return fn()
        finally:
            _disarm(previous)
    except OutOfTime:
        # The timer is one-shot. Its alarm may have landed inside the _disarm above and
        # cut it short; once delivered no other can come, so this one runs to the end.
        _disarm(previous)
        raise
