"""The headless host: run a notebook cell by cell, record it, let the assistant speak and fix.

The kernel records its own cells (the extension is loaded with ``--ext``, so the
notebook needs no ``%load_ext``); this process hosts the assistant, reads failures
back from the shared history and streams the assistant's words to the terminal.
With ``--agent ask|auto`` a failing cell gets a fix proposed, decided and run as a
new cell below it (``headless_agent.py``); with ``--agent off`` it gets a diagnosis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import nbformat
from tqdm import tqdm

from ._trim import code_for_terminal, hints_for_terminal, printable
from .act import ActEngine
from .assistant import Assistant
from .cell_driver import CellDriver, CellOutcome, wait_for_cell_event
from .config import AmbientSettings
from .events import KernelDied
from .headless_agent import FixLimits, HeadlessAgent
from .history import History, normalize_notebook

__all__ = ["RunResult", "async_run_notebook", "run_notebook"]

EXPECTED_ERROR_TAG = "raises-exception"
"""nbclient's tag for cells that are meant to fail; they do not fail the run."""
INTERRUPTED = 130
"""The exit code of a run stopped with Ctrl-C (128 + SIGINT), as shells use."""


@dataclasses.dataclass
class RunResult:
    """What a run did; ``exit_code`` is what ``ambient-jupyter run`` exits with."""

    output: Path
    cells: int
    """Code cells that ran (the agent's included)."""
    errors: list[int]
    """Indices of cells that failed unexpectedly and were not fixed (-1: the kernel was lost)."""
    seconds: float
    notebook: str
    fixed: list[int] = dataclasses.field(default_factory=list)
    """Indices of cells that failed and were fixed by a cell the agent added."""
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return INTERRUPTED
        return 1 if self.errors else 0


class _Terminal:
    """The person running the notebook: the assistant's words, progress lines, the approval prompt."""

    def __init__(self, bar: tqdm, out: TextIO) -> None:
        self.bar = bar
        self.out = out
        self._open = False
        self._answer: asyncio.Future[str | None] | None = None

    def token(self, _reply_id: str, text: str) -> None:
        if not self._open:
            self.bar.clear()
            self.out.write("\nambient> ")
            self._open = True
        self.out.write(text)
        self.out.flush()

    def end(self) -> None:
        if self._open:
            self.out.write("\n\n")
            self.out.flush()
            self._open = False
            self.bar.refresh()

    def say(self, text: str) -> None:
        self.end()
        self.bar.write(f"ambient-jupyter: {text}", file=sys.stderr)

    def stored(self, event: dict[str, Any]) -> None:
        """An event the assistant stored. The person is told when the expert wrote a turn:
        its words stream like the watcher's, and its model may send the notebook elsewhere."""
        if event.get("kind") == "assistant_message" and event.get("role") == "expert":
            self.say(f"the expert ({event.get('model')}) took this turn")

    def cell_added(self) -> None:
        self.bar.total = (self.bar.total or 0) + 1
        self.bar.refresh()

    def cell_done(self) -> None:
        self.bar.update(1)

    def show(self, header: str, code: str, diff: list[list[str]] | None = None, question: str = "") -> None:
        """Show ``code`` (as ``diff`` against what it fixes, if given), then ``question`` on the same line."""
        self.end()
        self.bar.clear()
        shown = code_for_terminal(code, diff)
        self.out.write(f"\nambient-jupyter: {printable(header)}\n{printable(shown)}\n{question}")
        self.out.flush()
        if not question:
            self.bar.refresh()  # (after a question, once it is answered)

    def hints(self, event: dict[str, Any]) -> None:
        """The kernel's findings on a failed cell, shown whatever the model says."""
        lines = hints_for_terminal(event.get("hints"), "  ")
        if lines:
            self.end()
        for line in lines:
            self.bar.write(printable(line), file=sys.stderr)

    async def confirm(self, header: str, code: str, diff: list[list[str]] | None = None) -> bool | None:
        self.show(header, code, diff, question="Run this cell? [y/N] ")
        loop = asyncio.get_running_loop()
        self._answer = answer = loop.create_future()

        def read() -> None:
            try:
                line: str | None = sys.stdin.readline()
            except (OSError, ValueError):
                line = ""
            # The run may have stopped (and its loop closed) while we waited for the person.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, answer, line)

        # A daemon thread, not the default executor: a run stopped at the prompt must
        # not wait at exit for a line nobody will type.
        threading.Thread(target=read, name="ambient-prompt", daemon=True).start()
        line = await answer
        self._answer = None
        self.bar.refresh()
        if line is None:
            return None
        return line.strip().lower() in ("y", "yes")

    def cancel_prompt(self) -> None:
        if self._answer is not None:
            _settle(self._answer, None)


