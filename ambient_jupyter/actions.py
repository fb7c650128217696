"""The agent's JSON action API: typed actions, their JSON schema, parsing and repair.

Every model turn is one JSON object, ``{"action": ..., "text": ..., ...}``:

* ``explain``: just talk (``text``);
* ``insert_cell``: a new cell with ``code``, below cell ``after`` (an execution
  count, as the model sees cells: ``[cell 5 ran: ok]``), then run it;
* ``edit_cell``: replace the code of cell ``cell`` with ``code``, then run it;
* ``run_cell``: run cell ``cell`` again, as it is;
* ``call_plugin``: call action ``name`` of plugin ``plugin`` with ``args``;
* ``propose_next_cell``: the user's likely next step, as a new cell at the end.

Where the backend can constrain decoding (llama.cpp grammar, Ollama ``format``,
OpenAI ``response_format``) it gets :func:`action_schema`, so the output is valid
by construction. Otherwise :func:`parse_action` validates, repairs what is
unambiguous (a code fence around the JSON, a cut-off object, plain prose), and
rejects the rest with :class:`ActionInvalid`.

``text`` comes second in every object on purpose: it is what the user reads, and
:class:`TextStream` hands it out while the rest is still being generated.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

__all__ = [
    "ACTIONS",
    "CODE_ACTIONS",
    "Action",
    "ActionInvalid",
    "CallPlugin",
    "EditCell",
    "Explain",
    "InsertCell",
    "Limits",
    "PluginCatalog",
    "ProposeNextCell",
    "RunCell",
    "TextStream",
    "action_code",
    "action_schema",
    "code_sha256",
    "parse_action",
]

ACTIONS = ("explain", "insert_cell", "edit_cell", "run_cell", "call_plugin", "propose_next_cell")
CODE_ACTIONS = ("insert_cell", "edit_cell", "run_cell", "propose_next_cell")
"""Actions that run a notebook cell once approved."""

def code_sha256(code: str) -> str:
    """The hash an approval is bound to (hex sha256 of the UTF-8 code)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


class ActionInvalid(ValueError):
    """The model's output is not a usable action; the message says why (for the log and the model)."""


# -- the typed actions ----------------------------------------------------------------


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # No length limits here: a turn is bounded by the model's max_tokens.
    text: str = ""


class Explain(_Action):
    action: Literal["explain"]


class InsertCell(_Action):
    action: Literal["insert_cell"]
    code: str = Field(min_length=1)
    after: int | None = None


class EditCell(_Action):
    action: Literal["edit_cell"]
    cell: int
    code: str = Field(min_length=1)


class RunCell(_Action):
    action: Literal["run_cell"]
    cell: int


class CallPlugin(_Action):
    action: Literal["call_plugin"]
    plugin: str
    name: str
    args: dict[str, Any] = {}


class ProposeNextCell(_Action):
    action: Literal["propose_next_cell"]
    code: str = Field(min_length=1)


Action = Annotated[
    Union[Explain, InsertCell, EditCell, RunCell, CallPlugin, ProposeNextCell],
    Field(discriminator="action"),
]
_adapter: TypeAdapter[Action] = TypeAdapter(Action)


# -- plugins, as the model knows them ---------------------------------------------------


@dataclass
class PluginCatalog:
    """The plugins of a notebook, from its ``plugin_registered`` events (latest wins)."""

    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any]) -> None:
        name = event.get("plugin")
        if isinstance(name, str) and name:
            self.plugins[name] = {
                "description": str(event.get("description") or ""),
                "actions": {
                    str(a.get("name")): a for a in event.get("actions") or [] if isinstance(a, dict) and a.get("name")
                },
            }

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> PluginCatalog:
        catalog = cls()
        for event in events:
            if event.get("kind") == "plugin_registered":
                catalog.add(event)
        return catalog

    def action(self, plugin: str, name: str) -> dict[str, Any] | None:
        actions: dict[str, dict[str, Any]] = (self.plugins.get(plugin) or {}).get("actions", {})
        return actions.get(name)

    def __bool__(self) -> bool:
        return bool(self.plugins)


