"""Who answers inside this kernel: the election, and the host made on first need.

The recorder only records. This decides whether the kernel itself reacts to failures
(only when no server or runner hosts the notebook, and not quiet), makes the
:class:`~ambient_jupyter.kernel.host.KernelHost` when a failure, ``%%ask`` or the chat
widget first needs one, and closes it at shutdown: after the recorder's queue is
committed (so a last failure still gets its reaction) and before its history closes.

Light on purpose: the host, and the model behind it, are imported only when needed.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import KernelHost
    from .recorder import Recorder

__all__ = ["Hosting"]


class Hosting:
    """The in-kernel host of one recorder's notebook, if the kernel needs one.

    Used from the writer thread (committed events), the main thread (``%%ask``, the
    widget, ``%ambient``) and the control thread (a shutdown request): one lock makes
    sure there is never more than one host, and none once closed.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.host: KernelHost | None = None
        self._closed = False
        self._lock = threading.Lock()
        recorder.on_commit(self._committed)
        recorder.on_exit(self.drain)

    @property
    def elected(self) -> bool:
        """React to failures here only when no other host (runner, server) does."""
        settings = self.recorder.settings
        return os.environ.get("AMBIENT_HOST", "").strip() in ("", "kernel") and not settings.quiet

    def ensure(self) -> KernelHost:
        with self._lock:
            return self._ensure_locked()

    def _ensure_locked(self) -> KernelHost:
        if self.host is None:
            if self._closed:
                msg = "ambient-jupyter has stopped recording this kernel; run %load_ext ambient_jupyter again"
                raise RuntimeError(msg)
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
        with self._lock:
            if self._closed:
                return
            if self.host is None:
                failed = any(e.get("kind") == "cell_executed" and e.get("status") == "error" for e in events)
                if not (failed and self.elected):
                    return
            host = self._ensure_locked()
        host.on_committed(events)  # it reads them while the kernel is idle (and may react)

    def _drop(self, timeout: float = 4.0, *, for_good: bool = False) -> None:
        with self._lock:
            host, self.host = self.host, None
            self._closed = self._closed or for_good
        if host is not None:
            host.close(timeout)

    def reset(self) -> None:
        """Drop the host (its transcript is the old notebook's); a new one is made on demand."""
        self._drop()

    def drain(self, timeout: float = 2.0) -> None:
        """Commit what is queued and let a reply in flight finish (or store it as incomplete).

        Called when the kernel is asked to shut down, the last moment a reply can still
        finish (at atexit, Python refuses new threads). Bounded because jupyter_client
        sends SIGTERM 2.5 s after its shutdown request (half of ``shutdown_wait_time``);
        a reply cut here is stored as incomplete rather than lost.
        """
        started = time.monotonic()
        self.recorder.writer.flush(timeout / 4)
        self._drop(max(0.5, timeout - (time.monotonic() - started)))

    def close(self) -> None:
        """Shut the host down for good, once the recorder's last events are committed."""
        self.recorder.writer.flush()
        self._drop(for_good=True)
