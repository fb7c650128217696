"""The IPython extension: ``%load_ext ambient_jupyter``."""

from __future__ import annotations

import atexit
from typing import Any

from .recorder import Recorder

__all__ = ["load", "unload"]

_recorders: dict[int, Recorder] = {}


def load(shell: Any) -> Recorder:
    """Start recording ``shell``; loading twice keeps the one recorder."""
    existing = _recorders.get(id(shell))
    if existing is not None:
        return existing
    from .magics import AmbientMagics

    recorder = Recorder(shell)
    recorder.start()
    shell.register_magics(AmbientMagics(shell, recorder))
    _recorders[id(shell)] = recorder
    # At kernel exit: commit what is queued and let a reply in flight finish or be
    # stored as incomplete.
    atexit.register(recorder.close)
    return recorder


def unload(shell: Any) -> None:
    """Stop recording ``shell`` (queued events are still committed)."""
    recorder = _recorders.pop(id(shell), None)
    if recorder is not None:
        atexit.unregister(recorder.close)
        recorder.close()