def _settle(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


@dataclasses.dataclass(eq=False)
class _Run:
    """One run of one notebook: the cell loop, failures, Ctrl-C."""

    nb: nbformat.NotebookNode
    driver: CellDriver
    assistant: Assistant
    terminal: _Terminal
    allow_errors: bool
    timeout: float | None
    quiet: bool
    agent: HeadlessAgent | None
    ran: int = 0
    errors: list[int] = dataclasses.field(default_factory=list)
    fixed: list[int] = dataclasses.field(default_factory=list)
    stop_requested: bool = False
    _main: asyncio.Task[Any] | None = dataclasses.field(default=None, init=False)

    # -- Ctrl-C -------------------------------------------------------------------

    def install_sigint(self) -> None:
        """Ctrl-C stops the run: the reply being written, the prompt, the running cell."""
        self._main = asyncio.current_task()
        # Replaces nbclient's handler, which would shut the kernel down under the running cell.
        with contextlib.suppress(RuntimeError, NotImplementedError):  # not the main thread / not POSIX
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_sigint)

    def _on_sigint(self) -> None:
        if self.stop_requested:
            self.terminal.say("stopping now")
            if self._main is not None:
                self._main.cancel()
            return
        self.stop_requested = True
        self.terminal.say("interrupted (Ctrl-C): stopping; press Ctrl-C again to quit at once")
        self.assistant.stop()
        self.terminal.cancel_prompt()
        self.driver.interrupt()

    # -- the loop -------------------------------------------------------------------

    async def cells(self) -> None:
        # The written notebook shows this run only: a cell the run never reaches (an
        # early stop) must not keep the outputs the source file had. As nbclient does
        # for a cell it runs; an empty cell or one tagged skip-execution keeps its own.
        for cell in self.nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if cell.cell_type == "code" and cell.source.strip() and "skip-execution" not in tags:
                cell.outputs = []
                cell.execution_count = None
        index = 0
        while index < len(self.nb.cells) and not self.stop_requested:
            cell = self.nb.cells[index]
            if cell.cell_type != "code":
                index += 1
                continue
            before = await asyncio.to_thread(self.assistant.history.last_seq, self.assistant.notebook)
            outcome = await self.driver.execute(index, timeout=self.timeout)
            self.terminal.cell_done()
            if outcome.status != "skipped":
                self.ran += 1
            following = await self._after(index, cell, outcome, before)
            if following is None:
                return
            index = following

    async def _after(self, index: int, cell: Any, outcome: CellOutcome, before: int) -> int | None:
        """The index of the next cell to run, or None to stop here."""
        say = self.terminal.say
        label = f"cell [{outcome.execution_count}]"
        if outcome.status in ("ok", "skipped"):
            return index + 1
        if outcome.status == "dead":
            say(f"the kernel died while running cell {index + 1}; the run stops here (nothing is re-run)")
            self.errors.append(index)
            # The kernel cannot record its own death: the record and the written cell say it.
            await self.assistant.record(
                KernelDied(code=str(cell.source), cell_index=index, by="runner"), self.driver.death_key
            )
            cell.outputs = [
                nbformat.v4.new_output(
                    "error",
                    ename="DeadKernelError",
                    evalue="the kernel died while running this cell (ambient-jupyter run)",
                    traceback=[],
                )
            ]
            return None
        if outcome.status == "stuck":
            say(f"cell {index + 1} did not stop when interrupted; the run stops here")
            self.errors.append(index)
            return None
        if outcome.status == "interrupted":
            return None
        if outcome.status == "timeout":
            say(f"{label} timed out after {self.timeout:g} s and was interrupted (see --timeout)")
            return self._failed(index)
        expected = EXPECTED_ERROR_TAG in cell.get("metadata", {}).get("tags", [])
        event = None
        if not self.stop_requested:
            event = await wait_for_cell_event(
                self.assistant.history, self.assistant.notebook, outcome.execution_count, before
            )
        if event is not None and not expected:
            # The kernel's findings reach the person even if the model adds nothing.
            say(f"{label} failed: {outcome.ename}: {outcome.evalue}")
            self.terminal.hints(event)
        if self.agent is None or expected or self.quiet:
            if event is not None and self.assistant.should_react(event) and not self.stop_requested:
                # An expected failure (or --agent off) gets words only: a proposal here would
                # wait for a decision that nobody in a headless run is asked for.
                try:
                    await self.assistant.react(event, actions=("explain",))
                finally:
                    self.terminal.end()
            return index + 1 if expected else self._failed(index)
        # (Once a stop is requested, the cell loop ends whatever index comes back.)
        if event is None:
            if not self.stop_requested:
                say(f"{label} failed, but its failure is not in the history, so the agent cannot see it")
            return self._failed(index)
        result = await self.agent.fix(index, event)
        self.ran += result.inserted
        if result.fixed:
            self.fixed.append(index)
            return index + 1 + result.inserted
        following = self._failed(index, after=result.inserted)
        return None if result.kernel_lost else following

    def _failed(self, index: int, after: int = 0) -> int | None:
        """Count cell ``index`` as failed; the next cell to run (past ``after`` fix cells), or None to stop."""
        self.errors.append(index)
        return index + 1 + after if self.allow_errors else None


