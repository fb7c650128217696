"""Keeping the model's prompt cache warm while the notebook is quiet: one helper for every host.

A reaction costs the prompt tokens the model has not read yet (benchmark P2). A host
that lets the model read each new event soon after it happens, while the person is
still looking at the output, leaves only the failing cell and the request to read
when something breaks. ``Warmer`` does that reading at the right moments:

* after a quiet spell (``quiet`` seconds with no new event), never during a burst of
  cells, whose events would each move the prompt again;
* never while a turn is running or waiting: a turn that arrives during a prefill
  makes it stop at its next chunk (:meth:`Assistant.prefill` passes ``yield_to``;
  the in-process llama.cpp model reads in chunks, an Ollama server reads the prefill
  request whole);
* not while the host says it is busy (``busy``: a kernel executing), and a prefill
  that is reading when the kernel starts a cell stops at its next chunk too;
* only where the host wants it (``wanted``): a process holds one prompt cache per
  model, so the server warms only the notebook that was active last, and a kernel
  warms only a model it uses.

A prefill that fails (a model server down) is logged once and retried only after the
next event: warming is a courtesy, never an error the person sees.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["QUIET", "Warmer"]

log = logging.getLogger("ambient_jupyter.warm")

QUIET = 1.0
"""Seconds without a new event before the model reads what came."""
BUSY_POLL = 0.1
"""Seconds between two looks at ``busy`` while a prefill reads."""


class _Prefills(Protocol):
    @property
    def streaming(self) -> bool: ...

    async def prefill(self, stop: Callable[[], bool] | None = None) -> None: ...


class Warmer:
    """Prefill ``assistant`` after each quiet spell that follows new events.

    Call :meth:`poke` (on the event loop) whenever events were added; :meth:`close`
    when the host goes away.
    """

    def __init__(
        self,
        assistant: _Prefills,
        *,
        quiet: float = QUIET,
        busy: Callable[[], Awaitable[bool]] | None = None,
        wanted: Callable[[], bool] | None = None,
        enabled: bool = True,
    ) -> None:
        self._assistant = assistant
        self._quiet = quiet
        self._busy = busy
        self._wanted = wanted
        self.enabled = enabled
        """Off (``AmbientSettings.warm``): :meth:`poke` does nothing."""
        self._poked = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        """Set to stop the prefill that is reading (the kernel got busy, or closing)."""
        self._closed = False
        self._failed = False
        self.prefills = 0
        """Prefills run so far (for tests and logs)."""

    def poke(self) -> None:
        """New events: read them after the next quiet spell."""
        self._poked += 1
        if self.enabled and not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            seen = self._poked
            started = loop.time()
            # Quiet means no poke for a whole spell: each poke starts the spell again.
            while True:
                await asyncio.sleep(max(0.0, started + self._quiet - loop.time()))
                if self._poked == seen:
                    break
                seen, started = self._poked, loop.time()
            if self._closed:
                return
            if self._wanted is not None and not self._wanted():
                return  # not this host's to warm (until the next poke)
            if self._assistant.streaming or await self._is_busy():
                continue  # a turn or the kernel has the machine: another spell, then look again
            try:
                await self._prefill()
                self.prefills += 1
                self._failed = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (a courtesy: logged, never raised)
                if not self._failed:
                    log.info("ambient-jupyter could not warm the model (%s); it will read the notebook when asked", exc)
                self._failed = True
                return
            if self._poked == seen:
                return  # nothing new since: rest until the next poke

    async def _is_busy(self) -> bool:
        return self._busy is not None and await self._busy()

    async def _prefill(self) -> None:
        """One prefill, stopped at its next chunk once the kernel gets busy or another notebook is wanted."""
        if self._closed:
            return
        self._stop.clear()
        watch = asyncio.ensure_future(self._watch_busy())
        try:
            await self._assistant.prefill(self._stop.is_set)
        finally:
            watch.cancel()
            # Not ``await watch``: a close() landing here would cancel the watch a second
            # time instead of this task, and the CancelledError swallowed would be close()'s.
            await asyncio.wait({watch})

    async def _watch_busy(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(BUSY_POLL)
            if await self._is_busy() or (self._wanted is not None and not self._wanted()):
                self._stop.set()

    async def close(self) -> None:
        self._closed = True
        self._stop.set()  # the model's thread stops reading at its next chunk, not at the end
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
