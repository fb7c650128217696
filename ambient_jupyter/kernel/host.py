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

from .._trim import clean_text, json_safe, strip_ansi, trim_text
from ..act import ActEngine, Ran, Run
from ..actions import CODE_ACTIONS
from ..assistant import Assistant, Role, Turn
from ..config import AmbientSettings
from ..events import ActionExecuted, MessageSource
from ..gate import Approval, NotApproved
from ..history import History, UnreadableEvent
from ..warm import Warmer

__all__ = ["KernelHost"]

log = logging.getLogger("ambient_jupyter.kernel")

T = TypeVar("T")

_DONE = object()
REACT_ACTIONS = ("explain",)
"""What an unprompted reaction may do in the kernel: talk, never propose code."""
WAIT = 60.0
"""Seconds the main thread waits for the host loop to store a decision or a result."""
OUTPUT_LIMIT = 2000
"""Characters kept of what approved code printed, when it printed to no cell (head and tail)."""


def _short(value: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(json_safe(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return trim_text(text, limit).replace("\n", " ")


class KernelHost:
    """The assistant of one notebook, hosted in its kernel; with ``react``, it also diagnoses
    failures unprompted (when no other host does)."""

    def __init__(
        self,
        history: History,
        notebook: str,
        settings: AmbientSettings,
        *,
        react: bool,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.react_to_errors = react
        self.assistant = Assistant.from_settings(history, notebook, settings)
        self.acts = ActEngine(self.assistant)

        async def kernel_busy() -> bool:
            return busy is not None and busy()

        # It reads new events while the kernel is idle, but only for a model this host
        # answers with: a host made just to set the agent mode (the server answering)
        # must not load weights into the person's kernel.
        self.warmer = Warmer(
            self.assistant,
            busy=kernel_busy,
            wanted=lambda: self.react_to_errors or self.assistant.model_in_use,
            enabled=settings.warm,
        )
        self.last_cell: int | None = None
        """The execution count of the last agent cell this host ran."""
        self._main: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        """Work the host's loop hands to the kernel's main thread while it waits in :meth:`serve`."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ambient-host", daemon=True)
        self._thread.start()
        self._pending: set[Future[Any]] = set()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run ``coro`` on the host's loop, from any thread (e.g. the chat widget's comm handlers)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def on_committed(self, events: list[dict[str, Any]]) -> None:
        """Writer-thread callback: diagnose failures when we are the host (explaining only),
        and let the model read what came, once the kernel is quiet."""
        self._loop.call_soon_threadsafe(self.warmer.poke)
        if not self.react_to_errors:
            return
        for event in events:
            if self.assistant.should_react(event):
                self.submit(self.assistant.react(event, actions=REACT_ACTIONS))

    def ask(
        self, text: str, write: Callable[[str], None], *, role: Role = "watcher", source: MessageSource = "magic"
    ) -> Turn:
        """Answer ``text``, calling ``write`` with each piece on the caller's thread."""
        pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def run() -> Turn:
            try:
                return await self.assistant.ask(text, source=source, role=role, on_token=lambda _rid, t: pieces.put(t))
            finally:
                pieces.put(_DONE)

        future = self.submit(run())
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

    # -- acting, on the kernel's main thread ---------------------------------------

    def serve(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the host's loop while this (the main) thread does what it hands over.

        Approved code and plugin calls must run on the kernel's main thread, the one
        whose cell or comm message is being handled, so their outputs, widget updates
        and history belong there; the act engine lives on the host's loop.
        """
        future = self.submit(coro)
        future.add_done_callback(lambda _future: self._main.put(lambda: None))  # wakes the main thread
        deadline = time.monotonic() + WAIT
        while not future.done():
            try:
                work = self._main.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            work()
            deadline = time.monotonic() + WAIT  # the work itself (a cell) may take long
        return future.result(0)

    async def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the main thread, which is waiting in :meth:`serve`."""
        result: Future[T] = Future()

        def call() -> None:
            try:
                result.set_result(work())
            except BaseException as exc:  # noqa: BLE001 (handed back to the awaiting coroutine)
                result.set_exception(exc)

        self._main.put(call)
        return await asyncio.wrap_future(result)

    def runner(self, recorder: Any, *, keep_output: bool = False, write: Callable[[str], None] | None = None) -> Run:
        """How this kernel runs an approved action: a plugin call, or an agent cell of its own.

        ``keep_output``: what the code prints goes to no cell (a comm message is its
        parent), so keep it as the action's result. ``write`` announces a cell first.
        """
        from IPython.utils.capture import capture_output

        async def run(granted: Approval) -> Ran | None:
            if granted.proposal.action == "call_plugin":
                from ..plugins import dispatch

                # dispatch checks the approval again where the code runs, and records the outcome.
                try:
                    await self.on_main(lambda: dispatch(granted.action_id))
                except NotApproved as exc:
                    return Ran(ok=False, error=f"not run: {exc}")
                except Exception:
                    log.debug("plugin action %s failed", granted.action_id, exc_info=True)
                return None
            if granted.proposal.action not in CODE_ACTIONS:
                return Ran(ok=False, error=f"this kernel cannot run a {granted.proposal.action!r} action")
            if write is not None:
                write(f"Running the agent's code (rule: {granted.rule}):\n{granted.code.rstrip()}")

            def cell() -> tuple[Any, dict[str, Any] | None, str]:
                if not keep_output:
                    return (*recorder.run_agent_cell(granted.code), "")
                with capture_output(display=False) as printed:
                    result, event = recorder.run_agent_cell(granted.code)
                return result, event, clean_text(strip_ansi(printed.stdout + printed.stderr))

            result, event, printed = await self.on_main(cell)
            error = result.error_in_exec or result.error_before_exec
            self.last_cell = result.execution_count
            return Ran(
                ok=bool(result.success),
                cell_event_seq=int(event["seq"]) if event else None,
                result=trim_text(printed, OUTPUT_LIMIT) if printed else None,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )

        return run

    def act(self, turn: Turn, recorder: Any, write: Callable[[str], None] = print) -> str | None:
        """Carry out what a ``%%ask`` turn proposed, as far as the gate allows; one line says what happened.

        Call it on the kernel's main thread (the asking cell's): plugins and cells
        run there, so their outputs and widget updates belong to that cell.
        """
        proposal = turn.proposal
        if proposal is None or turn.state != "complete":
            return None
        # Under Jupyter Server the Ambient sidebar can ask a person: the proposal then
        # waits there for Approve / Reject instead of being rejected by policy.
        present = os.environ.get("AMBIENT_HOST", "").strip() == "server"
        code = proposal.code
        plugin = proposal.action == "call_plugin"
        acted = self.serve(self.acts.act(proposal, self.runner(recorder, write=write), person_present=present))
        if acted.state in ("waiting", "rejected"):
            why = "waiting for your approval in the Ambient sidebar" if acted.state == "waiting" else acted.reason
            if plugin:
                return f"Not run: {code} ({why}). Run it yourself, or switch with %ambient agent=auto."
            # Nothing runs without an approval; the user can read the code and run it.
            recorder.shell.set_next_input(code, replace=False)
            return f"Proposed, not run ({why}): the code is in a new cell below; run it if it looks right."
        if acted.state == "refused":
            return f"Not run: {acted.reason}"
        if plugin:
            done = self._outcome(proposal.action_id)
            if done is None or not done.ok:
                return f"{code} failed: {done.error if done else 'no outcome was recorded'}"
            return f"Ran {code} -> {_short(done.result)}"
        ran = acted.ran
        if ran is None:
            return None
        return f"Ran it as cell [{self.last_cell}]: " + ("ok." if ran.ok else f"failed: {ran.error}")

    def _outcome(self, action_id: str) -> ActionExecuted | None:
        try:
            _proposal, related = self.assistant.history.find_action(self.assistant.notebook, action_id)
        except UnreadableEvent:
            return None  # said as "no outcome was recorded"; the sidebar shows what is stored
        return next((e for e in related if isinstance(e, ActionExecuted)), None)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self.assistant.stop)

    def close(self, timeout: float = 4.0) -> None:
        """Give a reply in flight ``timeout`` seconds, then stop it (stored as incomplete)."""
        deadline = time.monotonic() + max(0.0, timeout - 0.5)
        for future in list(self._pending):
            # Shutting down: whatever the reply raised, it has stored its own state.
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.warmer.close(), self._loop).result(0.5)
        if self._pending:
            self._loop.call_soon_threadsafe(self.assistant.stop)
            for future in list(self._pending):
                with contextlib.suppress(Exception):
                    future.result(0.5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(0.5)
