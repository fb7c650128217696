"""A fake OpenAI-compatible server: chat completions (SSE streaming) and the model list.

Endpoints, under ``/v1``: ``GET /v1/models``, ``POST /v1/chat/completions`` (with
``"stream": true``: ``data: {chunk}`` events whose ``choices[0].delta.content`` carry
the pieces, a final chunk with ``finish_reason: "stop"``, then ``data: [DONE]``;
without it, one ``chat.completion`` object). Unknown models get OpenAI's 404
``model_not_found`` error. The base URL for a client is :attr:`FakeOpenAI.base_url`.

Structured output is accepted in every form unless :attr:`FakeOpenAI.refuse` says
otherwise (the schema itself is not enforced: the scripted reply is the reply).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from . import FakeModelServer, Handler

__all__ = ["FakeOpenAI", "openai_server_fixture"]

DEFAULT_MODEL = "fake-gpt"


class FakeOpenAI(FakeModelServer):
    """An OpenAI-compatible server with scriptable replies (see :mod:`fakes`)."""

    def __init__(self, models: list[str] | None = None, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.models: list[str] = list(models) if models is not None else [DEFAULT_MODEL]
        self.refuse: dict[str, int] = {}
        """Forms of structured output to refuse, each with the HTTP status to answer it with:
        ``json_schema`` and ``json_object`` (the ``response_format`` type), ``guided_json``
        (vLLM's field). llama.cpp's server answers json_schema with 500, OpenAI-style
        servers without structured output answer 400."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def chat_requests(self) -> list[dict[str, Any]]:
        """The bodies of every ``POST /v1/chat/completions``, oldest first."""
        return [r.body for r in self.requests_to("/v1/chat/completions")]

    def _error(self, h: Handler, status: int, message: str, *, type_: str, code: str | None) -> None:
        h.send_json(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def route(self, h: Handler, method: str, path: str, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        if method == "GET" and path == "/v1/models":
            created = int(time.time())
            data = [{"id": m, "object": "model", "created": created, "owned_by": "fake"} for m in self.models]
            h.send_json(200, {"object": "list", "data": data})
        elif method == "POST" and path == "/v1/chat/completions":
            self._chat(h, body)
        else:
            message = f"Unknown request URL: {method} {path}"
            self._error(h, 404, message, type_="invalid_request_error", code=None)

    @staticmethod
    def _structured_form(body: dict[str, Any]) -> str | None:
        """How the request asks for structured output (a key of :attr:`refuse`), if it does."""
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") != "text":
            return str(fmt.get("type"))
        return "guided_json" if "guided_json" in body else None

    def structured_forms(self) -> list[str | None]:
        """How each chat request so far asked for structured output (``None``: it did not)."""
        return [self._structured_form(body) for body in self.chat_requests()]

    def _chat(self, h: Handler, body: dict[str, Any]) -> None:
        model = body.get("model")
        if self.fail_with is not None:
            status, message = self.fail_with
            self._error(h, status, message, type_="server_error", code=None)
            return
        form = self._structured_form(body)
        if form in self.refuse:
            status = self.refuse[form]
            message = f"Invalid parameter: structured output as {form!r} is not supported with this model."
            kind = "server_error" if status >= 500 else "invalid_request_error"
            self._error(h, status, message, type_=kind, code=None)
            return
        if model not in self.models:
            self._error(
                h,
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                type_="invalid_request_error",
                code="model_not_found",
            )
            return
        pieces = self.pieces_for(body)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in body.get("messages") or []) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        if not body.get("stream"):
            h.send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            payload: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                payload["usage"] = None
            payload.update(extra)
            return f"data: {json.dumps(payload)}\n\n".encode()

        def encode(i: int, piece: str) -> bytes:
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            return chunk(delta, None)

        final = chunk({}, "stop")
        if include_usage:
            final += chunk({}, None, choices=[], usage=usage)
        final += b"data: [DONE]\n\n"
        self.play(h, pieces, content_type="text/event-stream; charset=utf-8", encode=encode, final=final)


@pytest.fixture(name="openai_server")
def openai_server_fixture() -> Iterator[FakeOpenAI]:
    """A running :class:`FakeOpenAI` serving the model ``fake-gpt``."""
    fake = FakeOpenAI().start()
    try:
        yield fake
    finally:
        fake.stop()
