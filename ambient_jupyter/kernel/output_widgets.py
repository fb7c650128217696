"""What Output widgets show, recorded by the kernel as a frontend applies it.

An ipywidgets ``Output`` takes a request's outputs by setting its ``msg_id`` to that
request (``with out:``, ``@out.capture()``): frontends (JupyterLab, nbclient) then
show every output whose parent is that request inside the widget, and not in the
cell. The record does the same, in the kernel, so it does not depend on a frontend
being there, or on its copy of the outputs coming back before the kernel stops:

- while a widget takes a request, the recorder hands that request's output messages
  here instead of to the cell's capture (the innermost widget takes them, as in
  frontends);
- each widget's outputs are applied with the cell's rules (``CellCapture``: order,
  merged streams, clears, display updates);
- when the cell ends (or the block, outside a cell), the widget's ``outputs`` are
  recorded as one ``widget_changed``, summarised within the output limit.

The frontend's copy coming back (a comm update of ``outputs``) is therefore not
recorded again; an assignment by the user's code (``out.outputs = ()``,
``append_stdout``) is, and becomes what later outputs are added to.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._trim import clean_text
from .capture import CellCapture, DisplayIds, summarize_nbformat, summarize_outputs, within_budget

__all__ = ["OutputWidgets"]

_MAX_WIDGETS = 256
"""Output widgets whose outputs are tracked at once; the least recently used is forgotten."""


class _Shown(CellCapture):
    """One Output widget's outputs: what was assigned to it, then what it took since."""

    def __init__(self, widget: Any, limit: int) -> None:
        super().__init__("", "", time.perf_counter(), limit, DisplayIds())
        self.widget_id = str(getattr(widget, "model_id", None) or id(widget))
        description = getattr(widget, "description", None)
        self.description = clean_text(description) if isinstance(description, str) and description else None
        self.base: list[dict[str, Any]] = []
        """Summarised outputs set by code (``out.outputs = ...``) before the messages below."""
        self.recorded: list[dict[str, Any]] = []
        self.changed = False

    def _clear(self) -> None:
        super()._clear()
        self.base = []

    def observe(self, msg_type: str, content: dict[str, Any]) -> None:
        super().observe(msg_type, content)
        self.changed = True

    def assign(self, summary: list[dict[str, Any]]) -> None:
        with self._lock:
            self.outputs.clear()
            self.base = summary
            self.recorded = summary
            self.changed = False

    def event(self) -> dict[str, Any]:
        with self._lock:
            shown = within_budget(self.base + summarize_outputs(self.outputs, self.limit), self.limit)
            old, self.recorded, self.changed = self.recorded, shown, False
        return {
            "kind": "widget_changed",
            "widget": self.widget_id,
            "widget_class": "Output",
            "description": self.description,
            "trait": "outputs",
            "old": old,
            "new": shown,
        }


class OutputWidgets:
    """Which request each Output widget takes, and what each shows.

    ``pending(msg_id)`` says whether that request is a cell still running: a widget it
    wrote to is recorded once, when the cell ends (:meth:`flush`), however many blocks
    the cell ran (a loop of ``with out:`` is one change, not one per turn). Blocks of
    anything else (a button's callback) are recorded when they end.
    """

    def __init__(
        self,
        emit: Callable[[Callable[[], dict[str, Any]]], None],
        limit: int,
        pending: Callable[[str], bool] = lambda _msg_id: False,
    ) -> None:
        self._emit = emit
        self.limit = limit
        """Characters of text one widget's recorded outputs may hold."""
        self._pending = pending
        self._routed: dict[str, list[int]] = {}
        """msg_id -> the widgets taking it, innermost last. Replaced, never mutated: the
        send path reads it from other threads without the lock."""
        self._shown: OrderedDict[int, _Shown] = OrderedDict()
        """id(widget) -> what it shows, least recently used first."""
        self._dirty: dict[int, _Shown] = {}
        self._lock = threading.Lock()

    def taken(self, parent: str, msg_type: str, content: dict[str, Any]) -> bool:
        """Called on the kernel's send path: True if an Output widget takes this output."""
        widgets = self._routed.get(parent)
        if not widgets:
            return False
        shown = self._shown.get(widgets[-1])
        if shown is not None:
            shown.observe(msg_type, content)
        return True

    def route(self, widget: Any, old: str, new: str) -> None:
        """The widget's ``msg_id`` changed: it stopped taking ``old``, started taking ``new``."""
        key = id(widget)
        with self._lock:
            if old and key in self._routed.get(old, ()):
                routed = {**self._routed, old: [w for w in self._routed[old] if w != key]}
                if not routed[old]:
                    del routed[old]
                self._routed = routed
                shown = self._shown.get(key)
                if shown is not None and shown.changed:
                    # Its block is over: ipywidgets flushed stdout/stderr before unsetting
                    # msg_id, so every output of the block is in.
                    if self._pending(old):
                        self._dirty[key] = shown
                    else:
                        self._record(shown)
            if new:
                self._get(widget)
                self._routed = {**self._routed, new: [*self._routed.get(new, ()), key]}

    def assigned(self, widget: Any, outputs: Any) -> list[dict[str, Any]]:
        """User code set the widget's ``outputs``: later outputs are added to these."""
        summary = summarize_nbformat(outputs, self.limit)
        with self._lock:
            shown = self._get(widget)
            self._dirty.pop(id(widget), None)
        shown.assign(summary)
        return summary

    def flush(self) -> None:
        """Record the widgets a finished cell wrote to (called at its ``execute_reply``)."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            for shown in dirty.values():
                self._record(shown)

    def _record(self, shown: _Shown) -> None:
        # Summarised now, so that the record is what the widget showed at this moment.
        event = shown.event()
        self._emit(lambda: event)

    def _get(self, widget: Any) -> _Shown:
        """The widget's record (under the lock), made if new; most recently used last."""
        key = id(widget)
        shown = self._shown.get(key)
        model_id = str(getattr(widget, "model_id", None) or key)
        if shown is not None and shown.widget_id == model_id:
            self._shown.move_to_end(key)  # atomic: the send path may be reading
            return shown
        # New, or another widget at a dead one's address.
        if len(self._shown) >= _MAX_WIDGETS:
            busy = {k for keys in self._routed.values() for k in keys}
            oldest = next((k for k in self._shown if k not in busy), None)
            if oldest is not None:
                del self._shown[oldest]
                self._dirty.pop(oldest, None)
        shown = self._shown[key] = _Shown(widget, self.limit)
        return shown
