"""Ollama backend (``ollama:<name>``), through the official ``ollama`` client.

The context window is read from ``/api/show`` and sent as ``num_ctx`` on every
request: Ollama's own default (2,048 or 4,096 tokens) would silently cut a long
notebook history. Ollama keeps the last prompt in its KV cache, so our append-only
transcript makes each reaction cost only the new tokens.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx
import ollama

from .base import (
    Backend,
    BackendError,
    Message,
    ModelNotFoundError,
    ModelUnavailableError,
    StreamInterruptedError,
)

__all__ = ["OllamaBackend", "ollama_host"]

DEFAULT_CONTEXT = 8192
"""Used when ``/api/show`` reports no context length."""
MAX_CONTEXT = 32768
"""Cap on ``num_ctx``: the KV cache for a 128k window would not fit a laptop."""


def ollama_host() -> str:
    """The Ollama endpoint, honouring ``OLLAMA_HOST`` as the ollama client does."""
    host = os.environ.get("OLLAMA_HOST", "").strip() or "http://127.0.0.1:11434"
    if "://" not in host:
        host = f"http://{host}"
    return host.rstrip("/")


def _wire(message: Message) -> dict[str, Any]:
    """A message as Ollama takes it: pictures as base64 in ``images``."""
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    images = message.get("images")
    if images:
        out["images"] = [image["data"] for image in images]
    return out


class OllamaBackend(Backend):
    """A model served by Ollama.

    Parameters
    ----------
    model
        The Ollama model name (``gemma2:2b``).
    host
        The server URL; defaults to ``$OLLAMA_HOST`` or ``http://127.0.0.1:11434``.
    connect_timeout
        Seconds before a server that does not answer is reported as down.
    """

    def __init__(self, model: str, *, host: str | None = None, connect_timeout: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.spec = f"ollama:{model}"
        self.host = (host or ollama_host()).rstrip("/")
        # No read timeout here: Backend.stream owns first-token and stall timeouts.
        timeout = httpx.Timeout(connect=connect_timeout, read=None, write=30.0, pool=connect_timeout)
        self._client = ollama.AsyncClient(host=self.host, timeout=timeout)
        self._num_ctx: int | None = None
        self._vision: bool | None = None

    # -- error translation: the one place Ollama's and httpx's errors are seen --

    def _translate(self, exc: BaseException) -> BackendError:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)):
            msg = (
                f"Ollama is not running at {self.host}. Start it with `ollama serve` "
                "(or set OLLAMA_HOST to where it runs)."
            )
            return ModelUnavailableError(msg)
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == 404:
                msg = (
                    f"Ollama at {self.host} does not have the model {self.model!r}. "
                    f"Pull it with `ollama pull {self.model}`."
                )
                return ModelNotFoundError(msg)
            return BackendError(f"Ollama at {self.host} answered with an error: {exc.error}")
        if isinstance(exc, (httpx.TransportError, ValueError)):
            # A cut connection mid-stream, or a half-written NDJSON line.
            msg = f"the reply from Ollama at {self.host} was cut off ({type(exc).__name__}: {exc})"
            return StreamInterruptedError(msg)
        return BackendError(f"Ollama at {self.host} failed: {exc}")

    # -- the interface --------------------------------------------------------

    async def context_length(self) -> int:
        if self._num_ctx is None:
            try:
                info = await self._client.show(self.model)
            except (httpx.HTTPError, ollama.ResponseError, ConnectionError) as exc:
                raise self._translate(exc) from None
            lengths = (int(v) for k, v in (info.modelinfo or {}).items() if k.endswith(".context_length"))
            length = next(lengths, None)
            self._num_ctx = min(length or DEFAULT_CONTEXT, MAX_CONTEXT)
            self._vision = "vision" in (getattr(info, "capabilities", None) or [])
        return self._num_ctx

    async def sees_images(self) -> bool:
        await self.context_length()
        return bool(self._vision)

    async def _stream(
        self, messages: list[Message], *, json_schema: dict[str, Any] | None, max_tokens: int | None
    ) -> AsyncGenerator[str, None]:
        options: dict[str, Any] = {"num_ctx": await self.context_length()}
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        started = time.perf_counter()
        first_at: float | None = None
        try:
            chunks = await self._client.chat(
                model=self.model,
                messages=[_wire(m) for m in messages],
                stream=True,
                options=options,
                format=json_schema,
            )
            async for chunk in chunks:
                text = chunk.message.content or ""
                if text:
                    if first_at is None:
                        first_at = time.perf_counter()
                        self.usage.first_token_s = first_at - started
                    self.usage.completion_tokens += 1
                    yield text
                if chunk.done:
                    self.usage.prompt_evaluated = int(chunk.prompt_eval_count or 0)
                    self.usage.completion_tokens = int(chunk.eval_count or self.usage.completion_tokens)
                    if first_at is not None:
                        self.usage.generation_s = time.perf_counter() - first_at
                    return
        except (httpx.HTTPError, ollama.ResponseError, ConnectionError, ValueError) as exc:
            raise self._translate(exc) from None
        # The server closed the stream without its final `done` record.
        msg = f"the reply from Ollama at {self.host} ended without its final record"
        raise StreamInterruptedError(msg)

    async def prefill(self, messages: list[Message], *, yield_to: Callable[[], bool] | None = None) -> None:
        # Ollama evaluates the prompt and keeps it cached; one predicted token is the
        # cheapest request that does so.
        try:
            await self._client.chat(
                model=self.model,
                messages=list(messages),
                stream=False,
                options={"num_ctx": await self.context_length(), "num_predict": 1},
            )
        except (httpx.HTTPError, ollama.ResponseError, ConnectionError) as exc:
            raise self._translate(exc) from None

    async def list_models(self) -> list[str]:
        try:
            listing = await self._client.list()
        except (httpx.HTTPError, ollama.ResponseError, ConnectionError) as exc:
            raise self._translate(exc) from None
        return [m.model for m in listing.models if m.model]

    async def aclose(self) -> None:
        await self._client._client.aclose()  # noqa: SLF001 (ollama exposes no close())
