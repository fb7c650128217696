"""One kernel, driven cell by cell, for ``ambient-jupyter run`` (nbclient underneath).

nbclient's ``execute()`` runs a notebook from start to end. The runner needs more:
to stop between cells (so the agent can insert one), to give agent cells their own
time limit, and to interrupt a cell (on a timeout or Ctrl-C) while still collecting
its last outputs into that same cell, so nothing stale lands in the next one. So it
drives nbclient one cell at a time, and does its own timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from queue import Empty
from typing import Any, Literal, cast

from jupyter_core.utils import ensure_async
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .events import death_key as key_of_death
from .history import History

__all__ = ["INTERRUPT_GRACE", "CellDriver", "CellOutcome", "wait_for_cell_event"]

INTERRUPT_GRACE = 10.0
"""Seconds an interrupted cell gets to stop before the kernel is given up on."""

Status = Literal["ok", "error", "timeout", "interrupted", "dead", "stuck", "skipped"]


@dataclasses.dataclass(frozen=True)
class CellOutcome:
    """How one cell execution ended.

    ``timeout`` and ``interrupted`` cells were interrupted and then replied (their
    last outputs are in the cell); ``dead`` means the kernel died while the cell
    ran; ``stuck`` that it did not stop within :data:`INTERRUPT_GRACE` of an
    interrupt; ``skipped`` that there was nothing to run.
    """

    status: Status
    execution_count: int | None = None
    ename: str = ""
    evalue: str = ""

    @property
    def replied(self) -> bool:
        """The kernel answered: the cell is recorded in the history."""
        return self.status in ("ok", "error", "timeout", "interrupted")

    @property
    def kernel_lost(self) -> bool:
        """No further cell can run in this kernel."""
        return self.status in ("dead", "stuck")


class CellDriver:
    """Runs the cells of ``nb`` one at a time in one kernel with the extension loaded.

    Executed cells get their outputs in place in ``nb``; :meth:`insert` adds cells to it.
    """

    def __init__(self, nb: NotebookNode, *, kernel_name: str, cwd: str) -> None:
        self.nb = nb
        # Errors are the runner's to judge (tags, the agent): nbclient never raises them.
        self.client = NotebookClient(
            nb,
            timeout=None,
            kernel_name=kernel_name,
            allow_errors=True,
            resources={"metadata": {"path": cwd}},
            extra_arguments=["--ext=ambient_jupyter"],
            on_cell_executed=self._on_cell_executed,
        )
        self._reply: dict[str, Any] | None = None
        self._running: asyncio.Future[Any] | None = None
        self._interrupted = False
        self._pending: set[asyncio.Future[Any]] = set()
        self.death_key: str | None = None
        """The key this kernel's death is stored under (the next kernel may notice it too)."""

    @contextlib.asynccontextmanager
    async def kernel(self, env: dict[str, str]) -> AsyncIterator[CellDriver]:
        """Start the kernel (shut down on exit), as nbclient's ``execute`` would."""
        with _private_transport(self.client):
            async with self.client.async_setup_kernel(env=env):
                assert self.client.kc is not None
                _poll_in_slices(self.client.kc.shell_channel)
                msg_id = await ensure_async(self.client.kc.kernel_info())
                info = await self.client.async_wait_for_reply(msg_id)
                if info is not None and "language_info" in info["content"]:
                    self.nb.metadata["language_info"] = info["content"]["language_info"]
                km = self.client.km
                pid = getattr(getattr(km, "provisioner", None), "pid", None)
                if km is not None and pid:
                    # Taken now: once the kernel is dead its provisioner may be cleaned up.
                    self.death_key = key_of_death(str(km.connection_file), int(pid))
                try:
                    yield self
                finally:
                    self.client.set_widgets_metadata()

    def insert(self, index: int, cell: NotebookNode) -> None:
        """Put ``cell`` at ``index`` in the notebook (later cells move down)."""
        if int(self.nb.get("nbformat_minor", 5)) < 5:
            cell.pop("id", None)  # cell ids exist from nbformat 4.5 on; older files reject them
        self.nb.cells.insert(index, cell)

    def interrupt(self) -> None:
        """Interrupt the running cell, if one is running (Ctrl-C)."""
        if self._running is None or self._running.done():
            return
        self._interrupted = True
        task = asyncio.ensure_future(self._interrupt_kernel())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _interrupt_kernel(self) -> None:
        assert self.client.km is not None
        # A kernel that is already gone cannot be interrupted; the alive check reports it.
        with contextlib.suppress(RuntimeError):
            await ensure_async(self.client.km.interrupt_kernel())

    def _on_cell_executed(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self._reply = execute_reply

    async def execute(self, index: int, *, timeout: float | None) -> CellOutcome:
        """Run cell ``index``; past ``timeout`` seconds, interrupt it and collect what it printed."""
        cell = self.nb.cells[index]
        self._reply = None
        self._interrupted = False
        # nbclient numbers cells as the kernel does (one per execute_request), as in its execute().
        count = self.client.code_cells_executed + 1
        task = asyncio.ensure_future(self.client.async_execute_cell(cell, index, execution_count=count))
        self._running = task
        timed_out = False
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                timed_out = True
                await self._interrupt_kernel()
            done, _ = await asyncio.wait({task}, timeout=None if done else INTERRUPT_GRACE)
            if not done:
                return CellOutcome("stuck")
            task.result()
        except DeadKernelError:
            return CellOutcome("dead")
        except (CellExecutionError, CellTimeoutError):
            pass  # not raised with allow_errors and no nbclient timeout; the reply says what happened
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._running = None
        return self._outcome(timed_out)

    def _outcome(self, timed_out: bool) -> CellOutcome:
        if self._reply is None:
            return CellOutcome("skipped")
        content = self._reply.get("content", {})
        count = content.get("execution_count")
        ename, evalue = str(content.get("ename", "")), str(content.get("evalue", ""))
        if content.get("status") == "ok":
            return CellOutcome("ok", count)
        status: Status = "timeout" if timed_out else "interrupted" if self._interrupted else "error"
        return CellOutcome(status, count, ename, evalue)


async def wait_for_cell_event(
    history: History, notebook: str, execution_count: int | None, after: int, timeout: float = 10.0
) -> dict[str, Any] | None:
    """The ``cell_executed`` event of a cell; the kernel commits it on its own thread, so poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await asyncio.to_thread(history.read, notebook, after):
            if event.get("kind") == "cell_executed" and event.get("execution_count") == execution_count:
                return event
        await asyncio.sleep(0.01)
    return None


@contextlib.contextmanager
def _private_transport(client: NotebookClient) -> Iterator[None]:
    """The kernel's channels on Unix sockets in a private folder, where the platform has them.

    nbclient's default is TCP on localhost, in plain text: any local user can connect
    to the ports, and ipykernel says so in a warning on every run. The sockets (and the
    connection file with its key) live in a folder only this user can enter, removed
    when the kernel is gone. Windows has no such sockets: TCP stays.
    """
    if os.name != "posix":
        yield
        return
    # A short folder: a Unix socket's path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="ambient-kernel-") as folder:
        managers = client.config.KernelManager
        managers.transport = "ipc"
        managers.ip = os.path.join(folder, "k")
        managers.connection_file = os.path.join(folder, "kernel.json")
        yield


POLL_SLICE = 0.5
"""Seconds of one wait on the shell socket; see ``_poll_in_slices``."""


def _poll_in_slices(channel: Any) -> None:
    """Make ``channel.get_msg`` wait in short polls instead of one long one.

    nbclient waits for a cell's ``execute_reply`` with one poll of the shell socket
    (forever, with no cell timeout), while its Output-widget mimic sends ``comm_msg``
    updates on that same socket from the IOPub task. ZeroMQ signals readiness on an
    edge-triggered descriptor; a send can consume the edge, and the poll then sleeps
    through a reply that has arrived. Seen here: ``jupyter execute`` and
    ``ambient-jupyter run`` of nbclient's own ``Output.ipynb`` hung forever in 1 run
    of 4 on a loaded machine, the kernel idle, its reply sent. A fresh poll checks
    the socket's events again, so no reply waits longer than one slice.
    """
    get_msg = channel.get_msg

    async def sliced(timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else min(POLL_SLICE, max(0.0, deadline - time.monotonic()))
            try:
                return cast("dict[str, Any]", await get_msg(timeout=left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = sliced
