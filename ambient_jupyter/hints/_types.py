"""Type mismatches: ``str + int``, ``sum`` over strings, a ``None`` from a mutating method,
a wrong keyword argument, a built-in hidden by a variable."""

from __future__ import annotations

import ast
import builtins
import inspect
import itertools
import numbers
import re
from collections import ChainMap
from typing import Any, Literal

from ._base import Failure, hint, short
from ._match import clear_winner, close_matches
from ._resolve import MISSING, a_type, resolve
from ._source import Cell, Edit

__all__ = ["none_error", "type_error"]

Kind = Literal["str", "num", "other"]

MUTATING = frozenset({"sort", "reverse", "append", "extend", "insert", "remove", "clear", "update", "add", "discard"})
"""Methods of lists, dicts and sets that change their object and return None."""


def _kind(node: ast.AST, namespace: Any) -> Kind:
    if isinstance(node, ast.JoinedStr):
        return "str"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in ("str", "repr", "format", "chr"):
            return "str"
        if node.func.id in ("int", "float", "len", "round", "sum", "abs", "min", "max"):
            return "num"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _kind(node.left, namespace)
        return left if left != "other" else _kind(node.right, namespace)
    value = resolve(node, namespace)
    if isinstance(value, str):
        return "str"
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return "num"
    return "other"


def _numeric_text(value: Any) -> Literal["int", "float"] | None:
    if not isinstance(value, str):
        return None
    text = value.strip().replace("_", "")
    try:
        int(text)
        return "int"
    except ValueError:
        pass
    try:
        float(text)
        return "float"
    except ValueError:
        return None


def _wrap(cell: Cell, node: ast.AST, func: str) -> tuple[Edit, str] | None:
    text = cell.segment(node)
    if text is None:
        return None
    edit = cell.replace_node(node, f"{func}({text})")
    return None if edit is None else (edit, f"`{text}` → `{func}({text})`")


# -- str + int ---------------------------------------------------------------------------


def _concat(failure: Failure) -> list[dict[str, Any]]:
    cell, namespace = failure.cell, failure.namespace
    pairs: list[tuple[ast.AST, ast.AST]] = []
    for node in cell.nodes():
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            pairs.append((node.left, node.right))
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
            pairs.append((node.target, node.value))
    for left, right in pairs:
        kinds = (_kind(left, namespace), _kind(right, namespace))
        if set(kinds) != {"str", "num"}:
            continue
        text_node, num_node = (left, right) if kinds[0] == "str" else (right, left)
        number = resolve(text_node, namespace)
        as_number = _numeric_text(number) if not isinstance(text_node, (ast.Constant, ast.JoinedStr)) else None
        if as_number is not None and kinds[0] == "num":
            # number + "5": the text holds a number, and arithmetic was meant.
            wrapped = _wrap(cell, text_node, as_number)
            why = f"`{cell.segment(text_node)}` is the text {short(number)}, not a number"
        else:
            wrapped = _wrap(cell, num_node, "str")
            shown = resolve(num_node, namespace)
            value = f" (= {short(shown)})" if shown is not MISSING else ""
            why = f"`{cell.segment(num_node)}`{value} is a number, and `+` cannot join a str and a number"
        if wrapped is None:
            continue
        edit, change = wrapped
        return [
            hint(
                "type",
                f"{why}. Convert it: {change.split(' → ')[1]} (or use an f-string).",
                candidates=[change.split(" → ")[1].strip("`")],
                fix=cell.edited([edit]),
                change=change,
            )
        ]
    return []


# -- sum() over strings -----------------------------------------------------------------


def _head(value: Any, n: int = 200) -> list[Any] | None:
    if isinstance(value, (str, bytes, dict)) or value is MISSING:
        return None
    try:
        return list(itertools.islice(iter(value), n))
    except Exception:  # noqa: BLE001 (not iterable, or its iterator failed)
        return None


