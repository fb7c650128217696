"""The act engine: the one path from what the agent proposed to code that ran.

policy → decision → approval check → run → ``action_executed``, the same in every
host. A host plugs in two things only:

* **who can be asked** (:data:`Ask`): the terminal's prompt in ``ambient-jupyter
  run``; elsewhere the person answers later, from the sidebar's or the chat
  widget's buttons, through :meth:`ActEngine.decide`;
* **how to run** (:data:`Run`): hand the cell to a JupyterLab tab, run an agent
  cell in the kernel, insert and execute it with the runner's ``CellDriver``, or
  dispatch a plugin call.

The agent mode is read from the history at every step, never remembered from the
start of a turn: the mode in force when the code is about to run is the one that
counts (:func:`~ambient_jupyter.gate.approval`).

One engine serves one notebook on one event loop; its lock orders decisions and
runs, so a person and the policy (or two tabs) deciding together cannot both run
an action.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from .events import ActionDecided, ActionExecuted, ActionProposed, ActionUndone, Event, SettingsChanged
from .gate import Approval, NotApproved, Rule, approval, policy
from .history import UnreadableEvent

if TYPE_CHECKING:
    from .assistant import Assistant

__all__ = ["UNDOABLE", "ActEngine", "Acted", "Ask", "Ran", "Refused", "Run"]

UNDOABLE = frozenset({"edit_cell", "insert_cell", "propose_next_cell"})
"""Actions that change the notebook's cells, so that a person can take them back."""


Decision = Literal["approved", "rejected"]


class Refused(ValueError):
    """A person's decision or a run was refused; the message says why, for the person."""


@dataclasses.dataclass(frozen=True)
class Ran:
    """What running an approved action did."""

    ok: bool
    cell_event_seq: int | None = None
    result: Any = None
    error: str | None = None
    reason: str | None = None


Run = Callable[[Approval], Awaitable["Ran | None"]]
"""Run an approved action. ``None``: it was handed on (to a tab, to the kernel), and
whoever runs it records the outcome (:meth:`ActEngine.executed`)."""

Ask = Callable[[ActionProposed], Awaitable["bool | None"]]
"""Ask a person now: True approves, False rejects, None means no answer (stopped)."""


@dataclasses.dataclass(frozen=True)
class Acted:
    """Where a proposal ended up, for the host to tell its person."""

    state: Literal["ran", "handed", "waiting", "rejected", "refused"]
    """``waiting``: a person must decide, elsewhere (the sidebar, the widget)."""
    rule: Rule | None = None
    reason: str = ""
    ran: Ran | None = None


