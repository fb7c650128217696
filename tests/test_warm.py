"""Keeping the model warm: when the hosts' ``Warmer`` prefills, and how a prefill yields to a turn.

Over a real History and the real Ollama client (the model server is the fake on the
real wire, which tells prefills from turns), and the real embedded model for the
chunked prefill that stops for a waiting turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)

from ambient_jupyter.assistant import Assistant
from ambient_jupyter.backends.ollama import OllamaBackend
from ambient_jupyter.events import CellExecuted
from ambient_jupyter.history import History
from ambient_jupyter.warm import Warmer

NB = "kernel:test-warm"
MODEL = "tiny:1b"
QUIET = 0.2


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "h.sqlite")
    try:
        yield h
    finally:
        h.close()


def cell(count: int) -> dict[str, Any]:
    return CellExecuted(code=f"x{count} = {count}", execution_count=count).model_dump(exclude={"seq", "notebook"})


async def until(check: Any, limit: float = 10.0) -> None:
    """Wait for ``check()`` (a hang guard, not a speed figure)."""
    for _ in range(int(limit / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


def test_after_a_quiet_spell_the_model_reads_the_new_events_once(
    history: History, ollama_server: FakeOllama
) -> None:
    async def go() -> Warmer:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        warmer = Warmer(Assistant(history, NB, backend), quiet=QUIET)
        try:
            for count in (1, 2, 3):
                history.append(NB, cell(count))
                warmer.poke()
            await until(lambda: warmer.prefills == 1)
            await asyncio.sleep(3 * QUIET)  # nothing new: no second read
            return warmer
        finally:
            await warmer.close()
            await backend.aclose()

    warmer = asyncio.run(go())
    assert warmer.prefills == 1
    (prefill,) = ollama_server.prefill_requests()
    assert ollama_server.chat_requests() == []
    # The prompt as a turn would send it, up to the newest event: the cache then holds it.
    assert "x3 = 3" in prefill["messages"][-1]["content"]
    assert prefill["options"]["num_predict"] == 1


def test_a_burst_of_cells_is_read_after_it_ends_not_during_it(history: History, ollama_server: FakeOllama) -> None:
    async def go() -> list[int]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        warmer = Warmer(Assistant(history, NB, backend), quiet=QUIET)
        during: list[int] = []
        try:
            for count in range(1, 11):  # a cell every QUIET / 2: never a quiet spell
                history.append(NB, cell(count))
                warmer.poke()
                await asyncio.sleep(QUIET / 2)
                during.append(warmer.prefills)
            await until(lambda: warmer.prefills == 1)
            return during
        finally:
            await warmer.close()
            await backend.aclose()

    assert asyncio.run(go()) == [0] * 10
    (prefill,) = ollama_server.prefill_requests()
    assert "x10 = 10" in prefill["messages"][-1]["content"]


def test_nothing_is_read_while_the_kernel_is_busy(history: History, ollama_server: FakeOllama) -> None:
    busy = True

    async def is_busy() -> bool:
        return busy

    async def go() -> tuple[int, int]:
        nonlocal busy
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        warmer = Warmer(Assistant(history, NB, backend), quiet=QUIET, busy=is_busy)
        try:
            history.append(NB, cell(1))
            warmer.poke()
            await asyncio.sleep(5 * QUIET)
            while_busy = warmer.prefills
            busy = False
            await until(lambda: warmer.prefills == 1)
            return while_busy, warmer.prefills
        finally:
            await warmer.close()
            await backend.aclose()

    assert asyncio.run(go()) == (0, 1)


def test_a_model_that_cannot_be_reached_is_not_an_error(history: History) -> None:
    from fakes import free_port

    async def go() -> Warmer:
        backend = OllamaBackend(MODEL, host=f"http://127.0.0.1:{free_port()}", connect_timeout=0.5)
        warmer = Warmer(Assistant(history, NB, backend), quiet=QUIET)
        try:
            history.append(NB, cell(1))
            warmer.poke()
            await asyncio.sleep(6 * QUIET)
            assert warmer._task is not None and warmer._task.done()
            assert warmer._task.exception() is None
            return warmer
        finally:
            await warmer.close()
            await backend.aclose()

    assert asyncio.run(go()).prefills == 0
    assert [e["kind"] for e in history.read(NB)] == ["cell_executed"], "a failed warm-up left a record"


@pytest.mark.model
def test_a_prefill_stops_at_its_next_chunk_for_a_waiting_turn() -> None:
    from ambient_jupyter.backends.llamacpp import PREFILL_CHUNK, LlamaCppBackend

    backend = LlamaCppBackend()
    text = " ".join(f"word{i}" for i in range(500))  # about 1,500 tokens: several chunks
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]
    looks: list[int] = []

    def turn_waiting() -> bool:
        looks.append(1)
        return len(looks) > 1  # the turn arrives while the first chunk is read

    async def go() -> tuple[int, int]:
        await backend.prefill([{"role": "system", "content": "warm-up"}])  # a cache with another prompt
        tokens, _ = backend.render(messages, generation_prompt=False)
        start = backend.cached_prefix(tokens)
        await backend.prefill(messages, yield_to=turn_waiting)
        return start, backend.cached_prefix(tokens)

    start, after = asyncio.run(go())
    assert len(looks) == 2
    assert after == start + PREFILL_CHUNK, (start, after)  # one chunk read, then it yielded
    # Read to the end when nobody waits.
    asyncio.run(backend.prefill(messages))
    tokens, _ = backend.render(messages, generation_prompt=False)
    assert backend.cached_prefix(tokens) >= len(tokens) - 1


def test_the_in_kernel_host_reads_committed_events_while_the_kernel_is_idle(
    history: History, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's own host (once it exists) warms its model from the writer's commits,
    and not while a cell runs."""
    import time

    from ambient_jupyter.config import AmbientSettings
    from ambient_jupyter.kernel.host import KernelHost

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    running = True
    host = KernelHost(
        history, NB, AmbientSettings(model=f"ollama:{MODEL}"), react=False, busy=lambda: running
    )
    try:
        stored = history.append(NB, cell(1))
        host.on_committed([stored])
        time.sleep(2.5)  # two quiet spells with a cell running: nothing is read
        assert ollama_server.prefill_requests() == []
        running = False
        for _ in range(300):  # a hang guard, not a speed figure
            if ollama_server.prefill_requests():
                break
            time.sleep(0.02)
        (prefill,) = ollama_server.prefill_requests()
        assert "x1 = 1" in prefill["messages"][-1]["content"]
    finally:
        host.close()