def _generated(node: ast.AST, namespace: Any) -> list[Any] | None:
    """The first values a one-``for`` generator or comprehension yields, found without running it.

    Its source is looked up, and its element worked out for each item by plain lookups
    (``row["amount"]``, ``line.strip()``): nothing of the person's runs.
    """
    if not isinstance(node, (ast.GeneratorExp, ast.ListComp)) or len(node.generators) != 1:
        return None
    loop = node.generators[0]
    if loop.ifs or not isinstance(loop.target, ast.Name):
        return None
    source = _head(resolve(loop.iter, namespace), 50)
    if source is None:
        return None
    values = [resolve(node.elt, ChainMap({loop.target.id: item}, namespace)) for item in source]
    return None if any(v is MISSING for v in values) else values


def _sum_of_strings(failure: Failure) -> list[dict[str, Any]]:
    cell, namespace = failure.cell, failure.namespace
    for node in cell.nodes():
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sum"):
            continue
        if not node.args or node.keywords or len(node.args) > 1:
            continue
        arg = node.args[0]
        generated = _generated(arg, namespace)
        items = generated if generated is not None else _head(resolve(arg, namespace))
        if not items or not all(isinstance(v, str) for v in items):
            continue
        name = cell.segment(arg) or "..."
        kinds = {_numeric_text(v) for v in items}
        numbers = kinds <= {"int", "float"} and None not in kinds
        number = "float" if "float" in kinds else "int"
        edit: Edit | None
        if generated is not None:
            # Convert each element, or join them: the edit stays inside the generator.
            element = cell.segment(arg.elt)  # type: ignore[attr-defined]
            if numbers:
                new, why = f"{number}({element})", f"its items are numbers written as text ({short(items[0])}…)"
                edit = cell.replace_node(arg.elt, new) if element else None  # type: ignore[attr-defined]
            else:
                new, why = "''.join(...)", "to join strings into one, use `''.join(...)`"
                edit = cell.replace_node(node.func, "''.join")
            change = f"`sum({name})`: `{new}`"
        else:
            if numbers:
                new, why = f"sum(map({number}, {name}))", f"they are numbers written as text ({short(items[0])}…)"
            else:
                new, why = f"''.join({name})", "to join strings into one, use `''.join(...)`"
            edit = cell.replace_node(node, new)
            change = f"`sum({name})` → `{new}`"
        return [
            hint(
                "type",
                f"`sum()` adds numbers, but `{name}` gives strings: {why}. Use `{new}`.",
                candidates=[new],
                fix=cell.edited([edit]) if edit else None,
                change=change,
            )
        ]
    return []


# -- wrong keyword argument ----------------------------------------------------------------


def _documented(func: Any) -> list[inspect.Parameter] | None:
    """Keyword parameters from a docstring's call line (``timedelta(days=0, seconds=0, ...)``),
    for callables written in C without a signature."""
    doc = getattr(func, "__doc__", None)
    name = getattr(func, "__name__", None)
    if not isinstance(doc, str) or not isinstance(name, str):
        return None
    call = re.search(rf"\b{re.escape(name)}\(([^)]*)\)", doc)
    if call is None:
        return None
    names = re.findall(r"(\w+)\s*=", call.group(1))
    kind = inspect.Parameter.KEYWORD_ONLY
    return [inspect.Parameter(n, kind, default=None) for n in names] or None


def _parameters(func: Any) -> list[inspect.Parameter] | None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return _documented(func)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in signature.parameters.values() if p.kind in kinds]


def _unfilled(call: ast.Call, params: list[inspect.Parameter], bad: str) -> list[str]:
    """The parameter the wrong keyword was probably meant for: the one required parameter the
    call leaves out, else the one parameter of any kind it leaves out (else none)."""
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    given = {p.name for p in positional[: len(call.args)]} | {k.arg for k in call.keywords if k.arg != bad}
    left = [p for p in params if p.name not in given and p.name != "self"]
    return [p.name for p in left if p.default is inspect.Parameter.empty] or [p.name for p in left]


