"""The headless fix loop of ``ambient-jupyter run --agent ask|auto``.

On an unexpected cell error the agent proposes a fix as a new cell
(:meth:`Assistant.fix`), the gate's policy or the person at the terminal decides,
and an approved fix runs as a new cell right after the failing one, with its
provenance in the cell's metadata. If it runs cleanly the failing cell counts as
fixed; if it fails, the agent may try again, within a bound per cell and per run.

Decisions and runs go through the act engine (:mod:`ambient_jupyter.act`): nothing
runs without an approval checked right before the cell runs, under the agent mode
in force then, and only the proposed code (whose hash was approved) is run. A fix
that timed out, was interrupted or took the kernel with it is reported and never
run again on our own.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import nbformat

from .act import ActEngine, Ran
from .assistant import Assistant
from .cell_driver import CellDriver, CellOutcome, wait_for_cell_event
from .events import ActionProposed
from .gate import Approval

__all__ = ["FixLimits", "FixResult", "HeadlessAgent"]


class Console(Protocol):
    """Where the loop talks to the person running it (the runner's terminal)."""

    def say(self, text: str) -> None:
        """One line of progress."""

    def end(self) -> None:
        """End the reply that was streaming, if any."""

    def cell_added(self) -> None:
        """A cell was inserted (one more to run)."""

    def cell_done(self) -> None:
        """An inserted cell ran."""

    async def confirm(self, header: str, code: str, diff: list[list[str]] | None = None) -> bool | None:
        """Show ``code`` (as ``diff`` against what it fixes, if given) and ask whether to run it.

        None if the question was cut short.
        """

    def show(self, header: str, code: str, diff: list[list[str]] | None = None) -> None:
        """Show what is about to run without asking (a policy approved it)."""

    def hints(self, event: dict[str, Any]) -> None:
        """Show what the kernel found about a failed cell."""


@dataclasses.dataclass(frozen=True)
class FixLimits:
    """How far the agent may go (``--max-fix-attempts``, ``--max-fixes``, ``--agent-timeout``)."""

    attempts_per_cell: int = 2
    fixes_per_run: int = 5
    cell_timeout: float | None = 120.0


@dataclasses.dataclass
class FixResult:
    fixed: bool = False
    """A fix cell ran cleanly: the failing cell no longer fails the run."""
    inserted: int = 0
    """Cells inserted after the failing one."""
    kernel_lost: bool = False
    """The kernel died or would not stop: the run cannot go on."""


def _short(action_id: str) -> str:
    return f"{action_id[:8]}…"


class HeadlessAgent:
    """Fixes failing cells of one run, one proposal at a time.

    ``person_present``: someone can be asked at the ``console`` (stdin and stdout are a
    terminal). ``stopped``: True once the run is being stopped (Ctrl-C); nothing more is
    proposed or run.
    """

    def __init__(
        self,
        assistant: Assistant,
        driver: CellDriver,
        *,
        limits: FixLimits,
        person_present: bool,
        console: Console,
        stopped: Callable[[], bool],
    ) -> None:
        self.assistant = assistant
        self.acts = ActEngine(assistant)
        self.history = assistant.history
        self.notebook = assistant.notebook
        self.driver = driver
        self.limits = limits
        self.person_present = person_present
        self.console = console
        self.stopped = stopped
        self.attempts = 0
        """Fix attempts so far in this run (bounded by ``limits.fixes_per_run``)."""
        self.failed_code: set[str] = set()
        """sha256 of every fix that failed in this run: the same code is not run twice."""

    async def fix(self, index: int, event: dict[str, Any]) -> FixResult:
        """Try to fix the failing cell at ``index`` whose ``cell_executed`` event is ``event``.

        Each fix is the failing cell's code with the fix made (an ``edit_cell``
        proposal); headless, it runs as a new cell right below, so the written notebook
        keeps the failure and shows the fix. When a fix fails, the next attempt works
        from the fix's own failure, with the hints the kernel found for it.
        """
        result = FixResult()
        error = event.get("error") or {}
        label = f"cell [{event.get('execution_count')}]"
        say = self.console.say
        position = index  # each fix goes right below the cell (or fix) before it
        for attempt in range(1, self.limits.attempts_per_cell + 1):
            if self.stopped():
                break
            if self.attempts >= self.limits.fixes_per_run:
                say(f"{label} stays failed: the run's {self.limits.fixes_per_run} fix attempts (--max-fixes) are used")
                break
            self.attempts += 1
            what = "a fix" if attempt == 1 else f"another fix (attempt {attempt} of {self.limits.attempts_per_cell})"
            say(f"{label} failed ({error.get('ename')}: {error.get('evalue')}); asking the agent for {what}")
            try:
                turn = await self.assistant.fix(event, attempt=attempt)
            finally:
                self.console.end()
            proposal = turn.proposal
            if self.stopped():
                if proposal is not None:  # proposed just before Ctrl-C: settle it, so it never runs later
                    await self.acts.record(proposal, "rejected", rule="user", reason="the run was stopped")
                break
            if proposal is None:
                say(f"the agent proposed no fix (its reply is {turn.state}); {label} stays failed")
                break
            say(f"the agent proposes a fix for {label} (action {_short(proposal.action_id)})")
            if proposal.sha256 in self.failed_code:
                reason = "the same code already failed in this run"
                await self.acts.record(proposal, "rejected", rule="failed_before", reason=reason)
                say(f"rejected: {reason}; nothing runs")
                break
            ran: list[tuple[CellOutcome, dict[str, Any] | None]] = []

            async def run(
                granted: Approval, at: int = position + 1, ran: list[tuple[CellOutcome, dict[str, Any] | None]] = ran
            ) -> Ran | None:
                if self.stopped():
                    return Ran(ok=False, error="the run was stopped before the fix ran")
                outcome, fix_event, done = await self._run(granted, at, label)
                ran.append((outcome, fix_event))
                return done

            ask = (lambda p: self._ask(p, label)) if self.person_present else None
            acted = await self.acts.act(proposal, run, ask=ask)
            if acted.state == "rejected":
                if acted.rule == "user":
                    say("rejected; nothing runs")
                else:
                    say(f"rejected by policy ({acted.reason}); nothing the agent proposes runs")
                break
            if acted.state == "refused":
                say(f"not run: {acted.reason}")
                break
            if not ran:
                break
            outcome, fix_event = ran[0]
            result.inserted += 1
            position += 1
            if outcome.status == "ok":
                say(f"fix ran ok; {label} counts as fixed")
                result.fixed = True
                break
            self.failed_code.add(proposal.sha256)
            if outcome.status != "error":
                # Timed out, interrupted, or the kernel is gone: never run again on our own.
                result.kernel_lost = outcome.kernel_lost
                break
            say(f"the fix failed too ({outcome.ename}: {outcome.evalue})")
            if fix_event is not None:
                event, error = fix_event, fix_event.get("error") or {}
                self.console.hints(fix_event)
        return result

    async def _ask(self, proposal: ActionProposed, label: str) -> bool | None:
        """The person at the terminal decides."""
        return await self.console.confirm(self._header(proposal, label), proposal.code, proposal.diff)

    @staticmethod
    def _header(proposal: ActionProposed, label: str) -> str:
        who = "the kernel's analysis" if proposal.origin == "hint" else "the agent"
        action = _short(proposal.action_id)
        return f"{who} proposes this fix of {label}, to run as a new cell below it (action {action}):"

    async def _run(
        self, approved: Approval, position: int, label: str
    ) -> tuple[CellOutcome, dict[str, Any] | None, Ran]:
        """Insert and run an approved fix at ``position``: how it ended, its recorded event, and the outcome."""
        proposal = approved.proposal
        if approved.rule == "user":
            self.console.say("approved; running it")
        else:
            self.console.say(f"approved by policy ({approved.decision.reason})")
            self.console.show(self._header(proposal, label), approved.code, proposal.diff)
        # Only the approved proposal's code runs: the engine checked its sha256 just now.
        cell = nbformat.v4.new_code_cell(approved.code, metadata={"ambient": approved.provenance()})
        self.driver.insert(position, cell)
        self.console.cell_added()
        before = await asyncio.to_thread(self.history.last_seq, self.notebook)
        outcome = await self.driver.execute(position, timeout=self.limits.cell_timeout)
        self.console.cell_done()
        event = None
        if outcome.replied:
            event = await wait_for_cell_event(self.history, self.notebook, outcome.execution_count, before)
        error, message = self._describe(outcome, approved.action_id)
        if message:
            self.console.say(message)
        done = Ran(ok=outcome.status == "ok", cell_event_seq=event["seq"] if event else None, error=error)
        return outcome, event, done

    def _describe(self, outcome: CellOutcome, action_id: str) -> tuple[str | None, str]:
        """The ``error`` stored with the execution, and what to tell the person."""
        short = _short(action_id)
        if outcome.status == "ok":
            return None, ""
        if outcome.status == "error":
            return f"{outcome.ename}: {outcome.evalue}", ""
        if outcome.status == "timeout":
            limit = f"{self.limits.cell_timeout:g}"
            return (
                f"timed out after {limit} s; interrupted",
                f"the agent's cell (action {short}) timed out after {limit} s and was interrupted; "
                "it is not run again (raise --agent-timeout to give it longer)",
            )
        if outcome.status == "interrupted":
            return "interrupted (Ctrl-C)", f"the agent's cell (action {short}) was interrupted"
        if outcome.status == "dead":
            return (
                "the kernel died while the cell ran; nothing was re-run",
                f"the kernel died while running the agent's cell (action {short}); nothing was re-run "
                "and the run stops here",
            )
        return (
            "the kernel did not stop after an interrupt; nothing was re-run",
            f"the agent's cell (action {short}) did not stop when interrupted; the run stops here",
        )
