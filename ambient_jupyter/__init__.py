"""ambient-jupyter: an assistant that watches the notebook as it runs.

``%load_ext ambient_jupyter`` records every executed cell and widget change into one
durable history per notebook; a local model reads it and answers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    from .kernel import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .kernel import unload

    unload(ipython)
