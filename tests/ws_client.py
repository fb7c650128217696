"""A small WebSocket client for the server tests: send frames, wait for matching ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from tornado.websocket import WebSocketClientConnection

Frame = dict[str, Any]


class Client:
    """Wraps a tornado WebSocket connection; keeps every frame it has read."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.frames: list[Frame] = []
        self.closed = False

    async def send(self, frame: Frame | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        await self.conn.write_message(frame, binary=isinstance(frame, bytes))

    async def read(self, timeout: float = 10.0) -> Frame | None:
        text = await asyncio.wait_for(self.conn.read_message(), timeout)
        if text is None:
            self.closed = True
            return None
        frame = json.loads(text)
        self.frames.append(frame)
        return frame

    async def until(self, match: Callable[[Frame], bool], timeout: float = 30.0) -> Frame:
        """Read until a frame matches; fails on timeout or close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no matching frame within {timeout}s; last frames: {self.frames[-5:]}")
            frame = await self.read(left)
            if frame is None:
                raise ConnectionError(f"closed by the server ({self.conn.close_code} {self.conn.close_reason})")
            if match(frame):
                return frame

    async def hello(self, notebook: str, after_seq: int = 0) -> Frame:
        await self.send({"type": "hello", "notebook": notebook, "after_seq": after_seq})
        return await self.until(lambda f: f["type"] in ("ready", "error"))

    def events(self, kind: str | None = None) -> list[Frame]:
        return [
            f["event"] for f in self.frames if f["type"] == "event" and (kind is None or f["event"]["kind"] == kind)
        ]

    def close(self) -> None:
        self.conn.close()


def is_event(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    def match(frame: Frame) -> bool:
        if frame.get("type") != "event" or frame["event"].get("kind") != kind:
            return False
        return all(frame["event"].get(k) == v for k, v in fields.items())

    return match
