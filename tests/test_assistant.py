"""The Assistant over a real History and a real OllamaBackend; only the model server is fake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import free_port, split_pieces
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)

from ambient_jupyter.assistant import Assistant
from ambient_jupyter.backends.ollama import OllamaBackend
from ambient_jupyter.events import CellError, CellExecuted
from ambient_jupyter.history import History

NB = "kernel:test-assistant"
MODEL = "tiny:1b"
REPLY = "Your loop divides by zero on the first pass; start the range at 1."
LONG_REPLY = " ".join(f"word{i}" for i in range(40))


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "h.sqlite")
    try:
        yield h
    finally:
        h.close()


def cell(count: int, code: str, *, error: tuple[str, str] | None = None, output: str = "") -> dict[str, Any]:
    event = CellExecuted(
        code=code,
        execution_count=count,
        status="error" if error else "ok",
        duration_ms=12.0,
        outputs=[{"type": "stream", "name": "stdout", "text": output}] if output else [],
        error=CellError(ename=error[0], evalue=error[1], traceback=[f"{error[0]}: {error[1]}"])
        if error
        else None,
    )
    return event.model_dump(exclude={"seq", "notebook"})


def kinds(history: History) -> list[str]:
    return [e["kind"] for e in history.read(NB)]


def others() -> set[asyncio.Task[Any]]:
    """Tasks still alive besides the one asking."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def wait_for_tokens(received: list[Any], n: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while len(received) < n:
        assert time.monotonic() < deadline, f"only {len(received)} tokens arrived"
        await asyncio.sleep(0.01)


# -- ask ------------------------------------------------------------------------------


def test_ask_stores_the_question_then_the_streamed_answer(
    history: History, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = REPLY
    hook_tokens: list[tuple[str, str]] = []
    call_tokens: list[tuple[str, str]] = []

    async def on_call_token(reply_id: str, text: str) -> None:  # async hooks are awaited too
        call_tokens.append((reply_id, text))

    async def go() -> Any:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(
            history, NB, backend, on_token=lambda reply_id, text: hook_tokens.append((reply_id, text))
        )
        try:
            return await assistant.ask("Why did it fail?", source="sidebar", on_token=on_call_token)
        finally:
            await backend.aclose()

    answer = asyncio.run(go()).message

    user, stored = history.read(NB)
    assert user["kind"] == "user_message"
    assert user["text"] == "Why did it fail?"
    assert user["source"] == "sidebar"
    assert stored == answer
    assert stored["kind"] == "assistant_message"
    assert stored["state"] == "complete"
    assert stored["model"] == f"ollama:{MODEL}"
    assert stored["reply_to"] == user["seq"]
    assert stored["text"] == REPLY
    # Every piece reached both hooks, in order, tagged with the stored reply's id.
    assert [t for _, t in hook_tokens] == split_pieces(REPLY)
    assert call_tokens == hook_tokens
    assert {rid for rid, _ in hook_tokens} == {stored["reply_id"]}
    # The question is the last thing the model read.
    (chat,) = ollama_server.chat_requests()
    assert chat["messages"][-1] == {"role": "user", "content": "Why did it fail?"}
    assert chat["options"]["num_ctx"] == 4096


def test_prompt_carries_the_history_in_order(history: History, ollama_server: FakeOllama) -> None:
    history.append(NB, cell(1, "import math\nx = 41", output="ready\n"))
    history.append(NB, cell(2, "y = x / 0", error=("ZeroDivisionError", "division by zero")))
    ollama_server.reply = lambda body: f"answer {len(body['messages'])}"

    async def go() -> None:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend)
        try:
            await assistant.ask("What broke?")
            history.append(NB, cell(3, "y = x + 1", output="42\n"))
            await assistant.ask("And now?")
        finally:
            await backend.aclose()

    asyncio.run(go())

    first, second = (chat["messages"] for chat in ollama_server.chat_requests())
    roles = [m["role"] for m in first]
    assert roles == ["system", "user", "user", "user"]
    assert "Jupyter" in first[0]["content"]
    assert "[cell 1 ran: ok" in first[1]["content"]
    assert "x = 41" in first[1]["content"]
    assert "ready" in first[1]["content"]
    assert "[cell 2 ran: error" in first[2]["content"]
    assert "y = x / 0" in first[2]["content"]
    assert "ZeroDivisionError: division by zero" in first[2]["content"]
    assert first[3] == {"role": "user", "content": "What broke?"}
    # Append-only: the second prompt extends the first (the model's cache stays valid),
    # with the answer, the new cell and the new question, in the order they happened.
    assert second[: len(first)] == first
    rest = second[len(first) :]
    assert rest[0] == {"role": "assistant", "content": "answer 4"}
    assert "y = x + 1" in rest[1]["content"]
    assert rest[2] == {"role": "user", "content": "And now?"}
    assert len(rest) == 3


