"""Fakes at the model wire, and nowhere else.

Each fake is a real HTTP server on 127.0.0.1 (a stdlib ``ThreadingHTTPServer`` on a
free port) that speaks the real protocol of a model server, so the official
clients (``ollama``, ``openai``) run unmodified against it. A test scripts what
the "model" does:

``reply``
    The reply text (split into word-sized pieces), an explicit list of pieces, or
    a function of the request body returning either.
``token_delay`` / ``first_token_delay``
    Seconds between pieces, and before the first one (a cold model load).
``cut_after``
    Close the connection after this many pieces, without the final record. With
    ``framing="chunked"`` (the default, as real servers do) the client sees an
    incomplete chunked body; with ``framing="close"`` the cut is a clean EOF that
    the client cannot tell from a normal end. ``cut_partial`` also writes half of
    the next record before cutting.
``omit_final``
    End the body properly, but without the final ``done``/``finish_reason`` record.
``stall_after``
    After this many pieces, send nothing more but keep the socket open for
    ``stall_seconds`` (or until the server stops).
``fail_with``
    ``(status, message)``: answer the chat request with that HTTP error.

Every request is recorded (``server.requests``), with its JSON body parsed, so a
test can assert what the client actually sent.

Import the fakes as ``from fakes.ollama_server import ...`` (``tests/`` is on
``sys.path`` under pytest's default import mode).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeModelServer", "Handler", "RecordedRequest", "free_port", "split_pieces"]

Reply = str | list[str] | Callable[[dict[str, Any]], "str | list[str]"]


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def split_pieces(text: str) -> list[str]:
    """Word-sized pieces that join back to exactly ``text``."""
    return re.findall(r"^\s+|\S+\s*", text)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: Any
    """The parsed JSON body, the raw text if it is not JSON, or ``None``."""
    at: float = field(default_factory=time.monotonic)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class Handler(BaseHTTPRequestHandler):
    """Parses and records the request, then hands it to the owning fake's ``route``."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeModelServer/1.0"
    owner: FakeModelServer  # set on the per-server subclass

    # -- plumbing -------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner._record(RecordedRequest(self.command, path, headers, body))
        try:
            self.owner.route(self, self.command, path, body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            # The client went away (it cancelled, or timed out): nothing to answer.
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_DELETE = _dispatch

    # -- answers --------------------------------------------------------------

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def begin_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        if self.owner.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            # No length and no chunking: the body ends when the connection closes.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def write_stream(self, data: bytes) -> None:
        if not data:
            return
        if self.owner.framing == "chunked":
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        else:
            self.wfile.write(data)

    def end_stream(self) -> None:
        if self.owner.framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True

    def cut(self) -> None:
        """Drop the connection now, mid-body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FakeModelServer:
    """The protocol-independent part: the server thread, the script, the record."""

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.reply: Reply = "Hello from the fake model."
        self.token_delay = 0.0
        self.first_token_delay = 0.0
        self.cut_after: int | None = None
        self.cut_partial = False
        self.omit_final = False
        self.stall_after: int | None = None
        self.stall_seconds = 60.0
        self.framing = "chunked"
        self.fail_with: tuple[int, str] | None = None
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeModelServer:
        handler = type(f"{type(self).__name__}Handler", (Handler,), {"owner": self})
        self._closing.clear()
        self._server = _HTTPServer((self.host, self.port), handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (stalled ones included)."""
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- the record -----------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- the script -----------------------------------------------------------

    def pieces_for(self, body: dict[str, Any]) -> list[str]:
        reply = self.reply(body) if callable(self.reply) else self.reply
        return split_pieces(reply) if isinstance(reply, str) else list(reply)

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the server is stopping meanwhile."""
        if seconds <= 0:
            return not self._closing.is_set()
        return not self._closing.wait(seconds)

    def play(
        self,
        h: Handler,
        pieces: list[str],
        *,
        content_type: str,
        encode: Callable[[int, str], bytes],
        final: bytes,
    ) -> None:
        """Stream ``pieces`` (each through ``encode``) then ``final``, as scripted."""
        h.begin_stream(content_type)
        if not self.sleep(self.first_token_delay):
            h.cut()
            return
        for i, piece in enumerate(pieces):
            if self.cut_after is not None and i >= self.cut_after:
                if self.cut_partial:
                    record = encode(i, piece)
                    h.write_stream(record[: max(1, len(record) // 2)])
                h.cut()
                return
            if self.stall_after is not None and i >= self.stall_after:
                self.sleep(self.stall_seconds)
                h.cut()
                return
            if i and not self.sleep(self.token_delay):
                h.cut()
                return
            h.write_stream(encode(i, piece))
        if self.cut_after is not None and self.cut_after >= len(pieces):
            h.cut()
            return
        if not self.omit_final:
            h.write_stream(final)
        h.end_stream()

    def route(self, h: Handler, method: str, path: str, body: Any) -> None:
        raise NotImplementedError
