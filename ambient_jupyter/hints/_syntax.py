"""Syntax and indentation errors: the smallest edit near the reported line that makes the cell parse.

Python's message says what is wrong (``'(' was never closed``, ``expected ':'``,
``expected an indented block``); each message maps to a few one-place edits, and an
edit is offered only if the whole cell then parses.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from typing import Any

from ._base import Failure, hint

__all__ = ["syntax_error"]

CLOSERS = {"(": ")", "[": "]", "{": "}"}
BLOCK = re.compile(r"^\s*(if|elif|else|for|while|def|class|try|except|finally|with|async\s+(def|for|with))\b")
LOOKAHEAD = 6
"""Lines after the reported one that an edit may touch (a bracket is often closed later)."""


def _code_end(line: str) -> int:
    """Where the code of ``line`` ends: before a trailing comment and spaces."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type == tokenize.COMMENT:
                return len(line[: token.start[1]].rstrip())
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return len(line.rstrip())


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _with_line(lines: list[str], index: int, new: str) -> str:
    return "\n".join([*lines[:index], new, *lines[index + 1 :]])


def _append_at(lines: list[str], index: int, text: str) -> str:
    line = lines[index]
    end = _code_end(line)
    return _with_line(lines, index, line[:end] + text + line[end:])


def _tries(exc: SyntaxError, lines: list[str]) -> Iterator[tuple[str, str, str]]:
    """``(new code, what changed, the character or word a person needs)``, likeliest first."""
    msg = exc.msg or ""
    row = (exc.lineno or 1) - 1
    col = (exc.offset or 1) - 1
    if not 0 <= row < len(lines):
        return
    last = min(len(lines), row + LOOKAHEAD)
    never = re.match(r"'([(\[{])' was never closed", msg)
    if never:
        closer = CLOSERS[never.group(1)]
        for i in range(row, last):
            if lines[i].strip():
                yield _append_at(lines, i, closer), f"added `{closer}` at the end of line {i + 1}", closer
        return
    unmatched = re.match(r"unmatched '([)\]}])'", msg)
    if unmatched and lines[row][col : col + 1] == unmatched.group(1):
        char = unmatched.group(1)
        yield _with_line(lines, row, lines[row][:col] + lines[row][col + 1 :]), f"removed the extra `{char}`", char
        return
    mismatch = re.match(r"closing parenthesis '([)\]}])' does not match opening parenthesis '([(\[{])'", msg)
    if mismatch and lines[row][col : col + 1] == mismatch.group(1):
        right = CLOSERS[mismatch.group(2)]
        line = lines[row]
        yield _with_line(lines, row, line[:col] + right + line[col + 1 :]), f"`{mismatch.group(1)}` → `{right}`", right
        yield _with_line(lines, row, line[:col] + right + line[col:]), f"added `{right}` on line {row + 1}", right
        return
    if msg.startswith("unterminated string literal"):
        quote = next((c for c in lines[row][col:] if c in "'\""), None)
        if quote:
            yield _with_line(lines, row, lines[row].rstrip() + quote), f"closed the string on line {row + 1}", quote
        return
    expected_block = re.match(r"expected an indented block after .* on line (\d+)", msg)
    if expected_block:
        head = int(expected_block.group(1)) - 1
        step = _indent(lines[head]) + "    " if 0 <= head < len(lines) else "    "
        for k in range(1, last - row + 1):
            body = [step + line.lstrip() if line.strip() else line for line in lines[row : row + k]]
            yield "\n".join([*lines[:row], *body, *lines[row + k :]]), f"indented line {row + 1}" + (
                f" to {row + k}" if k > 1 else ""
            ), "indent"
        return
    if msg == "unexpected indent":
        previous = next((lines[i] for i in range(row - 1, -1, -1) if lines[i].strip()), "")
        level = _indent(previous) if not previous.rstrip().endswith(":") else _indent(previous) + "    "
        extra = len(_indent(lines[row])) - len(level)
        for k in range(1, last - row + 1):
            block = lines[row : row + k]
            if any(line.strip() and len(_indent(line)) < len(_indent(lines[row])) for line in block):
                break
            body = [line[extra:] if line.strip() else line for line in block]
            yield "\n".join([*lines[:row], *body, *lines[row + k :]]), f"unindented line {row + 1}" + (
                f" to {row + k}" if k > 1 else ""
            ), "indent"
        return
    if msg.startswith("unindent does not match"):
        mine = len(_indent(lines[row]))
        # The nearest level first (the person was a space or two off), the deeper on a tie.
        levels = sorted({len(_indent(x)) for x in lines[:row] if x.strip()}, key=lambda n: (abs(n - mine), -n))
        for width in (n for n in levels if n != mine):
            yield _with_line(lines, row, " " * width + lines[row].lstrip()), f"re-indented line {row + 1}", "indent"
        return
    # "expected ':'", "invalid syntax" on a block statement: the colon is missing.
    targets = [row] if msg == "expected ':'" else [i for i in (row, row - 1) if 0 <= i < len(lines)]
    for i in targets:
        if BLOCK.match(lines[i]) and not lines[i][: _code_end(lines[i])].endswith(":"):
            yield _append_at(lines, i, ":"), f"added `:` at the end of line {i + 1}", ":"
    # Otherwise: a bracket left open, a line or two up.
    for i in range(row, max(-1, row - 3), -1):
        for closer in ")]}":
            yield _append_at(lines, i, closer), f"added `{closer}` at the end of line {i + 1}", closer


def syntax_error(failure: Failure) -> list[dict[str, Any]]:
    exc = failure.exc
    if not isinstance(exc, SyntaxError):
        return []
    cell = failure.cell
    kind = "indentation" if isinstance(exc, IndentationError) else "syntax"
    where = f"Line {exc.lineno}: " if exc.lineno else ""
    for code, change, needed in _tries(exc, cell.lines):
        fix = cell.candidate(code)
        if fix is not None:
            return [
                hint(kind, f"{where}{exc.msg}. Fix: {change}" + ("." if needed == "indent" else f" (`{needed}`)."),
                     candidates=[needed], fix=fix, change=change)
            ]
    return [hint(kind, f"{where}{exc.msg}.")]
