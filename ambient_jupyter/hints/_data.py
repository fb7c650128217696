"""Wrong keys, columns, labels, files, indices and shapes, checked against the real data."""

from __future__ import annotations

import ast
import itertools
import os
import re
from typing import Any

from ._base import Failure, did_you_mean, hint, short
from ._match import clear_winner, close_matches
from ._resolve import MISSING, dotted, is_frame, is_series, loop_values, resolve
from ._source import Cell, Edit, literal

__all__ = ["file_not_found", "index_error", "key_error", "shape_error"]

MAX_KEYS = 5000
"""Keys, labels or files compared, at most (the head of a huge index is enough)."""
SUBFOLDERS = 50
"""Subfolders looked into for a missing file, at most."""


# -- KeyError: dict keys, DataFrame columns, Series labels -----------------------------


def _keys_of(value: Any) -> tuple[str, list[Any]] | None:
    """What kind of keys ``value`` has, and (the head of) them."""
    try:
        if is_frame(value):
            return "column", list(value.columns[:MAX_KEYS])
        if is_series(value):
            return "label", list(value.index[:MAX_KEYS])
        if isinstance(value, dict):
            return "key", list(itertools.islice(value, MAX_KEYS))
    except Exception:  # noqa: BLE001 (a strange index: no keys to compare with)
        return None
    return None


def _wanted(exc: BaseException) -> list[Any]:
    key = exc.args[0] if exc.args else None
    if isinstance(key, str):
        # pandas words it several ways: "['region'] not in index", "None of [Index(['region'],
        # ...)] are in the [columns]", "Label(s) ['region'] do not exist", "Column(s) [...]".
        listed = re.search(r"\[((?:'[^']*'(?:, )?)+)\](?: not in index| do not exist)", key) or re.search(
            r"Index\(\[((?:'[^']*'(?:, )?)+)\]", key
        )
        if listed:
            return re.findall(r"'([^']*)'", listed.group(1))
    return [key]


