"""A fake Ollama server speaking Ollama's HTTP API (the subset the official client uses).

Endpoints: ``GET /`` and ``GET /api/version`` (liveness), ``GET /api/tags``,
``POST /api/show`` (``model_info`` with ``<arch>.context_length``), ``POST /api/chat``
(NDJSON stream, or one JSON object with ``"stream": false``). Unknown models get
Ollama's 404 ``{"error": "model 'x' not found"}``.

Use the ``ollama_server`` fixture (import ``ollama_server_fixture`` into the test
module; the fixture is registered under the shorter name), or
``with FakeOllama() as fake:`` where a test needs its own (e.g. on a chosen port).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from . import FakeModelServer, Handler

__all__ = ["FakeOllama", "ollama_server_fixture"]

DEFAULT_MODEL = "tiny:1b"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


class FakeOllama(FakeModelServer):
    """An Ollama server with scriptable replies.

    Parameters
    ----------
    models
        ``{name: context_length}`` of the models it "has" (``None``: no
        ``context_length`` key in ``model_info``).
    arch
        The architecture prefix of ``model_info`` keys (``llama.context_length``).
    """

    def __init__(
        self,
        models: dict[str, int | None] | None = None,
        *,
        arch: str = "llama",
        port: int = 0,
        version: str = "0.6.5",
    ) -> None:
        super().__init__(port=port)
        self.models: dict[str, int | None] = dict(models) if models is not None else {DEFAULT_MODEL: 4096}
        self.arch = arch
        self.version = version
        self.vision: set[str] = set()
        """Models that report the ``vision`` capability in ``/api/show``."""

    # -- what the client sent ---------------------------------------------------

    def chat_requests(self) -> list[dict[str, Any]]:
        """The bodies of every ``POST /api/chat`` that asked for a reply, oldest first."""
        return [r.body for r in self.requests_to("/api/chat") if not _is_prefill(r.body)]

    def prefill_requests(self) -> list[dict[str, Any]]:
        """The bodies of the prefills (one predicted token, not streamed): a host warming the cache."""
        return [r.body for r in self.requests_to("/api/chat") if _is_prefill(r.body)]

    # -- the API ------------------------------------------------------------------

    def _known(self, name: str | None) -> bool:
        if not name:
            return False
        return name in self.models or (":" not in name and f"{name}:latest" in self.models)

    def _not_found(self, h: Handler, name: str | None) -> None:
        h.send_json(404, {"error": f"model '{name}' not found"})

    def route(self, h: Handler, method: str, path: str, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        if method in ("GET", "HEAD") and path == "/":
            h.send_text(200, "Ollama is running")
        elif method == "GET" and path == "/api/version":
            h.send_json(200, {"version": self.version})
        elif method == "GET" and path == "/api/tags":
            h.send_json(200, {"models": [self._tag(name) for name in self.models]})
        elif method == "POST" and path == "/api/show":
            self._show(h, body)
        elif method == "POST" and path == "/api/chat":
            self._chat(h, body)
        else:
            h.send_text(404, "404 page not found")

    def _tag(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": _now(),
            "size": 1_234_567_890,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": self.arch,
                "families": [self.arch],
                "parameter_size": "1B",
                "quantization_level": "Q4_K_M",
            },
        }

    def _show(self, h: Handler, body: dict[str, Any]) -> None:
        name = body.get("model") or body.get("name")
        if not self._known(name):
            self._not_found(h, name)
            return
        length = self.models.get(name) if name in self.models else self.models.get(f"{name}:latest")
        info: dict[str, Any] = {"general.architecture": self.arch, "general.parameter_count": 1_000_000_000}
        if length is not None:
            info[f"{self.arch}.context_length"] = length
        h.send_json(
            200,
            {
                "license": "",
                "modelfile": f"FROM {name}\n",
                "parameters": "stop \"<end>\"",
                "template": "{{ .Prompt }}",
                "details": self._tag(str(name))["details"],
                "model_info": info,
                "capabilities": ["completion", "vision"] if name in self.vision else ["completion"],
                "modified_at": _now(),
            },
        )

    def _chat(self, h: Handler, body: dict[str, Any]) -> None:
        name = body.get("model")
        if self.fail_with is not None:
            status, message = self.fail_with
            h.send_json(status, {"error": message})
            return
        if not self._known(name):
            self._not_found(h, name)
            return
        # A prefill reads the prompt and predicts one token: it is not a turn, and does
        # not consume the reply a test set up for the next turn.
        pieces = ["{"] if _is_prefill(body) else self.pieces_for(body)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages") or [])
        final = {
            "model": name,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": max(1, prompt_chars // 4),
            "prompt_eval_duration": 1_000,
            "eval_count": len(pieces),
            "eval_duration": 1_000,
        }
        if body.get("stream") is False:
            final["message"]["content"] = "".join(pieces)
            h.send_json(200, final)
            return

        def encode(_i: int, piece: str) -> bytes:
            record = {
                "model": name,
                "created_at": _now(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            return (json.dumps(record) + "\n").encode()

        self.play(
            h,
            pieces,
            content_type="application/x-ndjson",
            encode=encode,
            final=(json.dumps(final) + "\n").encode(),
        )


@pytest.fixture(name="ollama_server")
def ollama_server_fixture() -> Iterator[FakeOllama]:
    """A running :class:`FakeOllama` with the model ``tiny:1b`` (context 4,096)."""
    fake = FakeOllama().start()
    try:
        yield fake
    finally:
        fake.stop()


def _is_prefill(body: Any) -> bool:
    options = body.get("options") if isinstance(body, dict) else None
    return isinstance(options, dict) and options.get("num_predict") == 1 and body.get("stream") is False
