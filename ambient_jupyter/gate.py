"""The approval gate: who may run what the agent proposes.

Two halves, used by every host:

* :func:`policy` says what the notebook's mode decides on its own: ``auto``
  approves; ``ask`` approves only plugin actions declared safe, and otherwise waits
  for a person (or, with no person to ask, rejects); ``off`` rejects.
* :func:`approval` is checked by whoever is about to run the code, right before it
  runs: the runner before it executes a cell, the kernel before it calls a plugin,
  the server before it hands a cell to a tab. It reads the proposal and the
  decision **from the history only** (never from a notebook file, so a shared
  notebook cannot carry a pre-approval), and accepts only an approval recorded for
  the sha256 of exactly the code that is about to run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Protocol

from .actions import code_sha256

__all__ = ["AGENT_MODES", "Approval", "NotApproved", "Verdict", "approval", "find_action", "policy"]

AGENT_MODES = ("off", "ask", "auto")
Verdict = Literal["approve", "ask", "reject"]


class _Reader(Protocol):
    def read(self, notebook: str, after: int = 0, *, limit: int | None = None) -> list[dict[str, Any]]: ...


class NotApproved(PermissionError):
    """The code may not run; the message says why."""


def policy(mode: str, *, safe: bool, person_present: bool) -> tuple[Verdict, str]:
    """What the agent mode decides without asking anyone, and why."""
    if mode == "auto":
        return "approve", "agent mode is auto"
    if mode == "ask":
        if safe:
            return "approve", "a plugin action that changes only its widget"
        if person_present:
            return "ask", ""
        return "reject", "agent mode is ask and there is no one to ask"
    return "reject", "agent mode is off"


@dataclasses.dataclass(frozen=True)
class Approval:
    """An approved action, as the history records it."""

    proposal: dict[str, Any]
    decision: dict[str, Any]

    @property
    def action_id(self) -> str:
        return str(self.proposal["action_id"])

    @property
    def code(self) -> str:
        return str(self.proposal["code"])


_PAGE = 1000


def find_action(history: _Reader, notebook: str, action_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The proposal with ``action_id`` and every event that refers to it, from the history."""
    proposal: dict[str, Any] | None = None
    related: list[dict[str, Any]] = []
    after = 0
    while True:
        page = history.read(notebook, after, limit=_PAGE)
        for event in page:
            if event.get("action_id") != action_id:
                continue
            if event.get("kind") == "action_proposed" and proposal is None:
                proposal = event
            else:
                related.append(event)
        if len(page) < _PAGE:
            return proposal, related
        after = int(page[-1]["seq"])


def approval(history: _Reader, notebook: str, action_id: str, code: str | None = None) -> Approval:
    """The recorded approval of ``action_id``, valid for ``code`` (default: the proposed code).

    Raises :class:`NotApproved` unless the history holds the proposal, exactly one
    decision, an approval, bound to the sha256 of the code, and no execution yet
    (an approval is good for one run).
    """
    proposal, related = find_action(history, notebook, action_id)
    if proposal is None:
        msg = f"no proposed action {action_id!r} in this notebook's history"
        raise NotApproved(msg)
    proposed = str(proposal.get("code", ""))
    to_run = proposed if code is None else code
    digest = code_sha256(to_run)
    if digest != proposal.get("sha256") or code_sha256(proposed) != proposal.get("sha256"):
        msg = f"action {action_id}: the code to run is not the code that was proposed; nothing runs"
        raise NotApproved(msg)
    decisions = [e for e in related if e.get("kind") == "action_decided"]
    if not decisions:
        msg = f"action {action_id} has not been approved"
        raise NotApproved(msg)
    decision = decisions[0]
    if decision.get("decision") != "approved":
        msg = f"action {action_id} was rejected ({decision.get('reason') or decision.get('by')})"
        raise NotApproved(msg)
    if decision.get("sha256") != digest:
        msg = f"action {action_id}: the approval was given for other code; nothing runs"
        raise NotApproved(msg)
    if any(e.get("kind") == "action_executed" for e in related):
        msg = f"action {action_id} has already run; an approval is good for one run"
        raise NotApproved(msg)
    return Approval(proposal, decision)
