"""The assistant for one notebook: reads the history, answers, acts, reacts to errors.

It knows nothing about hosts. A host (the runner, the in-kernel host, the Jupyter
server) gives it a :class:`~ambient_jupyter.history.History`, a notebook and its
models, subscribes to its tokens and events, and calls :meth:`Assistant.ask`,
:meth:`Assistant.react` or :meth:`Assistant.fix`.

Every turn is one JSON action (``actions.py``), constrained to the schema where
the backend can do that. The user reads its ``text`` as it streams; anything else
it proposes is stored as an ``action_proposed`` event, for the gate (``gate.py``)
and the host to decide and run. Nothing here runs code.

Two roles share the one history: the **watcher** (local, sees every event) and the
**expert** (a frontier model, handed a turn with ``/expert`` or ``%%ask --expert``,
or by the watcher itself when its action fails validation twice). Each has its own
transcript of the same events, so switching never resets or duplicates anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ._trim import trim_text
from .actions import (
    ACTIONS,
    CODE_ACTIONS,
    Action,
    ActionInvalid,
    CallPlugin,
    EditCell,
    Explain,
    TextStream,
    action_args,
    action_code,
    action_schema,
    code_sha256,
    parse_action,
)
from .backends import Backend, BackendError, StreamInterruptedError, resolve_backend
from .backends.base import Message
from .code_check import line_diff, lost_purpose, parse_problem, same_code
from .config import AmbientSettings
from .context import Transcript
from .events import (
    ActionProposed,
    AssistantMessage,
    MessageSource,
    ModelError,
    Seen,
    UserMessage,
)
from .history import History

__all__ = ["NO_EXPERT_HELP", "Assistant", "Role", "Turn"]

log = logging.getLogger("ambient_jupyter.assistant")

Role = Literal["watcher", "expert"]
TokenCallback = Callable[[str, str], Any]
"""``(reply_id, text)``; may be sync or async."""
EventCallback = Callable[[dict[str, Any]], Any]

REPLY_RESERVE = 512
"""Tokens kept free in the context for the reply itself, at least (``max_reply_tokens`` if more)."""
ATTEMPTS = 2
"""Tries a model gets to produce a valid action before the turn fails (or escalates)."""
NO_EXPERT_HELP = (
    "No expert model is set. Set one with AMBIENT_EXPERT=openai:<name> (plus OPENAI_BASE_URL "
    "and OPENAI_API_KEY), c.AmbientSettings.expert, or %ambient expert=openai:<name>."
)
FIX_ACTIONS = ("explain", "insert_cell", "edit_cell")
"""What an unprompted reaction to a failure may do."""
MAX_IMAGES = 2
"""Pictures per prompt, for a model that sees: the newest plots (each at most 256 KB, see capture)."""
SEEN_NOTE_CHARS = 4000
"""The host's words kept in a reply's record of what the model saw."""


async def _call(hook: Callable[..., Any] | None, *args: Any) -> None:
    """Run a sync or async hook (one helper, as nbclient does for its hooks)."""
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


@dataclasses.dataclass
class Turn:
    """What one turn left in the history."""

    message: dict[str, Any] | None
    """The stored ``assistant_message``; None when the kernel's checked fix needed no words."""
    proposals: list[ActionProposed] = dataclasses.field(default_factory=list)
    """The stored ``action_proposed`` events (the kernel's candidate, or the model's)."""

    @property
    def proposal(self) -> ActionProposed | None:
        """The first proposal: what a host that runs one thing runs."""
        return self.proposals[0] if self.proposals else None

    @property
    def state(self) -> str:
        return "complete" if self.message is None else str(self.message.get("state"))

    @property
    def text(self) -> str:
        if self.message is None:
            return self.proposal.text if self.proposal else ""
        return str(self.message.get("text", ""))


