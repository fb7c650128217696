"""ambient-jupyter: an assistant that watches the notebook as it runs.

``%load_ext ambient_jupyter`` records every executed cell and widget change into one
durable history per notebook; a local model reads it and answers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "_jupyter_labextension_paths",
    "_jupyter_server_extension_points",
    "load_ipython_extension",
    "unload_ipython_extension",
]


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