def test_stream_cut_stores_the_partial_reply_as_incomplete(
    history: History, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = REPLY
    ollama_server.cut_after = 4

    async def go() -> dict[str, Any]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        try:
            return await Assistant(history, NB, backend).ask("Why?")
        finally:
            await backend.aclose()

    answer = asyncio.run(go()).message

    assert kinds(history) == ["user_message", "model_error", "assistant_message"]
    _, error, stored = history.read(NB)
    assert stored == answer
    assert stored["state"] == "incomplete"
    assert stored["text"] == "".join(split_pieces(REPLY)[:4])
    assert error["model"] == f"ollama:{MODEL}"
    assert "cut off" in error["message"]


def test_server_down_is_stored_as_error_then_recovers(history: History) -> None:
    port = free_port()

    async def go() -> tuple[dict[str, Any], float, dict[str, Any], FakeOllama]:
        backend = OllamaBackend(MODEL, host=f"http://127.0.0.1:{port}")
        assistant = Assistant(history, NB, backend)
        try:
            started = time.monotonic()
            failed = (await assistant.ask("Hello?")).message
            elapsed = time.monotonic() - started
            # Ollama comes up on the same address; the same assistant just works.
            fake = FakeOllama(port=port).start()
            try:
                fake.reply = REPLY
                ok = (await assistant.ask("Hello again?")).message
            finally:
                fake.stop()
            return failed, elapsed, ok, fake
        finally:
            await backend.aclose()

    failed, elapsed, ok, fake = asyncio.run(go())

    assert elapsed < 2.0
    assert failed["state"] == "error"
    assert "ollama serve" in failed["text"]
    assert kinds(history) == [
        "user_message",
        "model_error",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]
    error = history.read(NB)[1]
    assert f"127.0.0.1:{port}" in error["message"]
    assert ok["state"] == "complete"
    assert ok["text"] == REPLY
    # The failed turn's question is still in the conversation; the error text is not.
    (chat,) = fake.chat_requests()
    contents = [m["content"] for m in chat["messages"]]
    assert contents[-2:] == ["Hello?", "Hello again?"]
    assert not any("ollama serve" in c for c in contents)


# -- stop -------------------------------------------------------------------------------


def test_stop_during_a_slow_stream(history: History, ollama_server: FakeOllama) -> None:
    ollama_server.reply = LONG_REPLY
    ollama_server.token_delay = 0.3  # 40 pieces: 12 s if nobody stops it
    received: list[str] = []

    async def go() -> tuple[dict[str, Any], float, set[asyncio.Task[Any]], Assistant]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, on_token=lambda _rid, t: received.append(t))
        try:
            task = asyncio.ensure_future(assistant.ask("Tell me everything."))
            await wait_for_tokens(received, 2)
            assert assistant.streaming
            stopped_at = time.monotonic()
            assert assistant.stop() is True
            answer = (await asyncio.wait_for(task, 5)).message
            elapsed = time.monotonic() - stopped_at
            return answer, elapsed, others(), assistant
        finally:
            await backend.aclose()

    answer, elapsed, leftover, assistant = asyncio.run(go())

    assert elapsed < 1.0
    assert leftover == set()
    assert not assistant.streaming
    assert assistant.stop() is False
    assert answer["state"] == "incomplete"
    assert answer["text"] == "".join(received)
    assert 2 <= len(received) < 10
    # A stop is the user's choice, not a model failure.
    assert kinds(history) == ["user_message", "assistant_message"]
    assert history.read(NB)[-1] == answer


def test_cancelling_the_caller_stops_and_stores_the_reply(
    history: History, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = LONG_REPLY
    ollama_server.token_delay = 0.3
    received: list[str] = []

    async def go() -> tuple[float, set[asyncio.Task[Any]]]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, on_token=lambda _rid, t: received.append(t))
        try:
            task = asyncio.ensure_future(assistant.ask("Tell me everything."))
            await wait_for_tokens(received, 2)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started, others()
        finally:
            await backend.aclose()

    elapsed, leftover = asyncio.run(go())

    assert elapsed < 1.0
    assert leftover == set()
    stored = history.read(NB)[-1]
    assert stored["kind"] == "assistant_message"
    assert stored["state"] == "incomplete"
    assert stored["text"] == "".join(received)


# -- reacting to failures -----------------------------------------------------------------


