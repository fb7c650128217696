"""What an analyzer gets (the failure) and what it gives back (hints)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .._trim import clean_text, trim_text
from ._source import Cell

__all__ = ["HINT_TEXT_LIMIT", "NEVER_MEANT", "Failure", "did_you_mean", "hint", "public_names", "short"]

HINT_TEXT_LIMIT = 400
"""Characters of one hint's text (names and keys come from the person's data)."""


@dataclasses.dataclass
class Failure:
    """One failed cell, as the kernel saw it."""

    exc: BaseException
    cell: Cell
    namespace: Mapping[str, Any]
    notebook_cells: Sequence[str] | None = None
    """Every code cell of the notebook, run or not, where the host knows them."""
    ran_cells: Sequence[str] = ()
    """The code of every cell run in this kernel session (IPython's input history)."""
    cwd: str = "."


def short(value: Any, limit: int = 60) -> str:
    """A value as it would be written in code, kept short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def hint(
    kind: str,
    text: str,
    *,
    missing: str | None = None,
    candidates: Sequence[str] = (),
    fix: str | None = None,
    change: str | None = None,
) -> dict[str, Any]:
    """One hint: a fact a fix needs, and the fixed cell where there is one clear fix.

    ``fix`` is the whole failing cell with the fix made (a candidate that parses and
    differs from the failing code); ``change`` says what changed, in a few words.
    """
    out: dict[str, Any] = {"kind": kind, "text": trim_text(clean_text(text), HINT_TEXT_LIMIT)}
    if missing is not None:
        out["missing"] = trim_text(clean_text(missing), 200)
    if candidates:
        out["candidates"] = [trim_text(clean_text(str(c)), 200) for c in candidates[:5]]
    if fix is not None:
        out["fix"] = clean_text(fix)
        if change:
            out["change"] = trim_text(clean_text(change), HINT_TEXT_LIMIT)
    return out


def did_you_mean(
    kind: str, fact: str, missing: str, matches: Sequence[str], fix: str | None, change: str
) -> list[dict[str, Any]]:
    """``fact`` and the close matches, as the one hint of an analyzer."""
    listed = ", ".join(f"`{m}`" for m in matches)
    return [hint(kind, f"{fact} Did you mean {listed}?", missing=missing, candidates=matches, fix=fix, change=change)]


NEVER_MEANT = frozenset({"In", "Out", "get_ipython", "exit", "quit", "copyright", "credits", "license", "help"})
"""IPython's plumbing and the interactive helpers: never what a misspelt name was meant to be."""


def public_names(namespace: Mapping[str, Any]) -> list[str]:
    """The person's own names: no IPython plumbing (``_i3``, ``Out``), no dunders."""
    return [n for n in list(namespace) if isinstance(n, str) and not n.startswith("_") and n not in NEVER_MEANT]