def _keyword(failure: Failure) -> list[dict[str, Any]]:
    message = str(failure.exc)
    match = re.search(r"unexpected keyword argument '(\w+)'", message) or re.search(
        r"'(\w+)' is an invalid keyword argument", message
    )
    if match is None:
        return []
    bad = match.group(1)
    cell = failure.cell
    for node in cell.nodes():
        if not isinstance(node, ast.Call):
            continue
        keyword = next((k for k in node.keywords if k.arg == bad), None)
        if keyword is None:
            continue
        func = resolve(node.func, failure.namespace)
        params = _parameters(func) if func is not MISSING else None
        if not params:
            continue
        name = cell.segment(node.func) or "the function"
        names = [p.name for p in params]
        matches = close_matches(bad, names)
        best = clear_winner(bad, matches)
        if not matches and len(unfilled := _unfilled(node, params, bad)) == 1:
            # Not a spelling slip but another word for the one argument still missing
            # (``sort_values(column=...)`` for ``by``).
            matches = unfilled
            best = unfilled[0]
        span = cell.span(keyword)
        edits = [Edit(span[0], span[1], span[1] + len(bad), best)] if best and span else []
        text = f"`{name}()` has no parameter `{bad}`; its parameters are {', '.join(names[:15])}."
        if matches:
            text += " Did you mean " + ", ".join(f"`{m}`" for m in matches) + "?"
        return [hint("keyword", text, missing=bad, candidates=matches, fix=cell.edited(edits),
                     change=f"`{bad}=` → `{best}=`")]
    return []


# -- a built-in hidden by a variable ----------------------------------------------------------


def _shadowed(failure: Failure) -> list[dict[str, Any]]:
    match = re.search(r"'(\w+)' object is not callable", str(failure.exc))
    if match is None:
        return []
    for node in failure.cell.nodes():
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            value = failure.namespace.get(name, MISSING)
            if value is not MISSING and hasattr(builtins, name) and not callable(value):
                return [
                    hint(
                        "type",
                        f"`{name}` is now {a_type(value)} ({short(value)}) set in this notebook, which hides "
                        f"the built-in `{name}()`. Rename that variable, or run `del {name}`.",
                        missing=name,
                    )
                ]
    return []


# -- None from a mutating method ----------------------------------------------------------------


