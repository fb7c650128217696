"""A fake Ollama, in a process of its own, whose pieces carry the time they were written.

For delivery-latency tests (RELIABILITY case 16): a chat whose newest message
saying just ``stream N`` is answered with ``N`` pieces ``<i=K t=EPOCH> `` followed by ``pad``
filler characters; ``EPOCH`` is ``time.time()`` at the moment the piece is written,
so a client on the same machine can tell how long the piece took to reach it. Any
chat without one gets 10 such pieces.

Run it as ``python -m fakes.stamping TOKEN_DELAY PAD`` with ``tests/`` on
``PYTHONPATH``: it prints its URL on one line, then serves until its stdin closes
(so it ends with the test that started it). :class:`StampingOllamaProcess` does
that for a test.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .ollama_server import FakeOllama

__all__ = ["PIECE", "StampingOllama", "StampingOllamaProcess"]

STAMP = "@T@"
PIECE = re.compile(r"<i=(\d+) t=([0-9.]+)>")
"""What a piece starts with: its index and the epoch time it was written."""
_ASK = re.compile(r"^stream (\d+)$")


class StampingOllama(FakeOllama):
    """:class:`FakeOllama` where ``@T@`` in a piece becomes ``time.time()`` as it is written."""

    def __init__(self, pad: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad = pad
        self.reply = self._pieces

    def _pieces(self, body: dict[str, Any]) -> list[str]:
        # The newest "stream N" in the prompt (other events may have come after it).
        contents = [str(m.get("content", "")) for m in body.get("messages") or []]
        asked = next((m for c in reversed(contents) if (m := _ASK.search(c))), None)
        count = int(asked.group(1)) if asked else 10
        filler = "." * self.pad
        return [f"<i={i} t={STAMP}> {filler}" for i in range(count)]

    def play(self, h: Any, pieces: list[str], *, content_type: str, encode: Any, final: bytes) -> None:
        def stamped(i: int, piece: str) -> bytes:
            return encode(i, piece.replace(STAMP, f"{time.time():.6f}"))  # type: ignore[no-any-return]

        super().play(h, pieces, content_type=content_type, encode=stamped, final=final)


class StampingOllamaProcess:
    """``with StampingOllamaProcess(0.02, pad=2000) as fake: fake.url``: the fake in a child process."""

    def __init__(self, token_delay: float, pad: int = 0) -> None:
        self.token_delay = token_delay
        self.pad = pad
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> StampingOllamaProcess:
        tests = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fakes.stamping", str(self.token_delay), str(self.pad)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError(f"the stamping fake Ollama did not start: {line!r}")
        self.url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _serve(token_delay: float, pad: int) -> None:
    fake = StampingOllama(pad=pad)
    fake.token_delay = token_delay
    fake.start()
    print(fake.url, flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin, or dies
    finally:
        fake.stop()


if __name__ == "__main__":
    _serve(float(sys.argv[1]) if len(sys.argv) > 1 else 0.02, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
