"""The failing cell's source: its AST, and minimal edits of its text.

Edits are made on the cell as the person wrote it (magics and all). The AST comes
from the IPython-transformed source, whose lines equal the raw ones except where a
magic was rewritten; an edit is only made on a line that the transform left alone,
so positions from the AST are positions in the person's text.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator

from ..code_check import parse_problem, python_source, same_code

__all__ = ["Cell", "Edit"]


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` of (1-based) ``line`` with ``new``; columns are characters."""

    line: int
    start: int
    end: int
    new: str


class Cell:
    """One cell's code, parsed once."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.lines = code.split("\n")
        self.tree: ast.Module | None = None
        self._python_lines: list[str] = []
        try:
            python = python_source(code)
            self.tree = ast.parse(python)
            self._python_lines = python.split("\n")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.tree = None

    # -- walking ------------------------------------------------------------------

    def nodes(self) -> Iterator[ast.AST]:
        if self.tree is not None:
            yield from ast.walk(self.tree)

    def names(self, ctx: type[ast.expr_context]) -> list[str]:
        """The names the cell loads (``ast.Load``) or binds (``ast.Store``), in walk order."""
        return [n.id for n in self.nodes() if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)]

    def line_is_raw(self, lineno: int) -> bool:
        """True if AST positions on ``lineno`` are positions in the person's text."""
        i = lineno - 1
        return 0 <= i < len(self.lines) and i < len(self._python_lines) and self.lines[i] == self._python_lines[i]

    def column(self, lineno: int, col_bytes: int) -> int:
        """A character column from the AST's UTF-8 byte offset."""
        line = self.lines[lineno - 1]
        return len(line.encode("utf-8")[:col_bytes].decode("utf-8", "replace"))

    def segment(self, node: ast.AST) -> str | None:
        """The source text of a one-line node, as written."""
        span = self.span(node)
        if span is None:
            return None
        line, start, end = span
        return self.lines[line - 1][start:end]

    def span(self, node: ast.AST) -> tuple[int, int, int] | None:
        """``(line, start, end)`` in characters for a node that sits on one raw line."""
        lineno = getattr(node, "lineno", None)
        end_lineno = getattr(node, "end_lineno", None)
        if lineno is None or end_lineno != lineno or not self.line_is_raw(lineno):
            return None
        start = self.column(lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.column(lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return lineno, start, end

    def attr_span(self, node: ast.Attribute) -> tuple[int, int, int] | None:
        """Where ``node.attr`` is written: the end of the node, even in a chain over several lines."""
        line = getattr(node, "end_lineno", None)
        if line is None or not self.line_is_raw(line):
            return None
        end = self.column(line, node.end_col_offset)  # type: ignore[arg-type]
        start = end - len(node.attr)
        return (line, start, end) if self.lines[line - 1][start:end] == node.attr else None

    def replace_node(self, node: ast.AST, new: str) -> Edit | None:
        span = self.span(node)
        return None if span is None else Edit(*span, new)

    # -- editing ------------------------------------------------------------------

    def apply(self, edits: list[Edit]) -> str:
        """The code with ``edits`` made (they must not overlap)."""
        lines = list(self.lines)
        for edit in sorted(edits, key=lambda e: (e.line, e.start), reverse=True):
            text = lines[edit.line - 1]
            lines[edit.line - 1] = text[: edit.start] + edit.new + text[edit.end :]
        return "\n".join(lines)

    def candidate(self, new_code: str) -> str | None:
        """``new_code`` if it is a usable fix of this cell: it parses and it is not the same code."""
        if same_code(new_code, self.code) or parse_problem(new_code) is not None:
            return None
        return new_code

    def edited(self, edits: list[Edit]) -> str | None:
        return self.candidate(self.apply(edits)) if edits else None

    def prepend(self, lines: str) -> str | None:
        """Put ``lines`` in front of the cell (after leading comments and ``from __future__``)."""
        body = list(self.lines)
        at = 0
        while at < len(body) and (body[at].startswith("#") or body[at].startswith("from __future__")):
            at += 1
        new = body[:at] + lines.rstrip("\n").split("\n") + body[at:]
        return self.candidate("\n".join(new))


def literal(value: str, written: str | None) -> str:
    """``value`` as a string literal, in the quote style of ``written`` where that is safe."""
    quote = written[0] if written and written[0] in "'\"" and not written.startswith(written[0] * 3) else "'"
    if quote in value or "\\" in value or "\n" in value or not value.isprintable():
        return repr(value)
    return f"{quote}{value}{quote}"
