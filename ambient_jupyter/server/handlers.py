"""HTTP and WebSocket routes of the server extension (see docs/protocol.md).

Every route is authenticated by Jupyter Server's identity provider and authorized
against the resource ``ambient``: ``read`` to follow a conversation, ``write`` to chat
or stop, ``execute`` to approve code, change the agent mode, or be handed approved cells to run. Host and Origin
checks are Jupyter Server's own (``JupyterHandler.prepare`` and ``WebSocketMixin.check_origin``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket

from .. import __version__
from .frames import Chat, ClientFrame, Decide, Hello, Mode, RunFailed, Stop, Undone, parse_frame
from .handoff import FrameError
from .hub import Hub, Room
from .paths import BadNotebookPath

__all__ = ["AUTH_RESOURCE", "AmbientSocket", "HistoryHandler", "ModelsHandler", "StatusHandler"]

AUTH_RESOURCE = "ambient"
MAX_FRAME = 1_000_000
"""Largest client frame we parse; bigger ones get an error (tornado closes at 10 MiB)."""
HISTORY_LIMIT = 10_000
MAX_SEQ = 2**63 - 1
"""The largest seq SQLite can hold (its INTEGER is 64-bit)."""


class _AmbientMixin(ExtensionHandlerMixin):
    auth_resource = AUTH_RESOURCE

    @property
    def hub(self) -> Hub:
        hub: Hub = self.settings["ambient_hub"]
        return hub


class HistoryHandler(_AmbientMixin, APIHandler):
    """``GET ambient/api/history?notebook=P&after=N`` → ``{"events": [...]}``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            ref = self.hub.resolve(self.get_argument("notebook", ""))
            after = int(self.get_argument("after", "0"))
            limit = min(int(self.get_argument("limit", str(HISTORY_LIMIT))), HISTORY_LIMIT)
        except BadNotebookPath as exc:
            raise web.HTTPError(400, str(exc)) from None
        except ValueError:
            raise web.HTTPError(400, "'after' and 'limit' must be integers") from None
        if not 0 <= after <= MAX_SEQ or limit < 1:
            # (a seq past SQLite's INTEGER range would otherwise fail inside the query)
            raise web.HTTPError(400, f"'after' must be between 0 and {MAX_SEQ} and 'limit' >= 1")
        events = await asyncio.to_thread(self.hub.history.read, ref.notebook_id, after, limit=limit)
        self.finish({"events": [{**e, "notebook": ref.api_path} for e in events]})


class ModelsHandler(_AmbientMixin, APIHandler):
    """``GET ambient/api/models``: what answers now, and the server's default."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ..backends import available_models

        models = await available_models()
        self.finish(
            {
                "default": self.hub.settings.assistant.model,
                "models": [{"spec": m.spec, "backend": m.backend, "status": m.status} for m in models],
            }
        )


class StatusHandler(_AmbientMixin, APIHandler):
    """``GET ambient/api/status``: a cheap liveness probe (also what P7 measures)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        hub = self.hub
        self.finish(
            {
                "version": __version__,
                "model": hub.settings.assistant.model,
                "notebooks": len(hub.rooms),
                "streaming": sum(1 for r in hub.rooms.values() if r.assistant.streaming),
            }
        )


