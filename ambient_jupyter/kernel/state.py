"""A bounded summary of the kernel's live objects, for the model's prompt.

The model should see what the variables hold, not only what was printed. Looking at
an object runs the user's code (``__repr__``, ``__len__``, properties), which may
block, raise, or even raise ``SystemExit``; and the objects may be huge. So each
summary reads heads and slices only, each text is capped, and the whole call runs
under one deadline that ``SIGALRM`` enforces.

pandas, numpy, polars and matplotlib are recognised only if the user already
imported them (they are looked up in ``sys.modules``): a summary never imports one.
"""

from __future__ import annotations

import ast
import inspect
import keyword
import re
import reprlib
import sys
import time
import types
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any

from .._trim import clean_text
from .timebox import OutOfTime, why_no_timer, with_alarm

__all__ = ["select_names", "summarize"]

TEXT_CAP = 600
"""Characters per entry."""
MIN_TEXT = 24
"""An entry is added only if at least this much of the budget is left."""
MAX_COLUMNS = 30
HEAD_ROWS = 3
MAX_KEYS = 20
MAX_ITEMS = 5
MAX_LABELS = 10
MAX_MODULE_NAMES = 30
MAX_AXES = 6
SMALL_ARRAY = 1000
"""numpy arrays up to this many elements get a preview of their values."""


class _Repr(reprlib.Repr):
    """reprlib, but saying so when a ``__repr__`` raises, and never rendering a huge int."""

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception as exc:  # noqa: BLE001 - a broken __repr__ is reported, not fatal
            return f"<repr raised {type(exc).__name__}>"
        if len(text) <= self.maxother:
            return text
        half = (self.maxother - 3) // 2
        return f"{text[:half]}...{text[-half:]}"

    def repr_int(self, x: int, level: int) -> str:
        # Rendering is quadratic in the digits, and refused beyond 4300 of them.
        return super().repr_int(x, level) if x.bit_length() <= 4096 else f"<int of {x.bit_length()} bits>"


_repr = _Repr()
# Attributes rather than keyword arguments: Repr takes no arguments before 3.12.
_repr.maxlevel = 2
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlong = 40
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 6
_repr.maxdict = 4

_PLUMBING = frozenset({"In", "Out", "get_ipython", "exit", "quit"})
# IPython's history variables: _, __, ___, _i, _ii, _iii, _i12, _12, _oh, _ih, _dh,
# and dunders such as __builtins__.
_PLUMBING_RE = re.compile(r"_+|_i{1,3}|_i?\d+|_oh|_ih|_dh|__\w+__")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VIEWS: tuple[type[Any], ...] = (type({}.keys()), type({}.values()), type({}.items()))
_COLLECTIONS: tuple[type[Any], ...] = (list, tuple, set, frozenset, deque, *_VIEWS)
# Exact types whose len() is the C one: safe to call when no user code may run.
_SIZED_BUILTINS = frozenset({str, bytes, bytearray, list, tuple, dict, set, frozenset, range, *_VIEWS,
                             deque, OrderedDict, defaultdict, Counter})


# --- summarize --------------------------------------------------------------------


def summarize(
    namespace: Mapping[str, Any], names: Sequence[str], *, budget: int = 3000, time_limit: float = 0.2
) -> list[dict[str, str]]:
    """Describe the objects ``names`` refer to, within a character budget and a deadline.

    Parameters
    ----------
    namespace
        Usually the shell's ``user_ns``.
    names
        In order of interest; names missing from ``namespace`` are skipped.
    budget
        Characters for all the ``text`` values together.
    time_limit
        Seconds for the whole call. User code is cut off by ``SIGALRM`` when we are on
        the main thread and the signal is free; otherwise no user code runs at all.

    Returns
    -------
    list of dict
        ``{"name", "type", "text"}`` per described name, in the order of ``names``,
        until the budget or the time runs out. Whatever user code raises becomes
        the entry's text; only ``KeyboardInterrupt`` (the user interrupting) propagates.
    """
    deadline = time.monotonic() + time_limit
    no_timer = why_no_timer()
    entries: list[dict[str, str]] = []
    seen: set[str] = set()
    left = budget
    for name in names:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or left < MIN_TEXT:
            break
        if name in seen or name not in namespace:
            continue
        seen.add(name)
        obj = namespace[name]
        type_name = _type_name(obj)
        if no_timer is None:
            text = _timed_summary(obj, type_name, remaining)
        else:
            # Without a timer nothing could stop a __repr__ that blocks, so run none:
            # only facts that builtin and library types give without user code.
            text = f"{_safe_facts(obj, type_name)} (details skipped: {no_timer})"
        text = _clip(clean_text(text), min(TEXT_CAP, left))
        entries.append({"name": name, "type": type_name, "text": text})
        left -= len(text)
    return entries


