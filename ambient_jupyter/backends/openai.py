"""OpenAI-compatible backend (``openai:<name>``): any server speaking chat completions.

``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are read by the official client itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

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
    from openai.types.chat import ChatCompletionMessageParam

__all__ = ["OpenAIBackend"]


def _chat_messages(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    # Each Message is already one of the client's message shapes (system, user or
    # assistant, by its role); mypy cannot match a TypedDict to one arm by its role.
    return [cast("ChatCompletionMessageParam", message) for message in messages]


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
        self._schemas = True
        """False once the server refused ``response_format``: output is then validated only."""
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key,
            max_retries=0,
            timeout=openai.Timeout(connect=connect_timeout, read=None, write=30.0, pool=connect_timeout),
        )

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
        msg = f"the reply from {self.base_url} was cut off ({type(exc).__name__}: {exc})"
        return StreamInterruptedError(msg)

    async def context_length(self) -> int:
        return self._context

    async def _stream(
        self, messages: list[Message], *, json_schema: dict[str, Any] | None, max_tokens: int | None
    ) -> AsyncGenerator[str, None]:
        kwargs: dict[str, Any] = {}
        if json_schema is not None and self._schemas:
            # Strict mode takes only an object at the root; a union of actions goes as
            # guidance, and the assistant validates what comes back.
            strict = json_schema.get("type") == "object" and "anyOf" not in json_schema
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "action", "schema": json_schema, "strict": strict},
            }
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        started = time.perf_counter()
        first_at: float | None = None
        self.usage.completion_tokens = 0
        self.usage.first_token_s = None
        finished = False
        stream = None
        try:
            try:
                stream = await self._client.chat.completions.create(
                    model=self.model, messages=_chat_messages(messages), stream=True, **kwargs
                )
            except openai.BadRequestError as exc:
                if "response_format" not in kwargs or "response_format" not in str(exc).lower():
                    raise
                # Many OpenAI-compatible servers have no structured output: ask again
                # without it (once per backend); the assistant validates the reply.
                self._schemas = False
                del kwargs["response_format"]
                stream = await self._client.chat.completions.create(
                    model=self.model, messages=_chat_messages(messages), stream=True, **kwargs
                )
            async for chunk in stream:
                if chunk.usage is not None:
                    self.usage.prompt_tokens = chunk.usage.prompt_tokens
                    self.usage.prompt_evaluated = chunk.usage.prompt_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.delta.content or ""
                if text:
                    if first_at is None:
                        first_at = time.perf_counter()
                        self.usage.first_token_s = first_at - started
                    self.usage.completion_tokens += 1
                    yield text
                if choice.finish_reason is not None:
                    finished = True
        except (openai.OpenAIError, ValueError) as exc:
            if stream is not None and isinstance(exc, openai.APIConnectionError):
                # The server answered, then the connection dropped mid-reply: the reply
                # was cut (incomplete), the server is not "down".
                msg = f"the reply from {self.base_url} was cut off ({type(exc).__name__}: {exc})"
                raise StreamInterruptedError(msg) from None
            raise self._translate(exc) from None
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
