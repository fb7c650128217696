"""The kernel's plugins by name, and their ``plugin_registered`` events.

No anywidget here: ``%load_ext`` looks this module up (only if it was imported,
i.e. a plugin may exist) to announce plugins created before recording started.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..events import PluginRegistered
from ..identity import current_recorder

__all__ = ["announce", "announce_all", "find", "register", "registered", "unregister"]

log = logging.getLogger("ambient_jupyter.plugins")

_plugins: dict[str, Any] = {}
_lock = threading.Lock()


def registered() -> dict[str, Any]:
    """A copy of ``{name: plugin}``."""
    with _lock:
        return dict(_plugins)


def find(name: str) -> Any | None:
    with _lock:
        return _plugins.get(name)


def register(plugin: Any) -> None:
    """Make ``plugin`` callable by the model under ``plugin.plugin_name``, and announce it.

    A plugin of the same class replaces the one registered under its name (the cell
    that creates it was run again); a plugin of another class may not take the name.
    """
    name = plugin.plugin_name
    with _lock:
        existing = _plugins.get(name)
        if existing is not None and existing is not plugin and type(existing).__name__ != type(plugin).__name__:
            msg = (
                f"a plugin named {name!r} already exists in this kernel ({type(existing).__name__}); "
                f"give this one another name: {type(plugin).__name__}(name='...')"
            )
            raise ValueError(msg)
        _plugins[name] = plugin
    if existing is not None and existing is not plugin:
        log.info("plugin %r replaced by a new %s", name, type(plugin).__name__)
    announce(plugin)


def unregister(plugin: Any) -> None:
    name = plugin.plugin_name
    with _lock:
        if _plugins.get(name) is plugin:
            del _plugins[name]


def announce(plugin: Any, recorder: Any = None) -> None:
    """Record ``plugin_registered`` through the recorder's writer, if the recorder is loaded."""
    recorder = recorder if recorder is not None else current_recorder()
    if recorder is None:
        return
    # Built now, on this thread: the writer thread never introspects user objects.
    record = PluginRegistered(
        plugin=plugin.plugin_name,
        widget=str(getattr(plugin, "model_id", None) or id(plugin)),
        widget_class=type(plugin).__name__,
        description=plugin.plugin_description(),
        actions=plugin.action_specs(),
    ).model_dump(exclude={"seq", "notebook"})
    recorder.writer.submit(lambda: record)


def announce_all(recorder: Any) -> None:
    """Announce every plugin (when ``%load_ext`` comes after they were created)."""
    for plugin in registered().values():
        announce(plugin, recorder)
