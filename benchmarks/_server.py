"""Shared helpers for the server benchmarks (P3, P5, P7): a real Jupyter server in a
subprocess, a WebSocket client, and a fake Ollama that stamps each piece as it emits it.

Everything listens on 127.0.0.1 only. The server runs in its own session (process
group), is killed with that group on the way out (also on an exception, SIGTERM,
SIGHUP, or the benchmark's own deadline), and gets SIGTERM if the benchmark process
dies abruptly (Linux ``PR_SET_PDEATHSIG``). Its runtime, config and data dirs are a
temporary directory, so it neither reads the user's Jupyter config nor leaves
server files behind.

Run as a script, ``python benchmarks/_server.py fake-ollama`` serves the stamping
fake Ollama (see :class:`StampingOllama`) until its stdin closes, printing its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN = "ambient-bench-token"
STAMP = "@T@"
"""In a fake piece, replaced by ``time.time()`` at the moment the piece is written."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: a new session (own process group), and SIGTERM when we die."""
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def install_deadline(seconds: float) -> None:
    """Stop by ourselves: SIGTERM/SIGHUP/SIGALRM raise, so ``finally`` blocks clean up."""

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)

    def timeout(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"the benchmark ran longer than its {seconds:.0f} s deadline")

    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(int(seconds))


def kill_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (its own session), then SIGKILL it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # Whatever is left in the group (kernels, a stuck server): gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class JupyterServer:
    """``python -m jupyter_server`` with the ambient extension, on a free loopback port.

    ``env`` adds to the environment (AMBIENT_MODEL, OLLAMA_HOST...); ``args`` are extra
    command-line options (``--AmbientSettings.max_reply_tokens=2000``); ``config_py`` is
    written to the server's private ``jupyter_server_config.py`` (to try a change out).
    """

    def __init__(
        self, *, env: dict[str, str] | None = None, args: list[str] | None = None, config_py: str = ""
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ambient-bench-"))
        self.root = self.tmp / "root"
        self.root.mkdir()
        self.db = self.tmp / "history.sqlite"
        self.port = free_port()
        self.extra_env = dict(env or {})
        self.extra_args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.tmp / "server.log"
        if config_py:
            # Python run by the server at startup (jupyter_server_config.py): for A/B prototypes.
            (self.tmp / "config").mkdir()
            (self.tmp / "config" / "jupyter_server_config.py").write_text(config_py)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ambient/ws"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {TOKEN}"}

    def start(self, timeout: float = 60.0) -> JupyterServer:
        env = {
            **os.environ,
            "AMBIENT_DB": str(self.db),
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
            "JUPYTER_CONFIG_DIR": str(self.tmp / "config"),
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        cmd = [
            PYTHON,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.jpserver_extensions=ambient_jupyter=True",
            *self.extra_args,
        ]
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # preexec_fn: setsid + PDEATHSIG
            cmd,
            cwd=self.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Jupyter server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status = self.get_json("/ambient/api/status", timeout=2.0)
                if "version" in status:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Jupyter server did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=self.headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise OSError(f"GET {path}: HTTP {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> JupyterServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            print(f"-- the Jupyter server's log (last lines):\n{self.log_tail()}", file=sys.stderr)
        self.stop()


# -- a WebSocket client ----------------------------------------------------------


class WsClient:
    """One tab: a tornado WebSocket on ``ambient/ws``. Use :meth:`connect`."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, server: JupyterServer) -> WsClient:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        request = HTTPRequest(server.ws_url, headers=server.headers, connect_timeout=10, request_timeout=10)
        return cls(await websocket_connect(request, max_message_size=64 * 1024 * 1024))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.write_message(json.dumps(frame))

    async def read(self, timeout: float = 60.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.conn.read_message(), timeout)
        if text is None:
            raise ConnectionError(f"the server closed the socket ({self.conn.close_code} {self.conn.close_reason})")
        return json.loads(text)  # type: ignore[no-any-return]

    async def until(self, match: Any, timeout: float = 60.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.read(max(0.001, deadline - loop.time()))
            if frame.get("type") == "error":
                raise RuntimeError(f"the server refused a frame: {frame['message']}")
            if match(frame):
                return frame

    async def hello(self, notebook: str, after_seq: int = 0) -> dict[str, Any]:
        await self.send({"type": "hello", "notebook": notebook, "after_seq": after_seq})
        return await self.until(lambda f: f["type"] == "ready")

    def close(self) -> None:
        self.conn.close()


def is_reply(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "event" and frame["event"].get("kind") == "assistant_message"


# -- a fake Ollama whose pieces carry their emit time ----------------------------


def _stamping_ollama() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes.ollama_server import FakeOllama

    class StampingOllama(FakeOllama):
        """FakeOllama where ``@T@`` in a piece becomes ``time.time()`` as it is written.

        The reply is ``pieces N`` pieces when the last user message says ``stream N``
        (so the length of each reply is chosen by the chat text), else 20.
        """

        def play(self, h: Any, pieces: list[str], *, content_type: str, encode: Any, final: bytes) -> None:
            def stamped(i: int, piece: str) -> bytes:
                return encode(i, piece.replace(STAMP, f"{time.time():.6f}"))

            super().play(h, pieces, content_type=content_type, encode=stamped, final=final)

    def reply(body: dict[str, Any]) -> list[str]:
        messages = body.get("messages") or [{}]
        words = str(messages[-1].get("content", "")).split()
        count = int(words[1]) if len(words) >= 2 and words[0] == "stream" and words[1].isdigit() else 20
        return [f"<i={i} t={STAMP}> " for i in range(count)]

    fake = StampingOllama()
    fake.reply = reply
    return fake


class FakeOllamaProcess:
    """The stamping fake Ollama in its own process (so its timing is not disturbed by ours)."""

    def __init__(self, token_delay: float) -> None:
        self.token_delay = token_delay
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> FakeOllamaProcess:
        self.proc = subprocess.Popen(
            [PYTHON, __file__, "fake-ollama", str(self.token_delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            kill_group(self.proc)
            raise RuntimeError(f"the fake Ollama did not start: {line!r}")
        self.url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            kill_group(self.proc, grace=3.0)


def _serve_fake(token_delay: float) -> None:
    fake = _stamping_ollama()
    fake.token_delay = token_delay
    fake.start()
    print(fake.url, flush=True)
    try:
        sys.stdin.read()  # until the benchmark closes our stdin (or dies)
    finally:
        fake.stop()


# -- statistics --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fake-ollama":
        _serve_fake(float(sys.argv[2]) if len(sys.argv) > 2 else 0.02)
    else:
        sys.exit("usage: python benchmarks/_server.py fake-ollama [token_delay]")
