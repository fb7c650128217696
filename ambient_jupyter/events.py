"""Typed events: the one vocabulary shared by the kernel, the history and every host.

Every event crossing a boundary (SQLite row, WebSocket frame, ``history --json``)
is parsed into one of these models, discriminated by ``kind``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ._clock import now_iso

__all__ = [
    "ActionDecided",
    "ActionExecuted",
    "ActionProposed",
    "ActionUndone",
    "AssistantMessage",
    "CellError",
    "CellExecuted",
    "Event",
    "Hint",
    "KernelDied",
    "KernelState",
    "MessageSource",
    "ModelError",
    "PluginRegistered",
    "Seen",
    "SettingsChanged",
    "StateEntry",
    "UserMessage",
    "WidgetChanged",
    "death_key",
    "parse_event",
]


class _Open(BaseModel):
    # Unknown fields are kept so that a newer writer's extra data survives a read by
    # an older reader (the history is shared by processes of different versions).
    model_config = ConfigDict(extra="allow")


class _EventBase(_Open):
    seq: int = 0
    """Assigned by the history on append; 0 until then."""
    notebook: str = ""
    at: str = Field(default_factory=now_iso)


class CellError(BaseModel):
    ename: str
    evalue: str
    traceback: list[str] = []


class Hint(_Open):
    """A fact about a failure, checked in the kernel (see ``hints/``); never a model's guess."""

    kind: str
    """``name``, ``import``, ``out_of_order``, ``attribute``, ``column``, ``key``, ``label``,
    ``module``, ``file``, ``keyword``, ``type``, ``none``, ``index``, ``shape``, ``syntax``, ``indentation``."""
    text: str
    """One or two sentences for people and models."""
    missing: str | None = None
    """The name, key, column, file... that was not found."""
    candidates: list[str] = []
    """Did-you-mean candidates, best first."""
    fix: str | None = None
    """The failing cell with the one clear fix made: parses, and differs from the failing code."""
    change: str | None = None
    """What ``fix`` changed, in a few words (``'region' → 'Region'``)."""


class StateEntry(_Open):
    """One live object, summarised in the kernel (``kernel/state.py``)."""

    name: str
    type: str
    text: str


class CellExecuted(_EventBase):
    kind: Literal["cell_executed"] = "cell_executed"
    code: str
    execution_count: int | None = None
    status: Literal["ok", "error"] = "ok"
    duration_ms: float = 0.0
    outputs: list[dict[str, Any]] = []
    """Trimmed outputs, in the order the notebook shows them:
    ``{"type": "stream"|"result"|"display"|"image"|"update", ...}``.

    A display, result or image that has a ``display_id`` carries it. An ``update``
    (``update_display_data`` whose target was shown by an earlier cell) shows nothing
    where it was sent: it replaces what every earlier output with its ``display_id``
    shows, as does a later display with the same id. What an Output widget captured
    is not here: it is that widget's ``widget_changed`` of ``outputs``."""
    error: CellError | None = None
    hints: list[Hint] = []
    """What the kernel's analyzer found when the cell failed (empty on success)."""
    state: list[StateEntry] = []
    """The objects the failure concerns, as they were right after it (empty on success)."""


class KernelState(_EventBase):
    """The objects a turn concerns, summarised by the kernel when the turn began.

    Taken on demand, right before a question is stored (so the question is the last
    thing the model reads), never on a successful cell's path. When the kernel
    could not answer (busy, or gone), ``entries`` is empty and ``note`` says so; the
    last known state is then the latest earlier one in the history.
    """

    kind: Literal["kernel_state"] = "kernel_state"
    entries: list[StateEntry] = []
    note: str | None = None


class WidgetChanged(_EventBase):
    kind: Literal["widget_changed"] = "widget_changed"
    widget: str
    widget_class: str
    description: str | None = None
    trait: str
    old: Any = None
    new: Any = None


MessageSource = Literal["sidebar", "magic", "cli", "widget"]
"""Where a user message was written."""


class UserMessage(_EventBase):
    kind: Literal["user_message"] = "user_message"
    text: str
    source: MessageSource = "sidebar"
    client_id: str | None = None
    to: Literal["watcher", "expert"] = "watcher"
    """Which model the user asked (``/expert`` in the sidebar, ``%%ask --expert``)."""
    cells: dict[int, str] = {}
    """Cells as the person's notebook holds them now, by the number they ran as: sent
    with "Propose again" after a proposal was refused because the person had edited the
    cell, so the new proposal is made against the cell as it is."""


class Seen(BaseModel):
    """What one model call was given: the record behind the sidebar's "what the model saw".

    Recorded from the prompt that was actually sent, so it cannot drift from it: the
    events in the transcript's window (their hints and state summaries are in those
    events), how many earlier events were folded into the digest, the pictures, and
    the host's own words for this turn (a failure note, a retry's correction).
    """

    events: list[int] = []
    """Seqs of the events in the prompt, oldest first."""
    summarised: int = 0
    """Earlier events given only as the deterministic digest."""
    images: int = 0
    note: str | None = None
    """The host's own words after the history (its user messages: a failure note, a
    retry's correction), as sent (bounded)."""
    prompt_tokens: int | None = None
    """Tokens in the whole prompt, where the backend counts them (llama.cpp, OpenAI)."""
    read: int | None = None
    """Prompt tokens the model had to read for this call: the rest came from its cache
    (a warm model reads about the new events only). Where the backend reports it."""


