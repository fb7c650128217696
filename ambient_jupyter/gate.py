"""The approval gate: who may run what the agent proposes.

Two halves, used by the act engine (:mod:`ambient_jupyter.act`) in every host:

* :func:`policy` says what the notebook's mode decides on its own, and by which
  :data:`Rule`: ``auto`` approves; ``ask`` approves only plugin actions declared
  safe, and otherwise waits for a person (or, with no person to ask, rejects);
  ``off`` rejects.
* :func:`approval` is checked right before code runs. It reads the proposal and the
  decision **from the history only** (never from a notebook file, so a shared
  notebook cannot carry a pre-approval), accepts only an approval recorded for the
  sha256 of exactly the code that is about to run, and judges it by the agent mode
  in force *now*: under ``off`` nothing runs, and an approval the ``auto`` mode gave
  lapses once the mode is no longer ``auto``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

from .actions import code_sha256
from .events import ActionDecided, ActionProposed
from .history import History, UnreadableEvent

__all__ = [
    "AGENT_MODES",
    "Approval",
    "NotApproved",
    "Policy",
    "Rule",
    "Verdict",
    "approval",
    "policy",
]

AGENT_MODES = ("off", "ask", "auto")
Verdict = Literal["approve", "ask", "reject"]
Rule = Literal["user", "auto", "safe_plugin", "no_person", "off", "failed_before"]
"""What decided: a person, or which part of the policy."""


class NotApproved(PermissionError):
    """The code may not run; the message says why."""


class Policy(NamedTuple):
    verdict: Verdict
    reason: str
    """For people; empty when a person must decide."""
    rule: Rule | None
    """None when a person must decide."""


_REASONS: dict[Rule, str] = {
    "auto": "agent mode is auto",
    "safe_plugin": "a plugin action that changes only its widget",
    "no_person": "agent mode is ask and there is no one to ask",
    "off": "agent mode is off",
}


def policy(mode: str, *, safe: bool, person_present: bool) -> Policy:
    """What the agent mode decides without asking anyone, by which rule, and why."""
    if mode == "auto":
        return Policy("approve", _REASONS["auto"], "auto")
    if mode == "ask":
        if safe:
            return Policy("approve", _REASONS["safe_plugin"], "safe_plugin")
        if person_present:
            return Policy("ask", "", None)
        return Policy("reject", _REASONS["no_person"], "no_person")
    return Policy("reject", _REASONS["off"], "off")


@dataclasses.dataclass(frozen=True)
class Approval:
    """An approved action, as the history records it."""

    proposal: ActionProposed
    decision: ActionDecided

    @property
    def action_id(self) -> str:
        return self.proposal.action_id

    @property
    def code(self) -> str:
        return self.proposal.code

    def provenance(self) -> dict[str, Any]:
        """Where the approved code came from, as a run frame and an agent-written cell's
        metadata say it. Informational only: approvals are read from the history, never from these."""
        proposal, decision = self.proposal, self.decision
        return {
            "action_id": proposal.action_id,
            "action": proposal.action,
            "model": proposal.model,
            "role": proposal.role,
            "reply_to": proposal.reply_to,
            "sha256": proposal.sha256,
            "approved_at": decision.at,
            "decided_by": decision.by,
        }

    @property
    def rule(self) -> Rule:
        """The rule of the decision; older histories have only ``by`` and the reason."""
        if self.decision.rule is not None:
            return self.decision.rule
        if self.decision.by != "policy":
            return "user"
        for known, reason in _REASONS.items():
            if self.decision.reason == reason:
                return known
        # An unknown policy decision: treated as the strictest kind of automatic approval.
        return "auto"


def approval(history: History, notebook: str, action_id: str, code: str | None = None, *, mode: str) -> Approval:
    """The recorded approval of ``action_id``, valid for ``code`` (default: the proposed code).

    ``mode`` is the notebook's agent mode in force now. Raises :class:`NotApproved`
    unless the history holds the proposal, exactly one decision, an approval, bound
    to the sha256 of the code, and no execution yet (an approval is good for one
    run), and the mode still allows it.
    """
    try:
        proposal, related = history.find_action(notebook, action_id)
    except UnreadableEvent as exc:
        msg = f"action {action_id}: its record cannot be read, so nothing runs ({exc})"
        raise NotApproved(msg) from None
    if proposal is None:
        msg = f"no proposed action {action_id!r} in this notebook's history"
        raise NotApproved(msg)
    digest = code_sha256(proposal.code if code is None else code)
    if digest != proposal.sha256 or code_sha256(proposal.code) != proposal.sha256:
        msg = f"action {action_id}: the code to run is not the code that was proposed; nothing runs"
        raise NotApproved(msg)
    decision = next((e for e in related if isinstance(e, ActionDecided)), None)
    if decision is None:
        msg = f"action {action_id} has not been approved"
        raise NotApproved(msg)
    if decision.decision != "approved":
        msg = f"action {action_id} was rejected ({decision.reason or decision.by})"
        raise NotApproved(msg)
    if decision.sha256 != digest:
        msg = f"action {action_id}: the approval was given for other code; nothing runs"
        raise NotApproved(msg)
    if any(e.kind == "action_executed" for e in related):
        msg = f"action {action_id} has already run; an approval is good for one run"
        raise NotApproved(msg)
    granted = Approval(proposal, decision)
    if mode not in ("ask", "auto"):
        msg = f"action {action_id}: the agent mode is now {mode}, so nothing the agent proposed runs"
        raise NotApproved(msg)
    if granted.rule == "auto" and mode != "auto":
        msg = (
            f"action {action_id} was approved only because the agent mode was auto; it is now {mode}, "
            "so it does not run on its own. Ask again to get a new proposal to approve."
        )
        raise NotApproved(msg)
    return granted
