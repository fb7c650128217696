"""Looking up what an expression in the failing cell refers to, without running the cell.

Only plain references are followed: a name, ``a.b.c``, and a constant subscript of a
dict, list, tuple or pandas object (``df['x']``, ``data['rows'][0]``). Calls are never
made, so nothing the person wrote runs again. Attribute access can still reach a
user property; the caller bounds the time of the whole analysis.
"""

from __future__ import annotations

import ast
import builtins
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["MISSING", "a_type", "is_frame", "is_series", "loop_values", "resolve", "type_name"]

MISSING: Any = object()

PURE_STR_METHODS = frozenset({"strip", "lstrip", "rstrip", "lower", "upper", "title", "casefold"})


def type_name(value: Any) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__.split('.')[0]}.{cls.__qualname__}"


def a_type(value: Any) -> str:
    """``an int``, ``a pandas.DataFrame``: the type of ``value`` with its article."""
    name = type_name(value)
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _pandas_type(value: Any, name: str) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, getattr(pandas, name))


def is_frame(value: Any) -> bool:
    return _pandas_type(value, "DataFrame")


def is_series(value: Any) -> bool:
    return _pandas_type(value, "Series")


def _subscriptable(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple, str)) or is_frame(value) or is_series(value)


def resolve(node: ast.AST, namespace: Mapping[str, Any]) -> Any:
    """The value ``node`` refers to, or :data:`MISSING` when it is not a plain reference."""
    try:
        if isinstance(node, ast.Name):
            if node.id in namespace:
                return namespace[node.id]
            return getattr(builtins, node.id, MISSING)
        if isinstance(node, ast.Attribute):
            owner = resolve(node.value, namespace)
            return MISSING if owner is MISSING else getattr(owner, node.attr, MISSING)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            owner = resolve(node.value, namespace)
            if owner is MISSING or not _subscriptable(owner):
                return MISSING
            return owner[node.slice.value]
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            owner = resolve(node.value, namespace)
            bounds = [resolve(b, namespace) if b is not None else None for b in (node.slice.lower, node.slice.upper)]
            if not isinstance(owner, (list, tuple, str)) or not all(b is None or isinstance(b, int) for b in bounds):
                return MISSING
            return owner[bounds[0] : bounds[1]]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in PURE_STR_METHODS
            and not node.args
            and not node.keywords
        ):
            # ``line.strip()``: a str method with no arguments runs no code of the person's.
            owner = resolve(node.func.value, namespace)
            return getattr(owner, node.func.attr)() if isinstance(owner, str) else MISSING
        if isinstance(node, ast.Constant):
            return node.value
    except Exception:  # noqa: BLE001 (a property or __getitem__ of the person's object failed: not a reference)
        return MISSING
    return MISSING


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a reference, as written (None for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        head = dotted(node.value)
        return None if head is None else f"{head}[{node.slice.value!r}]"
    return None


SAMPLE = 50
"""Items looked at to learn what a loop variable holds."""


def _items(value: Any) -> list[Any] | None:
    return list(value[:SAMPLE]) if isinstance(value, (list, tuple)) else None


def loop_values(name: str, tree: ast.AST | None, namespace: Mapping[str, Any]) -> list[Any] | None:
    """What the loop variable ``name`` of a ``for`` or a comprehension in ``tree`` runs over.

    A comprehension's variable is gone once the cell fails, but its source is not:
    ``for k, v in d.items()`` runs ``v`` over ``d``'s values. Only plain containers are
    read (lists, tuples, dict views), at most :data:`SAMPLE` items.
    """
    if tree is None:
        return None
    for node in ast.walk(tree):
        if not isinstance(node, (ast.For, ast.comprehension)):
            continue
        target, source = node.target, node.iter
        position: int | None = None
        if isinstance(target, ast.Name) and target.id == name:
            position = -1
        elif isinstance(target, ast.Tuple):
            names = [t.id if isinstance(t, ast.Name) else None for t in target.elts]
            position = names.index(name) if name in names else None
        if position is None:
            continue
        call = source if isinstance(source, ast.Call) else None
        method = call.func.attr if call is not None and isinstance(call.func, ast.Attribute) else None
        try:
            if method in ("items", "values", "keys") and call is not None and isinstance(call.func, ast.Attribute):
                owner = resolve(call.func.value, namespace)
                if not isinstance(owner, dict):
                    return None
                pairs = list(owner.items())[:SAMPLE]
                if method == "items":
                    return [pair[position] for pair in pairs] if position in (0, 1) else None
                return [pair[1 if method == "values" else 0] for pair in pairs] if position == -1 else None
            if call is not None and isinstance(call.func, ast.Name) and call.func.id == "enumerate" and call.args:
                items = _items(resolve(call.args[0], namespace))
                return items if position == 1 and items is not None else None
            items = _items(resolve(source, namespace))
            if items is None:
                return None
            return items if position == -1 else [i[position] for i in items if isinstance(i, (list, tuple))]
        except (IndexError, TypeError, AttributeError):
            return None
    return None
