"""Approved actions on their way to being run, for one notebook in this server.

A decision is recorded once; an approved action is handed out once: a cell action
to exactly one tab (as a ``run`` frame), a plugin call to the notebook's kernel.
Whatever happens next is recorded as ``action_executed``: the cell's own
``cell_executed`` event, linked back by the hash of its code; the tab's report that
it could not run it (``run_failed``); or the kernel's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..actions import CODE_ACTIONS, code_sha256
from ..gate import NotApproved, approval, find_action

if TYPE_CHECKING:
    from .hub import Room, Subscriber

__all__ = ["MAX_FAILURE_CHARS", "FrameError", "Handoff"]

log = logging.getLogger("ambient_jupyter.server")

MAX_FAILURE_CHARS = 2000
"""Longest reason a tab may give for not running an action."""


class FrameError(ValueError):
    """A client frame was refused; the message goes back to the client as is."""


class Handoff:
    """Decisions, and the hand-off of approved actions, for one room."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._lock = asyncio.Lock()
        """Decisions and hand-offs one at a time: a person and the policy (or two
        tabs) deciding together must not both hand the action out."""
        self._handed: dict[str, Subscriber | None] = {}
        """action_id -> the tab that has it (None: the kernel has it, or nobody could)."""
        self._waiting: dict[str, list[str]] = defaultdict(list)
        """sha256 -> cell actions handed to a tab whose cell has not run yet, oldest first."""

    # -- decisions ----------------------------------------------------------------

    async def decide(self, action_id: object, decision: object, sha256: object, sub: Subscriber | None) -> None:
        """A person's decision from a ``decide`` frame; an approval is handed out at once."""
        if not isinstance(action_id, str) or not action_id or len(action_id) > 200:
            raise FrameError("'action_id' is required")
        if decision not in ("approve", "reject"):
            raise FrameError("'decision' must be 'approve' or 'reject'")
        async with self._lock:
            proposal, related = await asyncio.to_thread(self._find, action_id)
            if proposal is None:
                raise FrameError(f"no proposed action {action_id!r} in this notebook")
            if any(e.get("kind") == "action_decided" for e in related):
                raise FrameError(f"action {action_id!r} was already decided")
            if decision == "approve" and sha256 != proposal.get("sha256"):
                # The approval must be for exactly the code that was shown.
                raise FrameError("the code's sha256 does not match the proposal; nothing was approved or run")
            outcome = "approved" if decision == "approve" else "rejected"
            stored = await self.room.assistant.decide(proposal, outcome, by="user")
            if stored.get("by") != "user" or stored.get("decision") != outcome:
                # The history already held another decision (another process made it).
                raise FrameError(f"action {action_id!r} was already decided")
            if outcome == "approved":
                await self._hand_out(proposal, sub)

    async def apply_policy(self, proposal: dict[str, Any], requester: Subscriber | None) -> None:
        """What the notebook's agent mode decides on its own; an approval is handed out at once."""
        async with self._lock:
            verdict = await self.room.assistant.apply_policy(proposal, person_present=True)
            if verdict == "approve":
                await self._hand_out(proposal, requester)

    def _find(self, action_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        return find_action(self.room.hub.history, self.room.ref.notebook_id, action_id)

    # -- handing out ----------------------------------------------------------------

    async def _hand_out(self, proposal: dict[str, Any], approver: Subscriber | None) -> None:
        """Give an approved action to whoever runs it, after checking the approval once more."""
        room = self.room
        action_id = str(proposal["action_id"])
        if action_id in self._handed:
            return  # an approval is good for one run
        try:
            granted = await asyncio.to_thread(approval, room.hub.history, room.ref.notebook_id, action_id)
        except NotApproved as exc:
            room.broadcast({"type": "error", "message": str(exc)})
            return
        action = proposal.get("action")
        if action == "call_plugin":
            # Plugins live in the kernel; the kernel checks the approval again itself.
            # Not awaited: a slow plugin must not hold up this client's next frame.
            self._handed[action_id] = None
            room.hub.spawn(room.hub.run_plugin(room, action_id))
            return
        if action not in CODE_ACTIONS:
            return
        # Cells are the frontend's to insert and run: exactly one tab does it, the
        # approver if it is still here, else the tab that arrived last. Only tabs
        # whose user may approve code are asked to run it.
        runners = [s for s in room.subscribers if getattr(s, "can_run", False)]
        tab = approver if approver in runners else (runners[-1] if runners else None)
        self._handed[action_id] = tab
        if tab is None:
            error = "it was approved, but no JupyterLab tab showing this notebook was connected to run it"
            room.broadcast({"type": "error", "message": f"action {action_id}: {error}"})
            await room.assistant.executed(action_id, ok=False, error=error)
            return
        self._waiting[str(proposal["sha256"])].append(action_id)
        decision = granted.decision
        tab.send(
            {
                "type": "run",
                "notebook": room.ref.api_path,
                "action_id": action_id,
                "action": action,
                "code": proposal.get("code"),
                "sha256": proposal.get("sha256"),
                "args": proposal.get("args") or {},
                "model": proposal.get("model"),
                "role": proposal.get("role") or "watcher",
                "reply_to": proposal.get("reply_to"),
                "decided_by": decision.get("by"),
                "approved_at": decision.get("at"),
                **({"old_code": proposal["old_code"]} if proposal.get("old_code") is not None else {}),
            }
        )

    # -- what became of it ----------------------------------------------------------

    def cell_ran(self, event: dict[str, Any]) -> None:
        """Link a ``cell_executed`` event to the approved cell action with the same code."""
        code = event.get("code")
        if not isinstance(code, str) or not self._waiting:
            return
        digest = code_sha256(code)
        queue = self._waiting.get(digest)
        if not queue:
            return
        action_id = queue.pop(0)
        if not queue:
            del self._waiting[digest]
        error = event.get("error") or {}
        self.room.hub.spawn(
            self.room.assistant.executed(
                action_id,
                cell_event_seq=int(event["seq"]),
                ok=event.get("status") == "ok",
                error=f"{error.get('ename')}: {error.get('evalue')}" if event.get("status") == "error" else None,
            )
        )

    async def run_failed(self, action_id: object, error: object, sub: Subscriber) -> None:
        """The tab an action was handed to reports that it could not run it."""
        if not isinstance(action_id, str) or not action_id:
            raise FrameError("'action_id' is required")
        if not isinstance(error, str) or not error.strip():
            raise FrameError("'error' must say why the action could not run")
        if len(error) > MAX_FAILURE_CHARS:
            raise FrameError(f"'error' can be at most {MAX_FAILURE_CHARS:,} characters")
        async with self._lock:
            if action_id not in self._handed or self._handed[action_id] is not sub:
                raise FrameError(f"action {action_id!r} was not handed to this tab to run")
            if not self._unwait(action_id):
                raise FrameError(f"action {action_id!r} has already run")
            await self.room.assistant.executed(action_id, ok=False, error=f"the tab did not run it: {error.strip()}")

    async def plugin_failed(self, action_id: str, error: str) -> None:
        """The kernel could not run a plugin call; recorded unless the kernel recorded an outcome itself."""
        _proposal, related = await asyncio.to_thread(self._find, action_id)
        if not any(e.get("kind") == "action_executed" for e in related):
            await self.room.assistant.executed(action_id, ok=False, error=error)

    def _unwait(self, action_id: str) -> bool:
        for digest, queue in list(self._waiting.items()):
            if action_id in queue:
                queue.remove(action_id)
                if not queue:
                    del self._waiting[digest]
                return True
        return False
