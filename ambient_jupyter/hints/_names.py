"""Missing names, attributes and modules: did-you-mean, a missing import, cells run out of order."""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import pkgutil
import re
import sys
from collections.abc import Iterable
from typing import Any

from ..code_check import assigned_names
from ._base import NEVER_MEANT, Failure, did_you_mean, hint, public_names
from ._match import clear_winner, close_matches
from ._resolve import MISSING, a_type, dotted, resolve
from ._source import Cell, Edit

__all__ = ["attribute_error", "import_error", "module_not_found", "name_error"]

# Names people use without importing, and the import they meant. Most are the
# community's conventional aliases; the rest are well-known names from the stdlib.
IMPORTS = {
    "np": "import numpy as np",
    "pd": "import pandas as pd",
    "plt": "import matplotlib.pyplot as plt",
    "mpl": "import matplotlib as mpl",
    "sns": "import seaborn as sns",
    "sp": "import scipy as sp",
    "pl": "import polars as pl",
    "px": "import plotly.express as px",
    "go": "import plotly.graph_objects as go",
    "nx": "import networkx as nx",
    "sm": "import statsmodels.api as sm",
    "tf": "import tensorflow as tf",
    "Path": "from pathlib import Path",
    "Counter": "from collections import Counter",
    "defaultdict": "from collections import defaultdict",
    "OrderedDict": "from collections import OrderedDict",
    "namedtuple": "from collections import namedtuple",
    "deque": "from collections import deque",
    "date": "from datetime import date",
    "timedelta": "from datetime import timedelta",
    "pprint": "from pprint import pprint",
    "dataclass": "from dataclasses import dataclass",
    "partial": "from functools import partial",
    "reduce": "from functools import reduce",
    "chain": "from itertools import chain",
    "product": "from itertools import product",
    "combinations": "from itertools import combinations",
    "permutations": "from itertools import permutations",
    "Decimal": "from decimal import Decimal",
    "Fraction": "from fractions import Fraction",
}


def _module_of(import_line: str) -> str:
    match = re.match(r"(?:from|import)\s+([\w.]+)", import_line)
    return match.group(1) if match else import_line


