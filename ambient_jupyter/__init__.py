"""ambient-jupyter: an assistant that watches the notebook as it runs.

``%load_ext ambient_jupyter`` records every executed cell and widget change into one
durable history per notebook; a local model reads it and answers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "Plugin",
    "__version__",
    "_jupyter_labextension_paths",
    "_jupyter_server_extension_points",
    "action",
    "chat",
    "load_ipython_extension",
    "unload_ipython_extension",
]

# Loaded on first use: the server extension imports this package, and must not pay
# for (or need) anywidget and ipywidgets.
_LAZY = {"Plugin": "plugins", "action": "plugins", "chat": "widget"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'ambient_jupyter' has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def load_ipython_extension(ipython: Any) -> None:
    from .kernel import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .kernel import unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import AmbientExtension

    return [{"module": "ambient_jupyter", "app": AmbientExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "ambient-jupyter"}]
