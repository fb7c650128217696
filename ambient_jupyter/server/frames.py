"""The frames a browser tab may send, as pydantic models: the socket's typed edge.

A frame is parsed once, here; the hub and the hand-off receive typed values and do
not check shapes again. A frame that does not fit becomes one :class:`FrameError`
whose message names the field and says what it must be, so the tab can show it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from .handoff import MAX_FAILURE_CHARS, FrameError

__all__ = ["MAX_CHAT_CHARS", "ClientFrame", "parse_frame"]

MAX_CHAT_CHARS = 20_000
MAX_CHAT_CELLS = 10

_CellNumber = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]{0,8})$")]
"""A cell's execution count, as a JSON object key."""
_Source = Annotated[str, StringConstraints(max_length=MAX_CHAT_CHARS)]

_Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
_Said = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Frame(BaseModel):
    # strict: a tab sends JSON it built itself, so "1" for 1 or 1 for true is a bug to report.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    notebook: Any = None
    """Resolved (and refused) by the server's notebook paths, not here."""


class Hello(_Frame):
    type: Literal["hello"]
    after_seq: Annotated[int, Field(ge=0)] = 0
    tail: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Replay at most this many of the newest events (a fresh view of a long history);
    the older ones are read on request (``GET ambient/api/history``)."""


class Chat(_Frame):
    type: Literal["chat"]
    text: Annotated[_Said, StringConstraints(max_length=MAX_CHAT_CHARS)]
    client_id: _Id | None = None
    cells: Annotated[dict[_CellNumber, _Source], Field(max_length=MAX_CHAT_CELLS)] | None = None
    """The current source of cells the question is about (``UserMessage.cells``)."""


class Stop(_Frame):
    type: Literal["stop"]


class Decide(_Frame):
    type: Literal["decide"]
    action_id: _Id
    decision: Literal["approve", "reject"]
    sha256: str | None = None


class Mode(_Frame):
    type: Literal["mode"]
    agent: Literal["off", "ask", "auto"]


class RunFailed(_Frame):
    type: Literal["run_failed"]
    action_id: _Id
    error: Annotated[_Said, StringConstraints(max_length=MAX_FAILURE_CHARS)]
    reason: Literal["cell_changed"] | None = None
    """``cell_changed``: the person changed the cell since the proposal."""


class Undone(_Frame):
    type: Literal["undone"]
    action_id: _Id


ClientFrame = Annotated[Hello | Chat | Stop | Decide | Mode | RunFailed | Undone, Field(discriminator="type")]
_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
_TYPES = "hello, chat, decide, mode, run_failed, undone or stop"

# What each field must be, in the words a person reads in the panel.
_RULES = {
    "after_seq": "'after_seq' must be a non-negative integer",
    "tail": "'tail' must be an integer from 1 to 100,000",
    "text": f"a chat message needs non-empty 'text', at most {MAX_CHAT_CHARS:,} characters",
    "client_id": "'client_id' must be a short string",
    "cells": (
        f"'cells' must map at most {MAX_CHAT_CELLS} cell numbers (as strings of digits) to their source, "
        f"each at most {MAX_CHAT_CHARS:,} characters"
    ),
    "action_id": "'action_id' is required (a short string)",
    "decision": "'decision' must be 'approve' or 'reject'",
    "sha256": "'sha256' must be a string",
    "agent": "'agent' must be off, ask or auto",
    "reason": "'reason' must be 'cell_changed' or absent",
    "error": f"'error' must say why the action could not run, in at most {MAX_FAILURE_CHARS:,} characters",
}


def parse_frame(frame: dict[str, Any]) -> Hello | Chat | Stop | Decide | Mode | RunFailed | Undone:
    """The typed frame, or a :class:`FrameError` that says what is wrong with it."""
    kind = frame.get("type")
    if kind not in ("hello", "chat", "stop", "decide", "mode", "run_failed", "undone"):
        raise FrameError(f"unknown frame type {kind!r}; expected {_TYPES}")
    try:
        return _ADAPTER.validate_python(frame)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # The union puts the frame type first in the location; the field follows it.
        field = next((str(p) for p in first["loc"] if p != kind), "")
        raise FrameError(_RULES.get(field, f"{kind} frame: {field or 'frame'}: {first['msg']}")) from None
