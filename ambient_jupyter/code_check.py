"""Is this cell code a person could run? The check every proposal passes before anyone sees it.

A proposal is "valid" only if its code parses as an IPython cell (magics allowed,
as a person's notebook has them) and, for a fix, differs from the code that failed.
A schema-valid action whose code does not parse is invalid.
"""

from __future__ import annotations

import ast
import difflib
import functools
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["assigned_names", "line_diff", "lost_purpose", "parse_problem", "same_code"]


@functools.lru_cache(maxsize=1)
def _transformer() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def python_source(code: str) -> str:
    """``code`` with IPython syntax (``%magic``, ``!cmd``, ``x?``) turned into Python."""
    try:
        return str(_transformer().transform_cell(code))
    except (SyntaxError, ValueError, IndexError):  # a transformer that gives up leaves the code as it is
        return code


def parse_problem(code: str) -> str | None:
    """``None`` if ``code`` compiles as an IPython cell, else what is wrong, in one line.

    Compiled, not only parsed: ``return`` outside a function or ``break`` outside a
    loop parse, but fail before anything runs. Compiling runs nothing.
    """
    if not code.strip():
        return "the code is empty"
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences in user code warn at parse time; that is not our output.
            warnings.simplefilter("ignore")
            # Top-level await is allowed in a cell (IPython's autoawait).
            compile(python_source(code), "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return f"the code does not parse: {type(exc).__name__}: {exc.msg}{where}"
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        return f"the code does not parse: {exc}"
    return None


def lost_purpose(old: str, new: str) -> str | None:
    """Why ``new`` is not a fix of the cell ``old`` even though it compiles, or None.

    A fix that runs without an error is not a fix if it drops what the cell was for:
    code that does nothing (a comment, a bare number), or a cell that no longer sets
    a name the failing cell set (which later cells use).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as in parse_problem
            body = ast.parse(python_source(new)).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # parse_problem says what is wrong with it
    inert = all(
        isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
        for stmt in body
    )
    if inert:
        return "the code does nothing (only comments or constants); the cell's work would be lost"
    dropped = [name for name in assigned_names(old) if name not in set(assigned_names(new))]
    if dropped:
        names = ", ".join(f"`{n}`" for n in dropped[:5])
        return f"the code no longer sets {names}, which the failing cell set; keep the cell's work"
    return None


def same_code(a: str, b: str) -> bool:
    """Equal up to trailing whitespace on lines and at the end (what a person would call the same)."""

    def norm(code: str) -> str:
        return "\n".join(line.rstrip() for line in code.strip("\n").splitlines())

    return norm(a) == norm(b)


def line_diff(old: str, new: str, context: int = 2) -> list[list[str]]:
    """Old against new, line by line, for people: ``[op, line]`` with op ``-``, ``+``, `` `` or ``…``.

    Made once, here, and stored with a proposal, so the terminal, the sidebar and the
    chat widget show the same diff without each computing one.
    """
    a, b = old.rstrip("\n").split("\n"), new.rstrip("\n").split("\n")
    out: list[list[str]] = []
    for group in difflib.SequenceMatcher(None, a, b).get_grouped_opcodes(context):
        if out:
            out.append(["…", ""])
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend([" ", line] for line in a[i1:i2])
                continue
            out.extend(["-", line] for line in a[i1:i2])
            out.extend(["+", line] for line in b[j1:j2])
    return out


def assigned_names(code: str) -> list[str]:
    """Names a cell binds at the top level, in source order, each once.

    Assignment targets (plain, augmented, annotated with a value, walrus), ``for``
    and ``with ... as`` targets, ``def`` and ``class`` names, and imports; not the
    names bound inside functions, classes, lambdas or comprehensions. ``[]`` if
    ``code`` does not parse.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    found = sorted(_bound(tree))
    return list(dict.fromkeys(name for *_, name in found))


def _bound(tree: ast.Module) -> Iterator[tuple[int, int, str]]:
    # An explicit stack: a deeply nested expression must not hit the recursion limit.
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.col_offset, node.name
            continue  # their bodies are another scope
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:
            continue  # `x: int` declares, binds nothing
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield node.lineno, node.col_offset, node.id
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    yield alias.lineno, alias.col_offset, alias.asname or alias.name.partition(".")[0]
        stack.extend(ast.iter_child_nodes(node))
