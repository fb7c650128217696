"""Deterministic diagnoses of a failed cell, made in the kernel, before any model is asked.

The kernel has what a fix needs: the exception object, the live namespace, and the
cell's code. :func:`analyze` turns them into **hints**, facts a person or a model can
act on (did-you-mean candidates checked against the real names, attributes, keys,
columns, modules, files and signatures; cells run out of order; type mismatches;
index and shape facts), and, where one fix is clearly meant, a **candidate**: the
failing cell with that minimal edit made. A candidate always parses and always
differs from the failing code.

Nothing here runs the person's code: expressions are only looked up (see
``_resolve``). The caller bounds the time (``kernel/guard.py``), because looking
up an attribute can reach a property.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._base import Failure
from ._data import file_not_found, index_error, key_error, shape_error
from ._names import attribute_error, import_error, module_not_found, name_error
from ._source import Cell
from ._syntax import syntax_error
from ._types import none_error, type_error

__all__ = ["MAX_HINTS", "analyze", "candidate"]

log = logging.getLogger("ambient_jupyter.hints")

MAX_HINTS = 4

Analyzer = Callable[[Failure], list[dict[str, Any]]]

# Most specific first: ModuleNotFoundError is an ImportError, IndentationError a
# SyntaxError, FileNotFoundError an OSError, UnboundLocalError a NameError.
_ANALYZERS: list[tuple[type[BaseException], Analyzer]] = [
    (SyntaxError, syntax_error),
    (ModuleNotFoundError, module_not_found),
    (ImportError, import_error),
    (NameError, name_error),
    (AttributeError, lambda f: attribute_error(f) or none_error(f)),
    (KeyError, key_error),
    (FileNotFoundError, file_not_found),
    (IndexError, index_error),
    (TypeError, type_error),
    (ValueError, shape_error),
]


def analyze(
    exc: BaseException,
    code: str,
    namespace: Mapping[str, Any],
    *,
    notebook_cells: Sequence[str] | None = None,
    ran_cells: Sequence[str] = (),
    cwd: str = ".",
) -> list[dict[str, Any]]:
    """Hints for the cell ``code`` that raised ``exc``, with ``namespace`` as it is now.

    Parameters
    ----------
    exc
        The exception the cell raised (for a syntax error, the one raised before it ran).
    code
        The cell as the person wrote it.
    namespace
        The kernel's user namespace.
    notebook_cells
        Every code cell of the notebook, where known: a missing name may be defined
        in a cell that has not run yet.
    ran_cells
        The code of the cells run in this kernel session.
    cwd
        The kernel's working folder (for files).

    Returns
    -------
    list of dict
        ``{"kind", "text", "missing"?, "candidates"?, "fix"?, "change"?}``, at most
        :data:`MAX_HINTS`; empty when nothing certain can be said.
    """
    failure = Failure(exc, Cell(code), _where_it_failed(exc, namespace), notebook_cells, ran_cells, cwd)
    for kind, analyzer in _ANALYZERS:
        if isinstance(exc, kind):
            return analyzer(failure)[:MAX_HINTS]
    return []


def _where_it_failed(exc: BaseException, namespace: Mapping[str, Any]) -> Mapping[str, Any]:
    """The names visible where the person's code failed: the deepest frame of theirs.

    A function or comprehension of the notebook runs with the kernel's namespace as
    its globals; its locals (parameters, loop variables) are what a misspelt name or a
    wrong key inside it was meant to be.
    """
    tb = exc.__traceback__
    frame_locals: Mapping[str, Any] | None = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals is namespace and frame.f_locals is not namespace:
            frame_locals = frame.f_locals
        tb = tb.tb_next
    return ChainMap(dict(frame_locals), namespace) if frame_locals else namespace  # type: ignore[arg-type]


def candidate(hints: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The hint whose fix may be proposed: the first with a ``fix``."""
    return next((h for h in hints if isinstance(h.get("fix"), str) and h["fix"]), None)
