"""A real kernel started by the real server: its events reach the sidebar's socket, and a
failure is diagnosed once, by the server (not also by the kernel)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import make_notebook
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)
from ws_client import Client, is_event

from ambient_jupyter.history import History

MODEL = "ollama:tiny:1b"
NB = "live.ipynb"


@pytest.fixture
def jp_server_config(ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    return {
        "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
        "AmbientExtension": {"model": MODEL, "poll_interval": 0.02, "cooldown": 0.0},
    }


async def _execute(client: Any, code: str) -> dict[str, Any]:
    msg_id = client.execute(code)
    while True:
        reply = await client.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


async def test_kernel_events_stream_live_and_failures_are_diagnosed_once(
    jp_fetch, jp_ws_fetch, jp_serverapp, jp_root_dir: Path, ollama_server: FakeOllama, ambient_db: Path
):
    ollama_server.reply = "You divided by zero; check the denominator."
    make_notebook(jp_root_dir / NB, [])
    session = json.loads(
        (
            await jp_fetch(
                "api", "sessions", method="POST",
                body=json.dumps({"path": NB, "name": NB, "type": "notebook", "kernel": {"name": "python3"}}),
            )
        ).body
    )
    sidebar = Client(await jp_ws_fetch("ambient", "ws"))
    await sidebar.hello(NB)
    # The room for an open notebook exists before the first failure (the hub looks
    # for sessions every second).
    await asyncio.sleep(1.5)

    kernel = jp_serverapp.kernel_manager.get_kernel(session["kernel"]["id"])
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        assert (await _execute(client, "%load_ext ambient_jupyter"))["status"] == "ok"
        await _execute(client, "import os; host = os.environ.get('AMBIENT_HOST')")
        await _execute(client, "x = 6 * 7")
        ok = await sidebar.until(is_event("cell_executed", code="x = 6 * 7"), timeout=30)
        assert ok["event"]["status"] == "ok" and ok["event"]["notebook"] == NB
        await _execute(client, "x / 0")
        failed = (await sidebar.until(is_event("cell_executed", code="x / 0"), timeout=30))["event"]
        assert failed["status"] == "error" and failed["error"]["ename"] == "ZeroDivisionError"
        diagnosis = (await sidebar.until(is_event("assistant_message"), timeout=30))["event"]
        assert diagnosis["reply_to"] == failed["seq"] and diagnosis["text"] == ollama_server.reply
        tokens = [f for f in sidebar.frames if f["type"] == "token"]
        assert tokens, "the diagnosis was not streamed to the sidebar"
        host = await _execute(client, "print(host)")
        assert host["status"] == "ok"
        await asyncio.sleep(1.0)  # room for a second (wrong) diagnosis to show up
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")

    with History(ambient_db) as h:
        events = h.read(os.path.join(str(jp_root_dir), NB))
    replies = [e for e in events if e["kind"] == "assistant_message"]
    assert len(replies) == 1, "the failure was diagnosed twice (kernel and server)"
    assert len(ollama_server.chat_requests()) == 1
