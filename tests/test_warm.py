"""Keeping the model warm: when the hosts' ``Warmer`` prefills, and how a prefill yields to a turn.

Over a real History and the real Ollama client (the model server is the fake on the
real wire, which tells prefills from turns), and the real embedded model for the
chunked prefill that stops for a waiting turn.
"""

from __future__ import annotations

import asyncio
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


def test_the_in_kernel_host_warms_only_a_model_it_uses_and_only_while_the_kernel_is_idle(
    history: History, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's own host warms its model from the writer's commits, not while a cell
    runs, and not at all before it needs that model: a host made only to set the agent
    mode (the server answering) must not load weights into the person's kernel."""
    import time

    from ambient_jupyter.config import AmbientSettings
    from ambient_jupyter.kernel.host import KernelHost

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    running = False
    host = KernelHost(
        history, NB, AmbientSettings(model=f"ollama:{MODEL}"), react=False, busy=lambda: running
    )
    try:
        host.on_committed([history.append(NB, cell(1))])
        time.sleep(2.5)  # two quiet spells, idle, but the model was never used here
        assert ollama_server.prefill_requests() == []
        assert not host.assistant.model_in_use
        ollama_server.reply = "One cell ran."
        host.ask("what ran?", lambda _piece: None)  # a %%ask: now this host answers with the model
        assert ollama_server.chat_requests()
        running = True
        host.on_committed([history.append(NB, cell(2))])
        time.sleep(2.5)  # two quiet spells with a cell running: nothing is read
        assert ollama_server.prefill_requests() == []
        running = False
        host.on_committed([history.append(NB, cell(3))])
        for _ in range(300):  # a hang guard, not a speed figure
            if ollama_server.prefill_requests():
                break
            time.sleep(0.02)
        (prefill,) = ollama_server.prefill_requests()
        assert "x3 = 3" in prefill["messages"][-1]["content"]
    finally:
        host.close()


def test_a_closed_warmer_starts_nothing(history: History, ollama_server: FakeOllama) -> None:
    async def go() -> Warmer:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        warmer = Warmer(Assistant(history, NB, backend), quiet=QUIET)
        await warmer.close()
        history.append(NB, cell(1))
        warmer.poke()  # a commit that lands during shutdown
        await asyncio.sleep(3 * QUIET)
        await backend.aclose()
        return warmer

    warmer = asyncio.run(go())
    assert warmer._task is None and ollama_server.prefill_requests() == []


def _long_messages(seed: str) -> list[dict[str, str]]:
    text = " ".join(f"{seed}{i}" for i in range(500))  # about 1,500 tokens: several chunks
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


@pytest.mark.model
def test_a_turn_in_another_notebook_stops_a_prefill_at_its_next_chunk() -> None:
    """One process, one compute thread, two notebooks: a turn of one stops the other's
    prefill at its next chunk, rather than waiting for the whole of it."""
    import threading

    from ambient_jupyter.backends import llamacpp
    from ambient_jupyter.backends.llamacpp import PREFILL_CHUNK, LlamaCppBackend

    warming, asking = LlamaCppBackend(), LlamaCppBackend()  # two rooms; the weights are shared
    messages = _long_messages("word")
    queued = threading.Event()
    looks: list[int] = []

    def room_has_no_turn() -> bool:
        # The warming room's own check: nothing waits there. At the first look, before
        # any chunk, hold the prefill until the other notebook's turn is queued.
        looks.append(1)
        if len(looks) == 1:
            assert queued.wait(30)
        return False

    async def go() -> tuple[int, int, str]:
        await warming.prefill([{"role": "system", "content": "warm-up"}])  # a cache with another prompt
        tokens, _ = warming.render(messages, generation_prompt=False)
        start = warming.cached_prefix(tokens)
        prefill = asyncio.ensure_future(warming.prefill(messages, yield_to=room_has_no_turn))
        for _ in range(2000):  # the prefill is reading (a hang guard: 10 s)
            if looks:
                break
            await asyncio.sleep(0.005)

        async def turn() -> str:
            return "".join([t async for t in asking.stream([{"role": "user", "content": "Say hi."}], max_tokens=4)])

        reply = asyncio.ensure_future(turn())
        for _ in range(2000):  # the turn is queued for the compute thread (a hang guard: 10 s)
            if llamacpp._foreground:
                break
            await asyncio.sleep(0.005)
        queued.set()
        await prefill
        read = warming.cached_prefix(tokens)  # before the turn replaces the cache
        return start, read, await reply

    start, read, reply = asyncio.run(go())
    assert read == start + PREFILL_CHUNK, (start, read)  # one chunk, then it let the turn go
    assert reply


@pytest.mark.model
def test_a_prefill_stops_at_its_next_chunk_when_the_kernel_gets_busy(history: History) -> None:
    """The Warmer watches the kernel while the model reads: a cell that starts mid-prefill
    gets the machine back at the next chunk."""
    import threading

    from ambient_jupyter.backends.llamacpp import PREFILL_CHUNK, LlamaCppBackend

    busy = False
    flipped = threading.Event()

    class Watched(LlamaCppBackend):
        """The real backend; its ``yield_to`` is held at the second look until the
        Warmer has seen the busy kernel, so the test does not race the chunks."""

        async def prefill(self, messages: Any, *, yield_to: Any = None) -> None:
            looks: list[int] = []

            def look() -> bool:
                looks.append(1)
                if len(looks) == 2:
                    flipped.set()
                    for _ in range(1000):  # at most 10 s: the Warmer says stop, or never does
                        if yield_to():
                            return True
                        threading.Event().wait(0.01)
                return bool(yield_to())

            await super().prefill(messages, yield_to=None if yield_to is None else look)

    backend = Watched()

    async def is_busy() -> bool:
        return busy

    async def go() -> tuple[int, int, int]:
        nonlocal busy
        for count in range(1, 120):
            history.append(NB, cell(count))
        assistant = Assistant(history, NB, backend)
        warmer = Warmer(assistant, quiet=QUIET, busy=is_busy)
        try:
            await backend.prefill([{"role": "system", "content": "warm-up"}])
            transcript = await assistant.transcript()
            tokens, _ = backend.render(transcript.messages(), generation_prompt=False)
            start = backend.cached_prefix(tokens)
            warmer.poke()
            await until(flipped.is_set, limit=30)
            busy = True  # a cell starts while the model reads
            await until(lambda: warmer.prefills == 1, limit=30)
            return start, backend.cached_prefix(tokens), len(tokens)
        finally:
            await warmer.close()

    start, read, total = asyncio.run(go())
    assert total > start + 2 * PREFILL_CHUNK, (start, total)  # long enough to stop midway
    assert read == start + PREFILL_CHUNK, (start, read, total)
