"""``Plugin``: an anywidget whose ``@action`` methods the model may call."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import anywidget

from . import _registry
from ._schema import ActionMark, action_mark, describe_action, parse_docstring

__all__ = ["Plugin"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def snake_case(name: str) -> str:
    """``DataFrameExplorer`` -> ``data_frame_explorer``; ``HTTPLog`` -> ``http_log``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Plugin(anywidget.AnyWidget):
    """A widget the model can drive: its ``@action`` methods are a JSON API.

    Subclass it like any anywidget (``_esm``, synced traits), and mark the methods
    the model may call with :func:`~ambient_jupyter.action`. Each action's JSON
    schema comes from its type hints and numpy docstring. When the widget is
    created it registers under its name, and (with ``%load_ext ambient_jupyter``)
    a ``plugin_registered`` event tells the model what it can call.

    What people do with the widget is recorded as ``widget_changed`` events, for
    every public synced trait. Keep bookkeeping state (derived data for the view,
    counters) in synced traits whose name starts with ``_``: those are not recorded.

    Parameters
    ----------
    name
        The name the model calls it by (unique in the kernel). Default: the class
        attribute ``plugin_name``, else the class name in snake_case.
    **kwargs
        Passed to :class:`anywidget.AnyWidget`.
    """

    plugin_name: str | None = None
    """The name the model calls this plugin by (see ``name``)."""

    def __init__(self, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        resolved = name or type(self).plugin_name or snake_case(type(self).__name__)
        if not _NAME.match(resolved):
            msg = f"a plugin name must be a Python identifier (the model writes name.action(...)), not {resolved!r}"
            raise ValueError(msg)
        self.plugin_name = resolved
        self._ambient_actions = _collect(type(self))
        # Described now, so a hint the model cannot use fails here, where it was written.
        self._ambient_specs = [describe_action(n, fn, mark) for n, (fn, mark) in self._ambient_actions.items()]
        _registry.register(self)

    def plugin_description(self) -> str:
        """The summary line of the class docstring."""
        # The first docstring up the class chain, not Plugin's own (traitlets' add_traits
        # puts an undocumented subclass in front of the user's class).
        for klass in type(self).__mro__:
            if klass is Plugin:
                break
            if klass.__doc__:
                return parse_docstring(klass.__doc__)[0]
        return ""

    def action_specs(self) -> list[dict[str, Any]]:
        """``{"name", "description", "parameters", "safe"}`` for each action, as the model sees them."""
        return [dict(spec) for spec in self._ambient_specs]

    def action_method(self, name: str) -> tuple[Callable[..., Any], ActionMark] | None:
        """The bound method of action ``name`` and its mark, or ``None`` if it is not an action."""
        found = self._ambient_actions.get(name)
        if found is None:
            return None
        return getattr(self, name), found[1]

    def close(self) -> None:
        _registry.unregister(self)
        super().close()


def _collect(cls: type) -> dict[str, tuple[Callable[..., Any], ActionMark]]:
    """The actions of ``cls``: attributes that, as finally resolved, carry ``@action``."""
    actions: dict[str, tuple[Callable[..., Any], ActionMark]] = {}
    # In definition order, base classes first: the order the author wrote them in.
    names = dict.fromkeys(n for klass in reversed(cls.__mro__) for n in vars(klass))
    for name in names:
        value = inspect.getattr_static(cls, name, None)
        mark = action_mark(value)
        if mark is None:
            continue
        if name.startswith("_") or not inspect.isfunction(value):
            msg = f"{cls.__name__}.{name}: @action marks public methods (def {name.lstrip('_')}(self, ...))"
            raise TypeError(msg)
        actions[name] = (value, mark)
    return actions
