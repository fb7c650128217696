"""Who answers inside this kernel: the election, and the host made on first need.

The recorder only records. This decides whether the kernel itself reacts to failures
(only when no server or runner hosts the notebook, and not quiet), makes the
:class:`~ambient_jupyter.kernel.host.KernelHost` when a failure, ``%%ask`` or the chat
widget first needs one, and closes it at shutdown: after the recorder's queue is
committed (so a last failure still gets its reaction) and before its history closes.

Light on purpose: the host, and the model behind it, are imported only when needed.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import KernelHost
    from .recorder import Recorder

__all__ = ["Hosting"]


class Hosting:
    """The in-kernel host of one recorder's notebook, if the kernel needs one."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.host: KernelHost | None = None
        self._closed = False
        recorder.on_commit(self._committed)
        # ipykernel sets exit_now when it handles a shutdown request: the last moment
        # a reply in flight can still finish (at atexit, Python refuses new threads).
        recorder.shell.observe(self._on_exit_now, names="exit_now")

    @property
    def elected(self) -> bool:
        """React to failures here only when no other host (runner, server) does."""
        settings = self.recorder.settings
        return os.environ.get("AMBIENT_HOST", "").strip() in ("", "kernel") and not settings.quiet

    def ensure(self) -> KernelHost:
        if self.host is None:
            from .host import KernelHost

            recorder = self.recorder
            self.host = KernelHost(
                recorder.writer.history,
                recorder.notebook,
                recorder.settings,
                react=self.elected,
                busy=lambda: recorder.busy,
            )
        return self.host

    def _committed(self, events: list[dict[str, Any]]) -> None:
        """Writer thread: hand what was committed to the host, making one for a failure."""
        if self._closed:
            return
        if self.host is None:
            failed = any(e.get("kind") == "cell_executed" and e.get("status") == "error" for e in events)
            if not (failed and self.elected):
                return
        self.ensure().on_committed(events)  # it reads them while the kernel is idle (and may react)

    def reset(self) -> None:
        """Drop the host (its transcript is the old notebook's); a new one is made on demand."""
        host, self.host = self.host, None
        if host is not None:
            host.close()

    def _on_exit_now(self, change: Any) -> None:
        if change["new"]:
            self.drain()

    def drain(self, timeout: float = 2.0) -> None:
        """Commit what is queued and let a reply in flight finish (or store it as incomplete).

        Bounded because jupyter_client sends SIGTERM 2.5 s after its shutdown request
        (half of ``shutdown_wait_time``); a reply cut here is stored as incomplete rather
        than lost. ``ambient-jupyter run`` hosts replies outside the kernel.
        """
        started = time.monotonic()
        self.recorder.writer.flush(timeout / 4)
        host, self.host = self.host, None
        if host is not None:
            host.close(max(0.5, timeout - (time.monotonic() - started)))

    def close(self) -> None:
        """Shut the host down, once the recorder's last events are committed."""
        with contextlib.suppress(ValueError):
            self.recorder.shell.unobserve(self._on_exit_now, names="exit_now")
        self.recorder.writer.flush()
        self._closed = True
        host, self.host = self.host, None
        if host is not None:
            host.close()