class Assistant:
    """Answers chat, proposes actions and diagnoses failures for one notebook.

    Parameters
    ----------
    history
        The shared history; the assistant appends its own events to it.
    notebook
        The notebook identifier (see :func:`~ambient_jupyter.history.normalize_notebook`).
    model
        The watcher: a :class:`Backend`, or a model spec (``auto``, ``embedded``,
        ``ollama:...``), resolved on first use.
    expert
        The frontier model handed a turn on request (a spec or a backend), if any.
    agent
        The agent mode, ``off``, ``ask`` or ``auto``: with ``off`` the model only talks.
    quiet
        When true, failures are not diagnosed unprompted.
    cooldown
        Seconds after an unprompted reply during which further failures are left
        alone: one diagnosis per burst of errors.
    """

    @classmethod
    def from_settings(
        cls,
        history: History,
        notebook: str,
        settings: AmbientSettings,
        *,
        agent: str | None = None,
        on_token: TokenCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> Assistant:
        """The assistant as every host builds it: models and manners from ``settings``.

        One place, so that a setting (the expert above all) cannot be honoured by one
        host and forgotten by another. ``agent`` overrides ``settings.agent`` where the
        host already knows the notebook's own mode; ``on_token``/``on_event`` are the
        host's hooks.
        """
        return cls(
            history,
            notebook,
            settings.model,
            expert=settings.expert or None,
            agent=settings.agent if agent is None else agent,
            quiet=settings.quiet,
            cooldown=settings.cooldown,
            max_reply_tokens=settings.max_reply_tokens,
            on_token=on_token,
            on_event=on_event,
        )

    def __init__(
        self,
        history: History,
        notebook: str,
        model: Backend | str = "auto",
        *,
        expert: Backend | str | None = None,
        agent: str = "ask",
        quiet: bool = False,
        cooldown: float = 30.0,
        max_reply_tokens: int = 1024,
        on_token: TokenCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.history = history
        self.notebook = notebook
        self._models: dict[Role, Backend | str | None] = {"watcher": model, "expert": expert or None}
        self._backends: dict[Role, Backend | None] = {
            role: m if isinstance(m, Backend) else None for role, m in self._models.items()
        }
        self._transcripts: dict[Role, Transcript] = {}
        self.default_agent = agent
        """The agent mode until the notebook's history sets one."""
        self.agent = agent
        """The mode as last read (for display); decisions read :meth:`current_mode`."""
        self.quiet = quiet
        self.cooldown = cooldown
        self.max_reply_tokens = max_reply_tokens
        self.on_token = on_token
        self.on_event = on_event
        self._reply_task: asyncio.Task[Any] | None = None
        self._last_unprompted = float("-inf")
        self._lock = asyncio.Lock()
        self._stops = 0
        """How many times :meth:`stop` was called: a turn that was waiting when it was
        called is not answered (Stop ends the current turn and clears the queue)."""
        self._turns_waiting = 0
        """Turns waiting for the lock: a prefill holding it stops reading for them."""
        self._resolving = asyncio.Lock()

    # -- models ---------------------------------------------------------------

    def spec(self, role: Role = "watcher") -> str:
        backend = self._backends[role]
        if backend is not None:
            return backend.spec
        return str(self._models[role] or "")

    @property
    def model_spec(self) -> str:
        return self.spec("watcher")

    @property
    def expert_spec(self) -> str | None:
        return self.spec("expert") or None

    def set_model(self, model: Backend | str, role: Role = "watcher") -> None:
        """Switch a role's model; the history (and so the conversation) is kept as it is."""
        self._models[role] = model or None
        self._backends[role] = model if isinstance(model, Backend) else None
        self._transcripts.pop(role, None)

    async def backend(self, role: Role = "watcher") -> Backend:
        # One resolution at a time: two callers at once (a warm-up and a turn) would
        # each probe for ``auto`` and build a backend, and one would be left open.
        async with self._resolving:
            while (backend := self._backends[role]) is None:
                spec = self._models[role]
                if not spec:
                    raise BackendError(NO_EXPERT_HELP)
                resolved = await resolve_backend(str(spec))
                if self._models[role] is spec and self._backends[role] is None:
                    self._backends[role] = resolved
                else:  # set_model() ran meanwhile: its choice wins
                    await resolved.aclose()
            return backend

    @property
    def model_in_use(self) -> bool:
        """Whether the watcher's model was needed already (a turn, a load)."""
        return self._backends["watcher"] is not None

    async def transcript(self, role: Role = "watcher") -> Transcript:
        """The role's view of the history, brought up to date."""
        transcript = self._transcripts.get(role)
        if transcript is None:
            backend = await self.backend(role)
            budget = await backend.context_length() - max(REPLY_RESERVE, self.max_reply_tokens)
            transcript = self._transcripts[role] = Transcript(budget=budget, count_tokens=backend.count_tokens)
        new = await asyncio.to_thread(self.history.read, self.notebook, transcript.last_seq)
        transcript.extend(new)
        return transcript

    # -- storing --------------------------------------------------------------

    async def record(self, event: BaseModel, dedup_key: str | None = None) -> dict[str, Any]:
        """Store ``event`` in this notebook's history (``on_event`` sees it); returns what is stored."""
        stored = await asyncio.to_thread(self.history.append, self.notebook, event, dedup_key=dedup_key)
        await _call(self.on_event, stored)
        return stored

    # -- public ---------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()

    async def current_mode(self) -> str:
        """The notebook's agent mode in force now (``%ambient``, the sidebar, the widget set it)."""
        self.agent = await asyncio.to_thread(self.history.agent_mode, self.notebook, self.default_agent)
        return self.agent

    async def allowed(self, actions: Sequence[str] = ACTIONS) -> tuple[str, ...]:
        """``actions`` as the agent mode in force permits (``off``: only talk)."""
        return ("explain",) if await self.current_mode() == "off" else tuple(actions)

    async def ask(
        self,
        text: str,
        *,
        source: MessageSource = "cli",
        client_id: str | None = None,
        on_token: TokenCallback | None = None,
        role: Role = "watcher",
        cells: dict[int, str] | None = None,
        before_turn: Callable[[], Any] | None = None,
    ) -> Turn:
        """Store a user message and answer it (with an action, if the mode allows one).

        A ``client_id`` already seen for this notebook is not stored or answered
        twice: the earlier answer is returned. ``before_turn`` runs before a new
        question is stored (a host records the kernel's state there, so the question
        stays the last thing the model reads); a resent question does not run it.
        ``cells``: the current source of cells the question is about, newer than their
        last run; an edit the model proposes for one is made against that source.
        """
        key = f"chat:{client_id}" if client_id else None
        if before_turn is not None:
            asked = await asyncio.to_thread(self.history.keyed, self.notebook, key) if key else None
            if asked is None:
                await _call(before_turn)
        event = UserMessage(text=text, source=source, client_id=client_id, to=role, cells=cells or {})
        stored = await self.record(event, dedup_key=key)
        if client_id:
            earlier = await self._earlier_turn(stored["seq"])
            if earlier is not None:
                return earlier
        return await self._run_turn(
            stored["seq"], [], await self.allowed(), role=role, on_token=on_token, once=bool(client_id)
        )

    async def _earlier_turn(self, seq: int) -> Turn | None:
        later = await asyncio.to_thread(self.history.read, self.notebook, seq)
        message = next((e for e in later if e.get("kind") == "assistant_message" and e.get("reply_to") == seq), None)
        if message is None:
            return None
        proposals = [e for e in later if e.get("kind") == "action_proposed" and e.get("reply_to") == message["seq"]]
        return Turn(message, [p for p in map(_as_proposal, proposals) if p is not None])

    def should_react(self, event: dict[str, Any]) -> bool:
        """True for a failed cell, unless quiet, busy, or within the cooldown of the last one."""
        if event.get("kind") != "cell_executed" or event.get("status") != "error":
            return False
        if self.quiet or self.streaming:
            return False
        return time.monotonic() - self._last_unprompted >= self.cooldown

    async def react(self, event: dict[str, Any], *, actions: Sequence[str] = FIX_ACTIONS) -> Turn | None:
        """Diagnose a failed cell on our own, if :meth:`should_react` allows it.

        ``actions`` limits what the reaction may propose (a host that cannot ask
        anyone passes ``("explain",)``).
        """
        if not self.should_react(event):
            return None
        self._last_unprompted = time.monotonic()
        return await self._failure_turn(event, await self.allowed(actions))

    async def fix(self, event: dict[str, Any], *, attempt: int = 1) -> Turn:
        """Propose a fix for a failed cell, as an edit of that cell (the headless ``--agent`` loop).

        The kernel's candidate fix, if the analyzer found one; otherwise the model's.
        After a fix failed, pass the fix's own failure: it has hints of its own. Not
        throttled: the caller bounds the attempts.
        """
        return await self._failure_turn(event, ("edit_cell",), attempt=attempt)

    async def _failure_turn(self, event: dict[str, Any], allowed: Sequence[str], *, attempt: int = 1) -> Turn:
        """The one path for a failure: the kernel's checked fix if there is one, else the model.

        A checked fix is not handed to the model to explain: the hint already says what
        is wrong and the diff what changes, and a small model's paraphrase of a fact it
        was given is often wrong. The model answers when asked (its transcript has the
        same facts), and proposes when the kernel found no fix.
        """
        seq, count = int(event.get("seq", 0)), event.get("execution_count")
        can_fix = "edit_cell" in allowed and isinstance(count, int)
        candidate = await self._propose_candidate(event) if can_fix else None
        if candidate is not None:
            return Turn(None, [candidate])
        model_allowed = tuple(allowed) if can_fix else tuple(a for a in allowed if a != "edit_cell") or ("explain",)
        note = _failure_note(event, attempt, can_fix)
        return await self._run_turn(
            seq,
            [note],
            model_allowed,
            cells=[count] if isinstance(count, int) else None,
            failing=str(event.get("code", "")),
        )

    async def _propose_candidate(self, event: dict[str, Any]) -> ActionProposed | None:
        """Store the kernel's candidate fix for a failed cell as an ``edit_cell`` proposal."""
        from .hints import candidate

        found = candidate(event.get("hints") or [])
        if found is None:
            return None
        code = str(found["fix"])
        failing = str(event.get("code", ""))
        if parse_problem(code) is not None or same_code(code, failing) or lost_purpose(failing, code):
            return None  # the kernel checked this too; a record from elsewhere is checked again
        proposal = ActionProposed(
            action_id=uuid.uuid4().hex,
            action="edit_cell",
            code=code,
            sha256=code_sha256(code),
            args={"cell": event.get("execution_count")},
            text=str(found.get("text") or ""),
            old_code=failing,
            diff=line_diff(failing, code),
            origin="hint",
            model=None,
            reply_to=int(event.get("seq", 0)),
        )
        return _as_proposal(await self.record(proposal, dedup_key=f"candidate:{event.get('seq')}"))

    def stop(self) -> bool:
        """Cancel the turn being written, if any, and every turn waiting behind it.

        The cut turn is stored as ``incomplete`` and proposes nothing; a waiting
        question gets an ``incomplete`` reply that says it was stopped, without the
        model being asked. Returns True if a turn was being written.
        """
        self._stops += 1
        # Task.cancel() is False for a task that is done: True exactly when a turn was streaming.
        return self._reply_task is not None and self._reply_task.cancel()

    async def stopped(self) -> None:
        """:meth:`stop`, then wait until the cut turn has been stored (a host shutting down)."""
        task = self._reply_task
        if self.stop() and task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def load(self) -> None:
        """Get the watcher's model ready (a host calls it at start, in the background).

        A model that cannot be loaded is said at the first turn, not here.
        """
        try:
            await (await self.backend()).load()
        except Exception as exc:  # noqa: BLE001 (reported, to the person, by the first turn)
            log.info("the model could not be loaded ahead of use: %s", exc)

    async def prefill(self, stop: Callable[[], bool] | None = None) -> None:
        """Let the model read new events while idle, so the next reaction is cheap.

        A turn that arrives meanwhile comes first: the backend stops reading at its
        next chunk (``yield_to``), and the turn reads the rest. So does ``stop`` (polled
        from the model's thread) when it turns true.
        """
        if self.streaming or self._turns_waiting:
            return
        async with self._lock:
            backend = await self.backend()
            transcript = await self.transcript()
            await backend.prefill(
                transcript.messages(),
                yield_to=lambda: self._turns_waiting > 0 or (stop is not None and stop()),
            )

    # -- the turn ---------------------------------------------------------------

    async def _run_turn(
        self,
        reply_to: int,
        tail: list[Message],
        allowed: Sequence[str],
        *,
        role: Role = "watcher",
        on_token: TokenCallback | None = None,
        once: bool = False,
        cells: list[int] | None = None,
        failing: str | None = None,
    ) -> Turn:
        stops = self._stops
        self._turns_waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._turns_waiting -= 1
        try:
            if self._stops != stops:
                return await self._unanswered(reply_to, role)
            if once:
                # A resend that arrived while its first send was being answered waited
                # for the lock behind it: return that answer instead of a second one.
                earlier = await self._earlier_turn(reply_to)
                if earlier is not None:
                    return earlier
            checks = _Checks(cells, failing)
            self._reply_task = asyncio.ensure_future(self._attempts(reply_to, tail, allowed, role, on_token, checks))
            try:
                return await asyncio.shield(self._reply_task)
            except asyncio.CancelledError:
                # Our caller was cancelled: stop the turn too, and let it store itself.
                self._reply_task.cancel()
                await asyncio.gather(self._reply_task, return_exceptions=True)
                raise
        finally:
            self._lock.release()

    async def _unanswered(
        self, reply_to: int, role: Role, why: str = "Stopped before it was answered", *, once: bool = False
    ) -> Turn:
        """An ``incomplete`` reply that says why the model never answered ``reply_to``.

        ``once``: stored under a key, so two processes noticing the same question store one.
        """
        message = AssistantMessage(
            text=f"{why}: ask again if you still want an answer.",
            model=self.spec(role),
            state="incomplete",
            reply_to=reply_to,
            reply_id=uuid.uuid4().hex,
            role=role,
        )
        key = f"unanswered:{reply_to}" if once else None
        return Turn(await self.record(message, dedup_key=key), [])

    async def interrupted(self, question: UserMessage) -> None:
        """Mark a question that a process which died (SIGKILL, power cut) never answered."""
        why = "Interrupted: the server stopped before it answered"
        await self._unanswered(question.seq, question.to, why, once=True)

    async def _attempts(
        self,
        reply_to: int,
        tail: list[Message],
        allowed: Sequence[str],
        role: Role,
        on_token: TokenCallback | None,
        checks: _Checks,
    ) -> Turn:
        extra: list[Message] = []
        turn: Turn | None = None
        for _ in range(ATTEMPTS):
            turn, raw, problem = await self._attempt(reply_to, tail + extra, allowed, role, on_token, checks)
            if problem is None:
                return turn
            # Show the model what it wrote and what was wrong with it, then let it retry.
            extra = [
                {"role": "assistant", "content": raw},
                {"role": "user", "content": f"That is not a valid action: {problem}. Reply with one JSON object."},
            ]
        assert turn is not None
        if role == "watcher" and self._models["expert"]:
            log.info("the watcher's action failed validation %d times; handing the turn to the expert", ATTEMPTS)
            turn, _raw, _problem = await self._attempt(reply_to, tail, allowed, "expert", on_token, checks)
        return turn

    async def _attempt(
        self,
        reply_to: int,
        tail: list[Message],
        allowed: Sequence[str],
        role: Role,
        on_token: TokenCallback | None,
        checks: _Checks,
    ) -> tuple[Turn, str, str | None]:
        """One model call. Returns the stored turn, the raw output, and what was wrong with it."""
        reply_id = uuid.uuid4().hex
        stream = TextStream()
        state = "complete"
        spec = self.spec(role)
        problem: str | None = None
        action: Action | None = None
        transcript: Transcript | None = None
        seen: Seen | None = None
        try:
            backend = await self.backend(role)
            spec = backend.spec
            transcript = await self.transcript(role)
            cells = checks.cells if checks.cells is not None else transcript.cells
            schema = action_schema(allowed, transcript.plugins, cells, max_tokens=self.max_reply_tokens)
            messages = transcript.messages(tail)
            images = transcript.recent_images(MAX_IMAGES) if await backend.sees_images() else []
            if images:
                # On the last message only: the cached prefix stays as it was.
                messages = [*messages[:-1], {**messages[-1], "images": images}]
            seen = _seen(transcript, tail, len(images))
            async for piece in backend.stream(messages, json_schema=schema, max_tokens=self.max_reply_tokens):
                text = stream.feed(piece)
                if text:
                    await _call(self.on_token, reply_id, text)
                    await _call(on_token, reply_id, text)
            # The prompt's size and what the model had to read of it, where reported.
            usage = backend.usage
            seen = seen.model_copy(
                update={"prompt_tokens": usage.prompt_tokens or None, "read": usage.prompt_evaluated or None}
            )
        except asyncio.CancelledError:
            state = "incomplete"
        except StreamInterruptedError as exc:
            state, problem = "incomplete", str(exc)
        except BackendError as exc:
            state, problem = "error", str(exc)
        if problem is not None:
            log.warning("model %s: %s", spec, problem)
            await self.record(ModelError(message=problem, model=spec))
        invalid: str | None = None
        if state == "complete" and transcript is not None:
            try:
                parsed = parse_action(stream.raw, allowed, transcript.plugins, transcript.cells)
                checks.check(parsed, transcript)
                action = parsed
            except ActionInvalid as exc:
                invalid = str(exc)
        text = action.text if action is not None else stream.shown
        if invalid is not None:
            log.info("model %s: invalid action: %s", spec, invalid)
            state, text = "error", f"{text}\n\n(The model's action was not valid: {invalid})".strip()
        elif not text and problem is not None:
            text = problem
        message = AssistantMessage(
            text=text,
            model=spec,
            state=state,  # type: ignore[arg-type]
            reply_to=reply_to,
            reply_id=reply_id,
            role=role,
            # The exact JSON the model wrote, for its own later turns; prose is the text.
            raw=stream.raw if stream.is_json else None,
            seen=seen,
        )
        stored = await self.record(message)
        proposals = []
        if action is not None and not isinstance(action, Explain) and transcript is not None:
            proposed = await self._propose(action, stored, transcript, role, checks)
            proposals = [proposed] if proposed is not None else []
        return Turn(stored, proposals), stream.raw, invalid

    async def _propose(
        self, action: Action, message: dict[str, Any], transcript: Transcript, role: Role, checks: _Checks
    ) -> ActionProposed | None:
        cell_code = transcript.cells.get(getattr(action, "cell", -1))
        code = action_code(action, cell_code)
        # An edit replaces what the person has now, if they said (Propose again), else what ran.
        old = transcript.sources.get(action.cell, cell_code) if isinstance(action, EditCell) else checks.failing
        safe = False
        if isinstance(action, CallPlugin):
            spec = transcript.plugins.action(action.plugin, action.name) or {}
            safe = bool(spec.get("safe"))
        event = ActionProposed(
            action_id=uuid.uuid4().hex,
            action=action.action,
            code=code,
            sha256=code_sha256(code),
            args=action_args(action),
            text=action.text,
            safe=safe,
            # (An emptied cell is a source too: "" keeps the tab's check that it is unchanged.)
            old_code=old if action.action in CODE_ACTIONS and old is not None else None,
            diff=line_diff(old, code) if action.action in CODE_ACTIONS and old is not None else [],
            model=message.get("model"),
            role=role,
            reply_to=message.get("seq"),
        )
        return _as_proposal(await self.record(event, dedup_key=f"proposal:{message.get('reply_id')}"))


def _as_proposal(stored: dict[str, Any]) -> ActionProposed | None:
    """A stored proposal (which may be an earlier copy under the same key), typed; None if
    it does not fit (an earlier copy another version wrote): then nothing is offered to run from it."""
    try:
        return ActionProposed.model_validate(stored)
    except ValidationError:
        log.warning("a stored proposal cannot be read, so it is not offered: %.200s", stored)
        return None


@dataclasses.dataclass(frozen=True)
class _Checks:
    """What a proposal must pass before anyone sees it (besides the schema).

    ``cells`` limits which cells a turn may refer to; ``failing`` is the code that
    failed (a fix must differ from it).
    """

    cells: list[int] | None = None
    failing: str | None = None

    def check(self, action: Action, transcript: Transcript) -> None:
        """Raise :class:`ActionInvalid` if ``action`` may not be offered to a person."""
        code = getattr(action, "code", None)
        if not isinstance(code, str):
            return
        problem = parse_problem(code)
        if problem is not None:
            raise ActionInvalid(problem)
        if isinstance(action, EditCell) and same_code(code, transcript.cells.get(action.cell, "")):
            msg = f"the code is exactly what cell {action.cell} already holds; change it"
            raise ActionInvalid(msg)
        if self.failing is not None and same_code(code, self.failing):
            msg = "that is the code that failed; change it"
            raise ActionInvalid(msg)
        if self.failing is not None and (lost := lost_purpose(self.failing, code)) is not None:
            raise ActionInvalid(lost)


def _seen(transcript: Transcript, tail: list[Message], images: int) -> Seen:
    """The record of what this call sends: read from the transcript it was built from."""
    said = "\n\n".join(m["content"] for m in tail if m["role"] == "user")
    return Seen(
        events=transcript.window_seqs(),
        summarised=transcript.start,
        images=images,
        note=trim_text(said, SEEN_NOTE_CHARS) if said else None,
    )


def _failure_note(event: dict[str, Any], attempt: int, may_fix: bool) -> Message:
    error = event.get("error") or {}
    count = event.get("execution_count")
    text = f"Cell {count} just failed with {error.get('ename')}: {error.get('evalue')}."
    if event.get("hints"):
        text += " The facts under it were checked in the kernel; rely on them."
    if attempt > 1:
        text += f" This is attempt {attempt}: the previous fix failed too; try something else."
    if may_fix:
        text += (
            f" In one or two sentences, explain the cause, and fix it by editing cell {count}: give its whole new code."
        )
    else:
        text += " In one or two sentences, explain the likely cause."
    return {"role": "user", "content": text}
