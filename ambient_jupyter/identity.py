"""Which notebook a shell runs: the one answer the kernel, its plugins and the hosts share.

Kept outside the ``kernel`` package so that code the kernel itself imports (plugins)
can ask without importing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .history import normalize_notebook

__all__ = ["current_recorder", "detect_notebook", "provide_recorder"]

_lookup: Callable[[], Any] = lambda: None  # noqa: E731 (replaced by the kernel extension)


def provide_recorder(lookup: Callable[[], Any]) -> None:
    """Called by the kernel extension once it is imported: how to find the shell's recorder."""
    global _lookup
    _lookup = lookup


def current_recorder() -> Any:
    """The recorder of the running shell, or None if ``%load_ext ambient_jupyter`` never ran."""
    return _lookup()


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # noqa: BLE001 (not in an ipykernel, or no connection file)
        return None
    return name.removeprefix("kernel-").removesuffix(".json") or None


_EXECUTORS = ("nbconvert", "papermill", "jupyter-execute")
"""Command-line tools that run one notebook's kernel and name the notebook in their arguments."""


def _executed_notebook() -> str | None:
    """The notebook a parent ``jupyter nbconvert --execute NB.ipynb`` (or papermill) runs.

    Such tools give the kernel no notebook path, only the notebook's folder as its
    working directory. Their own command line names it: exactly one ``.ipynb`` that
    exists, read relative to the tool's working directory. Anything less certain
    (several notebooks, none, another kind of parent) gives None.
    """
    try:
        import psutil  # type: ignore[import-untyped]  # ipykernel's own dependency

        process = psutil.Process().parent()
        for _ in range(3):  # the kernel's parent, or a launcher in between
            if process is None:
                return None
            args = process.cmdline()
            if any(tool in arg for arg in args for tool in _EXECUTORS):
                cwd = process.cwd()
                named = {os.path.abspath(os.path.join(cwd, arg)) for arg in args if arg.endswith(".ipynb")}
                found = {path for path in named if os.path.isfile(path)}
                return found.pop() if len(found) == 1 else None
            process = process.parent()
    except Exception:  # noqa: BLE001 (no psutil, no permission, a process gone)
        return None
    return None


def detect_notebook(shell: Any) -> tuple[str, bool]:
    """The notebook this kernel runs, and whether that is known (not a fallback).

    Order: ``AMBIENT_NOTEBOOK`` (set by ``ambient-jupyter run``), ``JPY_SESSION_NAME``
    (set by Jupyter Server for the kernel of a notebook), VS Code's
    ``__vsc_ipynb_file__``, the notebook a parent ``nbconvert --execute`` names, else a
    per-kernel id under the working directory.
    """
    for var in ("AMBIENT_NOTEBOOK", "JPY_SESSION_NAME"):
        value = os.environ.get(var, "").strip()
        if value:
            return normalize_notebook(value), True
    vsc = shell.user_ns.get("__vsc_ipynb_file__") if shell is not None else None
    if isinstance(vsc, str) and vsc:
        return normalize_notebook(vsc), True
    if executed := _executed_notebook():
        return normalize_notebook(executed), True
    if kernel := _kernel_id():
        return f"kernel:{os.getcwd()}/{kernel}", False
    return f"ipython:{os.getcwd()}", False