async def async_run_notebook(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    settings: AmbientSettings | None = None,
    allow_errors: bool = False,
    timeout: float | None = None,
    kernel_name: str | None = None,
    out: TextIO | None = None,
    progress: bool = True,
    agent_timeout: float | None = 120.0,
    max_fix_attempts: int = 2,
    max_fixes: int = 5,
    person_present: bool | None = None,
) -> RunResult:
    """Execute ``path`` and write the executed notebook; see ``ambient-jupyter run``.

    Parameters
    ----------
    path, output
        The notebook, and where to write the executed copy (default ``NAME.run.ipynb``).
    settings
        The assistant's settings (default: from the environment). Its ``agent`` is
        ``off`` (failures are explained), ``ask`` (a fix runs once the person at the
        terminal approves it; with no terminal nothing runs) or ``auto``; ``quiet``:
        the model is not consulted on failures at all; ``expert``: the model the
        watcher hands a turn to after two invalid actions. The kernel gets the same
        settings (through its environment), for ``%%ask`` in the notebook.
    allow_errors
        Keep going after a cell that fails (and is not fixed).
    timeout, agent_timeout
        Seconds a notebook cell, and a cell the agent added, may run before the kernel
        is interrupted (None: no limit).
    max_fix_attempts, max_fixes
        Fix attempts per failing cell, and in the whole run.
    person_present
        Whether someone can approve at the terminal (default: stdin and ``out`` are TTYs).
    """
    out = out or sys.stdout
    source = Path(path)
    nb = nbformat.read(source, as_version=4)
    target = Path(output) if output else source.with_name(f"{source.stem}.run.ipynb")
    notebook = normalize_notebook(str(source))
    settings = settings if settings is not None else AmbientSettings()
    agent, quiet = settings.agent, settings.quiet
    history = History(redact=settings.redact)
    if person_present is None:
        person_present = sys.stdin.isatty() and out.isatty()

    env = dict(os.environ, **settings.environ())
    env.update(AMBIENT_NOTEBOOK=notebook, AMBIENT_HOST="runner", AMBIENT_DB=str(history.path))
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    bar = tqdm(total=code_cells, unit="cell", desc=source.name, file=sys.stderr, disable=not progress)
    terminal = _Terminal(bar, out)
    assistant = Assistant.from_settings(history, notebook, settings, on_token=terminal.token, on_event=terminal.stored)
    driver = CellDriver(
        nb,
        kernel_name=kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3"),
        cwd=str(source.parent.resolve()),
    )
    # This run's mode (its flag, else $AMBIENT_AGENT, else ask) governs this run: a mode
    # an earlier session left in the history (auto, set in the sidebar) must not outrank
    # it. It is recorded, so every reader of the history sees which mode was in force.
    if await asyncio.to_thread(history.agent_mode, notebook, agent) != agent:
        await ActEngine(assistant).set_mode(agent, "runner")
    fixer = None
    if agent in ("ask", "auto"):
        fixer = HeadlessAgent(
            assistant,
            driver,
            limits=FixLimits(max_fix_attempts, max_fixes, agent_timeout),
            person_present=person_present,
            console=terminal,
            stopped=lambda: run.stop_requested,
        )
    run = _Run(nb, driver, assistant, terminal, allow_errors=allow_errors, timeout=timeout, quiet=quiet, agent=fixer)
    if quiet and agent == "auto":
        terminal.say("--quiet: failures are not shown to the model, so the agent will fix nothing")
    started = time.monotonic()
    # The model loads while the kernel starts and the first cells run, not at the first failure.
    loading = asyncio.ensure_future(assistant.load()) if not quiet or fixer is not None else None
    try:
        async with driver.kernel(env):
            run.install_sigint()
            await run.cells()
    except asyncio.CancelledError:
        if not run.stop_requested:
            raise
        # A second Ctrl-C: the kernel is shut down on the way out; write what ran.
    finally:
        if loading is not None:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
        bar.close()
        nbformat.write(nb, target)
        history.close()
    if run.stop_requested:
        terminal.say("stopped by Ctrl-C; nothing else was proposed or run")
    return RunResult(
        target,
        run.ran,
        run.errors,
        time.monotonic() - started,
        notebook,
        fixed=run.fixed,
        interrupted=run.stop_requested,
    )


def run_notebook(*args: Any, **kwargs: Any) -> RunResult:
    """Sync twin of :func:`async_run_notebook`."""
    return asyncio.run(async_run_notebook(*args, **kwargs))
