"""Observe every ipywidgets / anywidget trait change, from the kernel or a frontend.

A frontend's change arrives as a comm message that ipywidgets applies to the
trait, so one traitlets observer sees both sources. Plain widgets need no base
class: we attach to every widget constructed, and to those that already exist.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .._trim import VALUE_LIMIT, clean_text, json_safe
from .capture import summarize_nbformat
from .output_widgets import OutputWidgets

__all__ = ["WidgetWatcher"]

log = logging.getLogger("ambient_jupyter.kernel")

_SKIP_CLASSES = ("Layout", "Style")
"""Cosmetic helper widgets whose changes say nothing about the analysis."""
_PLUMBING = frozenset({"layout", "style", "comm", "msg_id"})
"""Traits that carry no meaning for a person: ``msg_id`` is how an Output widget
routes the kernel's messages into itself, set and unset around every ``with out:``."""


class WidgetWatcher:
    """Reports trait changes of every widget to ``emit(event_dict_builder)``."""

    def __init__(
        self,
        emit: Callable[[Callable[[], dict[str, Any]]], None],
        output_widgets: OutputWidgets | None = None,
    ) -> None:
        self._emit = emit
        self._outputs = output_widgets if output_widgets is not None else OutputWidgets(emit, VALUE_LIMIT)
        self._watched: list[Any] = []
        self._previous_callback: Any = None
        self._widget_cls: Any = None

    def start(self) -> bool:
        try:
            from ipywidgets import Widget
        except ImportError:
            return False
        self._widget_cls = Widget
        # ipywidgets has a setter for this callback but no getter; we chain to it.
        self._previous_callback = Widget._widget_construction_callback  # noqa: SLF001
        Widget.on_widget_constructed(self._constructed)
        from ipywidgets.widgets import widget as widget_module

        for existing in list(getattr(widget_module, "_instances", {}).values()):
            self._watch(existing)
        return True

    def stop(self) -> None:
        if self._widget_cls is None:
            return
        self._widget_cls.on_widget_constructed(self._previous_callback)
        for widget in self._watched:
            with contextlib.suppress(ValueError):
                widget.unobserve(self._changed)
        self._watched.clear()
        self._widget_cls = None

    def _constructed(self, widget: Any) -> None:
        # ipywidgets allows one construction callback: keep whoever was there before.
        if self._previous_callback is not None:
            self._previous_callback(widget)
        self._watch(widget)

    def _watch(self, widget: Any) -> None:
        if type(widget).__name__.endswith(_SKIP_CLASSES):
            return
        if getattr(type(widget), "_ambient_record", True) is False:
            # A widget that is our own plumbing (the chat widget): its state is the
            # conversation itself, so recording it would feed the history back into itself.
            return
        widget.observe(self._changed)
        self._watched.append(widget)

    def _changed(self, change: Any) -> None:
        name = change["name"]
        owner = change["owner"]
        output_widget = "msg_id" in owner.keys and "outputs" in owner.keys
        if output_widget and name == "msg_id":
            # An Output widget's ``with out:`` (entered or left): where outputs go.
            self._outputs.route(owner, change["old"] or "", change["new"] or "")
            return
        if output_widget and name == "outputs" and "outputs" in getattr(owner, "_property_lock", {}):
            # The frontend's copy of what the widget took, coming back: recorded already,
            # from the messages themselves (``output_widgets.py``).
            return
        # Only synced, public state: what a person sees and sets.
        if name.startswith("_") or name in _PLUMBING or name not in owner.keys:
            return
        if output_widget and name == "outputs":
            # Set by the user's code: summarised like a cell's outputs (text trimmed,
            # images measured), and what the widget's later outputs are added to. Done
            # now: a queued event must not hold an image's base64 until the commit.
            old_outputs = summarize_nbformat(change["old"], self._outputs.limit)
            new_outputs = self._outputs.assigned(owner, change["new"])
            old, new = (lambda: old_outputs), (lambda: new_outputs)
        else:
            old, new = _now_or_later(change["old"]), _now_or_later(change["new"])
        widget_id = getattr(owner, "model_id", None) or str(id(owner))
        cls = type(owner).__name__
        description = getattr(owner, "description", None) or None

        def build() -> dict[str, Any]:
            return {
                "kind": "widget_changed",
                "widget": str(widget_id),
                "widget_class": cls,
                "description": clean_text(description) if isinstance(description, str) else None,
                "trait": name,
                "old": old(),
                "new": new(),
            }

        self._emit(build)


def _now_or_later(value: Any) -> Callable[[], Any]:
    """The JSON form of a trait value, or a way to make it on the writer thread.

    Bytes and strings are reduced at once (a size, or a trimmed copy): a queued event
    must not keep a 20 MB image buffer alive until the writer's next commit, and an
    image dragged through many values would otherwise pile them up. Other values
    (numbers, small containers) are shaped later, off the hot path.
    """
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        safe = json_safe(value)
        return lambda: safe
    return lambda: json_safe(value)
