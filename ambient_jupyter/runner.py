"""The headless host: run a notebook with nbclient, record it, let the assistant speak.

The kernel records its own cells (the extension is loaded with ``--ext``, so the
notebook needs no ``%load_ext``); this process hosts the assistant, reads failures
back from the shared history and streams the diagnosis to the terminal.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from tqdm import tqdm

from .assistant import Assistant
from .history import History, normalize_notebook

__all__ = ["RunResult", "run_notebook"]

EXPECTED_ERROR_TAG = "raises-exception"
"""nbclient's tag for cells that are meant to fail; they do not fail the run."""


class RunResult:
    def __init__(self, output: Path, cells: int, errors: list[int], seconds: float, notebook: str) -> None:
        self.output = output
        self.cells = cells
        self.errors = errors
        """Indices of cells that failed unexpectedly."""
        self.seconds = seconds
        self.notebook = notebook

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


class _Terminal:
    """Writes the assistant's words between progress-bar updates."""

    def __init__(self, bar: tqdm, out: TextIO) -> None:
        self.bar = bar
        self.out = out
        self._open = False

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


async def _wait_for_cell_event(
    history: History, notebook: str, execution_count: int | None, after: int, timeout: float = 10.0
) -> dict[str, Any] | None:
    """The kernel commits on its own thread; poll until this cell's event is in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await asyncio.to_thread(history.read, notebook, after):
            if event.get("kind") == "cell_executed" and event.get("execution_count") == execution_count:
                return event
        await asyncio.sleep(0.01)
    return None


async def async_run_notebook(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str = "auto",
    agent: str = "ask",
    quiet: bool = False,
    allow_errors: bool = False,
    timeout: int | None = None,
    kernel_name: str | None = None,
    out: TextIO | None = None,
    progress: bool = True,
) -> RunResult:
    """Execute ``path`` and write the executed notebook; see ``ambient-jupyter run``."""
    out = out or sys.stdout
    source = Path(path)
    nb = nbformat.read(source, as_version=4)
    target = Path(output) if output else source.with_name(f"{source.stem}.run.ipynb")
    notebook = normalize_notebook(str(source))
    history = History()

    env = dict(os.environ)
    env.update(
        AMBIENT_NOTEBOOK=notebook,
        AMBIENT_HOST="runner",
        AMBIENT_DB=str(history.path),
        AMBIENT_MODEL=model,
        AMBIENT_AGENT=agent,
        AMBIENT_QUIET="1" if quiet else "0",
    )
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    bar = tqdm(total=len(code_cells), unit="cell", desc=source.name, file=sys.stderr, disable=not progress)
    terminal = _Terminal(bar, out)
    assistant = Assistant(history, notebook, model, quiet=quiet, on_token=terminal.token)
    start_seq = history.last_seq(notebook)
    failed: list[int] = []

    async def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        bar.update(1)
        content = execute_reply.get("content", {})
        if content.get("status") != "error":
            return
        if EXPECTED_ERROR_TAG not in cell.get("metadata", {}).get("tags", []):
            failed.append(cell_index)
        event = await _wait_for_cell_event(history, notebook, content.get("execution_count"), start_seq)
        if event is not None and assistant.should_react(event):
            try:
                await assistant.react(event)
            finally:
                terminal.end()

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3"),
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(source.parent.resolve())}},
        extra_arguments=["--ext=ambient_jupyter"],
        on_cell_executed=on_cell_executed,
    )
    started = time.monotonic()
    try:
        await client.async_execute(env=env)
    except CellExecutionError:
        pass  # recorded in `failed` by the hook; the notebook keeps the traceback
    except DeadKernelError as exc:
        out.write(f"\nambient-jupyter: the kernel died: {exc}\n")
        failed.append(-1)
    finally:
        bar.close()
        nbformat.write(nb, target)
        history.close()
    return RunResult(target, len(code_cells), failed, time.monotonic() - started, notebook)


def run_notebook(*args: Any, **kwargs: Any) -> RunResult:
    """Sync twin of :func:`async_run_notebook`."""
    return asyncio.run(async_run_notebook(*args, **kwargs))
