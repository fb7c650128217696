"""The IPython extension: ``%load_ext ambient_jupyter``."""

from __future__ import annotations

import atexit
import functools
import sys
from collections.abc import Callable
from typing import Any

from ..identity import provide_recorder
from .hosting import Hosting
from .recorder import Recorder

__all__ = ["Hosting", "current", "hosting_of", "load", "plugins_announce", "record_state", "unload"]

_recorders: dict[int, Recorder] = {}
_hostings: dict[int, Hosting] = {}
_closers: dict[int, Callable[[], None]] = {}


def load(shell: Any) -> Recorder:
    """Start recording ``shell``; loading twice keeps the one recorder."""
    existing = _recorders.get(id(shell))
    if existing is not None:
        return existing
    from .magics import AmbientMagics

    recorder = Recorder(shell)
    host = Hosting(recorder)
    recorder.start()
    shell.register_magics(AmbientMagics(shell, recorder, host))
    _recorders[id(shell)] = recorder
    _hostings[id(shell)] = host
    # Plugins created before recording started are announced now.
    plugins_announce(recorder)
    # At kernel exit: commit what is queued and let a reply in flight finish or be
    # stored as incomplete.
    _closers[id(shell)] = closer = functools.partial(_close, shell)
    atexit.register(closer)
    return recorder


def hosting_of(shell: Any) -> Hosting:
    """The in-kernel hosting of ``shell`` (recording must have been loaded)."""
    return _hostings[id(shell)]


def _close(shell: Any) -> None:
    # Runs once per load (unload unregisters it from atexit), so both are there.
    host = _hostings.pop(id(shell))
    recorder = _recorders.pop(id(shell))
    # The host goes first: it commits what the recorder queued (a last failure still
    # gets its reaction) and finishes or cuts its reply; then the history closes.
    try:
        host.close()
    finally:
        recorder.close()


def plugins_announce(recorder: Recorder) -> None:
    """Record ``plugin_registered`` for every plugin in this kernel, through ``recorder``."""
    # Only if the plugin module was ever imported: otherwise there are no plugins,
    # and no anywidget to import.
    registry = sys.modules.get("ambient_jupyter.plugins._registry")
    if registry is not None:
        registry.announce_all(recorder)


def current() -> Recorder | None:
    """The recorder of the running IPython shell, if ``%load_ext ambient_jupyter`` ran in it."""
    from IPython import get_ipython

    shell = get_ipython()
    return _recorders.get(id(shell)) if shell is not None else None


provide_recorder(current)


def record_state(question: str | None = None) -> bool:
    """Record a summary of the objects ``question`` concerns (a host asks this before a turn).

    Runs as a silent execute on the kernel's main thread. False if this kernel is not recording.
    """
    recorder = current()
    if recorder is None:
        return False
    recorder.record_state(question)
    return True


def unload(shell: Any) -> None:
    """Stop recording ``shell`` (queued events are still committed)."""
    closer = _closers.pop(id(shell), None)
    if closer is not None:
        atexit.unregister(closer)
        closer()
