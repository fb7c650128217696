"""A failed cell's hints and state, worked out in the kernel right after it failed.

Runs on the kernel's main thread from ``post_run_cell``, only when a cell failed,
before its ``execute_reply`` is sent: the namespace is exactly as the failure left
it and the exception object is at hand. A successful cell never comes here.

Bounded: the analysis and the state summary each get a time limit (enforced by
``kernel/timebox.py`` where user code can run), and anything that goes wrong
is one log line and no hint; recording goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import ChainMap
from typing import Any

__all__ = ["NOTEBOOK_LIMIT", "Diagnosis", "diagnose", "notebook_cells", "snapshot"]

log = logging.getLogger("ambient_jupyter.kernel")

NOTEBOOK_LIMIT = 20_000_000
"""Largest notebook file read for its cells, in bytes."""
HINT_TIME = 0.2
STATE_TIME = 0.2
STATE_BUDGET = 2500
"""Characters of state stored with a failure."""
RECENT_CELLS = 5
"""Cells looked back at for recently assigned names."""
MAX_FIGURES = 3

Diagnosis = tuple[list[dict[str, Any]], list[dict[str, str]]]

_cache: dict[str, tuple[tuple[float, int], list[str]]] = {}


def notebook_cells(path: str) -> list[str] | None:
    """The code cells of the notebook file at ``path`` (None if there is no such notebook).

    The file on disk is what the runner runs, and what JupyterLab last saved.
    """
    if not path.endswith(".ipynb"):
        return None
    try:
        stat = os.stat(path)
        if stat.st_size > NOTEBOOK_LIMIT:
            return None
        key = (stat.st_mtime, stat.st_size)
        cached = _cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError):
        return None
    cells = []
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            cells.append("".join(source) if isinstance(source, list) else str(source))
    _cache.clear()
    _cache[path] = (key, cells)
    return cells


def _ran_cells(shell: Any) -> list[str]:
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    return [c for c in history if isinstance(c, str)] if isinstance(history, list) else []


def diagnose(shell: Any, exc: BaseException, code: str, notebook: str) -> Diagnosis:
    """Hints and a state summary for the cell ``code`` that raised ``exc``."""
    from ..hints import analyze
    from .timebox import OutOfTime, why_no_timer, with_alarm

    hints: list[dict[str, Any]] = []
    # The analyzer looks objects up (a property is the person's code): only under a timer.
    no_timer = why_no_timer()
    try:
        if no_timer is not None:
            log.info("ambient-jupyter: no hints for this failure (%s)", no_timer)
        else:
            cells = notebook_cells(notebook) if isinstance(exc, NameError) else None
            ran = _ran_cells(shell)
            hints = with_alarm(
                lambda: analyze(exc, code, shell.user_ns, notebook_cells=cells, ran_cells=ran, cwd=os.getcwd()),
                HINT_TIME,
            )
    except OutOfTime:
        log.warning("ambient-jupyter: the failure's analysis took over %.1f s and was cut off", HINT_TIME)
    except BaseException as error:  # noqa: BLE001 (the analyzer gives up quietly for this cell)
        log.warning("ambient-jupyter could not analyze the failure of this cell: %r", error)
    return hints, snapshot(shell, code=code)


def _open_figures() -> dict[str, Any]:
    """matplotlib figures still open in the kernel, by a name a person would use.

    A model that cannot see images reads what a plot shows from the figure itself
    (titles, labels, what is drawn). Only if matplotlib was imported by the person.
    """
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return {}
    try:
        managers = helpers.Gcf.get_all_fig_managers()
        return {f"<figure {m.num}>": m.canvas.figure for m in managers[-MAX_FIGURES:]}
    except Exception:  # noqa: BLE001 (a backend's manager without the usual attributes)
        return {}


def snapshot(shell: Any, *, code: str | None = None, question: str | None = None) -> list[dict[str, str]]:
    """The objects a turn concerns: those ``code`` uses or ``question`` names, then the newest assigned.

    Call it on the kernel's main thread (where the time box works); bounded in size
    and time, and it never raises.
    """
    from ..code_check import assigned_names
    from .state import select_names, summarize

    namespace = shell.user_ns
    try:
        recent: list[str] = []
        for source in reversed(_ran_cells(shell)[-RECENT_CELLS:]):
            recent.extend(n for n in reversed(assigned_names(source)) if n not in recent)
        names = select_names(namespace, code=code, question=question, recent=recent)
        figures = _open_figures()
        return summarize(ChainMap(figures, namespace), [*names, *figures], budget=STATE_BUDGET, time_limit=STATE_TIME)
    except BaseException as error:  # noqa: BLE001 (a person's object raised even past the guard)
        log.warning("ambient-jupyter could not summarise the kernel's state: %r", error)
        return []
