"""Notice the death of this server's kernels, and which cell each was running.

The kernel cannot record its own death, and the cell that was running never gets an
``execute_reply`` (so its recorder never writes it). The server can see both: its
kernel restarter notices the process is gone (and restarts it, or gives up), and the
kernel's IOPub says which request started (``execute_input``) and which finished
(``status: idle``). One IOPub subscription per kernel, reading only the headers of
the messages it does not need, as Jupyter Server's own activity watch does.

The cell is named when the kernel published its ``execute_input`` before dying. That
message goes out from the kernel's IOPub thread: a kernel killed as its cell starts,
or while a C call that holds the GIL from the cell's first line runs (a huge
allocation that brings the out-of-memory killer, say), may not have sent it. The
death is then recorded without the cell ("the kernel died").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_client.session import Session

from ..events import death_key

__all__ = ["KernelDeaths"]

log = logging.getLogger("ambient_jupyter.server")

OnDeath = Callable[[str, str, str], Awaitable[None]]
"""``(kernel_id, code of the cell that was running or "", the death's key)``."""


class _Watched:
    def __init__(self, kernel_id: str, stream: Any, session: Session) -> None:
        self.kernel_id = kernel_id
        self.stream = stream
        self.session = session
        self.running: dict[str, str] = {}
        """Requests that started and have not finished: msg_id -> code, oldest first."""
        self.dead = False
        """Set at a death, cleared by the next sign of life: a kernel that keeps dying as
        it restarts (the restarter fires at each attempt) is one death, not several."""

    def on_iopub(self, frames: list[Any]) -> None:
        self.dead = False
        try:
            _idents, fed = self.session.feed_identities(frames)
            msg = self.session.deserialize(fed, content=False)
            msg_type = msg["header"]["msg_type"]
            if msg_type not in ("execute_input", "status"):
                return
            parent = (msg.get("parent_header") or {}).get("msg_id", "")
            content = self.session.deserialize(fed)["content"]
            if msg_type == "execute_input":
                self.running[parent] = str(content.get("code", ""))
                while len(self.running) > 64:  # a request whose idle we missed
                    self.running.pop(next(iter(self.running)))
            elif content.get("execution_state") == "idle":
                self.running.pop(parent, None)
        except Exception:  # a message we cannot read must not stop the watch
            log.debug("ambient-jupyter: unreadable IOPub message", exc_info=True)

    def died(self) -> str | None:
        """The cell that was running (the oldest unfinished request, or ""), and forget
        them all; None if this death was already reported."""
        if self.dead:
            return None
        self.dead = True
        code = next(iter(self.running.values()), "")
        self.running.clear()
        return code


class KernelDeaths:
    """Watch every kernel of ``kernel_manager``; call ``on_death`` when one dies.

    Death is what the server's restarter reports: the process was gone, and the
    kernel was restarted (``restart``) or could not be (``dead``). A restart the
    person asked for is not a death.
    """

    def __init__(self, kernel_manager: Any, on_death: OnDeath, interval: float = 1.0) -> None:
        self._manager = kernel_manager
        self._on_death = on_death
        self._interval = interval
        self._watched: dict[str, tuple[_Watched, Callable[[], None]]] = {}
        """kernel_id -> its IOPub watch, and the callback its restarter calls at a death."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: set[str] = set()
        """Kernels that could not be watched: tried once, not every second."""

    async def run(self) -> None:
        """Attach to new kernels and let go of gone ones, until cancelled."""
        try:
            while True:
                try:
                    self._sync()
                except Exception:  # keep watching; the next pass may succeed
                    log.exception("ambient-jupyter could not list the server's kernels")
                await asyncio.sleep(self._interval)
        finally:
            for kernel_id in list(self._watched):
                self._detach(kernel_id)
            # A record being written finishes before the hub closes the history.
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _sync(self) -> None:
        ids = set(self._manager.list_kernel_ids())
        for kernel_id in self._watched.keys() - ids:
            self._detach(kernel_id)
        for kernel_id in ids - self._watched.keys() - self._failed:
            try:
                self._attach(kernel_id)
            except Exception:  # a kernel we cannot watch (remote, half started) stops no other
                log.warning("ambient-jupyter cannot watch kernel %s for deaths", kernel_id, exc_info=True)
                self._failed.add(kernel_id)
        self._failed &= ids

    def _attach(self, kernel_id: str) -> None:
        kernel = self._manager.get_kernel(kernel_id)
        stream = kernel.connect_iopub()
        watched = _Watched(kernel_id, stream, Session(config=kernel.session.config, key=kernel.session.key))
        stream.on_recv(watched.on_iopub)
        died = functools.partial(self._died, kernel_id)
        self._watched[kernel_id] = (watched, died)
        for event in ("restart", "dead"):
            self._manager.add_restart_callback(kernel_id, died, event)

    def _key(self, kernel_id: str) -> str:
        """The death's key, shared with the kernel that comes next (which may notice it too).

        The restarter calls back before it starts the new process, so the provisioner
        still names the dead one.
        """
        try:
            kernel = self._manager.get_kernel(kernel_id)
            return death_key(str(kernel.connection_file), int(kernel.provisioner.pid))
        except Exception:  # noqa: BLE001 (not a local kernel: a key of its own, recorded once here)
            return f"kernel_died:{kernel_id}:{uuid.uuid4().hex}"

    def _detach(self, kernel_id: str) -> None:
        watched, died = self._watched.pop(kernel_id)
        watched.stream.close()
        for event in ("restart", "dead"):
            # The kernel may be gone already, and its callbacks with it.
            with contextlib.suppress(Exception):
                self._manager.remove_restart_callback(kernel_id, died, event)

    def _died(self, kernel_id: str) -> None:
        # Called by the restarter, on the server's loop: record off this call.
        entry = self._watched.get(kernel_id)
        code = entry[0].died() if entry is not None else ""
        if code is None:
            return
        task = asyncio.ensure_future(self._on_death(kernel_id, code, self._key(kernel_id)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