def _importable(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.modules:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _import_for(name: str, cell: Cell) -> str | None:
    """The import that defines ``name``, if ``name`` is a module or a well-known imported name."""
    if name == "datetime":
        # ``datetime.now()`` means the class; ``datetime.date(...)`` the module.
        attrs = {n.attr for n in cell.nodes() if isinstance(n, ast.Attribute) and dotted(n.value) == "datetime"}
        import datetime as dt

        # ``datetime.date``/``datetime.timedelta`` are classes of the module (``date``
        # is also a method of the class, but nobody calls it on the class).
        module_only = {a for a in attrs if hasattr(dt, a) and (isinstance(getattr(dt, a), type)
                                                               or not hasattr(dt.datetime, a))}
        return "import datetime" if module_only or not attrs else "from datetime import datetime"
    line = IMPORTS.get(name)
    if line is not None:
        return line if _importable(_module_of(line)) else None
    used_as_module = any(isinstance(n, ast.Attribute) and dotted(n.value) == name for n in cell.nodes())
    stdlib = name in getattr(sys, "stdlib_module_names", ())
    if used_as_module and (stdlib or name in sys.modules) and _importable(name):
        return f"import {name}"
    return None


# -- what cells define --------------------------------------------------------------


def _norm(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def _out_of_order(failure: Failure, name: str) -> list[str] | None:
    """The cells (not yet run in this kernel) to run first so that ``name`` exists, in notebook order."""
    cells = failure.notebook_cells
    if not cells:
        return None
    ran = {_norm(c) for c in failure.ran_cells}
    me = _norm(failure.cell.code)
    unrun = [c for c in cells if _norm(c) not in ran and _norm(c) != me and c.strip()]
    needed: list[str] = []
    wanted = [name]
    # A defining cell may itself need a name from another cell that has not run:
    # follow that a little way, never in circles.
    while wanted and len(needed) < 3:
        missing = wanted.pop(0)
        definer = next((c for c in unrun if c not in needed and missing in assigned_names(c)), None)
        if definer is None:
            if missing == name:
                return None
            continue
        needed.append(definer)
        have = set(failure.namespace) | set(dir(builtins)) | set(assigned_names(definer))
        wanted.extend(sorted(n for n in set(Cell(definer).names(ast.Load)) - have if n not in wanted))
    return sorted(needed, key=cells.index)


# -- NameError ---------------------------------------------------------------------


def _name_of(exc: BaseException) -> str | None:
    name = getattr(exc, "name", None)
    if isinstance(name, str) and name:
        return name
    match = re.search(r"name '(\w+)' is not defined", str(exc))
    return match.group(1) if match else None


def _rename(cell: Cell, old: str, new: str) -> list[Edit]:
    edits = []
    for node in cell.nodes():
        if isinstance(node, ast.Name) and node.id == old:
            edit = cell.replace_node(node, new)
            if edit is None:
                return []  # an occurrence we cannot place: no partial fix
            edits.append(edit)
    return edits


def name_error(failure: Failure) -> list[dict[str, Any]]:
    name = _name_of(failure.exc)
    if name is None:
        return []
    cell = failure.cell
    line = _import_for(name, cell)
    if line is not None:
        fix = cell.prepend(line)
        return [
            hint(
                "import",
                f"`{name}` is not defined: it is never imported in this kernel. Add `{line}`.",
                missing=name,
                candidates=[line],
                fix=fix,
                change=f"added `{line}` at the top of the cell",
            )
        ]
    definers = _out_of_order(failure, name)
    if definers:
        first = definers[0].strip().splitlines()[0]
        fix = cell.prepend("\n".join(c.rstrip("\n") for c in definers))
        where = "a cell" if len(definers) == 1 else f"{len(definers)} cells"
        return [
            hint(
                "out_of_order",
                f"`{name}` is defined in {where} of this notebook that has not run in this kernel yet "
                f"(the one starting `{first[:80]}`): cells ran out of order. Run that cell first.",
                missing=name,
                candidates=[c.strip()[:200] for c in definers],
                fix=fix,
                change=f"put the code that defines `{name}` in front of its use",
            )
        ]
    builtin = (n for n in dir(builtins) if not n.startswith("_") and n not in NEVER_MEANT)
    pool = [*public_names(failure.namespace), *builtin]
    matches = close_matches(name, pool)
    if not matches:
        return [hint("name", f"`{name}` is not defined, and no defined name is close to it.", missing=name)]
    best = clear_winner(name, matches)
    fix = cell.edited(_rename(cell, name, best)) if best else None
    return did_you_mean("name", f"`{name}` is not defined.", name, matches, fix, f"`{name}` → `{best}`")


# -- AttributeError ------------------------------------------------------------------


def _dir(value: Any) -> list[str]:
    try:
        return [n for n in dir(value) if isinstance(n, str)]
    except Exception:  # noqa: BLE001 (a person's __dir__ failed)
        return []


def attribute_error(failure: Failure) -> list[dict[str, Any]]:
    exc = failure.exc
    attr = getattr(exc, "name", None)
    owner = getattr(exc, "obj", MISSING)
    if not isinstance(attr, str):
        match = re.search(r"has no attribute '(\w+)'", str(exc))
        if match is None:
            return []
        attr = match.group(1)
    if owner is None:
        return []  # a None where a value was expected: the type analyzer explains those
    cell = failure.cell
    nodes = [n for n in cell.nodes() if isinstance(n, ast.Attribute) and n.attr == attr]
    if owner is MISSING:
        owners = [v for v in (resolve(n.value, failure.namespace) for n in nodes) if v is not MISSING]
        if not owners:
            return []
        owner = owners[0]
    else:
        # Only the occurrences on this very object are renamed.
        nodes = [n for n in nodes if resolve(n.value, failure.namespace) is owner] or nodes
    names = [n for n in _dir(owner) if attr.startswith("_") or not n.startswith("_")]
    matches = close_matches(attr, names)
    what = a_type(owner) if not isinstance(owner, type(sys)) else f"the module `{owner.__name__}`"
    if not matches:
        return [hint("attribute", f"{what} has no attribute `{attr}`.", missing=attr)]
    best = clear_winner(attr, matches)
    spans = [cell.attr_span(node) for node in nodes] if best else []
    edits = [] if None in spans else [Edit(*span, best or attr) for span in spans if span]
    fact = f"{what} has no attribute `{attr}`."
    return did_you_mean("attribute", fact, attr, matches, cell.edited(edits), f"`.{attr}` → `.{best}`")


# -- modules --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _module_names() -> tuple[str, ...]:
    """Top-level modules this kernel could import (a scan of sys.path: done once, on demand)."""
    names = set(sys.builtin_module_names) | set(getattr(sys, "stdlib_module_names", ()))
    names.update(m.name for m in pkgutil.iter_modules())
    return tuple(sorted(n for n in names if not n.startswith("_")))


def _import_edits(cell: Cell, wrong: str, right: str) -> list[Edit]:
    """Rename module ``wrong`` (a top-level name) to ``right`` in the cell's import statements."""
    edits: list[Edit] = []
    pattern = re.compile(rf"\b(from|import)(\s+){re.escape(wrong)}\b")
    for node in cell.nodes():
        if isinstance(node, ast.Import):
            modules: Iterable[str] = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        else:
            continue
        if not any(m == wrong or m.startswith(wrong + ".") for m in modules):
            continue
        if not cell.line_is_raw(node.lineno):
            return []
        line = cell.lines[node.lineno - 1]
        for match in pattern.finditer(line):
            start = match.start() + len(match.group(1)) + len(match.group(2))
            edits.append(Edit(node.lineno, start, start + len(wrong), right))
        # ``import os, pandsa``: the name after a comma
        if isinstance(node, ast.Import):
            for match in re.finditer(rf",(\s*){re.escape(wrong)}\b", line):
                start = match.start() + 1 + len(match.group(1))
                edits.append(Edit(node.lineno, start, start + len(wrong), right))
    return edits


def module_not_found(failure: Failure) -> list[dict[str, Any]]:
    name = getattr(failure.exc, "name", None)
    if not isinstance(name, str) or not name:
        return []
    top = name.split(".")[0]
    if top != name and _importable(top):
        return _submodule(failure, name)
    matches = close_matches(top, _module_names())
    best = clear_winner(top, matches)
    if not matches:
        return [
            hint(
                "module",
                f"No module named `{top}` is installed for this kernel ({sys.executable}). "
                f"If it is the right name, install it in a cell with `%pip install {top}`.",
                missing=top,
            )
        ]
    fix = failure.cell.edited(_import_edits(failure.cell, top, best)) if best else None
    fact = f"No module named `{top}` is installed."
    return did_you_mean("module", fact, top, matches, fix, f"`{top}` → `{best}`")


def _submodules(package: str) -> list[str]:
    """The submodules of an installed package, found on disk (the package is not imported)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    paths = spec.submodule_search_locations if spec is not None else None
    return [m.name for m in pkgutil.iter_modules(list(paths))] if paths else []


def _submodule(failure: Failure, name: str) -> list[dict[str, Any]]:
    """``numpy.linlag``: the package is there, the submodule is misspelt."""
    package, _, wrong = name.rpartition(".")
    matches = close_matches(wrong, _submodules(package))
    if not matches:
        return [hint("module", f"`{package}` is installed, but it has no submodule `{wrong}`.", missing=name)]
    best = clear_winner(wrong, matches)
    cell = failure.cell
    right = f"{package}.{best}"
    fix = cell.edited(_import_edits(cell, name, right)) if best else None
    full = [f"{package}.{m}" for m in matches]
    return did_you_mean("module", f"`{package}` has no submodule `{wrong}`.", name, full, fix, f"`{name}` → `{right}`")


def import_error(failure: Failure) -> list[dict[str, Any]]:
    """``cannot import name 'X' from 'module'``."""
    match = re.search(r"cannot import name '(\w+)' from '([\w.]+)'", str(failure.exc))
    if match is None:
        return []
    wrong, module_name = match.groups()
    module = sys.modules.get(module_name)
    if module is None:
        return []
    matches = close_matches(wrong, [n for n in _dir(module) if not n.startswith("_")])
    if not matches:
        return [hint("module", f"`{module_name}` has no name `{wrong}` to import.", missing=wrong)]
    best = clear_winner(wrong, matches)
    cell = failure.cell
    edits: list[Edit] = []
    for node in cell.nodes() if best else ():
        if isinstance(node, ast.ImportFrom) and node.module == module_name:
            for alias in node.names:
                span = cell.span(alias)
                if alias.name == wrong and span is not None:
                    edits.append(Edit(span[0], span[1], span[1] + len(wrong), best or wrong))
                    if alias.asname is None:
                        # The wrong name was also the name the cell uses afterwards.
                        edits.extend(_rename(cell, wrong, best or wrong))
    fact = f"`{module_name}` has no name `{wrong}`."
    return did_you_mean("module", fact, wrong, matches, cell.edited(edits), f"`{wrong}` → `{best}`")