class AssistantMessage(_EventBase):
    kind: Literal["assistant_message"] = "assistant_message"
    text: str
    model: str
    state: Literal["complete", "incomplete", "error"] = "complete"
    reply_to: int | None = None
    """The seq of the event this answers (a user message or a failing cell)."""
    reply_id: str | None = None
    """Matches the ``token`` frames that streamed this reply."""
    role: Literal["watcher", "expert"] = "watcher"
    """The local model that watches everything, or the frontier model handed a turn."""
    raw: str | None = None
    """The model's exact output when it differs from ``text`` (a JSON action)."""
    seen: Seen | None = None
    """What the model was given for this reply (None: no prompt was built)."""


class ActionProposed(_EventBase):
    kind: Literal["action_proposed"] = "action_proposed"
    action_id: str
    action: str
    """``insert_cell``, ``edit_cell``, ``run_cell``, ``call_plugin`` or ``propose_next_cell``."""
    code: str
    """Exactly what runs if approved: cell source, or the plugin call as ``name.action(...)``."""
    sha256: str
    """sha256 of ``code`` (UTF-8): an approval is bound to it."""
    args: dict[str, Any] = {}
    """The action's other fields (``cell``, ``after``, ``plugin``, ``name``, ``args``)."""
    text: str = ""
    """Why, in the model's words."""
    safe: bool = False
    """A plugin action declared to change nothing outside its widget (needs no approval in ask mode)."""
    old_code: str | None = None
    """For a fix: the source it replaces (``edit_cell``) or repairs, so every surface can show old against new."""
    diff: list[list[str]] = []
    """``old_code`` against ``code``: ``[op, line]``, op ``-``/``+``/`` ``/``…`` (``code_check.line_diff``)."""
    origin: Literal["model", "hint"] = "model"
    """``hint``: a candidate built from the kernel's hints, right by construction; ``model``: the model's own."""
    model: str | None = None
    role: Literal["watcher", "expert"] = "watcher"
    reply_to: int | None = None
    """The seq of the assistant message that proposed it."""


class ActionDecided(_EventBase):
    kind: Literal["action_decided"] = "action_decided"
    action_id: str
    decision: Literal["approved", "rejected"]
    by: Literal["user", "policy"] = "user"
    sha256: str | None = None
    """The code hash this decision was made for (an approval is valid only for it)."""
    rule: Literal["user", "auto", "safe_plugin", "no_person", "off", "failed_before"] | None = None
    """What decided, for programs: a person (``user``), the ``auto`` mode, a plugin
    action declared safe, ``ask`` mode with no person to ask, the ``off`` mode, or
    the runner refusing code that already failed in this run (None only in
    histories written before the rule was recorded)."""
    reason: str | None = None
    """Why, in words, for people; programs read ``rule``."""


class ActionExecuted(_EventBase):
    kind: Literal["action_executed"] = "action_executed"
    action_id: str
    cell_event_seq: int | None = None
    """The ``cell_executed`` event of the cell that ran (cell actions)."""
    ok: bool = True
    result: Any = None
    """What a plugin action returned (bounded), for the model to read."""
    reason: Literal["cell_changed"] | None = None
    """Why nothing ran, for programs (the words are in ``error``): ``cell_changed``, the
    person had changed the cell since the proposal (the card offers "Propose again")."""
    error: str | None = None


class ActionUndone(_EventBase):
    """The person undid an action that changed the notebook (an edit, an inserted cell).

    Recorded by the server when the tab that restored the notebook says so: the cell is
    back to the proposal's ``old_code``, or the inserted cell is gone. No code runs.
    """

    kind: Literal["action_undone"] = "action_undone"
    action_id: str
    by: Literal["user"] = "user"


class ModelError(_EventBase):
    kind: Literal["model_error"] = "model_error"
    message: str
    model: str


class KernelDied(_EventBase):
    """The kernel died (it crashed, was killed, ran out of memory) while a cell ran.

    Recorded by the host that saw it (the kernel cannot): every variable is gone, and
    the cell that was running never finished.
    """

    kind: Literal["kernel_died"] = "kernel_died"
    code: str = ""
    """The cell that was running."""
    cell_index: int | None = None
    """Its position in the notebook (0-based), where the host knows it."""
    by: Literal["runner", "server", "kernel"] = "runner"
    """Who saw it: the runner, the server's restarter, or the kernel that came next."""


def death_key(connection_file: str, pid: int) -> str:
    """The one key a kernel's death is stored under, whoever saw it.

    The runner, the server and the next kernel may each notice the same death; they
    all know the dead kernel's connection file and process id, and store it once.
    """
    return f"kernel_died:{os.path.basename(connection_file)}:{pid}"


class PluginRegistered(_EventBase):
    """A plugin widget now exists in the kernel; its actions are the model's to call."""

    kind: Literal["plugin_registered"] = "plugin_registered"
    plugin: str
    """The name the model calls it by (unique in the kernel)."""
    widget: str
    widget_class: str
    description: str = ""
    actions: list[dict[str, Any]] = []
    """``{"name", "description", "parameters" (JSON schema), "safe"}`` per action."""


class SettingsChanged(_EventBase):
    """The notebook's agent mode was set (from the sidebar or ``%ambient``)."""

    kind: Literal["settings_changed"] = "settings_changed"
    agent: Literal["off", "ask", "auto"]
    by: Literal["sidebar", "magic", "widget", "runner"] = "sidebar"


Event = Annotated[
    Union[
        CellExecuted,
        WidgetChanged,
        UserMessage,
        AssistantMessage,
        ActionProposed,
        ActionDecided,
        ActionExecuted,
        ActionUndone,
        ModelError,
        KernelDied,
        PluginRegistered,
        SettingsChanged,
        KernelState,
    ],
    Field(discriminator="kind"),
]

_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: dict[str, Any]) -> Event:
    """Parse a dict into a typed event (raises ``pydantic.ValidationError``)."""
    return _adapter.validate_python(data)
