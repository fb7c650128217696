"""A small WebSocket client for the server tests: send frames, wait for matching ones."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
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


def stalled_socket(port: int, path: str, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again.

    Its receive buffer is pinned small, so the server's writes really back up (a
    tornado client would keep reading into its own unbounded buffer).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the server closed the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    return sock


def masked_text_frame(text: str) -> bytes:
    """One client-to-server text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytearray([0x81])
    if len(payload) < 126:
        header.append(0x80 | len(payload))
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
    return bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