def _mutation(value: ast.AST) -> tuple[ast.Call, str] | None:
    """``(call, method)`` if ``value`` is ``R.method(...)`` that returns None (or ``inplace=True``)."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
        inplace = any(k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
                      for k in value.keywords)
        if value.func.attr in MUTATING or inplace:
            return value, "inplace" if inplace else value.func.attr
    return None


def _repair(cell: Cell, target: str, call: ast.Call, method: str, here: bool) -> tuple[str, str] | None:
    """The statement that gives ``target`` the value that was meant, and why."""
    assert isinstance(call.func, ast.Attribute)
    receiver = cell.segment(call.func.value) if here else None
    if here and receiver is None:
        return None
    receiver = receiver or ast.unparse(call.func.value)
    args = [ast.unparse(a) for a in call.args] + [
        f"{k.arg}={ast.unparse(k.value)}" for k in call.keywords if k.arg and k.arg != "inplace"
    ]
    if method == "sort":
        new = f"{target} = sorted({', '.join([receiver, *args])})"
        why = f"`{receiver}.sort()` sorts `{receiver}` in place and returns None"
    elif method == "inplace":
        new = f"{target} = {receiver}.{call.func.attr}({', '.join(args)})"
        why = f"`{call.func.attr}(..., inplace=True)` changes `{receiver}` and returns None"
        if not here:
            new = f"{target} = {receiver}"
    else:
        call_text = f"{receiver}.{method}({', '.join(args)})"
        why = f"`{call_text}` changes `{receiver}` in place and returns None"
        if not here:
            new = f"{target} = {receiver}"
        elif receiver == target:
            new = f"{receiver}.{method}({', '.join(args)})"
        else:
            # Keep the object, then change it: right whether the receiver is a name or a
            # fresh object (``defaults.copy().update(...)``).
            new = f"{target} = {receiver}; {target}.{method}({', '.join(args)})"
    return new, why


def _receiver_name(call: ast.Call) -> str | None:
    func = call.func
    return func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None


def _with_definition(failure: Failure, name: str, fix: str) -> str | None:
    """``fix`` preceded by the last earlier cell that assigned ``name`` (other than the failing one)."""
    for source in reversed(failure.ran_cells):
        if source.strip() != failure.cell.code.strip() and name in Cell(source).names(ast.Store):
            return Cell(fix).prepend(source)
    return None


def _sort_as_value(failure: Failure) -> list[dict[str, Any]]:
    """``enumerate(xs.sort())``: the result of an in-place sort used as a value."""
    cell = failure.cell
    statements = {id(n.value) for n in cell.nodes() if isinstance(n, ast.Expr)}
    for node in cell.nodes():
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "sort"
            and id(node) not in statements
        ):
            receiver = cell.segment(node.func.value)
            if receiver is None:
                continue
            args = [cell.segment(a) for a in [*node.args, *node.keywords]]
            if any(a is None for a in args):
                continue
            new = f"sorted({', '.join([receiver, *args])})"  # type: ignore[list-item]
            edit = cell.replace_node(node, new)
            return [
                hint(
                    "none",
                    f"`{receiver}.sort()` sorts in place and returns None, so its result cannot be used. "
                    f"Use `{new}`.",
                    candidates=[new],
                    fix=cell.edited([edit]) if edit else None,
                    change=f"`{receiver}.sort()` → `{new}`",
                )
            ]
    return []


def none_error(failure: Failure) -> list[dict[str, Any]]:
    """A name in the failing cell is None because it was assigned the result of a mutating method."""
    inline = _sort_as_value(failure)
    if inline:
        return inline
    cell, namespace = failure.cell, failure.namespace
    for name in dict.fromkeys(cell.names(ast.Load)):
        if name not in namespace or namespace[name] is not None:
            continue
        # Assigned in this cell, or else in the last cell that assigned it.
        for here, source in [(True, cell.code), *((False, c) for c in reversed(failure.ran_cells))]:
            tree = cell.tree if here else Cell(source).tree
            if tree is None:
                continue
            found = None
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Assign)
                    and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == name
                    and _mutation(node.value)
                ):
                    found = node
            if found is None:
                continue
            call, method = _mutation(found.value)  # type: ignore[misc]
            repaired = _repair(cell, name, call, method, here)
            if repaired is None:
                break
            new, why = repaired
            if here:
                edit = cell.replace_node(found, new) if found.lineno == found.end_lineno else None
                fix = cell.edited([edit]) if edit else None
                if fix is not None and method != "sort" and _receiver_name(call) == name:
                    # ``xs = xs.append(4)`` lost ``xs`` when the cell ran: bring it back
                    # from the cell that last made it, then do the fixed statement.
                    fix = _with_definition(failure, name, fix)
            else:
                fix = cell.prepend(new)
            return [
                hint("none", f"`{name}` is None: {why}. Use `{new}`.", missing=name, candidates=[new],
                     fix=fix, change=f"`{name} = …{call.func.attr}(…)` → `{new}`")  # type: ignore[union-attr]
            ]
        return [hint("none", f"`{name}` is None here, so it cannot be used like a value.", missing=name)]
    return []


def type_error(failure: Failure) -> list[dict[str, Any]]:
    message = str(failure.exc)
    if "NoneType" in message:
        return none_error(failure)
    if "keyword argument" in message:
        return _keyword(failure)
    if "not callable" in message:
        return _shadowed(failure)
    if re.search(r"concatenate str|unsupported operand type\(s\) for \+=?: '(int|float|str)' and '(str|int|float)'",
                 message):
        return _sum_of_strings(failure) or _concat(failure)
    return []
