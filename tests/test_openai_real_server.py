"""OpenAIBackend against a real OpenAI-compatible server, not a fake.

The server is llama-cpp-python's own (``python -m llama_cpp.server``, its ``[server]``
extra) serving the embedded SmolLM2-135M; it is started once for the module. It
refuses OpenAI's ``json_schema`` response format with a 500 and takes llama.cpp's
``json_object`` with a schema instead: the backend has to find that out by itself.
Requests are counted in the server's own access log.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fakes import free_port

from ambient_jupyter import actions
from ambient_jupyter.assistant import Assistant
from ambient_jupyter.backends import openai as openai_backend
from ambient_jupyter.backends.base import Message
from ambient_jupyter.backends.llamacpp import embedded_model_path
from ambient_jupyter.backends.openai import OpenAIBackend
from ambient_jupyter.history import History

pytestmark = pytest.mark.model

T = TypeVar("T")
MODEL = "smollm2"
STARTUP_S = 60.0
MESSAGES: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant for Jupyter notebooks."},
    {"role": "user", "content": "In one sentence: what does pandas.read_csv do?"},
]
_CHAT_STATUS = re.compile(r'"POST /v1/chat/completions HTTP/[\d.]+" (\d{3})')


@dataclass
class LlamaServer:
    base_url: str
    log: Path

    def chat_statuses(self) -> list[int]:
        """The HTTP status of every chat request so far, from the server's access log."""
        return [int(m.group(1)) for m in _CHAT_STATUS.finditer(self.log.read_text(errors="replace"))]


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    try:
        importlib.import_module("llama_cpp.server.app")
    except ImportError as exc:
        # CI installs the extra (scripts/bootstrap.sh): a missing server is a failure, not a skip.
        pytest.fail(
            f"llama-cpp-python's server cannot be imported ({exc}); "
            'install it with: pip install "llama-cpp-python[server]" (scripts/bootstrap.sh does)',
            pytrace=False,
        )
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(embedded_model_path()),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "4096", "--n_threads", "2",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{_tail(log)}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within {STARTUP_S:.0f} s:\n{_tail(log)}", pytrace=False)
            time.sleep(0.25)
        yield LlamaServer(base_url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(autouse=True)
def forget_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test negotiates structured output from scratch (and leaves no memory behind)."""
    monkeypatch.setattr(openai_backend, "_accepted", {})


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def backend_for(server: LlamaServer) -> OpenAIBackend:
    return OpenAIBackend(MODEL, base_url=server.base_url, context=4096)


async def collect(backend: OpenAIBackend, **kwargs: Any) -> list[str]:
    try:
        return [piece async for piece in backend.stream(MESSAGES, **kwargs)]
    finally:
        await backend.aclose()


def test_streams_plain_text(llama_server: LlamaServer) -> None:
    backend = backend_for(llama_server)

    pieces = run(lambda: collect(backend, max_tokens=40))

    assert len(pieces) > 1
    assert "".join(pieces).strip()
    assert backend.usage.completion_tokens == len(pieces)
    assert backend.usage.first_token_s is not None
    assert llama_server.chat_statuses()[-1] == 200


def test_structured_output_is_negotiated(llama_server: LlamaServer) -> None:
    schema = actions.action_schema(("explain",), max_tokens=200)
    backend = backend_for(llama_server)
    before = len(llama_server.chat_statuses())

    raw = "".join(run(lambda: collect(backend, json_schema=schema, max_tokens=200)))

    action = actions.parse_action(raw, ("explain",))
    assert isinstance(action, actions.Explain) and action.text.strip()
    # json_schema failed the server's request validation (500); json_object with the
    # schema was accepted, and constrained the output.
    assert backend.structured_mode == "json_object"
    assert llama_server.chat_statuses()[before:] == [500, 200]


def test_the_endpoint_remembers_what_worked(llama_server: LlamaServer) -> None:
    schema = actions.action_schema(("explain",), max_tokens=120)
    first, second = backend_for(llama_server), backend_for(llama_server)

    before = len(llama_server.chat_statuses())
    run(lambda: collect(first, json_schema=schema, max_tokens=120))
    negotiated = llama_server.chat_statuses()[before:]
    before = len(llama_server.chat_statuses())
    raw = "".join(run(lambda: collect(second, json_schema=schema, max_tokens=120)))

    assert negotiated == [500, 200]
    # The second backend (a new client) asked in json_object at once: one request, no 500.
    assert llama_server.chat_statuses()[before:] == [200]
    assert second.structured_mode == "json_object"
    actions.parse_action(raw, ("explain",))


class RecordingBackend(OpenAIBackend):
    """Keeps the messages of every request, to check what the model was shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[list[Message]] = []

    def _stream(self, messages: list[Message], **kwargs: Any) -> Any:
        self.sent.append(list(messages))
        return super()._stream(messages, **kwargs)


def test_multi_turn_chat_through_the_assistant(llama_server: LlamaServer, tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    backend = RecordingBackend(MODEL, base_url=llama_server.base_url, context=4096)
    assistant = Assistant(history, "nb.ipynb", backend, max_reply_tokens=256)

    async def chat() -> None:
        try:
            await assistant.ask("What is a pandas DataFrame?")
            await assistant.ask("And how do I see its first rows?")
        finally:
            await backend.aclose()

    try:
        run(chat)
        events = history.read("nb.ipynb")
    finally:
        history.close()

    replies = [e for e in events if e["kind"] == "assistant_message"]
    assert [e["state"] for e in replies] == ["complete", "complete"], replies
    questions = [e for e in events if e["kind"] == "user_message"]
    assert [r["reply_to"] for r in replies] == [q["seq"] for q in questions]
    assert backend.structured_mode == "json_object"
    # The second request carried the first answer, as the model wrote it, before the new question.
    first_answer = replies[0]["raw"] or replies[0]["text"]
    assert len(backend.sent) == 2
    second = backend.sent[1]
    assert {"role": "assistant", "content": first_answer} in second
    assert second[-1] == {"role": "user", "content": "And how do I see its first rows?"}