# -- the schema given to the model ------------------------------------------------------


STRUCTURE_TOKENS = 48
"""Tokens a turn needs besides its strings: keys, punctuation, numbers (generously)."""


@dataclass(frozen=True)
class Limits:
    """Longest strings, in characters, so that a whole action fits in ``max_tokens``.

    A token holds at least one character, so strings totalling ``max_tokens -
    STRUCTURE_TOKENS`` characters always leave room to close the object: a
    constrained model can ramble, but never past the end of a valid action.
    """

    explain: int
    text: int
    code: int
    argument: int

    @classmethod
    def for_tokens(cls, max_tokens: int) -> Limits:
        chars = max(64, max_tokens - STRUCTURE_TOKENS)
        text = max(32, chars // 4)
        return cls(explain=chars, text=text, code=max(32, chars - text), argument=max(16, min(200, chars // 4)))


def _string(limit: int | None, *, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if min_length:
        schema["minLength"] = min_length
    if limit is not None:
        schema["maxLength"] = limit
    return schema


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _variant(
    action: str, catalog: PluginCatalog, cells: list[int] | None, limits: Limits | None
) -> list[dict[str, Any]]:
    const = {"const": action}
    # Cell references are execution counts that exist, where they are known.
    cell: dict[str, Any] = {"enum": cells} if cells else {"type": "integer"}
    after: dict[str, Any] = {"enum": [*cells, None]} if cells else {"type": ["integer", "null"]}
    # People read ``text``: never empty.
    if action == "explain":
        return [_object({"action": const, "text": _string(limits.explain if limits else None, min_length=1)})]
    text = _string(limits.text if limits else None, min_length=1)
    code = _string(limits.code if limits else None)
    if action == "insert_cell":
        return [_object({"action": const, "text": text, "code": code, "after": after})]
    if action == "edit_cell":
        return [_object({"action": const, "text": text, "cell": cell, "code": code})]
    if action == "run_cell":
        return [_object({"action": const, "text": text, "cell": cell})]
    if action == "propose_next_cell":
        return [_object({"action": const, "text": text, "code": code})]
    if action == "call_plugin":
        # One variant per plugin action, with its own argument schema: a constrained
        # model cannot name an action that does not exist or pass it bad arguments.
        return [
            _object({
                "action": const,
                "text": text,
                "plugin": {"const": plugin},
                "name": {"const": name},
                "args": _closed(spec.get("parameters") or {}, limits),
            })
            for plugin, info in sorted(catalog.plugins.items())
            for name, spec in sorted(info["actions"].items())
        ]
    msg = f"unknown action {action!r}"
    raise ValueError(msg)


def _closed(params: dict[str, Any], limits: Limits | None) -> dict[str, Any]:
    """An arguments schema where every property is present (grammars need a fixed shape),
    and every string argument has a length limit (see :class:`Limits`)."""
    props = dict(params.get("properties") or {})
    if limits is not None:
        strings = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string" and "enum" not in v]
        # The strings share what the code would have had, each at most ``limits.argument``.
        each = max(8, min(limits.argument, limits.code // max(1, len(strings))))
        for key in strings:
            spec = props[key]
            props[key] = {**spec, "maxLength": min(int(spec.get("maxLength", each)), each)}
    return _object(props)


def action_schema(
    allowed: Sequence[str],
    catalog: PluginCatalog | None = None,
    cells: Iterable[int] | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The JSON schema of one turn, restricted to ``allowed`` actions.

    ``call_plugin`` is offered only when there are plugins, and ``edit_cell`` /
    ``run_cell`` only when cells have run. With ``cells`` (the execution counts
    that exist), cell references are limited to them. With ``max_tokens``, strings
    are limited so that a whole action always fits (:class:`Limits`).
    """
    catalog = catalog or PluginCatalog()
    limits = Limits.for_tokens(max_tokens) if max_tokens is not None else None
    known = sorted(set(cells)) if cells is not None else None
    variants: list[dict[str, Any]] = []
    for action in dict.fromkeys(allowed):
        if action == "call_plugin" and not catalog:
            continue
        if action in ("edit_cell", "run_cell") and known == []:
            continue
        variants.extend(_variant(action, catalog, known, limits))
    if not variants:
        variants = _variant("explain", catalog, known, limits)
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


# -- parsing and repair ---------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:json|python|py|ipython|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def _json_object(raw: str) -> tuple[dict[str, Any] | None, bool]:
    """The JSON object in ``raw`` (whole, or inside a ``json`` fence), and whether it was complete.

    An object cut off at the end (``max_tokens`` ran out) is still read, as far as
    it goes, so its ``text`` is not lost; the caller decides what a cut is worth.
    """
    text = raw.strip()
    fenced = _FENCE.search(text)
    if not text.startswith("{") and fenced and fenced.group(1).strip().startswith("{"):
        text = fenced.group(1).strip()
    start = text.find("{")
    if start < 0:
        return None, True
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
        complete = True
    except ValueError:
        try:
            value = from_json(text[start:].encode(), allow_partial="trailing-strings")
        except ValueError:
            value = None
        complete = False
    return (value, complete) if isinstance(value, dict) else (None, True)


def _from_prose(raw: str, allowed: Sequence[str]) -> dict[str, Any]:
    """Repair plain prose: a code block becomes a new cell if that is allowed, else explain."""
    fenced = _FENCE.search(raw)
    code = fenced.group(1).strip("\n") if fenced else ""
    if code.strip() and not code.lstrip().startswith("{"):
        for action in ("insert_cell", "propose_next_cell"):
            if action in allowed:
                return {"action": action, "text": raw[: fenced.start()].strip() if fenced else "", "code": code + "\n"}
    return {"action": "explain", "text": raw.strip()}


def parse_action(
    raw: str,
    allowed: Sequence[str] = ACTIONS,
    catalog: PluginCatalog | None = None,
    cells: Iterable[int] | None = None,
) -> Action:
    """Validate a model's whole output as one ``allowed`` action, repairing what is unambiguous.

    ``call_plugin`` is checked against the notebook's plugins (``catalog``), and cell
    references (``cell``, ``after``) against ``cells``, the execution counts that exist
    (``None`` skips that check). Raises :class:`ActionInvalid` with a message fit for
    the log and for the model's next attempt.
    """
    catalog = catalog or PluginCatalog()
    data, complete = _json_object(raw)
    if data is None or "action" not in data:
        if data is not None and "text" in data:
            data = {"action": "explain", **data}
        else:
            data, complete = _from_prose(raw, allowed), True
    if data.get("action") not in allowed:
        msg = f"action {data.get('action')!r} is not allowed here; use one of {', '.join(allowed)}"
        raise ActionInvalid(msg)
    if not complete and data["action"] != "explain":
        # Code or arguments that were cut off are never offered to run.
        msg = f"the {data['action']} action was cut off before it ended (the reply hit its length limit)"
        raise ActionInvalid(msg)
    if isinstance(data.get("text"), (dict, list)):
        data["text"] = json.dumps(data["text"])
    try:
        action = _adapter.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'action'}: {e['msg']}" for e in exc.errors())
        msg = f"invalid {data.get('action')} action: {problems}"
        raise ActionInvalid(msg) from None
    _check(action, catalog, None if cells is None else set(cells))
    return action


def _check(action: Action, catalog: PluginCatalog, cells: set[int] | None) -> None:
    if isinstance(action, CallPlugin):
        spec = catalog.action(action.plugin, action.name)
        if spec is None:
            known = ", ".join(f"{p}.{a}" for p, info in catalog.plugins.items() for a in info["actions"]) or "none"
            msg = f"there is no plugin action {action.plugin}.{action.name} (known: {known})"
            raise ActionInvalid(msg)
        _check_args(action, spec.get("parameters") or {})
    if cells is not None:
        for key in ("cell", "after"):
            ref = getattr(action, key, None)
            if ref is not None and ref not in cells:
                msg = f"there is no cell [{ref}] in this notebook's history"
                raise ActionInvalid(msg)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _check_args(action: CallPlugin, params: dict[str, Any]) -> None:
    props: dict[str, Any] = params.get("properties") or {}
    unknown = set(action.args) - set(props)
    if unknown:
        msg = f"{action.plugin}.{action.name} takes no argument(s) {', '.join(sorted(unknown))}"
        raise ActionInvalid(msg)
    missing = [k for k in params.get("required") or [] if k not in action.args]
    if missing:
        msg = f"{action.plugin}.{action.name} needs {', '.join(missing)}"
        raise ActionInvalid(msg)
    for key, value in action.args.items():
        spec = props[key]
        types = spec.get("type")
        names = [types] if isinstance(types, str) else list(types or [])
        if "enum" in spec and value not in spec["enum"]:
            msg = f"{action.plugin}.{action.name}: {key} must be one of {spec['enum']}"
            raise ActionInvalid(msg)
        if names and not any(
            isinstance(value, _JSON_TYPES.get(t, (object,))) and not (t in ("integer", "number") and value is True)
            for t in names
        ):
            msg = f"{action.plugin}.{action.name}: {key} must be {' or '.join(names)}, not {type(value).__name__}"
            raise ActionInvalid(msg)


# -- what runs --------------------------------------------------------------------------


def plugin_call_code(plugin: str, name: str, args: Mapping[str, Any]) -> str:
    """The plugin call as one line of Python-like text: what the user approves, and hashes."""
    rendered = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"{plugin}.{name}({rendered})"


def action_code(action: Action, cell_code: str | None = None) -> str:
    """Exactly what runs if ``action`` is approved (its sha256 binds the approval).

    ``cell_code`` is the current code of the cell a ``run_cell`` names.
    """
    if isinstance(action, (InsertCell, EditCell, ProposeNextCell)):
        return action.code if action.code.endswith("\n") else action.code + "\n"
    if isinstance(action, RunCell):
        return cell_code or ""
    if isinstance(action, CallPlugin):
        return plugin_call_code(action.plugin, action.name, action.args)
    return ""


def action_args(action: Action) -> dict[str, Any]:
    """The action's fields other than ``action``, ``text`` and ``code``."""
    return action.model_dump(exclude={"action", "text", "code"}, exclude_none=True)


# -- streaming the text while the JSON is written ----------------------------------------


class TextStream:
    """Turns the pieces of a JSON action into the pieces of its ``text`` field.

    The user reads ``text`` while the model is still writing it; a reply that is
    not JSON at all (an unconstrained model) streams as it is. Pieces are kept in
    lists: a long prose reply is never copied piece by piece.
    """

    def __init__(self) -> None:
        self._raw: list[str] = []
        self._shown: list[str] = []
        self._sent = 0
        self._mode: Literal["unknown", "json", "prose"] = "unknown"

    @property
    def raw(self) -> str:
        """The model's whole output so far."""
        if len(self._raw) > 1:
            self._raw[:] = ["".join(self._raw)]
        return self._raw[0] if self._raw else ""

    @property
    def is_json(self) -> bool:
        """True once the output is known to be JSON (not prose)."""
        return self._mode == "json"

    @property
    def shown(self) -> str:
        """Everything handed out so far: what the user has seen."""
        return "".join(self._shown)

    def feed(self, piece: str) -> str:
        """Add a piece of output; return the new part of the text, if any."""
        self._raw.append(piece)
        if self._mode == "unknown":
            head = self.raw.lstrip()
            if not head:
                return ""
            self._mode = "json" if head.startswith(("{", "```")) else "prose"
            if self._mode == "prose":
                piece = self.raw
        if self._mode == "prose":
            new = piece
        else:
            text = self._partial_text()
            if text is None or len(text) <= self._sent:
                return ""
            new, self._sent = text[self._sent :], len(text)
        self._shown.append(new)
        return new

    def _partial_text(self) -> str | None:
        # JSON actions are short (max_tokens), so re-reading the prefix is cheap.
        raw = self.raw
        start = raw.find("{")
        if start < 0:
            return None
        try:
            value = from_json(raw[start:].encode(), allow_partial="trailing-strings")
        except ValueError:
            return None  # e.g. cut inside an escape sequence: wait for the next piece
        text = value.get("text") if isinstance(value, dict) else None
        return text if isinstance(text, str) else None
