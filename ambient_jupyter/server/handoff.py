"""Approved actions on their way to being run, for one notebook in this server.

Decisions, the approval check and the one-run claim are the act engine's
(:mod:`ambient_jupyter.act`); this module is the server's way to run: an approved
action is handed out once, a cell action to exactly one tab (as a ``run`` frame), a
plugin call to the notebook's kernel. Whatever happens next is recorded as ``action_executed``: the cell's own
``cell_executed`` event, linked back by the hash of its code; the tab's report that
it could not run it (``run_failed``); or the kernel's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, Literal, Protocol

from ..act import ActEngine, Ran, Refused
from ..actions import CODE_ACTIONS, code_sha256
from ..events import ActionProposed
from ..gate import Approval
from ..history import UnreadableEvent

__all__ = ["MAX_FAILURE_CHARS", "Frame", "FrameError", "Handoff", "Subscriber", "Tabs"]

log = logging.getLogger("ambient_jupyter.server")

MAX_FAILURE_CHARS = 2000
"""Longest reason a tab may give for not running an action."""


class FrameError(ValueError):
    """A client frame was refused; the message goes back to the client as is."""

    refers: dict[str, str] = {}  # never changed in place: an instance gets its own
    """What the refused frame named (``client_id``, ``action_id``), so the tab settles just that."""


Frame = dict[str, Any]


class Subscriber(Protocol):
    """A connected client, as the server sees it."""

    seen: int
    """The highest event seq this client has; events at or below it are not resent."""
    can_run: bool
    """Its user may approve code, so it may be handed approved cells to run."""

    def send(self, frame: Frame) -> None:
        """Queue a frame; never blocks (a client that falls behind is dropped)."""

    async def room_for_more(self) -> bool:
        """Wait until the client has read enough to take more of a replay; False once it is gone."""


class Tabs(Protocol):
    """The clients showing one notebook, as the hand-off needs them (the server's room)."""

    @property
    def api_path(self) -> str:
        """The notebook's contents path, as the tabs name it."""

    @property
    def subscribers(self) -> Collection[Subscriber]:
        """In the order they arrived."""

    def broadcast(self, frame: Frame) -> None: ...

    async def pump(self) -> None:
        """Send every client the events stored since it was last sent any."""


class Handoff:
    """The hand-off of approved actions, for one notebook's tabs; decisions go through the act engine.

    ``run_plugin`` asks the notebook's kernel to run an approved plugin action (the
    kernel checks the approval again itself) and returns why it could not, or None;
    ``spawn`` runs a task the server keeps track of.
    """

    def __init__(
        self,
        tabs: Tabs,
        acts: ActEngine,
        run_plugin: Callable[[str], Awaitable[str | None]],
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
    ) -> None:
        self.tabs = tabs
        self.acts = acts
        self._run_plugin = run_plugin
        self._spawn = spawn
        self._handed: dict[str, Subscriber | None] = {}
        """action_id -> the tab that has it (None: the kernel has it, or nobody could)."""
        self._waiting: dict[str, str] = {}
        """Cell actions handed to a tab whose cell has not run yet, oldest first: action_id -> sha256."""

    # -- decisions ----------------------------------------------------------------

    async def decide(
        self, action_id: str, decision: Literal["approve", "reject"], sha256: str | None, sub: Subscriber | None
    ) -> None:
        """A person's decision from a ``decide`` frame; an approval is handed out at once."""
        try:
            await self.acts.decide(action_id, decision, sha256)
        except Refused as exc:
            raise FrameError(str(exc)) from None
        if decision == "approve":
            await self._run(action_id, sub)

    async def undone(self, action_id: str) -> None:
        """A tab took back an action's change to the notebook (an ``undone`` frame)."""
        try:
            await self.acts.undone(action_id)
        except Refused as exc:
            raise FrameError(str(exc)) from None
        await self.tabs.pump()

    async def apply_policy(self, proposal: ActionProposed, requester: Subscriber | None) -> None:
        """What the notebook's agent mode in force decides on its own; an approval is handed out at once."""
        settled = await self.acts.settle(proposal, person_present=True)
        if settled.state == "ran":
            await self._run(proposal.action_id, requester)

    async def _run(self, action_id: str, approver: Subscriber | None) -> None:
        acted = await self.acts.run(action_id, lambda granted: self._hand_out(granted, approver))
        if acted.state == "refused":
            self.tabs.broadcast({"type": "error", "message": acted.reason})

    # -- handing out ----------------------------------------------------------------

    async def _hand_out(self, granted: Approval, approver: Subscriber | None) -> Ran | None:
        """Give an approved action to whoever runs it (the engine checked the approval just now)."""
        tabs = self.tabs
        proposal, action_id = granted.proposal, granted.action_id
        action = proposal.action
        if action == "call_plugin":
            # Plugins live in the kernel. Not awaited: a slow plugin must not hold up
            # this client's next frame.
            self._handed[action_id] = None
            self._spawn(self._plugin(action_id))
            return None
        if action not in CODE_ACTIONS:
            return Ran(ok=False, error=f"this server cannot run a {action!r} action")
        # Cells are the frontend's to insert and run: exactly one tab does it, the
        # approver if it is still here, else the tab that arrived last. Only tabs
        # whose user may approve code are asked to run it.
        runners = [s for s in tabs.subscribers if getattr(s, "can_run", False)]
        tab = approver if approver in runners else (runners[-1] if runners else None)
        self._handed[action_id] = tab
        if tab is None:
            error = "it was approved, but no JupyterLab tab showing this notebook was connected to run it"
            tabs.broadcast({"type": "error", "message": f"action {action_id}: {error}"})
            return Ran(ok=False, error=error)
        self._waiting[action_id] = proposal.sha256
        tab.send(
            {
                "type": "run",
                "notebook": tabs.api_path,
                **granted.provenance(),
                "code": proposal.code,
                "args": proposal.args,
                "rule": granted.rule,
                **({"old_code": proposal.old_code} if proposal.old_code is not None else {}),
            }
        )
        return None

    # -- what became of it ----------------------------------------------------------

    def cell_ran(self, event: dict[str, Any]) -> None:
        """Link a ``cell_executed`` event to the approved cell action with the same code."""
        code = event.get("code")
        if not isinstance(code, str) or not self._waiting:
            return
        digest = code_sha256(code)
        action_id = next((waiting for waiting, sha256 in self._waiting.items() if sha256 == digest), None)
        if action_id is None:
            return
        del self._waiting[action_id]
        error = event.get("error") or {}
        failed = event.get("status") == "error"
        ran = Ran(
            ok=event.get("status") == "ok",
            cell_event_seq=int(event["seq"]),
            error=f"{error.get('ename')}: {error.get('evalue')}" if failed else None,
        )
        self._spawn(self.acts.executed(action_id, ran))

    async def run_failed(self, action_id: str, error: str, sub: Subscriber, reason: str | None = None) -> None:
        """The tab an action was handed to reports that it could not run it."""
        if action_id not in self._handed or self._handed[action_id] is not sub:
            raise FrameError(f"action {action_id!r} was not handed to this tab to run")
        if self._waiting.pop(action_id, None) is None:
            raise FrameError(f"action {action_id!r} has already run")
        await self.acts.executed(
            action_id, Ran(ok=False, error=f"the tab did not run it: {error.strip()}", reason=reason)
        )

    async def _plugin(self, action_id: str) -> None:
        """Have the kernel run a plugin call; a failure is recorded unless the kernel recorded an outcome itself."""
        error = await self._run_plugin(action_id)
        if error is None:
            return
        self.tabs.broadcast({"type": "error", "message": f"action {action_id}: {error}"})
        history, notebook = self.acts.assistant.history, self.acts.notebook
        try:
            _proposal, related = await asyncio.to_thread(history.find_action, notebook, action_id)
        except UnreadableEvent:
            related = []  # whatever the kernel stored is unreadable: record the failure
        if not any(e.kind == "action_executed" for e in related):
            await self.acts.executed(action_id, Ran(ok=False, error=error))
