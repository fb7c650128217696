"""The assistant for one notebook: reads the history, answers, reacts to errors.

It knows nothing about hosts. A host (the runner, the in-kernel host, the Jupyter
server) gives it a :class:`~ambient_jupyter.history.History`, a notebook and a
model, subscribes to its tokens and events, and calls :meth:`Assistant.ask` or
:meth:`Assistant.react`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from .backends import Backend, BackendError, StreamInterruptedError, resolve_backend
from .context import Transcript
from .events import AssistantMessage, ModelError, UserMessage
from .history import History

__all__ = ["Assistant"]

log = logging.getLogger("ambient_jupyter.assistant")

TokenCallback = Callable[[str, str], Any]
"""``(reply_id, text)``; may be sync or async."""
EventCallback = Callable[[dict[str, Any]], Any]

REPLY_RESERVE = 512
"""Tokens kept free in the context for the reply itself."""


async def _call(hook: Callable[..., Any] | None, *args: Any) -> None:
    """Run a sync or async hook (one helper, as nbclient does for its hooks)."""
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


class Assistant:
    """Answers chat and diagnoses failures for one notebook.

    Parameters
    ----------
    history
        The shared history; the assistant appends its own events to it.
    notebook
        The notebook identifier (see :func:`~ambient_jupyter.history.normalize_notebook`).
    model
        A :class:`Backend`, or a model spec (``auto``, ``embedded``, ``ollama:...``),
        resolved on first use.
    quiet
        When true, failures are not diagnosed unprompted.
    cooldown
        Seconds after an unprompted reply during which further failures are left
        alone: one diagnosis per burst of errors.
    """

    def __init__(
        self,
        history: History,
        notebook: str,
        model: Backend | str = "auto",
        *,
        quiet: bool = False,
        cooldown: float = 30.0,
        max_reply_tokens: int = 400,
        on_token: TokenCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.history = history
        self.notebook = notebook
        self._model = model
        self._backend: Backend | None = model if isinstance(model, Backend) else None
        self.quiet = quiet
        self.cooldown = cooldown
        self.max_reply_tokens = max_reply_tokens
        self.on_token = on_token
        self.on_event = on_event
        self.transcript: Transcript | None = None
        self._reply_task: asyncio.Task[Any] | None = None
        self._last_unprompted = float("-inf")
        self._lock = asyncio.Lock()

    # -- model ----------------------------------------------------------------

    @property
    def model_spec(self) -> str:
        if self._backend is not None:
            return self._backend.spec
        return str(self._model)

    def set_model(self, model: Backend | str) -> None:
        """Switch models; the history (and so the conversation) is kept as it is."""
        self._model = model
        self._backend = model if isinstance(model, Backend) else None
        self.transcript = None

    async def backend(self) -> Backend:
        if self._backend is None:
            self._backend = await resolve_backend(str(self._model))
        return self._backend

    async def _transcript(self, backend: Backend) -> Transcript:
        if self.transcript is None:
            budget = await backend.context_length() - REPLY_RESERVE
            self.transcript = Transcript(budget=budget, count_tokens=backend.count_tokens)
        transcript = self.transcript
        new = await asyncio.to_thread(self.history.read, self.notebook, transcript.last_seq)
        transcript.extend(new)
        return transcript

    # -- storing --------------------------------------------------------------

    async def _store(self, event: dict[str, Any], dedup_key: str | None = None) -> dict[str, Any]:
        stored = await asyncio.to_thread(self.history.append, self.notebook, event, dedup_key=dedup_key)
        await _call(self.on_event, stored)
        return stored

    # -- public ---------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()

    async def ask(
        self,
        text: str,
        *,
        source: str = "cli",
        client_id: str | None = None,
        on_token: TokenCallback | None = None,
    ) -> dict[str, Any]:
        """Store a user message and answer it; returns the stored ``assistant_message``.

        A ``client_id`` already seen for this notebook is not stored or answered
        twice: the earlier answer (if any) is returned.
        """
        event = UserMessage(text=text, source=source, client_id=client_id).model_dump(
            exclude={"seq", "notebook"}
        )
        stored = await self._store(event, dedup_key=f"chat:{client_id}" if client_id else None)
        if client_id:
            earlier = await self._earlier_reply(stored["seq"])
            if earlier is not None:
                return earlier
        return await self._run_reply(stored["seq"], tail=None, on_token=on_token, once=bool(client_id))

    async def _earlier_reply(self, seq: int) -> dict[str, Any] | None:
        later = await asyncio.to_thread(self.history.read, self.notebook, seq)
        for event in later:
            if event.get("kind") == "assistant_message" and event.get("reply_to") == seq:
                return event
        return None

    def should_react(self, event: dict[str, Any]) -> bool:
        """True for a failed cell, unless quiet, busy, or within the cooldown of the last one."""
        if event.get("kind") != "cell_executed" or event.get("status") != "error":
            return False
        if self.quiet or self.streaming:
            return False
        return time.monotonic() - self._last_unprompted >= self.cooldown

    async def react(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Diagnose a failed cell on our own, if :meth:`should_react` allows it."""
        if not self.should_react(event):
            return None
        self._last_unprompted = time.monotonic()
        error = event.get("error") or {}
        instruction = (
            f"Cell {event.get('execution_count')} just failed with {error.get('ename')}: "
            f"{error.get('evalue')}. In one or two sentences, explain the likely cause, "
            "then show the corrected code."
        )
        tail = [{"role": "user", "content": instruction}]
        return await self._run_reply(int(event.get("seq", 0)), tail=tail)

    def stop(self) -> bool:
        """Cancel the reply being written, if any; it is stored as ``incomplete``."""
        if self.streaming:
            assert self._reply_task is not None
            self._reply_task.cancel()
            return True
        return False

    async def prefill(self) -> None:
        """Let the model read new events while idle, so the next reaction is cheap."""
        if self.streaming:
            return
        async with self._lock:
            backend = await self.backend()
            transcript = await self._transcript(backend)
            await backend.prefill(transcript.messages())

    # -- the reply ------------------------------------------------------------

    async def _run_reply(
        self,
        reply_to: int,
        tail: list[Any] | None,
        on_token: TokenCallback | None = None,
        *,
        once: bool = False,
    ) -> dict[str, Any]:
        async with self._lock:
            if once:
                # A resend that arrived while its first send was being answered waited
                # for the lock behind it: return that answer instead of a second one.
                earlier = await self._earlier_reply(reply_to)
                if earlier is not None:
                    return earlier
            self._reply_task = asyncio.ensure_future(self._reply(reply_to, tail, on_token))
            try:
                return await asyncio.shield(self._reply_task)
            except asyncio.CancelledError:
                # Our caller was cancelled: stop the reply too, and let it store itself.
                self._reply_task.cancel()
                await asyncio.gather(self._reply_task, return_exceptions=True)
                raise

    async def _reply(
        self, reply_to: int, tail: list[Any] | None, on_token: TokenCallback | None
    ) -> dict[str, Any]:
        reply_id = uuid.uuid4().hex
        pieces: list[str] = []
        state = "complete"
        spec = self.model_spec
        problem: str | None = None
        try:
            backend = await self.backend()
            spec = backend.spec
            transcript = await self._transcript(backend)
            messages = transcript.messages(tail)
            async for piece in backend.stream(messages, max_tokens=self.max_reply_tokens):
                pieces.append(piece)
                await _call(self.on_token, reply_id, piece)
                await _call(on_token, reply_id, piece)
        except asyncio.CancelledError:
            state = "incomplete"
        except StreamInterruptedError as exc:
            state, problem = "incomplete", str(exc)
        except BackendError as exc:
            state, problem = "error", str(exc)
        text = "".join(pieces)
        if problem is not None:
            log.warning("model %s: %s", spec, problem)
            await self._store(ModelError(message=problem, model=spec).model_dump(exclude={"seq", "notebook"}))
        message = AssistantMessage(
            text=text if text or problem is None else problem,
            model=spec,
            state=state,  # type: ignore[arg-type]
            reply_to=reply_to,
            reply_id=reply_id,
        )
        return await self._store(message.model_dump(exclude={"seq", "notebook"}))

