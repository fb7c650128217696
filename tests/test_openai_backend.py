"""OpenAIBackend through the official ``openai`` client, against a fake server speaking SSE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from fakes import free_port
from fakes.openai_server import FakeOpenAI, openai_server_fixture  # noqa: F401 (the `openai_server` fixture)

from ambient_jupyter.backends import (
    BackendError,
    ModelNotFoundError,
    ModelUnavailableError,
    StreamInterruptedError,
    create_backend,
)
from ambient_jupyter.backends.base import Message
from ambient_jupyter.backends.openai import OpenAIBackend

T = TypeVar("T")
MODEL = "fake-gpt"
MESSAGES: list[Message] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Why did cell 3 fail?"},
]
REPLY = "The column is named 'Price', not 'price'."


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def backend_for(fake: FakeOpenAI, model: str = MODEL) -> OpenAIBackend:
    return OpenAIBackend(model, base_url=fake.base_url, api_key="sk-test")


async def collect(backend: OpenAIBackend, **kwargs: Any) -> list[str]:
    try:
        return [piece async for piece in backend.stream(MESSAGES, **kwargs)]
    finally:
        await backend.aclose()


async def collect_until_error(backend: OpenAIBackend) -> tuple[list[str], BaseException | None]:
    pieces: list[str] = []
    try:
        async for piece in backend.stream(MESSAGES):
            pieces.append(piece)
    except BackendError as exc:
        return pieces, exc
    finally:
        await backend.aclose()
    return pieces, None


def test_streamed_reply_via_sse(openai_server: FakeOpenAI) -> None:
    openai_server.reply = REPLY
    backend = backend_for(openai_server)

    pieces = run(lambda: collect(backend, max_tokens=50))

    assert pieces == ["The ", "column ", "is ", "named ", "'Price', ", "not ", "'price'."]
    assert "".join(pieces) == REPLY
    assert backend.usage.completion_tokens == len(pieces)
    (chat,) = openai_server.chat_requests()
    assert chat["model"] == MODEL
    assert chat["stream"] is True
    assert chat["messages"] == MESSAGES
    assert chat["max_tokens"] == 50
    (request,) = openai_server.requests_to("/v1/chat/completions")
    assert request.headers.get("authorization") == "Bearer sk-test"


def test_json_schema_is_sent_as_response_format(openai_server: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    openai_server.reply = '{"a": "b"}'
    backend = backend_for(openai_server)

    pieces = run(lambda: collect(backend, json_schema=schema))

    assert "".join(pieces) == '{"a": "b"}'
    fmt = openai_server.chat_requests()[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == schema


def test_server_without_structured_output_is_asked_again_without_it(openai_server: FakeOpenAI) -> None:
    schema = {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}]}
    openai_server.refuse_response_format = True
    openai_server.reply = '{"a": "b"}'
    backend = backend_for(openai_server)

    async def twice() -> tuple[list[str], list[str]]:
        try:
            one = [p async for p in backend.stream(MESSAGES, json_schema=schema)]
            two = [p async for p in backend.stream(MESSAGES, json_schema=schema)]
            return one, two
        finally:
            await backend.aclose()

    first, second = run(twice)

    assert "".join(first) == "".join(second) == '{"a": "b"}'
    sent = openai_server.chat_requests()
    # Refused once, asked again without it, and not offered again afterwards.
    assert ["response_format" in body for body in sent] == [True, False, False]
    assert sent[0]["response_format"]["json_schema"]["strict"] is False  # a union is not strict-able


def test_base_url_from_environment(openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    backend = create_backend(f"openai:{MODEL}")
    assert isinstance(backend, OpenAIBackend)
    pieces = run(lambda: collect(backend))  # type: ignore[arg-type]

    assert "".join(pieces) == openai_server.reply
    assert len(openai_server.chat_requests()) == 1


def test_list_models(openai_server: FakeOpenAI) -> None:
    openai_server.models = ["m-one", "m-two"]
    backend = backend_for(openai_server)

    async def go() -> list[str]:
        try:
            return await backend.list_models()
        finally:
            await backend.aclose()

    assert run(go) == ["m-one", "m-two"]


def test_connection_refused_is_unavailable() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(MODEL, base_url=base_url, api_key="sk-test")

    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        run(lambda: collect(backend))

    assert time.monotonic() - started < 2.0
    assert base_url in str(info.value)


def test_unknown_model_is_not_found(openai_server: FakeOpenAI) -> None:
    backend = backend_for(openai_server, "no-such-model")

    with pytest.raises(ModelNotFoundError) as info:
        run(lambda: collect(backend))

    assert "no-such-model" in str(info.value)
    assert openai_server.base_url in str(info.value)


def test_server_error_is_a_backend_error(openai_server: FakeOpenAI) -> None:
    openai_server.fail_with = (500, "the GPU caught fire")
    backend = backend_for(openai_server)

    with pytest.raises(BackendError) as info:
        run(lambda: collect(backend))

    assert not isinstance(info.value, (ModelNotFoundError, ModelUnavailableError, StreamInterruptedError))
    assert "500" in str(info.value)


def test_stream_ending_without_finish_is_interrupted(openai_server: FakeOpenAI) -> None:
    """The body ends cleanly, but with no finish_reason and no [DONE]."""
    openai_server.reply = REPLY
    openai_server.omit_final = True
    backend = backend_for(openai_server)

    pieces, error = run(lambda: collect_until_error(backend))

    assert "".join(pieces) == REPLY
    assert isinstance(error, StreamInterruptedError), error
    assert openai_server.base_url in str(error)


@pytest.mark.parametrize("framing", ["chunked", "close"], ids=["incomplete-chunked-body", "clean-eof"])
def test_stream_cut_midway_is_interrupted(openai_server: FakeOpenAI, framing: str) -> None:
    """Tokens flowed, then the connection dropped: that is a cut reply, not a server that is down."""
    openai_server.reply = REPLY
    openai_server.cut_after = 2
    openai_server.framing = framing
    backend = backend_for(openai_server)

    pieces, error = run(lambda: collect_until_error(backend))

    assert pieces == ["The ", "column "]
    assert isinstance(error, StreamInterruptedError), repr(error)


def test_stall_is_interrupted(openai_server: FakeOpenAI) -> None:
    openai_server.reply = REPLY
    openai_server.stall_after = 1
    openai_server.stall_seconds = 5.0  # the socket stays open well past the stall timeout
    backend = backend_for(openai_server)
    backend.stall_timeout = 0.5

    started = time.monotonic()
    pieces, error = run(lambda: collect_until_error(backend))

    assert pieces == ["The "]
    assert isinstance(error, StreamInterruptedError)
    assert time.monotonic() - started < 2.5