def test_react_to_a_failed_cell_once_per_cooldown(history: History, ollama_server: FakeOllama) -> None:
    ollama_server.reply = REPLY
    first = history.append(NB, cell(1, "print(nme)", error=("NameError", "name 'nme' is not defined")))
    second = history.append(NB, cell(2, "1/0", error=("ZeroDivisionError", "division by zero")))
    ok = history.append(NB, cell(3, "x = 1"))

    async def go() -> tuple[Any, Any, bool, bool]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, cooldown=30.0)
        try:
            reply = await assistant.react(first)
            again = await assistant.react(second)
            return reply, again, assistant.should_react(second), assistant.should_react(ok)
        finally:
            await backend.aclose()

    reply, again, should_second, should_ok = asyncio.run(go())

    assert reply is not None
    assert reply.state == "complete"
    assert reply.message["reply_to"] == first["seq"]
    assert reply.text == REPLY
    assert reply.proposal is None
    assert again is None
    assert should_second is False
    assert should_ok is False
    (chat,) = ollama_server.chat_requests()
    instruction = chat["messages"][-1]
    assert instruction["role"] == "user"
    assert "NameError" in instruction["content"]
    assert "name 'nme' is not defined" in instruction["content"]
    assert any("print(nme)" in m["content"] for m in chat["messages"][:-1])
    assert kinds(history) == ["cell_executed", "cell_executed", "cell_executed", "assistant_message"]


def test_react_again_after_the_cooldown(history: History, ollama_server: FakeOllama) -> None:
    first = history.append(NB, cell(1, "1/0", error=("ZeroDivisionError", "division by zero")))
    second = history.append(NB, cell(2, "[][1]", error=("IndexError", "list index out of range")))

    async def go() -> tuple[Any, Any]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, cooldown=0.3)
        try:
            one = await assistant.react(first)
            await asyncio.sleep(0.35)
            return one, await assistant.react(second)
        finally:
            await backend.aclose()

    one, two = asyncio.run(go())

    assert one is not None
    assert two is not None
    assert two.message["reply_to"] == second["seq"]
    assert len(ollama_server.chat_requests()) == 2


def test_quiet_does_not_react(history: History, ollama_server: FakeOllama) -> None:
    failed = history.append(NB, cell(1, "1/0", error=("ZeroDivisionError", "division by zero")))

    async def go() -> Any:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, quiet=True)
        try:
            assert assistant.should_react(failed) is False
            return await assistant.react(failed)
        finally:
            await backend.aclose()

    assert asyncio.run(go()) is None
    assert ollama_server.chat_requests() == []
    assert kinds(history) == ["cell_executed"]


def test_no_reaction_while_a_reply_is_streaming(history: History, ollama_server: FakeOllama) -> None:
    ollama_server.reply = LONG_REPLY
    ollama_server.token_delay = 0.1
    received: list[str] = []

    async def go() -> tuple[bool, Any, bool]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, cooldown=0.0, on_token=lambda _r, t: received.append(t))
        try:
            task = asyncio.ensure_future(assistant.ask("Explain."))
            await wait_for_tokens(received, 1)
            failed = history.append(NB, cell(1, "1/0", error=("ZeroDivisionError", "division by zero")))
            during = assistant.should_react(failed)
            reacted = await assistant.react(failed)
            assistant.stop()
            await task
            return during, reacted, assistant.should_react(failed)
        finally:
            await backend.aclose()

    during, reacted, after = asyncio.run(go())

    assert during is False
    assert reacted is None
    assert after is True
    assert len(ollama_server.chat_requests()) == 1


# -- resent chat ----------------------------------------------------------------------------


def test_resent_client_id_is_stored_and_answered_once(history: History, ollama_server: FakeOllama) -> None:
    ollama_server.reply = REPLY

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend)
        try:
            one = await assistant.ask("Why?", client_id="msg-1")
            two = await assistant.ask("Why?", client_id="msg-1")
            return one, two
        finally:
            await backend.aclose()

    one, two = asyncio.run(go())

    assert two == one
    assert kinds(history) == ["user_message", "assistant_message"]
    assert history.read(NB)[0]["client_id"] == "msg-1"
    assert len(ollama_server.chat_requests()) == 1


def test_resent_while_the_first_is_streaming_is_answered_once(
    history: History, ollama_server: FakeOllama
) -> None:
    """A client that reconnects mid-reply resends its message: it must not start a second reply."""
    ollama_server.reply = REPLY
    ollama_server.token_delay = 0.05
    received: list[str] = []

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        backend = OllamaBackend(MODEL, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, on_token=lambda _r, t: received.append(t))
        try:
            first = asyncio.ensure_future(assistant.ask("Why?", client_id="msg-1"))
            await wait_for_tokens(received, 1)
            second = await assistant.ask("Why?", client_id="msg-1")
            return await first, second
        finally:
            await backend.aclose()

    one, two = asyncio.run(go())

    assert two == one
    assert one.state == "complete"
    assert kinds(history) == ["user_message", "assistant_message"]
    assert len(ollama_server.chat_requests()) == 1
