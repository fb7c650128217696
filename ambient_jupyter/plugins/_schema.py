"""``@action``, and the JSON schema of an action from its type hints and numpy docstring.

The schema is what the model is constrained to when it calls the action, so it is
derived from what the author already wrote: the summary line of the docstring
describes the action, its "Parameters" section describes each argument, the type
hints give the JSON types, and parameters without a default are required.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import re
import types
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints, overload

__all__ = ["ActionMark", "action", "action_mark", "describe_action", "parse_docstring", "type_schema"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__ambient_action__"


@dataclasses.dataclass(frozen=True)
class ActionMark:
    """What ``@action`` records on a method."""

    safe: bool = False


@overload
def action(fn: F, *, safe: bool = False) -> F: ...


@overload
def action(fn: None = None, *, safe: bool = False) -> Callable[[F], F]: ...


def action(fn: F | None = None, *, safe: bool = False) -> F | Callable[[F], F]:
    """Mark a :class:`~ambient_jupyter.Plugin` method as an action the model may call.

    Use it bare (``@action``) or with arguments (``@action(safe=True)``).

    Parameters
    ----------
    fn
        The method.
    safe
        Declares that the action changes nothing outside the widget (its own
        state, what it shows). In agent mode ``ask`` such an action runs without
        asking anyone; any other action needs a person's approval (or mode ``auto``).
        Reading a file is safe; writing one, or touching the user's variables, is not.
    """

    def mark(method: F) -> F:
        if not callable(method):
            msg = f"@action marks methods, not {type(method).__name__}"
            raise TypeError(msg)
        setattr(method, _MARK, ActionMark(safe=bool(safe)))
        return method

    return mark if fn is None else mark(fn)


def action_mark(value: Any) -> ActionMark | None:
    """The mark ``@action`` left on ``value``, if any."""
    mark = getattr(value, _MARK, None)
    return mark if isinstance(mark, ActionMark) else None


# -- type hints -> JSON schema ----------------------------------------------------------

_SCALARS: dict[Any, str] = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
_ARRAYS = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable)
_OBJECTS = (dict, collections.abc.Mapping)
_HELP = "use str, int, float, bool, list[...], dict, Literal[...] or Optional[...]"


def _json_type(value: Any) -> str:
    for kind, name in _SCALARS.items():  # bool before int: True is an int too
        if isinstance(value, kind):
            return name
    msg = f"Literal values must be str, int, float, bool or None, not {type(value).__name__}"
    raise TypeError(msg)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if not schema:
        return schema  # any value, null included
    out = dict(schema)
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if "type" in out:
        names = [out["type"]] if isinstance(out["type"], str) else list(out["type"])
        out["type"] = names if "null" in names else [*names, "null"]
    elif "anyOf" in out:
        out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of a type hint (``{}`` means any JSON value).

    Raises
    ------
    TypeError
        For a type the model cannot be asked to produce (say, a DataFrame).
    """
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return {}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        options = [a for a in args if a is not type(None)]
        parts = [type_schema(a) for a in options]
        if len(parts) == 1:
            schema = parts[0]
        elif all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
            schema = {"type": [p["type"] for p in parts]}
        else:
            schema = {"anyOf": parts}
        return _nullable(schema) if len(options) < len(args) else schema
    if origin is Literal:
        values = list(args)
        names = list(dict.fromkeys(_json_type(v) for v in values))
        return {"type": names[0], "enum": values} if len(names) == 1 else {"enum": values}
    if hint in _ARRAYS or origin in _ARRAYS:
        items = [a for a in args if a is not Ellipsis]
        schema = {"type": "array"}
        if len(items) == 1:
            schema["items"] = type_schema(items[0])
        return schema
    if hint in _OBJECTS or origin in _OBJECTS:
        schema = {"type": "object"}
        if len(args) == 2 and type_schema(args[1]):
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    msg = f"cannot describe the type {hint!r} to the model; {_HELP}"
    raise TypeError(msg)


# -- numpy docstrings ---------------------------------------------------------------------

_DASHES = re.compile(r"^\s*-{3,}\s*$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (first paragraph) and the "Parameters" descriptions of a numpy docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip() or (i + 1 < len(lines) and _DASHES.match(lines[i + 1])):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    start = next(
        (i + 2 for i, line in enumerate(lines[:-1]) if line.strip() == "Parameters" and _DASHES.match(lines[i + 1])),
        None,
    )
    if start is not None:
        names: list[str] = []
        for i in range(start, len(lines)):
            line = lines[i]
            if i + 1 < len(lines) and line.strip() and _DASHES.match(lines[i + 1]):
                break  # the next section
            if line.strip() and not line[:1].isspace():
                names = [n.strip().lstrip("*") for n in line.split(":", 1)[0].split(",") if n.strip()]
                for name in names:
                    params[name] = ""
            elif line.strip():
                for name in names:
                    params[name] = f"{params[name]} {line.strip()}".strip()
    return " ".join(summary), params


# -- one action -----------------------------------------------------------------------------


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def describe_action(name: str, method: Callable[..., Any], mark: ActionMark) -> dict[str, Any]:
    """``{"name", "description", "parameters", "safe"}``: how the model sees one action.

    ``method`` is the function as defined on the class (``self`` is skipped).
    """
    where = getattr(method, "__qualname__", name)
    try:
        hints = get_type_hints(method)
    except Exception as exc:  # noqa: BLE001 (any error evaluating annotations: one message)
        msg = f"{where}: cannot read its type hints ({exc})"
        raise TypeError(msg) from None
    summary, docs = parse_docstring(method.__doc__)
    properties: dict[str, Any] = {}
    required: list[str] = []
    params = list(inspect.signature(method).parameters.values())[1:]  # skip self
    for param in params:
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            msg = f"{where}: the model calls actions with named arguments; {param} cannot be one"
            raise TypeError(msg)
        try:
            schema = type_schema(hints.get(param.name, Any))
        except TypeError as exc:
            msg = f"{where}, parameter {param.name!r}: {exc}"
            raise TypeError(msg) from None
        if docs.get(param.name):
            schema["description"] = docs[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif _is_json(param.default):
            schema["default"] = param.default
        properties[param.name] = schema
    return {
        "name": name,
        "description": summary,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        "safe": mark.safe,
    }
