"""The one interface every model backend implements, and the errors they raise.

A backend streams text for a list of chat messages. Everything vendor-specific
(HTTP clients, llama.cpp handles, error types) stays inside its module, and is
translated once, there, into the errors below. Each error message says what the
user should do next.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

__all__ = [
    "Backend",
    "BackendError",
    "BackendNotInstalledError",
    "Image",
    "Message",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "StreamInterruptedError",
    "Usage",
]


class Image(TypedDict):
    mime: str
    data: str
    """base64"""


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str
    images: NotRequired[list[Image]]
    """Pictures for a model that can see (only on the last message of a prompt)."""


class BackendError(Exception):
    """Base of every error a backend raises; ``str()`` is meant for the user."""


class ModelUnavailableError(BackendError, ConnectionError):
    """The model server cannot be reached (the message names the endpoint)."""


class ModelNotFoundError(BackendError, LookupError):
    """The server answers but does not have the model (the message says how to get it)."""


class BackendNotInstalledError(BackendError, ImportError):
    """An optional dependency is missing (the message names the pip extra)."""


class StreamInterruptedError(BackendError):
    """The reply started but ended early: cut connection, stall or server error.

    Whatever streamed before the interruption was already handed out; the caller
    stores it with ``state: incomplete``.
    """


@dataclasses.dataclass
class Usage:
    """Token accounting of the last call, as reported by (or measured at) the backend."""

    prompt_tokens: int = 0
    """Tokens in the whole prompt."""
    prompt_evaluated: int = 0
    """Prompt tokens the model actually had to evaluate (the rest came from its cache)."""
    completion_tokens: int = 0
    first_token_s: float | None = None
    """Seconds from the request to the first streamed token."""
    generation_s: float = 0.0
    """Seconds from the first token to the last one."""

    def reset(self) -> None:
        """Zero for a new call: a backend that does not report a figure leaves it at zero,
        never at the last call's value."""
        self.prompt_tokens = self.prompt_evaluated = self.completion_tokens = 0
        self.first_token_s = None
        self.generation_s = 0.0


class Backend(abc.ABC):
    """A chat model that streams.

    Subclasses implement :meth:`_stream` and :meth:`context_length`; the public
    :meth:`stream` adds the stall guard shared by all of them.
    """

    spec: str = ""
    """The model spec this backend was made from (``ollama:gemma2:2b``, ``embedded``...)."""

    first_token_timeout: float = 300.0
    """Seconds to wait for the first token: a cold model load can take a minute."""
    stall_timeout: float = 30.0
    """Seconds of silence, once tokens flow, after which the reply is cut as incomplete."""

    def __init__(self) -> None:
        self.usage = Usage()

    @abc.abstractmethod
    async def context_length(self) -> int:
        """The model's context window, in tokens."""

    async def sees_images(self) -> bool:
        """True if the model takes pictures (``Message["images"]``); others read image outputs as text."""
        return False

    def count_tokens(self, text: str) -> int:
        """An estimate of the token count; backends with a tokenizer do better."""
        # ~3.5 characters per token is typical for English and code with BPE tokenizers.
        return max(1, int(len(text) / 3.5) + 1)

    @abc.abstractmethod
    def _stream(
        self, messages: list[Message], *, json_schema: dict[str, Any] | None, max_tokens: int | None
    ) -> AsyncGenerator[str, None]:
        """Yield pieces of the reply; raise :class:`BackendError` subclasses only."""

    async def stream(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        """Stream the reply to ``messages``, piece by piece.

        Raises :class:`StreamInterruptedError` if the model stalls (no token within
        :attr:`first_token_timeout` at the start, or :attr:`stall_timeout` later).
        Cancelling the consuming task stops generation.
        """
        self.usage.reset()
        agen = self._stream(messages, json_schema=json_schema, max_tokens=max_tokens)
        timeout = self.first_token_timeout
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(agen.__anext__(), timeout)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    msg = (
                        f"{self.spec} sent nothing for {timeout:.0f} s; the reply was cut. "
                        "The model server may be overloaded; try again, or pick a smaller model."
                    )
                    raise StreamInterruptedError(msg) from None
                timeout = self.stall_timeout
                yield piece
        finally:
            await agen.aclose()

    async def complete(self, messages: list[Message], **kwargs: Any) -> str:
        """The whole reply as one string."""
        return "".join([piece async for piece in self.stream(messages, **kwargs)])

    async def prefill(  # noqa: B027 (optional hook)
        self, messages: list[Message], *, yield_to: Callable[[], bool] | None = None
    ) -> None:
        """Warm the model's prompt cache with ``messages`` (a no-op where unsupported).

        ``yield_to``: polled between chunks where the backend reads in chunks; True
        means a turn is waiting, and the prefill stops there (what it read stays cached).
        """

    async def load(self) -> None:
        """Get ready to answer (load weights, build tables); a host calls it ahead of use."""
        await self.context_length()

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release connections or model memory."""
