"""The in-kernel host: runs the assistant inside the kernel process.

Used where no other host is attached (plain nbclient, nbconvert, VS Code, IPython)
for unprompted diagnoses, and everywhere for ``%%ask``, whose answer streams into
the cell that asked. The assistant lives on its own event loop in a daemon thread
so it never touches the kernel's loop; tokens reach the asking cell through a
queue that the cell's own (main) thread drains, so outputs land in that cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..assistant import Assistant, Turn
from ..history import History

__all__ = ["KernelHost"]

log = logging.getLogger("ambient_jupyter.kernel")

_DONE = object()


class KernelHost:
    def __init__(self, history: History, notebook: str, *, model: str, quiet: bool, react: bool,
                 cooldown: float, max_reply_tokens: int) -> None:
        self.react_to_errors = react
        self.assistant = Assistant(
            history, notebook, model, quiet=quiet, cooldown=cooldown, max_reply_tokens=max_reply_tokens
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ambient-host", daemon=True)
        self._thread.start()
        self._pending: set[Future[Any]] = set()

    def _submit(self, coro: Any) -> Future[Any]:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def on_committed(self, events: list[dict[str, Any]]) -> None:
        """Writer-thread callback: diagnose failures when we are the host."""
        if not self.react_to_errors:
            return
        for event in events:
            if self.assistant.should_react(event):
                self._submit(self.assistant.react(event))

    def ask(self, text: str, write: Callable[[str], None]) -> Turn:
        """Answer ``text``, calling ``write`` with each piece on the caller's thread."""
        pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def run() -> Turn:
            try:
                return await self.assistant.ask(text, source="magic", on_token=lambda _rid, t: pieces.put(t))
            finally:
                pieces.put(_DONE)

        future = self._submit(run())
        try:
            while True:
                piece = pieces.get()
                if piece is _DONE:
                    break
                write(piece)
        except KeyboardInterrupt:
            # The user interrupted the cell: stop the reply; it is stored as incomplete.
            self._loop.call_soon_threadsafe(self.assistant.stop)
            future.result(timeout=10)
            raise
        return future.result()

    def stop(self) -> bool:
        return self._loop.call_soon_threadsafe(self.assistant.stop) is not None

    def close(self, timeout: float = 4.0) -> None:
        """Give a reply in flight ``timeout`` seconds, then stop it (stored as incomplete)."""
        deadline = time.monotonic() + max(0.0, timeout - 0.5)
        for future in list(self._pending):
            # Shutting down: whatever the reply raised, it has stored its own state.
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        if self._pending:
            self._loop.call_soon_threadsafe(self.assistant.stop)
            for future in list(self._pending):
                with contextlib.suppress(Exception):
                    future.result(0.5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(0.5)
