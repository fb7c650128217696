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
from ambient_jupyter.backends import openai as openai_backend
from ambient_jupyter.backends.base import Message
from ambient_jupyter.backends.openai import OpenAIBackend

T = TypeVar("T")
MODEL = "fake-gpt"
MESSAGES: list[Message] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Why did cell 3 fail?"},
]
REPLY = "The column is named 'Price', not 'price'."
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


@pytest.fixture(autouse=True)
def forget_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test negotiates from scratch: a fake's port may be a port an earlier test used."""
    monkeypatch.setattr(openai_backend, "_accepted", {})


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def backend_for(fake: FakeOpenAI, model: str = MODEL) -> OpenAIBackend:
    return OpenAIBackend(model, base_url=fake.base_url, api_key="sk-test")


async def collect(backend: OpenAIBackend, **kwargs: Any) -> list[str]:
    try:
        return [piece async for piece in backend.stream(MESSAGES, **kwargs)]
    finally:
        await backend.aclose()


async def collect_until_error(backend: OpenAIBackend, **kwargs: Any) -> tuple[list[str], BaseException | None]:
    pieces: list[str] = []
    try:
        async for piece in backend.stream(MESSAGES, **kwargs):
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
    openai_server.reply = '{"a": "b"}'
    backend = backend_for(openai_server)

    pieces = run(lambda: collect(backend, json_schema=SCHEMA))

    assert "".join(pieces) == '{"a": "b"}'
    (chat,) = openai_server.chat_requests()
    fmt = chat["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == SCHEMA
    assert fmt["json_schema"]["strict"] is True
    assert backend.structured_mode == "json_schema"


async def twice(first: OpenAIBackend, second: OpenAIBackend, schema: dict[str, Any]) -> tuple[str, str]:
    """One structured call on each backend, in turn."""
    try:
        one = "".join([p async for p in first.stream(MESSAGES, json_schema=schema)])
        two = "".join([p async for p in second.stream(MESSAGES, json_schema=schema)])
        return one, two
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize(
    ("refuse", "accepted"),
    [
        # llama.cpp's own server: json_schema fails its request validation, with a 500.
        ({"json_schema": 500}, "json_object"),
        # vLLM (older): no response_format schemas, but guided decoding.
        ({"json_schema": 400, "json_object": 422}, "guided_json"),
        # A server without structured output at all: plain text, validated by the assistant.
        ({"json_schema": 400, "json_object": 400, "guided_json": 415}, None),
    ],
    ids=["llama.cpp", "vllm", "none"],
)
def test_structured_output_is_negotiated_once_per_endpoint(
    openai_server: FakeOpenAI, refuse: dict[str, int], accepted: str | None
) -> None:
    openai_server.refuse = refuse
    openai_server.reply = '{"a": "b"}'
    first, second = backend_for(openai_server), backend_for(openai_server)

    one, two = run(lambda: twice(first, second, SCHEMA))

    assert one == two == '{"a": "b"}'
    tried = ["json_schema", "json_object", "guided_json"][: len(refuse)]
    # Each refused form was offered once, in order; the second backend for the same
    # endpoint went straight to the form that worked.
    assert openai_server.structured_forms() == [*tried, accepted, accepted]
    assert first.structured_mode == second.structured_mode == (accepted or "text")
    if accepted == "json_object":
        assert openai_server.chat_requests()[1]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    if accepted == "guided_json":
        assert openai_server.chat_requests()[2]["guided_json"] == SCHEMA


def test_a_union_is_not_strict(openai_server: FakeOpenAI) -> None:
    schema = {"anyOf": [SCHEMA, {**SCHEMA, "required": []}]}
    backend = backend_for(openai_server)

    run(lambda: collect(backend, json_schema=schema))

    assert openai_server.chat_requests()[0]["response_format"]["json_schema"]["strict"] is False


def test_an_accepted_mode_is_kept_when_the_server_later_fails(openai_server: FakeOpenAI) -> None:
    openai_server.refuse = {"json_schema": 500}
    openai_server.reply = '{"a": "b"}'
    run(lambda: collect(backend_for(openai_server), json_schema=SCHEMA))
    openai_server.fail_with = (500, "out of memory")
    backend = backend_for(openai_server)

    with pytest.raises(BackendError, match="out of memory"):
        run(lambda: collect(backend, json_schema=SCHEMA))

    # No new negotiation: the failure was the server's, in the mode it had accepted.
    assert openai_server.structured_forms() == ["json_schema", "json_object", "json_object"]
    assert backend.structured_mode == "json_object"


def test_a_missing_model_ends_the_negotiation(openai_server: FakeOpenAI) -> None:
    """llama.cpp validates the body first (500), then looks for the model (404): not a refusal."""
    openai_server.refuse = {"json_schema": 500}
    backend = backend_for(openai_server, "no-such-model")

    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        run(lambda: collect(backend, json_schema=SCHEMA))

    assert openai_server.structured_forms() == ["json_schema", "json_object"]
    assert backend.structured_mode is None


@pytest.mark.parametrize("status", [401, 429])
def test_auth_and_rate_limit_errors_are_not_refusals(openai_server: FakeOpenAI, status: int) -> None:
    openai_server.fail_with = (status, "no")
    backend = backend_for(openai_server)

    with pytest.raises(BackendError) as info:
        run(lambda: collect(backend, json_schema=SCHEMA))

    assert not isinstance(info.value, StreamInterruptedError)
    assert len(openai_server.chat_requests()) == 1
    assert backend.structured_mode is None


def test_a_server_failing_every_mode_is_not_remembered_as_refusing(openai_server: FakeOpenAI) -> None:
    """Every form failed, plain text too: the server is broken, the forms were not refused."""
    openai_server.fail_with = (500, "the GPU caught fire")
    backend = backend_for(openai_server)

    with pytest.raises(BackendError, match=r"500: .*the GPU caught fire"):
        run(lambda: collect(backend, json_schema=SCHEMA))

    assert openai_server.structured_forms() == ["json_schema", "json_object", "guided_json", None]
    assert backend.structured_mode is None
    openai_server.fail_with = None
    run(lambda: collect(backend_for(openai_server), json_schema=SCHEMA))
    assert openai_server.structured_forms()[4:] == ["json_schema"]


def test_a_stream_failing_before_its_first_token_is_a_refusal(openai_server: FakeOpenAI) -> None:
    openai_server.reply = REPLY
    openai_server.cut_after = 0
    backend = backend_for(openai_server)

    pieces, error = run(lambda: collect_until_error(backend, json_schema=SCHEMA))

    assert pieces == []
    assert isinstance(error, StreamInterruptedError), repr(error)
    assert openai_server.structured_forms() == ["json_schema", "json_object", "guided_json", None]
    assert backend.structured_mode is None


def test_plain_requests_do_not_negotiate(openai_server: FakeOpenAI) -> None:
    openai_server.refuse = {"json_schema": 500}
    backend = backend_for(openai_server)

    run(lambda: collect(backend))

    assert openai_server.structured_forms() == [None]
    assert backend.structured_mode is None


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
