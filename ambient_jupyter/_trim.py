"""Bounded text: keep a head and a tail, and say how much was cut.

Used twice with different budgets: at capture (what the history stores) and when
the prompt is built (what the model reads). Also text made safe for a terminal, and
code, diffs and hints as the terminal shows them.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

__all__ = [
    "clean_text",
    "code_for_terminal",
    "hints_for_terminal",
    "printable",
    "readable",
    "strip_ansi",
    "trim_marker",
    "trim_text",
]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def clean_text(text: str) -> str:
    """Make any string safe to store and print: no lone surrogates, no NULs."""
    if not text.isascii():
        # Lone surrogates (from undecodable bytes) become visible escapes, not errors.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def printable(text: str) -> str:
    """``text`` safe for a terminal: control, format and bidi characters shown as escapes.

    Keeps newlines and tabs. Text that names the person's data (a column, a key, a
    file) or comes from a model must not move the cursor, erase a line or reorder
    what is shown (``ESC[2K``, ``U+202E``).
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in "\n\t" or char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def code_for_terminal(code: str, diff: list[list[str]] | None = None) -> str:
    """Code as a person reviews it in a terminal: ``diff`` (old against new) if given,
    else every line of ``code``, each behind a gutter."""
    if diff:
        return "\n".join(f"    {op if op != ' ' else '|'} {line}" for op, line in diff)
    return textwrap.indent(code.rstrip("\n"), "    | ", lambda _line: True)


def hints_for_terminal(hints: Any, indent: str) -> list[str]:
    """The kernel's findings on a failed cell (``cell_executed.hints``), a line each, with their fixes."""
    lines = []
    for found in hints or []:
        if isinstance(found, dict) and found.get("text"):
            change = found.get("change")
            lines.append(f"{indent}hint: {found['text']}" + (f"\n{indent}fix:  {change}" if change else ""))
    return lines


def trim_marker(total_chars: int) -> str:
    return f"\n[... trimmed by ambient-jupyter: original size {total_chars:,} chars ...]\n"


def trim_text(text: str, limit: int, *, total_chars: int | None = None) -> str:
    """``text`` if it fits in ``limit`` chars, else its head and tail around a marker.

    ``total_chars``: the size ``text`` had before an earlier trim (the marker gives it).
    """
    if len(text) <= limit:
        return text
    half = max(1, limit // 2)
    return text[:half] + trim_marker(max(len(text), total_chars or 0)) + text[-half:]


def readable(text: str, limit: int) -> str:
    """``text`` as a reader of the record should get it: no colour codes, safe, trimmed."""
    return trim_text(clean_text(strip_ansi(text)), limit)


VALUE_LIMIT = 2000
"""Characters kept of a value (a widget trait, a plugin action's result); binary buffers are only measured."""


def json_safe(value: Any) -> Any:
    """A JSON-serialisable, bounded version of a trait value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"binary_bytes": memoryview(value).nbytes}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        # Undecodable bytes (lone surrogates) would break every UTF-8 consumer: the
        # history's readers, the WebSocket, the model's prompt. Colour codes are noise.
        return readable(value, VALUE_LIMIT)
    try:
        text = json.dumps(value, default=_json_default)
    except (TypeError, ValueError):
        return trim_text(repr(value), VALUE_LIMIT)
    if len(text) > VALUE_LIMIT:
        return trim_text(text, VALUE_LIMIT)
    return _clean_strings(json.loads(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return json_safe(value)
    model_id = getattr(value, "model_id", None)
    if isinstance(model_id, str):
        # A widget inside a value (a Box's children): its name, not its repr, which for
        # an Image holds the whole picture's bytes.
        return f"<{type(value).__name__} {model_id[:8]}>"
    return trim_text(repr(value), 200)


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(strip_ansi(value))
    if isinstance(value, list):
        return [_clean_strings(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): _clean_strings(v) for k, v in value.items()}
    return value
