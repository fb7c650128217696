"""OllamaBackend through the official ``ollama`` client, against a fake Ollama on the wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from fakes import free_port
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)

from ambient_jupyter.backends import (
    BackendError,
    ModelNotFoundError,
    ModelUnavailableError,
    StreamInterruptedError,
    available_models,
    create_backend,
    resolve_backend,
)
from ambient_jupyter.backends.base import Message
from ambient_jupyter.backends.ollama import MAX_CONTEXT, OllamaBackend, ollama_host

T = TypeVar("T")
MODEL = "tiny:1b"
MESSAGES: list[Message] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the notebook."},
]
REPLY = "Hello there, notebook! Your dataframe has 3 rows."


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


async def collect(backend: OllamaBackend, messages: list[Message] = MESSAGES, **kwargs: Any) -> list[str]:
    try:
        return [piece async for piece in backend.stream(messages, **kwargs)]
    finally:
        await backend.aclose()


async def collect_until_error(backend: OllamaBackend) -> tuple[list[str], BaseException | None, float]:
    """The pieces that arrived, the error that ended the stream, and how long it took."""
    pieces: list[str] = []
    started = time.monotonic()
    try:
        async for piece in backend.stream(MESSAGES):
            pieces.append(piece)
    except BackendError as exc:
        return pieces, exc, time.monotonic() - started
    finally:
        await backend.aclose()
    return pieces, None, time.monotonic() - started


# -- a normal reply -------------------------------------------------------------


def test_streamed_reply_arrives_in_pieces(ollama_server: FakeOllama) -> None:
    ollama_server.reply = REPLY
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    pieces = run(lambda: collect(backend))

    assert len(pieces) > 3, pieces
    assert "".join(pieces) == REPLY
    # Each wire chunk is handed out as it comes, not buffered into one string.
    assert pieces == ["Hello ", "there, ", "notebook! ", "Your ", "dataframe ", "has ", "3 ", "rows."]
    # The final `done` record's accounting is read.
    assert backend.usage.completion_tokens == len(pieces)
    assert backend.usage.prompt_evaluated > 0
    assert backend.usage.first_token_s is not None


def test_messages_and_options_sent_on_the_wire(ollama_server: FakeOllama) -> None:
    ollama_server.models = {MODEL: 6144}
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    run(lambda: collect(backend, max_tokens=77))

    (chat,) = ollama_server.chat_requests()
    assert chat["model"] == MODEL
    assert chat["stream"] is True
    assert chat["messages"] == MESSAGES
    # num_ctx is the model's context length as /api/show reported it, not Ollama's default.
    assert chat["options"]["num_ctx"] == 6144
    assert chat["options"]["num_predict"] == 77
    (show,) = ollama_server.requests_to("/api/show")
    assert show.body["model"] == MODEL


def test_num_ctx_is_capped_and_defaulted(ollama_server: FakeOllama) -> None:
    ollama_server.models = {"huge:70b": 131072, "bare:1b": None}

    run(lambda: collect(OllamaBackend("huge:70b", host=ollama_server.url)))
    run(lambda: collect(OllamaBackend("bare:1b", host=ollama_server.url)))

    huge, bare = ollama_server.chat_requests()
    assert huge["options"]["num_ctx"] == MAX_CONTEXT
    assert bare["options"]["num_ctx"] == 8192


def test_context_length_is_read_once(ollama_server: FakeOllama) -> None:
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    async def twice() -> None:
        try:
            for _ in range(2):
                _ = [p async for p in backend.stream(MESSAGES)]
        finally:
            await backend.aclose()

    run(twice)
    assert len(ollama_server.chat_requests()) == 2
    assert len(ollama_server.requests_to("/api/show")) == 1


def test_prefill_asks_for_one_token_without_streaming(ollama_server: FakeOllama) -> None:
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    async def go() -> None:
        try:
            await backend.prefill(MESSAGES)
        finally:
            await backend.aclose()

    run(go)
    assert ollama_server.chat_requests() == []  # a prefill is not a turn
    (chat,) = ollama_server.prefill_requests()
    assert chat["stream"] is False
    assert chat["options"] == {"num_ctx": 4096, "num_predict": 1}


# -- the server is not there, or lacks the model -------------------------------


def test_server_down_is_unavailable_quickly() -> None:
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    backend = OllamaBackend(MODEL, host=host)

    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        run(lambda: collect(backend))
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert host in str(info.value)
    assert "ollama serve" in str(info.value)


def test_model_missing_says_how_to_pull(ollama_server: FakeOllama) -> None:
    backend = OllamaBackend("nope:7b", host=ollama_server.url)

    with pytest.raises(ModelNotFoundError) as info:
        run(lambda: collect(backend))

    assert "ollama pull nope:7b" in str(info.value)
    assert ollama_server.url in str(info.value)


def test_model_removed_after_show_is_not_found_on_chat(ollama_server: FakeOllama) -> None:
    """/api/show succeeded earlier (num_ctx cached); then the model is gone: /api/chat 404s."""
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    async def go() -> None:
        try:
            _ = [p async for p in backend.stream(MESSAGES)]
            ollama_server.models.clear()
            _ = [p async for p in backend.stream(MESSAGES)]
        finally:
            await backend.aclose()

    with pytest.raises(ModelNotFoundError) as info:
        run(go)
    assert f"ollama pull {MODEL}" in str(info.value)
    assert len(ollama_server.chat_requests()) == 2


def test_server_error_is_a_backend_error(ollama_server: FakeOllama) -> None:
    ollama_server.fail_with = (500, "llama runner process has terminated")
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    with pytest.raises(BackendError) as info:
        run(lambda: collect(backend))

    assert not isinstance(info.value, (ModelNotFoundError, ModelUnavailableError))
    assert "llama runner process has terminated" in str(info.value)


# -- the reply breaks off --------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "partial"),
    [("chunked", False), ("close", False), ("close", True)],
    ids=["incomplete-chunked-body", "clean-eof-without-done", "half-a-record"],
)
def test_stream_cut_midway_is_interrupted(ollama_server: FakeOllama, framing: str, partial: bool) -> None:
    ollama_server.reply = REPLY
    ollama_server.cut_after = 3
    ollama_server.framing = framing
    ollama_server.cut_partial = partial
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    pieces, error, _ = run(lambda: collect_until_error(backend))

    assert pieces == ["Hello ", "there, ", "notebook! "]
    assert isinstance(error, StreamInterruptedError), error
    assert ollama_server.url in str(error)


def test_done_record_missing_is_interrupted(ollama_server: FakeOllama) -> None:
    ollama_server.reply = REPLY
    ollama_server.omit_final = True
    backend = OllamaBackend(MODEL, host=ollama_server.url)

    pieces, error, _ = run(lambda: collect_until_error(backend))

    assert "".join(pieces) == REPLY
    assert isinstance(error, StreamInterruptedError)
    assert "final record" in str(error)


def test_stall_after_some_tokens_is_interrupted(ollama_server: FakeOllama) -> None:
    ollama_server.reply = REPLY
    ollama_server.stall_after = 2
    ollama_server.stall_seconds = 5.0  # the socket stays open well past the stall timeout
    backend = OllamaBackend(MODEL, host=ollama_server.url)
    backend.stall_timeout = 0.5

    pieces, error, elapsed = run(lambda: collect_until_error(backend))

    assert pieces == ["Hello ", "there, "]
    assert isinstance(error, StreamInterruptedError), error
    assert 0.4 < elapsed < 2.5
    assert backend.spec in str(error)


def test_slow_first_token_still_succeeds(ollama_server: FakeOllama) -> None:
    """A cold model load delays the first token past the stall timeout: that is not a stall."""
    ollama_server.reply = REPLY
    ollama_server.first_token_delay = 2.0
    backend = OllamaBackend(MODEL, host=ollama_server.url)
    backend.first_token_timeout = 10.0
    backend.stall_timeout = 0.5

    started = time.monotonic()
    pieces = run(lambda: collect(backend))

    assert "".join(pieces) == REPLY
    assert time.monotonic() - started >= 1.9
    assert backend.usage.first_token_s is not None
    assert backend.usage.first_token_s >= 1.9


def test_first_token_timeout_applies(ollama_server: FakeOllama) -> None:
    ollama_server.first_token_delay = 3.0
    backend = OllamaBackend(MODEL, host=ollama_server.url)
    backend.first_token_timeout = 0.5

    pieces, error, elapsed = run(lambda: collect_until_error(backend))

    assert pieces == []
    assert isinstance(error, StreamInterruptedError)
    assert elapsed < 2.0


# -- finding the server -----------------------------------------------------------


def test_ollama_host_env_is_honoured(ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ollama's own convention: host:port without a scheme.
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{ollama_server.port}")
    assert ollama_host() == ollama_server.url

    backend = create_backend(f"ollama:{MODEL}")
    assert isinstance(backend, OllamaBackend)
    assert backend.host == ollama_server.url
    assert backend.spec == f"ollama:{MODEL}"

    pieces = run(lambda: collect(backend))  # type: ignore[arg-type]
    assert "".join(pieces) == ollama_server.reply
    assert len(ollama_server.chat_requests()) == 1


def test_resolve_auto_picks_the_ollama_model(
    ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    ollama_server.models = {"gemma2:2b": 8192, "other:1b": 2048}
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)

    async def go() -> tuple[str, list[str]]:
        backend = await resolve_backend("auto")
        assert isinstance(backend, OllamaBackend)
        return backend.spec, await collect(backend)

    spec, pieces = run(go)

    assert spec == "ollama:gemma2:2b"
    assert "".join(pieces) == ollama_server.reply
    assert ollama_server.requests_to("/api/tags")
    assert ollama_server.chat_requests()[0]["model"] == "gemma2:2b"


def test_available_models_lists_ollama(ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    ollama_server.models = {"a:1b": 2048, "b:2b": 4096}
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    found = run(available_models)

    ready = [m.spec for m in found if m.backend == "ollama" and m.status == "ready"]
    assert ready == ["ollama:a:1b", "ollama:b:2b"]


def test_available_models_reports_ollama_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    found = run(available_models)

    (ollama,) = [m for m in found if m.backend == "ollama"]
    assert ollama.status.startswith("unavailable")
    assert "ollama serve" in ollama.status