def _receivers(cell: Cell, key: Any) -> list[ast.AST]:
    """Expressions the cell looks ``key`` up in: ``x[key]``, ``x[[key, ...]]``, ``x.method(key)``."""

    def has_key(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return bool(node.value == key) and type(node.value) is type(key)
        if isinstance(node, (ast.List, ast.Tuple)):
            return any(has_key(e) for e in node.elts)
        return False

    found: list[ast.AST] = []
    for node in cell.nodes():
        if isinstance(node, ast.Subscript) and has_key(node.slice):
            found.append(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            arguments = [*node.args, *(k.value for k in node.keywords)]
            if any(has_key(a) for a in arguments):
                found.append(node.func.value)
    return found


def _literal_edits(cell: Cell, old: str, new: str) -> list[Edit]:
    edits = []
    for node in cell.nodes():
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value == old:
            span, segment = cell.span(node), cell.segment(node)
            if span is None or segment is None or segment[:1] not in "'\"":
                return []  # prefixed or multi-line literals are left to people
            edits.append(Edit(span[0], span[1], span[2], literal(new, segment)))
    return edits


def key_error(failure: Failure) -> list[dict[str, Any]]:
    cell, namespace = failure.cell, failure.namespace
    out: list[dict[str, Any]] = []
    for key in _wanted(failure.exc)[:3]:
        where: list[tuple[str, Any]] = []
        for node in _receivers(cell, key):
            value = resolve(node, namespace)
            if value is not MISSING and _keys_of(value) is not None:
                where.append((dotted(node) or "it", value))
            elif value is MISSING and isinstance(node, ast.Name):
                # A loop variable (gone with the comprehension): the dicts it ran over.
                merged: dict[Any, None] = {}
                for item in loop_values(node.id, cell.tree, namespace) or []:
                    if isinstance(item, dict):
                        merged.update(dict.fromkeys(list(item)[:MAX_KEYS]))
                if merged:
                    where.append((node.id, merged))
        if not where:
            # Looked up somewhere we cannot see (a function, a loop variable): try the
            # dicts and frames the cell names.
            for node in cell.nodes():
                if isinstance(node, ast.Name) and node.id in namespace and _keys_of(namespace[node.id]):
                    where.append((node.id, namespace[node.id]))
        for label, value in where[:1]:
            kind, keys = _keys_of(value)  # type: ignore[misc]
            what = {"column": "Column", "label": "Label", "key": "Key"}[kind]
            thing = {"column": "a DataFrame", "label": "a Series", "key": "a dict"}[kind]
            shown = ", ".join(short(k, 40) for k in keys[:12]) + (f", … ({len(keys)} in all)" if len(keys) > 12 else "")
            pool = [k for k in keys if isinstance(k, str)] if isinstance(key, str) else []
            matches = close_matches(key, pool) if isinstance(key, str) else []
            best = clear_winner(key, matches) if isinstance(key, str) else None
            text = f"{what} {short(key)} is not in `{label}` ({thing}; its {kind}s: {shown})."
            if matches:
                text += " Did you mean " + ", ".join(short(m) for m in matches) + "?"
            fix = cell.edited(_literal_edits(cell, key, best)) if best else None
            out.append(
                hint(kind, text, missing=str(key), candidates=[str(m) for m in matches], fix=fix,
                     change=f"{short(key)} → {short(best)}")
            )
    return out


# -- FileNotFoundError ---------------------------------------------------------------


def _listing(folder: str) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [entry.name for entry in itertools.islice(entries, MAX_KEYS)]
    except OSError:
        return []


def file_not_found(failure: Failure) -> list[dict[str, Any]]:
    filename = getattr(failure.exc, "filename", None)
    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    if not isinstance(filename, str) or not filename:
        return []
    folder, base = os.path.split(filename)
    look_in = os.path.join(failure.cwd, folder) if not os.path.isabs(folder) else folder
    if folder and not os.path.isdir(look_in):
        return [hint("file", f"The folder `{folder}` does not exist (looked in {failure.cwd!s}).", missing=folder)]
    names = _listing(look_in)
    matches = close_matches(base, names)
    shown = folder or "the working folder"
    if not matches:
        # One level down: ``tides.txt`` is ``inputs/tides.txt``.
        nested = [
            f"{sub}/{n}"
            for sub in sorted(n for n in names if os.path.isdir(os.path.join(look_in, n)))[:SUBFOLDERS]
            for n in _listing(os.path.join(look_in, sub))
        ]
        matches = [m for m in nested if m.rsplit("/", 1)[1] in close_matches(base, [m.rsplit("/", 1)[1]])
                   or m.rsplit("/", 1)[1] == base][:3]
    if not matches:
        some = ", ".join(sorted(names)[:15])
        return [hint("file", f"There is no file `{base}` in {shown}. It holds: {some or 'nothing'}.", missing=base)]
    exact = [m for m in matches if m.rsplit("/", 1)[-1] == base]
    best = exact[0] if len(exact) == 1 else clear_winner(base, matches)
    cell = failure.cell
    edits: list[Edit] = []
    if best:
        edits = _literal_edits(cell, filename, os.path.join(folder, best)) or _literal_edits(cell, base, best)
    fact = f"There is no file `{base}` in {shown}."
    return did_you_mean("file", fact, base, matches, cell.edited(edits), f"`{base}` → `{best}`")


# -- IndexError: off by one ------------------------------------------------------------


def _len_of(node: ast.AST) -> ast.AST | None:
    """``X`` for ``len(X)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" and len(node.args) == 1:
        return node.args[0]
    return None


def _plus_one(node: ast.AST) -> ast.AST | None:
    """``X`` for ``len(X) + 1``."""
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add)
        and isinstance(node.right, ast.Constant)
        and node.right.value == 1
    ):
        return _len_of(node.left)
    return None


def _size(value: Any) -> int | None:
    try:
        return len(value)
    except Exception:  # noqa: BLE001
        return None


def index_error(failure: Failure) -> list[dict[str, Any]]:
    cell, namespace = failure.cell, failure.namespace
    edits: list[Edit] = []
    facts: list[str] = []
    changes: list[str] = []
    loops: dict[str, ast.AST] = {}
    fallback: list[tuple[Edit, str, str]] = []
    for node in cell.nodes():
        # Loops and comprehensions alike: ``for i in range(...)``.
        is_loop = isinstance(node, (ast.For, ast.comprehension))
        if is_loop and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Call):  # type: ignore[attr-defined]
            loops[node.target.id] = node.iter  # type: ignore[attr-defined]
    for node in cell.nodes():
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            args = node.args
            seq = _plus_one(args[-1]) if args else None
            if seq is None:
                continue
            name = cell.segment(seq)
            if name is None:
                continue
            before = cell.segment(node)
            if len(args) == 2 and isinstance(args[0], ast.Constant) and args[0].value == 1:
                # range(1, len(X) + 1) counts from 1 (often to print the number), and
                # X[i] indexes from 0: keep the count, shift the index.
                var = next((v for v, it in loops.items() if it is node), None)
                shifted = [
                    n for n in cell.nodes()
                    if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name) and n.slice.id == var
                    and cell.segment(n.value) == name
                ]
                if var is not None and shifted:
                    for sub in shifted:
                        edit = cell.replace_node(sub.slice, f"{var} - 1")
                        if edit is not None:
                            edits.append(edit)
                    changes.append(f"`{name}[{var}]` → `{name}[{var} - 1]` (the count starts at 1, indices at 0)")
                    size = _size(resolve(seq, namespace))
                    if size is not None:
                        facts.append(f"`{name}` has {size} items, so its indices are 0 to {size - 1}")
                    continue
                after = f"range(len({name}))"
            else:
                call, arg = cell.span(node), cell.span(args[-1])
                if before is None or call is None or arg is None:
                    continue
                after = before[: arg[1] - call[1]] + f"len({name})" + before[arg[2] - call[1] :]
            edit = cell.replace_node(node, after)
            changes.append(f"`{before}` → `{after}`")
            if edit is not None:
                edits.append(edit)
            size = _size(resolve(seq, namespace))
            if size is not None:
                facts.append(f"`{name}` has {size} items, so its indices are 0 to {size - 1}")
        elif isinstance(node, ast.Subscript):
            seq = _len_of(node.slice)
            name = cell.segment(node.value) if seq is not None else None
            if seq is not None and name is not None and cell.segment(seq) == name:
                # X[len(X)] is one past the end: the last item is X[len(X) - 1].
                edit = cell.replace_node(node.slice, f"len({name}) - 1")
                if edit is not None:
                    edits.append(edit)
                    changes.append(f"`{name}[len({name})]` → `{name}[len({name}) - 1]`")
            elif (
                isinstance(node.slice, ast.BinOp)
                and isinstance(node.slice.op, ast.Add)
                and isinstance(node.slice.left, ast.Name)
                and isinstance(node.slice.right, ast.Constant)
                and node.slice.right.value == 1
                and node.slice.left.id in loops
            ):
                # for i in range(len(X)): ... X[i + 1] runs one past the end.
                loop = loops[node.slice.left.id]
                name = cell.segment(node.value)
                target = loop.args[-1] if isinstance(loop, ast.Call) and loop.args else None
                if name and target is not None and cell.segment(target) == f"len({name})":
                    edit = cell.replace_node(target, f"len({name}) - 1")
                    if edit is not None and edit not in edits:
                        edits.append(edit)
                        changes.append(f"`range(len({name}))` → `range(len({name}) - 1)`")
            elif not isinstance(node.slice, (ast.Constant, ast.Slice, ast.Tuple)) and (
                (size := _size(value := resolve(node.value, namespace))) is not None
                and isinstance(value, (list, tuple, str))
                and resolve(node.slice, namespace) == size > 0
            ):
                # X[n] where n is exactly len(X), whatever n is written as (``MONTHS[day.month]``):
                # used only if no rule above explains the failure (they may see the same index).
                name, index = cell.segment(node.value), cell.segment(node.slice)
                edit = cell.replace_node(node.slice, f"{index} - 1") if index else None
                if edit is not None and name:
                    fallback.append(
                        (edit, f"`{name}[{index}]` → `{name}[{index} - 1]`",
                         f"`{name}` has {size} items (indices 0 to {size - 1}), and `{index}` is {size}")
                    )
            elif isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
                value = resolve(node.value, namespace)
                size = _size(value) if value is not MISSING else None
                name = cell.segment(node.value)
                if size is not None and name and node.slice.value == size and size > 0:
                    edit = cell.replace_node(node.slice, str(size - 1))
                    if edit is not None:
                        edits.append(edit)
                        changes.append(f"`{name}[{size}]` → `{name}[{size - 1}]`")
                    facts.append(f"`{name}` has {size} items, so its last index is {size - 1} (or -1)")
    if not edits and fallback:
        edits, changes, facts = [fallback[0][0]], [fallback[0][1]], [fallback[0][2]]
    if not edits and not facts:
        return []
    text = "; ".join(dict.fromkeys(facts))
    if changes:
        text += (". " if text else "") + "The index goes one past the end: " + "; ".join(changes)
    return [hint("index", text + ".", fix=cell.edited(edits), change="; ".join(changes))]


# -- ValueError: shapes -------------------------------------------------------------------


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        return shape
    return None


def _transposed(cell: Cell, node: ast.AST) -> Edit | None:
    text = cell.segment(node)
    if text is None:
        return None
    simple = isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call))
    return cell.replace_node(node, f"{text}.T" if simple else f"({text}).T")


PRODUCTS = ("dot", "matmul")


def _products(cell: Cell) -> list[tuple[ast.AST, ast.AST]]:
    pairs: list[tuple[ast.AST, ast.AST]] = []
    for node in cell.nodes():
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            pairs.append((node.left, node.right))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PRODUCTS:
            if len(node.args) == 2:
                pairs.append((node.args[0], node.args[1]))
            elif len(node.args) == 1:
                pairs.append((node.func.value, node.args[0]))
    return pairs


def shape_error(failure: Failure) -> list[dict[str, Any]]:
    message = str(failure.exc)
    if not re.search(r"shape|dimension|broadcast|aligned", message, re.IGNORECASE):
        return []
    cell, namespace = failure.cell, failure.namespace
    out: list[dict[str, Any]] = []
    for left, right in _products(cell):
        a, b = _shape(resolve(left, namespace)), _shape(resolve(right, namespace))
        if a is None or b is None or len(a) != 2 or len(b) not in (1, 2) or a[-1] == b[0]:
            continue
        la, lb = cell.segment(left) or "A", cell.segment(right) or "B"
        options: list[tuple[str, Edit | None]] = []
        if len(b) == 2 and a[-1] == b[-1]:
            options.append((f"{lb}.T", _transposed(cell, right)))
        if a[0] == b[0]:
            options.append((f"{la}.T", _transposed(cell, left)))
        text = (
            f"`{la}` has shape {a} and `{lb}` has shape {b}: a matrix product needs the columns of "
            f"`{la}` ({a[-1]}) to equal the rows of `{lb}` ({b[0]})."
        )
        if options:
            text += " Transposing works: " + " or ".join(f"`{o}`" for o, _ in options) + "."
        one = options[0][1] if len(options) == 1 else None
        fix = cell.edited([one]) if one is not None else None
        out.append(hint("shape", text, candidates=[o for o, _ in options], fix=fix,
                        change=f"use {options[0][0]}" if options else None))
    if out:
        return out
    stacked = _stacking(failure) or _frame_shape(failure)
    if stacked:
        return stacked
    # Elementwise: a 2-D array and a 1-D one that matches its rows, not its columns.
    for node in cell.nodes():
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div))):
            continue
        a, b = _shape(resolve(node.left, namespace)), _shape(resolve(node.right, namespace))
        if a is None or b is None or a == b:
            continue
        for matrix, vector, vnode in ((a, b, node.right), (b, a, node.left)):
            if len(matrix) == 2 and len(vector) == 1 and vector[0] == matrix[0] != matrix[1]:
                name = cell.segment(vnode)
                fact = (
                    f"Shapes {a} and {b} do not broadcast: a 1-D array lines up with the last axis "
                    f"({matrix[1]}), but `{name}` has one value per row ({vector[0]}). "
                    f"Use `{name}.reshape(-1, 1)` to make it a column."
                )
                return [_as_column(cell, vnode, name, fact)]
    return out


def _as_column(cell: Cell, node: ast.AST, name: str | None, text: str) -> dict[str, Any]:
    """The hint that ``name`` (1-D, written as ``node``) be reshaped into a column."""
    new = f"{name}.reshape(-1, 1)"
    edit = cell.replace_node(node, new)  # None when ``name`` is: the node is not on one raw line
    fix = cell.edited([edit]) if edit else None
    return hint("shape", text, candidates=[new], fix=fix, change=f"`{name}` → `{new}`")


STACKS = ("hstack", "concatenate")


def _stacking(failure: Failure) -> list[dict[str, Any]]:
    """``np.hstack([ones((n, 1)), x])`` with a 1-D ``x``: the column it was meant to be."""
    dims = dict(re.findall(r"array at index (\d+) has (\d+) dimension", str(failure.exc)))
    if "1" not in dims.values() or "2" not in dims.values():
        return []
    cell = failure.cell
    for node in cell.nodes():
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in STACKS):
            continue
        if not node.args or not isinstance(node.args[0], (ast.List, ast.Tuple)):
            continue
        items = node.args[0].elts
        flat = [int(i) for i, d in dims.items() if d == "1" and int(i) < len(items)]
        if len(flat) != 1:
            continue
        item = items[flat[0]]
        shape = _shape(resolve(item, failure.namespace))
        name = cell.segment(item)
        if shape is None or len(shape) != 1 or name is None:
            continue
        fact = (
            f"`{name}` has shape {shape}: one dimension, where the others have two. "
            f"`{name}.reshape(-1, 1)` makes it a column of {shape[0]} rows."
        )
        return [_as_column(cell, item, name, fact)]
    return []


ARRAY_MAKERS = ("array", "asarray", "arange", "zeros", "ones", "full", "empty")


def _frame_shape(failure: Failure) -> list[dict[str, Any]]:
    """``pd.DataFrame(values, index=..., columns=...)`` where values hold the right number of
    cells in the wrong shape: pandas says both shapes, and ``.reshape`` is the fix."""
    found = re.search(r"Shape of passed values is \((\d+), (\d+)\), indices imply \((\d+), (\d+)\)", str(failure.exc))
    if found is None:
        return []
    rows, cols, want_rows, want_cols = (int(n) for n in found.groups())
    if rows * cols != want_rows * want_cols:
        return []
    cell = failure.cell
    for node in cell.nodes():
        if not (isinstance(node, ast.Call) and (dotted(node.func) or "").endswith("DataFrame") and node.args):
            continue
        data = node.args[0]
        text = cell.segment(data)
        maker = isinstance(data, ast.Call) and (dotted(data.func) or "").rsplit(".", 1)[-1] in ARRAY_MAKERS
        if text is None or not (maker or hasattr(resolve(data, failure.namespace), "reshape")):
            continue
        new = f"{text}.reshape({want_rows}, {want_cols})"
        edit = cell.replace_node(data, new)
        return [
            hint(
                "shape",
                f"The values have shape ({rows}, {cols}), but the index and columns make ({want_rows}, "
                f"{want_cols}): the same {rows * cols} cells in another shape. Use `{new}`.",
                candidates=[new],
                fix=cell.edited([edit]) if edit else None,
                change=f"`{text}` → `{new}`",
            )
        ]
    return []
