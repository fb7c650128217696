"""OpenAI-compatible backend (``openai:<name>``): any server speaking chat completions.

``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are read by the official client itself.

Servers differ in how they take a JSON schema. Each endpoint (base URL and model) is
offered the ways in :data:`MODES` in turn, until one is accepted; the accepted one
is remembered for the process, so every backend for that endpoint uses it at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Literal, cast

import openai

from .base import (
    Backend,
    BackendError,
    Message,
    ModelNotFoundError,
    ModelUnavailableError,
    StreamInterruptedError,
)

if TYPE_CHECKING:
    from openai import AsyncStream
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

__all__ = ["MODES", "Mode", "OpenAIBackend"]

log = logging.getLogger("ambient_jupyter.backends.openai")

Mode = Literal["json_schema", "json_object", "guided_json", "text"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "guided_json", "text")
"""Ways to ask for structured output, most widely supported last: OpenAI's
``response_format`` json_schema, llama.cpp's json_object with a schema, vLLM's
``guided_json``, and plain text (the assistant validates and repairs the reply)."""

_REFUSALS = frozenset({400, 404, 415, 422, 500, 501})
"""HTTP statuses with which servers refuse a request shape they do not understand."""

_accepted: dict[tuple[str, str], Mode] = {}
"""The mode each endpoint ``(base_url, model)`` accepted, shared by all its backends."""


def _chat_messages(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    # Each Message is one of the client's message shapes (system, user or assistant, by
    # its role); mypy cannot match a TypedDict to one arm by its role. Pictures become
    # content parts, as the chat-completions API takes them.
    out = []
    for message in messages:
        content: str | list[dict[str, Any]] = message["content"]
        images = message.get("images")
        if images:
            content = [{"type": "text", "text": message["content"]}] + [
                {"type": "image_url", "image_url": {"url": f"data:{image['mime']};base64,{image['data']}"}}
                for image in images
            ]
        out.append(cast("ChatCompletionMessageParam", {"role": message["role"], "content": content}))
    return out


def _request(mode: Mode, schema: dict[str, Any] | None) -> dict[str, Any]:
    """The extra arguments of ``create()`` that ask for ``schema`` in ``mode``."""
    if schema is None or mode == "text":
        return {}
    if mode == "json_schema":
        # Strict mode takes only an object at the root; a union of actions goes as
        # guidance, and the assistant validates what comes back.
        strict = schema.get("type") == "object" and "anyOf" not in schema
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "action", "schema": schema, "strict": strict},
            }
        }
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    return {"extra_body": {"guided_json": schema}}


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Parameters
    ----------
    model
        The model name the endpoint knows.
    context
        Context window in tokens (the API does not report it).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        context: int | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = f"openai:{model}"
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # A local OpenAI-compatible server often needs no key, but the client insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self._context = context or int(os.environ.get("AMBIENT_OPENAI_CONTEXT", "32768"))
        # The API does not say whether a model sees; the person does (AMBIENT_VISION=1).
        self._vision = os.environ.get("AMBIENT_VISION", "").strip().lower() in ("1", "true", "yes", "on")
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key,
            max_retries=0,
            timeout=openai.Timeout(connect=connect_timeout, read=None, write=30.0, pool=connect_timeout),
        )

    @property
    def structured_mode(self) -> Mode | None:
        """How this endpoint took a JSON schema (one of :data:`MODES`); ``None`` until one worked."""
        return _accepted.get((self.base_url, self.model))

    def _translate(self, exc: BaseException) -> BackendError:
        if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
            msg = (
                f"No OpenAI-compatible server answers at {self.base_url}. "
                "Check OPENAI_BASE_URL and that the server is running."
            )
            return ModelUnavailableError(msg)
        if isinstance(exc, openai.NotFoundError):
            msg = f"{self.base_url} does not serve the model {self.model!r}; check the name."
            return ModelNotFoundError(msg)
        if isinstance(exc, openai.AuthenticationError):
            return BackendError(f"{self.base_url} refused the API key: set OPENAI_API_KEY.")
        if isinstance(exc, openai.APIStatusError):
            return BackendError(f"{self.base_url} answered {exc.status_code}: {exc.message}")
        return self._cut(exc)

    def _cut(self, exc: BaseException) -> StreamInterruptedError:
        return StreamInterruptedError(f"the reply from {self.base_url} was cut off ({type(exc).__name__}: {exc})")

    def _refuses(self, exc: openai.OpenAIError) -> bool:
        """Whether a failed ``create()`` refused the request's shape (not the model, key or network)."""
        if not isinstance(exc, openai.APIStatusError) or exc.status_code not in _REFUSALS:
            return False
        missing_model = exc.code == "model_not_found" or self.model in exc.message
        return not (exc.status_code == 404 and missing_model)

    async def context_length(self) -> int:
        return self._context

    async def sees_images(self) -> bool:
        return self._vision

    async def _pieces(self, stream: AsyncStream[ChatCompletionChunk]) -> AsyncGenerator[str | None, None]:
        """The reply's text pieces, and ``None`` where the server reports the reply finished."""
        async with stream:  # closing this generator closes the response: the server stops
            async for chunk in stream:
                if chunk.usage is not None:
                    self.usage.prompt_tokens = chunk.usage.prompt_tokens
                    details = chunk.usage.prompt_tokens_details
                    cached = (details.cached_tokens or 0) if details is not None else None
                    # Unknown when the server does not say what it had cached: left at 0 (not reported).
                    self.usage.prompt_evaluated = 0 if cached is None else chunk.usage.prompt_tokens - cached
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta.content:
                    yield choice.delta.content
                if choice.finish_reason is not None:
                    yield None

    async def _open(
        self, messages: list[Message], mode: Mode, schema: dict[str, Any] | None, max_tokens: int | None
    ) -> tuple[AsyncGenerator[str | None, None], str | None]:
        """Send the request and wait for its first piece (or its finish).

        Raises the client's error if the request failed, or :class:`StreamInterruptedError`
        if the server answered but the stream broke or ended before anything arrived.
        """
        kwargs = _request(mode, schema)
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        stream = await self._client.chat.completions.create(
            model=self.model, messages=_chat_messages(messages), stream=True, **kwargs
        )
        pieces = self._pieces(stream)
        try:
            return pieces, await pieces.__anext__()
        except StopAsyncIteration:
            msg = f"the reply from {self.base_url} ended without a finish reason"
            raise StreamInterruptedError(msg) from None
        except (openai.OpenAIError, ValueError) as exc:
            await pieces.aclose()
            raise self._cut(exc) from None

    async def _negotiate(
        self, messages: list[Message], schema: dict[str, Any] | None, max_tokens: int | None
    ) -> tuple[AsyncGenerator[str | None, None], str | None]:
        """Open the reply in the first mode the endpoint accepts, and remember that mode."""
        endpoint = (self.base_url, self.model)
        known = _accepted.get(endpoint)
        modes: tuple[Mode, ...] = ("text",) if schema is None else (known,) if known else MODES
        for mode in modes:
            last = mode == modes[-1]
            try:
                pieces, first = await self._open(messages, mode, schema, max_tokens)
            except openai.OpenAIError as exc:
                if last or not self._refuses(exc):
                    raise self._translate(exc) from None
                log.debug("%s (%s) refused structured output as %s: %s", self.base_url, self.model, mode, exc)
                continue
            except StreamInterruptedError as exc:
                if last:
                    raise
                log.debug("%s (%s) failed structured output as %s: %s", self.base_url, self.model, mode, exc)
                continue
            if schema is not None and known is None:
                _accepted[endpoint] = mode
                log.info("%s (%s) takes structured output as %s", self.base_url, self.model, mode)
            return pieces, first
        raise AssertionError("unreachable: the last mode returns or raises")  # pragma: no cover

    async def _stream(
        self, messages: list[Message], *, json_schema: dict[str, Any] | None, max_tokens: int | None
    ) -> AsyncGenerator[str, None]:
        started = time.perf_counter()
        pieces, piece = await self._negotiate(messages, json_schema, max_tokens)
        first_at: float | None = None
        finished = False
        try:
            while True:
                if piece is None:
                    finished = True
                else:
                    if first_at is None:
                        first_at = time.perf_counter()
                        self.usage.first_token_s = first_at - started
                    self.usage.completion_tokens += 1
                    yield piece
                try:
                    piece = await pieces.__anext__()
                except StopAsyncIteration:
                    break
                except (openai.OpenAIError, ValueError) as exc:
                    # The server answered, then the reply broke off: it was cut (incomplete),
                    # the server is not "down".
                    raise self._cut(exc) from None
        finally:
            await pieces.aclose()
        if first_at is not None:
            self.usage.generation_s = time.perf_counter() - first_at
        if not finished:
            msg = f"the reply from {self.base_url} ended without a finish reason"
            raise StreamInterruptedError(msg)

    async def list_models(self) -> list[str]:
        try:
            page = await self._client.models.list()
        except openai.OpenAIError as exc:
            raise self._translate(exc) from None
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self._client.close()
