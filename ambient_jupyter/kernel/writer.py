"""The kernel's writer thread: the only place kernel events touch the disk.

The cell hook hands over a callable that builds the event (so even JSON-shaping
happens here, not on the hot path). Here, too, each event is typed: parsed into its
model in :mod:`ambient_jupyter.events` and stored as that model's dump, so what the
kernel writes is checked against the vocabulary every reader shares, at no cost to
the user's cell. The writer groups commits: it commits at
most once per ``GROUP_WINDOW``. An event after a quiet spell (a person running a
cell) is committed at once; during a burst (a notebook run, a slider dragged) the
writer sleeps out the rest of the window and appends all that is queued in one
transaction. A run of quick cells thus costs a few disk syncs a second, rather
than one per cell competing with the kernel for the disk, the CPU and the GIL. A
``flush()``, a ``close()`` or ``GROUP_MAX`` waiting items end the window at once.
Events are acknowledged (``on_committed``) only after their commit.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ..events import parse_event
from ..history import History, HistoryError

__all__ = ["Writer", "typed"]

log = logging.getLogger("ambient_jupyter.kernel")

Builder = Callable[[], dict[str, Any] | None]
"""Makes an event's fields (``kind`` and the rest of its model's fields), or None for no event."""
_FLUSH = object()

GROUP_WINDOW = 0.2
"""Shortest time between two commits, in seconds (the longest an event waits in a burst)."""
GROUP_MAX = 500
"""Commit at once when this many items are waiting (and at most this many per transaction)."""


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
    on_open
        Called on the writer thread once the history is open, before any event is
        written (what an earlier kernel left to record comes first).
    """

    def __init__(
        self,
        open_history: Callable[[], History],
        notebook: Callable[[], str],
        on_committed: Callable[[list[dict[str, Any]]], None],
        on_open: Callable[[History], None] | None = None,
    ) -> None:
        self._open_history = open_history
        self._on_open = on_open
        self._notebook = notebook
        self.on_committed = on_committed
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Set to end the writer's grouping window early (flush, close, a full group).
        # Items alone do not wake the writer while it waits: that is the point.
        self._wake = threading.Event()
        self._last_commit = float("-inf")
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
            if self._queue.qsize() >= GROUP_MAX:
                self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted before this call is committed."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread and close the history."""
        if self._stopped:
            return
        self.flush(timeout)
        self._stopped = True
        self._queue.put(None)
        self._wake.set()
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
        if self._on_open is not None:
            try:
                self._on_open(self._history)
            except Exception:
                log.exception("ambient-jupyter could not finish what an earlier kernel left")
        while True:
            batch = self._collect()
            flushes = [b[1] for b in batch if isinstance(b, tuple) and b[0] is _FLUSH]
            stop = any(b is None for b in batch)
            builders = [b for b in batch if callable(b)]
            if builders:
                self._write(builders)
            for done in flushes:
                done.set()
            if stop:
                # The writer opened the history, so it closes it: a kernel that loads
                # and unloads the extension does not pile up open SQLite connections.
                self._history.close()
                return

    def _collect(self) -> list[Any]:
        """Wait for an item, let a group gather, and take up to ``GROUP_MAX`` items.

        The window is a sleep on ``_wake``, not a loop on the queue: the writer wakes
        once per group, not once per event. A flush or stop request (put before
        ``_wake`` is set) ends it at once.
        """
        item = self._queue.get()
        # At most one commit per window: an event after a quiet spell (a person running
        # one cell) commits at once; a burst waits for the rest of the window.
        wait = self._last_commit + GROUP_WINDOW - time.monotonic()
        if callable(item) and wait > 0 and self._queue.qsize() < GROUP_MAX:
            self._wake.wait(wait)
        self._wake.clear()
        batch: list[Any] = [item]
        while len(batch) < GROUP_MAX:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, builders: list[Builder]) -> None:
        events: list[tuple[dict[str, Any], str | None]] = []
        for build in builders:
            try:
                event = build()
                if event is not None:
                    events.append((typed(event), None))
            except Exception:
                log.exception("ambient-jupyter could not build an event; it was skipped")
        if not events:
            return
        assert self._history is not None
        for attempt in range(5):
            try:
                stored = self._history.append_many(self._notebook(), events)
                self._last_commit = time.monotonic()
                break
            except (sqlite3.OperationalError, HistoryError) as exc:
                # Locked by another process for longer than busy_timeout, a full disk,
                # or a bad file that could not be replaced: retry a few times, then
                # report loudly (the thread lives on for later events).
                log.warning("ambient-jupyter history write failed (%s), retrying", exc)
                time.sleep(0.2 * (attempt + 1))
        else:
            log.error("ambient-jupyter could not record %d events: the history is not writable", len(events))
            return
        try:
            self.on_committed(stored)
        except Exception:
            log.exception("an ambient-jupyter listener failed")


def typed(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` checked against its model (by ``kind``), as the dict to store.

    Only the fields the builder set are dumped: the history stamps ``at`` once per
    transaction, and a successful cell keeps storing no empty ``hints``.

    An event that does not fit its model is still stored, as built, with an
    ``invalid`` note saying why, and logged as an error. It records something that
    happened in the kernel (a cell ran, a value changed), and the misfit is our
    shaping bug, not the person's: dropping the event would lose that fact for
    good, while every reader already tolerates fields it does not know.
    """
    try:
        model = parse_event(event)
    except ValidationError as exc:
        problem = "; ".join(f"{_where(e['loc'], event)}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
        log.error(
            "ambient-jupyter recorded a %r event that does not fit its model (%s); it is stored with this note",
            event.get("kind"),
            problem,
        )
        return {**event, "invalid": problem}
    return model.model_dump(exclude_unset=True)


def _where(loc: tuple[int | str, ...], event: dict[str, Any]) -> str:
    # The union puts the kind first (``cell_executed.hints.0.text``); the note sits in
    # that very event, so the field's own path says it better.
    if loc and loc[0] == event.get("kind"):
        loc = loc[1:]
    return ".".join(map(str, loc)) or "kind"
