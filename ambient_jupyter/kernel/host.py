"""The in-kernel host: runs the assistant inside the kernel process.

Used where no other host is attached (plain nbclient, nbconvert, VS Code, IPython)
for unprompted diagnoses, and everywhere for ``%%ask``, whose answer streams into
the cell that asked. The assistant lives on its own event loop in a daemon thread
so it never touches the kernel's loop; tokens reach the asking cell through a
queue that the cell's own (main) thread drains, so outputs land in that cell.

What a ``%%ask`` turn proposes is carried out on the main thread, after the turn,
as far as the gate allows (:meth:`KernelHost.act`). Nobody can be asked to approve
anything here, so the notebook's agent mode decides alone: a plugin action runs if
it is declared safe or the mode is ``auto``; code runs only in ``auto``, and
otherwise is offered as a new cell for the user to run. An unprompted diagnosis
(:meth:`KernelHost.on_committed`) may only explain: nothing runs that nobody asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from .._trim import trim_text
from ..assistant import Assistant, Role, Turn
from ..events import MessageSource
from ..gate import NotApproved, approval, policy
from ..history import History
from .recorder import notebook_agent
from .widgets import json_safe

__all__ = ["KernelHost"]

log = logging.getLogger("ambient_jupyter.kernel")

T = TypeVar("T")

_DONE = object()
REACT_ACTIONS = ("explain",)
"""What an unprompted reaction may do in the kernel: talk, never propose code."""
WAIT = 60.0
"""Seconds the main thread waits for the host loop to store a decision or a result."""


def _short(value: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(json_safe(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return trim_text(text, limit).replace("\n", " ")


class KernelHost:
    """The assistant of one notebook, hosted in its kernel.

    Parameters
    ----------
    history, notebook
        Where the conversation is.
    model, expert
        The watcher's and the expert's model specs (``expert`` empty: none).
    agent
        The agent mode to assume until the history says otherwise.
    quiet, react, cooldown, max_reply_tokens
        ``react``: diagnose failures unprompted (when no other host does).
    """

    def __init__(
        self,
        history: History,
        notebook: str,
        *,
        model: str,
        quiet: bool,
        react: bool,
        cooldown: float,
        max_reply_tokens: int,
        expert: str | None = None,
        agent: str = "ask",
    ) -> None:
        self.react_to_errors = react
        self.assistant = Assistant(
            history,
            notebook,
            model,
            expert=expert or None,
            agent=agent,
            quiet=quiet,
            cooldown=cooldown,
            max_reply_tokens=max_reply_tokens,
        )
        self._agent_seen = 0
        self._agent_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ambient-host", daemon=True)
        self._thread.start()
        self._pending: set[Future[Any]] = set()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def submit(self, coro: Any) -> Future[Any]:
        """Run ``coro`` on the host's loop, from any thread (e.g. the chat widget's comm handlers)."""
        return self._submit(coro)

    def _wait(self, coro: Any) -> Any:
        return self._submit(coro).result(WAIT)

    def agent_mode(self) -> str:
        """The notebook's agent mode as the history has it now (``%ambient``, the sidebar).

        Also sets it on the assistant. Reads only what is new since the last call.
        """
        with self._agent_lock:
            mode, self._agent_seen = notebook_agent(
                self.assistant.history, self.assistant.notebook, self.assistant.agent, self._agent_seen
            )
            self.assistant.agent = mode
        return mode

    def on_committed(self, events: list[dict[str, Any]]) -> None:
        """Writer-thread callback: diagnose failures when we are the host (explaining only)."""
        if not self.react_to_errors:
            return
        for event in events:
            if self.assistant.should_react(event):
                self._submit(self.assistant.react(event, actions=REACT_ACTIONS))

    def ask(
        self, text: str, write: Callable[[str], None], *, role: Role = "watcher", source: MessageSource = "magic"
    ) -> Turn:
        """Answer ``text``, calling ``write`` with each piece on the caller's thread."""
        self.agent_mode()
        pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def run() -> Turn:
            try:
                return await self.assistant.ask(
                    text, source=source, role=role, on_token=lambda _rid, t: pieces.put(t)
                )
            finally:
                pieces.put(_DONE)

        future = self._submit(run())
        try:
            while True:
                piece = pieces.get()
                if piece is _DONE:
                    break
                write(piece)
        except KeyboardInterrupt:
            # The user interrupted the cell: stop the reply; it is stored as incomplete.
            self._loop.call_soon_threadsafe(self.assistant.stop)
            future.result(timeout=10)
            raise
        return future.result()

    def act(self, turn: Turn, recorder: Any, write: Callable[[str], None] = print) -> str | None:
        """Carry out what ``turn`` proposed, as far as the gate allows; returns one line saying what happened.

        Call it on the kernel's main thread (the asking cell's): plugins and cells
        run there, so their outputs and widget updates belong to that cell.
        """
        proposal = turn.proposal
        if proposal is None or turn.state != "complete":
            return None
        mode = self.assistant.agent
        # Under Jupyter Server the Ambient sidebar can ask a person: the proposal then
        # waits there for Approve / Reject instead of being rejected by policy.
        present = os.environ.get("AMBIENT_HOST", "").strip() == "server"
        verdict = self._wait(self.assistant.apply_policy(proposal, person_present=present))
        code = str(proposal.get("code", ""))
        action_id = str(proposal["action_id"])
        if proposal.get("action") == "call_plugin":
            if verdict == "ask":
                return f"Waiting for your approval in the Ambient sidebar: {code}"
            if verdict != "approve":
                reason = policy(mode, safe=bool(proposal.get("safe")), person_present=False)[1]
                return f"Not run: {code} ({reason}). Run it yourself, or switch with %ambient agent=auto."
            from ..plugins import dispatch

            try:
                result = dispatch(action_id)
            except Exception as exc:  # noqa: BLE001 (dispatch recorded it; the user gets one line)
                return f"{code} failed: {type(exc).__name__}: {exc}"
            return f"Ran {code} -> {_short(result)}"
        if verdict != "approve":
            # Nothing runs without an approval; the user can read the code and run it.
            recorder.shell.set_next_input(code, replace=False)
            where = " (or approve it in the Ambient sidebar)" if verdict == "ask" else ""
            return (
                f"Proposed, not run (agent mode {mode}): the code is in a new cell below; "
                f"run it if it looks right{where}."
            )
        try:
            approval(self.assistant.history, self.assistant.notebook, action_id, code)
        except NotApproved as exc:
            return f"Not run: {exc}"
        write(f"Running the agent's code (agent mode {mode}):\n{code.rstrip()}")
        result, cell = recorder.run_agent_cell(code)
        error = result.error_in_exec or result.error_before_exec
        message = None if error is None else f"{type(error).__name__}: {error}"
        self._wait(
            self.assistant.executed(
                action_id, cell_event_seq=cell["seq"] if cell else None, ok=bool(result.success), error=message
            )
        )
        return f"Ran it as cell [{result.execution_count}]: " + ("ok." if result.success else f"failed: {message}")

    def stop(self) -> bool:
        return self._loop.call_soon_threadsafe(self.assistant.stop) is not None

    def close(self, timeout: float = 4.0) -> None:
        """Give a reply in flight ``timeout`` seconds, then stop it (stored as incomplete)."""
        deadline = time.monotonic() + max(0.0, timeout - 0.5)
        for future in list(self._pending):
            # Shutting down: whatever the reply raised, it has stored its own state.
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        if self._pending:
            self._loop.call_soon_threadsafe(self.assistant.stop)
            for future in list(self._pending):
                with contextlib.suppress(Exception):
                    future.result(0.5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(0.5)