def _timed_summary(obj: Any, type_name: str, seconds: float) -> str:
    try:
        return with_alarm(lambda: _describe(obj, type_name), seconds)
    except KeyboardInterrupt:
        raise  # the user interrupted the kernel: stop, as any cell would
    except OutOfTime:
        return f"{_safe_facts(obj, type_name)} (repr took too long)"
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit too; it becomes the text
        return f"{_safe_facts(obj, type_name)} (summary failed: {type(exc).__name__} raised)"


def _type_name(obj: Any) -> str:
    """``pandas.DataFrame`` rather than ``pandas.core.frame.DataFrame``; ``dict`` for builtins."""
    kind = type(obj)
    try:
        module, qualname = kind.__module__, kind.__qualname__
        if module in ("builtins", "__main__"):
            return qualname
        # The shortest imported package that exports the class under its name. Its
        # __dict__, not getattr: a module's __getattr__ is user code.
        parts = module.split(".")
        for i in range(1, len(parts)):
            package = sys.modules.get(".".join(parts[:i]))
            if package is not None and vars(package).get(qualname) is kind:
                return f"{'.'.join(parts[:i])}.{qualname}"
        return f"{module}.{qualname}"
    except Exception:  # noqa: BLE001 - a metaclass may make these attributes anything
        return kind.__name__


def _library_type(module: str, name: str) -> type[Any] | None:
    """A class of an already imported library, or None: we never import one."""
    loaded = sys.modules.get(module)
    # Its __dict__, not getattr: this also runs where no user code may (a module's __getattr__).
    found = loaded.__dict__.get(name) if isinstance(loaded, types.ModuleType) else None
    return found if isinstance(found, type) else None


def _safe_facts(obj: Any, type_name: str) -> str:
    """Type and size, from exact builtin and library types only: no user code runs."""
    kind = type(obj)
    if kind in _SIZED_BUILTINS:
        return f"{type_name}, len {len(obj):,}"
    shaped = {_library_type(m, n) for m, n in (("pandas", "DataFrame"), ("pandas", "Series"),
                                               ("numpy", "ndarray"), ("polars", "DataFrame"))}
    if kind in shaped:
        return f"{type_name}, shape {tuple(obj.shape)}"
    return type_name


