"""``%%ask`` and ``%ambient``."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from .._trim import printable
from ..gate import AGENT_MODES
from ..history import normalize_notebook
from . import plugins_announce

__all__ = ["AmbientMagics"]

_USAGE = (
    "Usage: %ambient [model=SPEC] [expert=SPEC] [quiet=on|off] [agent=off|ask|auto] [notebook=PATH]\n"
    "With no arguments, shows the current settings."
)
_ASK_USAGE = "Usage: %%ask [--expert], then the question on the lines below"
NO_EXPERT = (
    "No expert model is set. Set one with %ambient expert=openai:<name> (or AMBIENT_EXPERT=openai:<name> "
    "before the kernel starts), plus OPENAI_BASE_URL and OPENAI_API_KEY."
)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    msg = f"expected on or off, got {value!r}"
    raise ValueError(msg)


def _say(text: str) -> None:
    print(f"ambient-jupyter: {printable(text)}", file=sys.stderr)


def _show_hints(recorder: Any) -> None:
    """The kernel's facts about the last failed cell, shown whatever the model will say."""
    history = recorder.writer.history
    last = history.read(recorder.notebook, max(0, history.last_seq(recorder.notebook) - 50))
    cell = next((e for e in reversed(last) if e.get("kind") == "cell_executed"), None)
    hints = (cell or {}).get("hints") or []
    if cell is None or cell.get("status") != "error" or not hints:
        return
    lines = [f"Checked in the kernel, about cell [{cell.get('execution_count')}]:"]
    for found in hints:
        lines.append(f"- {found.get('text')}")
        if found.get("change"):
            lines.append(f"  fix: {found['change']}")
    print(printable("\n".join(lines)) + "\n")


@magics_class
class AmbientMagics(Magics):
    def __init__(self, shell: Any, recorder: Any, hosting: Any) -> None:
        super().__init__(shell)
        self.recorder = recorder
        self.hosting = hosting

    @cell_magic
    def ask(self, line: str, cell: str) -> None:
        """Ask the assistant about this notebook; the answer streams into this cell.

        ``%%ask`` on its first line, the question below (IPython needs a cell body;
        words after ``%%ask`` are put before it). ``%%ask --expert`` hands the turn
        to the expert model. What the answer proposes is carried out as far as the
        notebook's agent mode allows (see :meth:`KernelHost.act`).
        """
        role = "watcher"
        words = line.split()
        while words and words[0].startswith("--"):
            option = words.pop(0)
            if option != "--expert":
                _say(f"unknown option {option}\n{_ASK_USAGE}")
                return
            role = "expert"
        question = "\n".join(part for part in (" ".join(words), cell.strip()) if part)
        if not question:
            _say("write your question after %%ask, e.g.  %%ask why is my plot empty?")
            return
        recorder = self.recorder
        host = self.hosting.ensure()
        if role == "expert" and not host.assistant.expert_spec:
            _say(NO_EXPERT)
            return
        # Everything run so far must be in the history before the model reads it, and
        # the objects the question names with it (this is the main thread: the
        # summary's time box works here).
        recorder.writer.flush()
        _show_hints(recorder)
        recorder.record_state(question)

        def write(piece: str) -> None:
            # A stream output is a terminal too: a carriage return or an escape sequence in
            # the model's words or code could overwrite what the person reads.
            sys.stdout.write(printable(piece))
            sys.stdout.flush()

        turn = host.ask(question, write, role=role)
        if turn.state == "error":
            _say(turn.text)
            return
        if turn.state == "incomplete":
            _say("the reply was cut off")
            return
        sys.stdout.write("\n")
        outcome = host.act(turn, recorder, write=lambda text: print(printable(text)))
        if outcome:
            print(printable(outcome))

    @line_magic
    def ambient(self, line: str) -> None:
        """Show or set the model, the expert, quiet mode, agent mode and notebook identity."""
        recorder = self.recorder
        settings = recorder.settings
        host = self.hosting.host
        try:
            for item in shlex.split(line):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"{item!r} is not key=value")
                if key in ("model", "expert"):
                    setattr(settings, key, value)
                    if host is not None:
                        host.assistant.set_model(value, role="watcher" if key == "model" else "expert")
                elif key == "quiet":
                    settings.quiet = _flag(value)
                    if host is not None:
                        host.assistant.quiet = settings.quiet
                elif key == "agent":
                    self._set_agent(value)
                elif key == "notebook":
                    self._set_notebook(value)
                else:
                    raise ValueError(f"unknown setting {key!r}")
        except Exception as exc:  # noqa: BLE001 (traitlets and our parser: one message for the user)
            _say(f"{exc}\n{_USAGE}")
            return
        history = recorder.writer.history
        agent = history.agent_mode(recorder.notebook, settings.agent)
        print(
            f"notebook: {recorder.notebook}\n"
            f"model:    {settings.model}\n"
            f"expert:   {settings.expert or 'none'}\n"
            f"agent:    {agent}\n"
            f"quiet:    {'on' if settings.quiet else 'off'}\n"
            f"history:  {history.path}"
        )

    def _set_agent(self, value: str) -> None:
        mode = value.strip().lower()
        if mode not in AGENT_MODES:
            raise ValueError(f"agent must be off, ask or auto, not {value!r}")
        recorder = self.recorder
        recorder.settings.agent = mode
        # The mode is the notebook's, for every host (the sidebar, a runner): an event,
        # recorded after what already ran; switching off expires what waits for approval.
        recorder.writer.flush()
        host = self.hosting.ensure()
        host.serve(host.acts.set_mode(mode, "magic"))

    def _set_notebook(self, value: str) -> None:
        recorder = self.recorder
        recorder.writer.flush()
        recorder.notebook = normalize_notebook(value)
        # The host's transcript belongs to the old notebook: start a new one on demand.
        self.hosting.reset()
        plugins_announce(recorder)
