"""The kernel's writer thread: the only place kernel events touch the disk.

The cell hook hands over a callable that builds the event (so even JSON-shaping
happens here, not on the hot path). The writer batches whatever is queued into
one transaction, so a burst of widget changes costs one disk sync.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from ..history import History, HistoryError

__all__ = ["Writer"]

log = logging.getLogger("ambient_jupyter.kernel")

Builder = Callable[[], dict[str, Any] | None]
_FLUSH = object()


class Writer:
    """Appends kernel events to the history from a daemon thread.

    Parameters
    ----------
    open_history
        Called once, on the writer thread, to open the history (opening may run an
        integrity check, which the user's first cell should not wait for).
    notebook
        Called for each batch, so ``%ambient notebook=...`` takes effect at once.
    on_committed
        Called on the writer thread with the stored events after each commit.
    """

    def __init__(
        self,
        open_history: Callable[[], History],
        notebook: Callable[[], str],
        on_committed: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._open_history = open_history
        self._notebook = notebook
        self.on_committed = on_committed
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._history: History | None = None
        self._ready = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ambient-writer", daemon=True)
        self._thread.start()

    @property
    def history(self) -> History:
        """The opened history (waits for the writer thread to open it)."""
        self._ready.wait(30)
        if self._history is None:
            msg = "the ambient-jupyter history could not be opened; see the kernel log"
            raise HistoryError(msg)
        return self._history

    def submit(self, build: Builder) -> None:
        """Queue an event; never blocks."""
        if not self._stopped:
            self._queue.put(build)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted before this call is committed."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        if self._stopped:
            return
        self.flush(timeout)
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._history = self._open_history()
        except (HistoryError, sqlite3.Error, OSError) as exc:
            log.error("ambient-jupyter cannot open its history, so nothing will be recorded: %s", exc)
            return
        finally:
            self._ready.set()
        while True:
            item = self._queue.get()
            batch: list[Any] = [item]
            # Drain what else is waiting: one transaction, one fsync for the lot.
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            flushes = [b[1] for b in batch if isinstance(b, tuple) and b[0] is _FLUSH]
            stop = any(b is None for b in batch)
            builders = [b for b in batch if callable(b)]
            if builders:
                self._write(builders)
            for done in flushes:
                done.set()
            if stop:
                return

    def _write(self, builders: list[Builder]) -> None:
        events: list[tuple[dict[str, Any], str | None]] = []
        for build in builders:
            try:
                event = build()
            except Exception:
                log.exception("ambient-jupyter could not build an event; it was skipped")
                continue
            if event is not None:
                events.append((event, None))
        if not events:
            return
        assert self._history is not None
        for attempt in range(5):
            try:
                stored = self._history.append_many(self._notebook(), events)
                break
            except sqlite3.OperationalError as exc:
                # Locked by another process for longer than busy_timeout, or a full
                # disk: retry a few times, then report loudly.
                log.warning("ambient-jupyter history write failed (%s), retrying", exc)
                time.sleep(0.2 * (attempt + 1))
        else:
            log.error("ambient-jupyter could not record %d events: the history is not writable", len(events))
            return
        if self.on_committed is not None:
            try:
                self.on_committed(stored)
            except Exception:
                log.exception("an ambient-jupyter listener failed")
