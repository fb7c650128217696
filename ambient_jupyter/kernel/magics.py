"""``%%ask`` and ``%ambient``."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ..history import normalize_notebook

__all__ = ["AmbientMagics"]

_USAGE = (
    "Usage: %ambient [model=SPEC] [quiet=on|off] [agent=off|ask|auto] [notebook=PATH]\n"
    "With no arguments, shows the current settings."
)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    msg = f"expected on or off, got {value!r}"
    raise ValueError(msg)


@magics_class
class AmbientMagics(Magics):
    def __init__(self, shell: Any, recorder: Any) -> None:
        super().__init__(shell)
        self.recorder = recorder

    @cell_magic
    def ask(self, line: str, cell: str) -> None:
        """Ask the assistant about this notebook; the answer streams into this cell.

        ``%%ask`` on its first line, the question below (or on the same line).
        """
        question = "\n".join(part for part in (line.strip(), cell.strip()) if part)
        if not question:
            print("Write your question after %%ask, e.g.  %%ask why is my plot empty?", file=sys.stderr)
            return
        recorder = self.recorder
        # Everything run so far must be in the history before the model reads it.
        recorder.writer.flush()
        host = recorder.ensure_host()

        def write(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        turn = host.ask(question, write)
        if turn.state == "error":
            print(f"ambient-jupyter: {turn.text}", file=sys.stderr)
        elif turn.state == "incomplete":
            print("\n[the reply was cut off]", file=sys.stderr)
        else:
            sys.stdout.write("\n")

    @line_magic
    def ambient(self, line: str) -> None:
        """Show or set the model, quiet mode, agent mode and notebook identity."""
        recorder = self.recorder
        settings = recorder.settings
        try:
            for item in shlex.split(line):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"{item!r} is not key=value")
                if key == "model":
                    settings.model = value
                    if recorder.host is not None:
                        recorder.host.assistant.set_model(value)
                elif key == "quiet":
                    settings.quiet = _flag(value)
                    if recorder.host is not None:
                        recorder.host.assistant.quiet = settings.quiet
                elif key == "agent":
                    settings.agent = value
                elif key == "notebook":
                    recorder.writer.flush()
                    recorder.notebook = normalize_notebook(value)
                else:
                    raise ValueError(f"unknown setting {key!r}")
        except Exception as exc:  # noqa: BLE001 (traitlets and our parser: one message for the user)
            print(f"ambient-jupyter: {exc}\n{_USAGE}", file=sys.stderr)
            return
        db = recorder.writer.history.path
        print(
            f"notebook: {recorder.notebook}\n"
            f"model:    {settings.model}\n"
            f"quiet:    {'on' if settings.quiet else 'off'}\n"
            f"agent:    {settings.agent}\n"
            f"history:  {db}"
        )