class ActEngine:
    """Decisions on, and runs of, one notebook's proposals, recorded through ``assistant``
    (its history and notebook; its ``on_event`` hook sees what is recorded)."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self._lock = asyncio.Lock()
        self._claimed: set[str] = set()
        """Actions this engine has run or handed on: an approval is good for one run,
        even before its ``action_executed`` is committed."""

    @property
    def notebook(self) -> str:
        return self.assistant.notebook

    # -- the whole path -------------------------------------------------------------

    async def act(
        self, proposal: ActionProposed, run: Run, *, ask: Ask | None = None, person_present: bool = False
    ) -> Acted:
        """Settle ``proposal`` and run it if approved.

        With ``ask``, a person is asked here and now when the mode wants one. Without
        it, ``person_present`` says whether someone can decide later (the sidebar or
        the widget's buttons): then the proposal is left ``waiting``.
        """
        settled = await self.settle(proposal, person_present=person_present or ask is not None)
        if settled.state == "waiting" and ask is not None:
            answer = await ask(proposal)
            if answer is None:
                await self.record(proposal, "rejected", rule="user", reason="stopped before anyone decided")
                return Acted("rejected", "user", "stopped before anyone decided")
            try:
                await self.decide(proposal.action_id, "approve" if answer else "reject", proposal.sha256)
            except Refused as exc:
                return Acted("refused", "user", str(exc))
            settled = Acted("ran" if answer else "rejected", "user")
        if settled.state != "ran":
            return settled
        return await self.run(proposal.action_id, run)

    async def settle(self, proposal: ActionProposed, *, person_present: bool) -> Acted:
        """Record what the mode in force now decides on its own.

        Returns ``waiting`` when a person must decide, ``rejected``, or ``ran``
        meaning *approved, ready to run* (call :meth:`run`).
        """
        async with self._lock:
            mode = await self.assistant.current_mode()
            verdict, reason, rule = policy(mode, safe=proposal.safe, person_present=person_present)
            if verdict == "ask" or rule is None:
                return Acted("waiting")
            outcome: Decision = "approved" if verdict == "approve" else "rejected"
            stored = await self.record(proposal, outcome, rule=rule, reason=reason)
        if stored.get("decision") != outcome or stored.get("rule", rule) != rule:
            # Someone decided first (another process): theirs stands.
            return Acted("ran" if stored.get("decision") == "approved" else "rejected", stored.get("rule"))
        return Acted("ran" if outcome == "approved" else "rejected", rule, reason)

    async def decide(self, action_id: str, decision: Literal["approve", "reject"], sha256: str | None) -> None:
        """A person's decision (a button, a frame, the terminal).

        Raises :class:`Refused` when there is no such proposal, it was decided
        already, an approval is for other code than the proposal's, or the agent
        mode is ``off`` (then nothing proposed can be approved).
        """
        async with self._lock:
            proposal, related = await self._find(action_id)
            if any(e.kind == "action_decided" for e in related):
                raise Refused(f"action {action_id!r} was already decided")
            outcome: Decision = "approved" if decision == "approve" else "rejected"
            if outcome == "approved":
                if sha256 != proposal.sha256:
                    # The approval must be for exactly the code the person was shown.
                    raise Refused("the code's sha256 does not match the proposal; nothing was approved or run")
                if await self.assistant.current_mode() == "off":
                    raise Refused(
                        f"action {action_id!r} cannot be approved: the agent mode is off, which runs nothing "
                        "the agent proposed. Switch it to ask first."
                    )
            stored = await self.record(proposal, outcome, rule="user")
            if stored.get("by") != "user" or stored.get("decision") != outcome:
                raise Refused(f"action {action_id!r} was already decided")

    async def set_mode(
        self, mode: Literal["off", "ask", "auto"], by: Literal["sidebar", "magic", "widget", "runner"]
    ) -> None:
        """Set the notebook's agent mode, for every host; ``off`` expires what waits for a person.

        A proposal that was waiting when the mode went ``off`` is rejected then, so
        switching back to ``ask`` later does not bring it back to be approved.
        """
        async with self._lock:
            await self.assistant.record(SettingsChanged(agent=mode, by=by))
            if mode != "off":
                return
            for proposal in await asyncio.to_thread(self.assistant.history.undecided, self.notebook):
                await self.record(proposal, "rejected", rule="off", reason="the agent mode was switched off")

    # -- running ---------------------------------------------------------------------

    async def run(self, action_id: str, run: Run) -> Acted:
        """Run an approved action once, if the approval holds under the mode in force now."""
        async with self._lock:
            if action_id in self._claimed:
                return Acted("refused", None, f"action {action_id} has already run; an approval is good for one run")
            mode = await self.assistant.current_mode()
            try:
                granted = await asyncio.to_thread(approval, self.assistant.history, self.notebook, action_id, mode=mode)
            except NotApproved as exc:
                return Acted("refused", None, str(exc))
            self._claimed.add(action_id)
        ran = await run(granted)
        if ran is None:
            return Acted("handed", granted.rule)
        await self.executed(action_id, ran)
        return Acted("ran", granted.rule, ran=ran)

    # -- recording ---------------------------------------------------------------------

    async def _find(self, action_id: str) -> tuple[ActionProposed, list[Event]]:
        """The proposal of ``action_id`` and the events that name it; :class:`Refused` if it cannot be had."""
        try:
            proposal, related = await asyncio.to_thread(self.assistant.history.find_action, self.notebook, action_id)
        except UnreadableEvent as exc:
            raise Refused(f"action {action_id!r}: its record cannot be read ({exc})") from None
        if proposal is None:
            raise Refused(f"no proposed action {action_id!r} in this notebook")
        return proposal, related

    async def record(
        self, proposal: ActionProposed, decision: Decision, *, rule: Rule, reason: str | None = None
    ) -> dict[str, Any]:
        """Record a decision on ``proposal``, bound to its code's hash (once per action)."""
        event = ActionDecided(
            action_id=proposal.action_id,
            decision=decision,
            by="user" if rule == "user" else "policy",
            rule=rule,
            sha256=proposal.sha256,
            reason=reason,
        )
        return await self.assistant.record(event, dedup_key=f"decide:{proposal.action_id}")

    async def undone(self, action_id: str) -> dict[str, Any]:
        """Record that the person undid ``action_id`` (once per action).

        Only an action that changed the notebook and ran: an edit (its cell is back to the
        proposal's old source) or an inserted cell (removed). The tab did the undoing in
        its notebook; this is the record every tab, and the model, reads.
        """
        proposal, related = await self._find(action_id)
        if proposal.action not in UNDOABLE:
            raise Refused(f"a {proposal.action} action cannot be undone")
        if not any(isinstance(e, ActionExecuted) and e.ok for e in related):
            raise Refused(f"action {action_id!r} has not changed the notebook, so there is nothing to undo")
        if any(e.kind == "action_undone" for e in related):
            raise Refused(f"action {action_id!r} was already undone")
        return await self.assistant.record(ActionUndone(action_id=action_id), dedup_key=f"undone:{action_id}")

    async def executed(self, action_id: str, ran: Ran) -> dict[str, Any]:
        """Record what became of an approved action (once per action)."""
        event = ActionExecuted(action_id=action_id, **dataclasses.asdict(ran))
        return await self.assistant.record(event, dedup_key=f"executed:{action_id}")