class AmbientSocket(WebSocketMixin, _AmbientMixin, JupyterHandler, websocket.WebSocketHandler):
    """``ambient/ws``: one client following one notebook's conversation."""

    seen = 0
    can_run = False

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        # The kernel-style order: authenticate (decorator), then authorize, then upgrade.
        if not await self._allowed("read"):
            raise web.HTTPError(403)
        res = super().get(*args, **kwargs)
        if res is not None:
            await res

    async def _allowed(self, action: str) -> bool:
        return bool(await ensure_async(self.authorizer.is_authorized(self, self.current_user, action, AUTH_RESOURCE)))

    # -- the outbound queue ------------------------------------------------------

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        # Frames are small and come in pairs (an approval's event, then its run frame):
        # with Nagle's algorithm on, the second can wait ~40 ms for the tab's delayed ACK.
        self.set_nodelay(True)
        self._room: Room | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self.hub.settings.client_queue_limit)
        self._read = asyncio.Event()
        """Set whenever the send loop takes a frame off the queue (a replay waits on it)."""
        self._sender = asyncio.ensure_future(self._send_loop())
        self._dropped = False
        # A token bucket: a burst is fine, a flood (a script, a stuck key) is refused.
        self._allowance = float(self.hub.settings.client_frame_burst)
        self._refilled = time.monotonic()

    def send(self, frame: dict[str, Any]) -> None:
        if self._sender.done():
            return
        try:
            self._queue.put_nowait(json.dumps(frame))
        except asyncio.QueueFull:
            # This client stopped reading: drop it rather than hold up anyone else.
            # It reconnects with after_seq and loses nothing. (The sender is only done
            # once the cancel lands, so frames may still come: one log line per client.)
            if self._dropped:
                return
            self._dropped = True
            self.log.warning("ambient: dropping a client that is %d frames behind", self._queue.maxsize)
            self._leave()
            self._sender.cancel()
            self._read.set()
            self.close(1013, "too far behind; reconnect with after_seq")

    async def room_for_more(self) -> bool:
        low = max(1, self._queue.maxsize // 2)
        while self._queue.qsize() >= low:
            if self._sender.done() or self._dropped:
                return False
            self._read.clear()
            await self._read.wait()
        return not (self._sender.done() or self._dropped)

    async def _send_loop(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                self._read.set()
                if text is None:
                    return
                try:
                    await self.write_message(text)
                except websocket.WebSocketClosedError:
                    return
        finally:
            self._read.set()  # a replay waiting for room sees the end

    def _leave(self) -> None:
        if self._room is not None:
            self._room.unsubscribe(self)
            self._room = None

    def on_close(self) -> None:
        self._leave()
        if hasattr(self, "_sender"):
            self._sender.cancel()
            self._read.set()

    # -- inbound frames ----------------------------------------------------------

    def _admit(self) -> bool:
        settings = self.hub.settings
        now = time.monotonic()
        refill = (now - self._refilled) * settings.client_frame_rate
        self._allowance = min(float(settings.client_frame_burst), self._allowance + refill)
        self._refilled = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    async def on_message(self, message: str | bytes) -> None:
        if not self._admit():
            rate = self.hub.settings.client_frame_rate
            self.send({"type": "error", "message": f"slow down: more than {rate:g} frames a second; this was ignored"})
            return
        try:
            await self._handle(message)
        except FrameError as exc:
            self.send({"type": "error", "message": str(exc), **exc.refers})

    async def _handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            raise FrameError("binary frames are not accepted; send JSON text")
        if len(message) > MAX_FRAME:
            raise FrameError(f"frame too large ({len(message):,} characters; the limit is {MAX_FRAME:,})")
        try:
            frame = json.loads(message)
        except ValueError:
            raise FrameError("frames must be JSON objects") from None
        if not isinstance(frame, dict):
            raise FrameError("frames must be JSON objects")
        typed = parse_frame(frame)
        if isinstance(typed, Hello):
            await self._hello(typed)
            return
        try:
            await self._dispatch(typed)
        except FrameError as exc:
            named = {"client_id": getattr(typed, "client_id", None), "action_id": getattr(typed, "action_id", None)}
            exc.refers = {key: value for key, value in named.items() if value}
            raise

    async def _dispatch(self, typed: ClientFrame) -> None:
        # Choosing who may run code without asking is as strong as approving code.
        need = "write" if isinstance(typed, Chat | Stop) else "execute"
        room = await self._room_for(typed, need)
        if isinstance(typed, Chat):
            cells = {int(k): v for k, v in (typed.cells or {}).items()}
            room.chat(typed.text, typed.client_id, self, cells)
        elif isinstance(typed, Stop):
            room.assistant.stop()
        elif isinstance(typed, Decide):
            await room.handoff.decide(typed.action_id, typed.decision, typed.sha256, self)
        elif isinstance(typed, Mode):
            await room.set_agent(typed.agent)
        elif isinstance(typed, RunFailed):
            await room.handoff.run_failed(typed.action_id, typed.error, self, typed.reason)
        elif isinstance(typed, Undone):
            await room.handoff.undone(typed.action_id)

    async def _room_for(self, frame: ClientFrame, action: str) -> Room:
        if not await self._allowed(action):
            raise FrameError(f"not allowed: {action} on {AUTH_RESOURCE}")
        try:
            ref = self.hub.resolve(frame.notebook)
        except BadNotebookPath as exc:
            raise FrameError(str(exc)) from None
        return await self.hub.room(ref)

    async def _hello(self, frame: Hello) -> None:
        room = await self._room_for(frame, "read")
        # Approved cells are handed only to tabs whose user may approve code.
        self.can_run = await self._allowed("execute")
        self._leave()
        self._room = room
        await room.subscribe(self, frame.after_seq, frame.tail)