def _clip(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[: max(cap - 1, 0)] + "…"


def _label(value: Any, limit: int = 40) -> str:
    return _clip(value if isinstance(value, str) else str(value), limit)


# --- one description per kind (all run under the alarm) ----------------------------


def _describe(obj: Any, type_name: str) -> str:
    if isinstance(obj, types.ModuleType):
        return _describe_module(obj, type_name)
    for module, name, describe in _LIBRARY_KINDS:
        kind = _library_type(module, name)
        if kind is not None and isinstance(obj, kind):
            return describe(obj, type_name)
    if isinstance(obj, dict):
        return _describe_dict(obj, type_name)
    if isinstance(obj, _COLLECTIONS):
        return _describe_collection(obj, type_name)
    if isinstance(obj, (type, *_ROUTINES)):
        return _describe_callable(obj, type_name)
    return _describe_other(obj, type_name)


def _describe_frame(df: Any, type_name: str) -> str:
    rows, ncols = df.shape
    head = df.iloc[:HEAD_ROWS, :MAX_COLUMNS]  # a slice: the frame itself is never rendered
    columns: list[str] = []
    used = 0
    for label, dtype in head.dtypes.items():
        if used > 240:  # leave room in the cap for the index and the rows
            break
        columns.append(f"{_label(label)} ({dtype})")
        used += len(columns[-1])
    more = f", ... +{ncols - len(columns):,} more" if ncols > len(columns) else ""
    table = head.to_string(max_cols=8, max_colwidth=20, show_dimensions=False)
    return (f"{type_name}, shape ({rows:,}, {ncols:,}); columns {', '.join(columns)}{more}; "
            f"index {_describe_index(df.index)}; first rows:\n{table}")


def _describe_index(index: Any) -> str:
    range_index = _library_type("pandas", "RangeIndex")
    if range_index is not None and isinstance(index, range_index):
        if len(index) == 0:
            return "RangeIndex(empty)"
        step = f", step {index.step}" if index.step != 1 else ""
        return f"RangeIndex({index.start}..{index.start + (len(index) - 1) * index.step}{step})"
    labels = ", ".join(_label(v, 30) for v in index[:5])
    return f"{type(index).__name__} [{labels}{', ...' if len(index) > 5 else ''}]"


def _describe_series(s: Any, type_name: str) -> str:
    labels = ", ".join(_label(v, 30) for v in s.index[:MAX_LABELS])
    more = ", ..." if len(s) > MAX_LABELS else ""
    values = _repr.repr(s.iloc[:MAX_ITEMS].tolist())
    return (f"{type_name}, length {len(s):,}, dtype {s.dtype}, name {_label(s.name)}; "
            f"index {type(s.index).__name__} [{labels}{more}]; first values {values}")


def _describe_polars(df: Any, type_name: str) -> str:
    rows, ncols = df.shape
    schema = list(islice(df.schema.items(), MAX_COLUMNS))
    columns = ", ".join(f"{_label(n)} ({dtype})" for n, dtype in schema)
    more = f", ... +{ncols - len(schema):,} more" if ncols > len(schema) else ""
    head = df.head(HEAD_ROWS).select([n for n, _ in schema[:10]]).rows()
    return (f"{type_name}, shape ({rows:,}, {ncols:,}); columns {columns}{more}; "
            f"first rows {'; '.join(_repr.repr(r) for r in head)}")


def _describe_array(a: Any, type_name: str) -> str:
    text = f"{type_name}, shape {a.shape}, dtype {a.dtype}"
    if a.size <= SMALL_ARRAY:
        # Small arrays only: numpy itself elides the middle beyond `threshold`.
        preview = sys.modules["numpy"].array2string(a, threshold=20, edgeitems=3, max_line_width=100)
        text += f"; values {preview}"
    return text


def _describe_figure(fig: Any, type_name: str) -> str:
    get_suptitle = getattr(fig, "get_suptitle", None)  # matplotlib >= 3.8
    title = get_suptitle() if callable(get_suptitle) else ""
    axes = list(fig.axes)
    parts = [f"{type_name}" + (f" {title!r}" if title else "") + f", {len(axes)} axes"]
    parts += [f"axes {i}: {_axes_text(ax)}" for i, ax in enumerate(axes[:MAX_AXES])]
    return "; ".join(parts)


def _axes_text(ax: Any) -> str:
    """What a plot shows, for a model that cannot see it."""
    bits = [f"{what} {text!r}" for what, text in
            (("title", ax.get_title()), ("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if text]
    bar_container = _library_type("matplotlib.container", "BarContainer")
    bars = sum(len(c) for c in ax.containers if bar_container and isinstance(c, bar_container))
    counts = (("lines", len(ax.lines)), ("collections (scatter etc.)", len(ax.collections)),
              ("bars", bars), ("other patches", len(ax.patches) - bars), ("images", len(ax.images)))
    bits += [f"{n} {what}" for what, n in counts if n]
    legend = ax.get_legend()
    if legend is not None:
        labels = [_label(t.get_text(), 30) for t in legend.get_texts()[:10]]
        bits.append(f"legend {labels}")
    return ", ".join(bits) or "empty"


def _describe_dict(d: Mapping[Any, Any], type_name: str) -> str:
    keys = ", ".join(f"{_repr.repr(k)}: {_value_hint(v)}" for k, v in islice(d.items(), MAX_KEYS))
    more = ", ..." if len(d) > MAX_KEYS else ""
    return f"{type_name}, len {len(d):,}; keys {{{keys}{more}}}"


def _value_hint(value: Any) -> str:
    """A dict value: shown if it is a small builtin scalar, else only its type (no user code)."""
    kind = type(value)
    if (kind is int and value.bit_length() <= 64) or kind in (float, bool, type(None)):
        return repr(value)
    if kind is str:
        return _repr.repr(value)
    return f"<{kind.__name__}>"


def _describe_collection(items: Any, type_name: str) -> str:
    # islice, not reprlib on the whole: reprlib sorts a set before cutting it.
    return f"{type_name}, len {len(items):,}; first items {_repr.repr(list(islice(items, MAX_ITEMS)))}"


def _describe_module(module: types.ModuleType, type_name: str) -> str:
    public = sorted(n for n in vars(module) if not n.startswith("_"))
    more = ", ..." if len(public) > MAX_MODULE_NAMES else ""
    return (f"{type_name} {module.__name__}, {len(public)} public names: "
            f"{', '.join(public[:MAX_MODULE_NAMES])}{more}")


def _describe_callable(obj: Any, type_name: str) -> str:
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):  # builtins without a text signature
        signature = "(...)"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(name, str) or "<locals>" in name:  # f.<locals>.g says little; g does
        name = str(getattr(obj, "__name__", "?"))
    doc = getattr(obj, "__doc__", None)
    first = doc.strip().partition("\n")[0] if isinstance(doc, str) else ""
    return f"{type_name} {name}{_clip(signature, 200)}" + (f": {first}" if first else "")


def _describe_other(obj: Any, type_name: str) -> str:
    parts = [type_name]
    # Each fact on its own: a __len__ or __getattr__ that raises still leaves the repr.
    try:
        if hasattr(type(obj), "__len__"):
            parts.append(f"len {len(obj):,}")
    except Exception as exc:  # noqa: BLE001 - user code; reported in the text
        parts.append(f"len raised {type(exc).__name__}")
    try:
        shape = getattr(obj, "shape", None)
    except Exception as exc:  # noqa: BLE001 - user code; reported in the text
        shape = None
        parts.append(f"attribute lookup raised {type(exc).__name__}")
    if isinstance(shape, tuple):
        parts.append(f"shape {_repr.repr(shape)}")
    # The head of a string, sliced first: reprlib would render a 1 GB bytes object whole.
    if isinstance(obj, (str, bytes, bytearray)) and len(obj) > _repr.maxstring:
        parts.append(f"{obj[: _repr.maxstring]!r}...")
    else:
        parts.append(_repr.repr(obj))
    return ", ".join(parts)


_ROUTINES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.MethodWrapperType,
             types.WrapperDescriptorType, types.MethodDescriptorType)
_LIBRARY_KINDS: tuple[tuple[str, str, Callable[[Any, str], str]], ...] = (
    ("pandas", "DataFrame", _describe_frame),
    ("pandas", "Series", _describe_series),
    ("polars", "DataFrame", _describe_polars),
    ("numpy", "ndarray", _describe_array),
    ("matplotlib.figure", "FigureBase", _describe_figure),
    ("matplotlib.figure", "Figure", _describe_figure),  # matplotlib < 3.4 has no FigureBase
    ("matplotlib.axes", "Axes", lambda ax, type_name: f"{type_name}: {_axes_text(ax)}"),
)


# --- which names a turn concerns ----------------------------------------------------


def select_names(
    namespace: Mapping[str, Any],
    *,
    code: str | None = None,
    question: str | None = None,
    recent: Sequence[str] = (),
    limit: int = 12,
) -> list[str]:
    """The names a turn concerns, most relevant first.

    Names that ``code`` reads, then identifiers in ``question``, then ``recent``
    (newest first). Only names in ``namespace``, each once, at most ``limit``.
    IPython's plumbing (``_``, ``_i12``, ``Out``, ``get_ipython``, ...) is always
    left out; private names and modules only unless ``code`` or ``question`` uses them.
    """
    explicit = [*(_code_names(code) if code else []), *_identifiers(question or "")]
    candidates = [(n, True) for n in explicit] + [(n, False) for n in recent]
    chosen: list[str] = []
    for name, is_explicit in candidates:
        if len(chosen) >= limit:
            break
        if name in chosen or name not in namespace or name in _PLUMBING or _PLUMBING_RE.fullmatch(name):
            continue
        # type(), not isinstance(): isinstance may look up a user object's __class__.
        if not is_explicit and (name.startswith("_") or issubclass(type(namespace[name]), types.ModuleType)):
            continue
        chosen.append(name)
    return chosen


def _identifiers(text: str) -> list[str]:
    return [t for t in _IDENTIFIER_RE.findall(text) if not keyword.iskeyword(t)]


def _code_names(code: str) -> list[str]:
    """Names ``code`` reads, in source order; identifier-like tokens if it does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes in the source
        return _identifiers(code)
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            found.append((node.target.lineno, node.target.col_offset, node.target.id))  # x += 1 reads x
    return [name for *_, name in sorted(found)]
