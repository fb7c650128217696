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
from ambient_jupyter.kernel.inflight import folder_for

MODEL = "ollama:tiny:1b"
NB = "live.ipynb"


@pytest.fixture
def jp_server_config(ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    return {
        "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
        "AmbientExtension": {"poll_interval": 0.02},
        "AmbientSettings": {"model": MODEL, "cooldown": 0.0},
    }


async def _execute(client: Any, code: str) -> dict[str, Any]:
    msg_id = client.execute(code)
    while True:
        reply = await client.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


async def open_session(jp_fetch: Any, root: Path) -> dict[str, Any]:
    """Open NB with a python3 kernel, as JupyterLab does when a notebook is opened."""
    make_notebook(root / NB, [])
    body = json.dumps({"path": NB, "name": NB, "type": "notebook", "kernel": {"name": "python3"}})
    return json.loads((await jp_fetch("api", "sessions", method="POST", body=body)).body)  # type: ignore[no-any-return]


async def test_kernel_events_stream_live_and_failures_are_diagnosed_once(
    jp_fetch, jp_ws_fetch, jp_serverapp, jp_root_dir: Path, ollama_server: FakeOllama, ambient_db: Path
):
    ollama_server.reply = "You divided by zero; check the denominator."
    session = await open_session(jp_fetch, jp_root_dir)
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


async def test_a_question_gets_the_kernels_state_and_a_busy_or_gone_kernel_says_so(
    jp_fetch, jp_ws_fetch, jp_serverapp, jp_root_dir: Path, ollama_server: FakeOllama, ambient_db: Path
):
    ollama_server.reply = "It has Region and units."
    session = await open_session(jp_fetch, jp_root_dir)
    sidebar = Client(await jp_ws_fetch("ambient", "ws"))
    await sidebar.hello(NB)
    kernel = jp_serverapp.kernel_manager.get_kernel(session["kernel"]["id"])
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        assert (await _execute(client, "%load_ext ambient_jupyter"))["status"] == "ok"
        await _execute(client, "import pandas as pd\nsales = pd.DataFrame({'Region': ['N'], 'units': [3]})")
        await _execute(client, "sales.groupby('region')")
        # The failure: the kernel's checked fix is proposed; no model is needed for it.
        proposal = (await sidebar.until(is_event("action_proposed"), timeout=30))["event"]
        assert proposal["origin"] == "hint" and proposal["code"] == "sales.groupby('Region')"
        assert proposal["diff"] == [["-", "sales.groupby('region')"], ["+", "sales.groupby('Region')"]]

        # A question: the kernel records what it concerns, and the model reads it.
        await sidebar.send({"type": "chat", "notebook": NB, "text": "what columns does sales have?",
                            "client_id": "q1"})
        state = (await sidebar.until(is_event("kernel_state"), timeout=30))["event"]
        assert state["entries"][0]["name"] == "sales"
        assert "Region" in state["entries"][0]["text"]
        await sidebar.until(
            lambda f: f.get("type") == "event" and f["event"]["kind"] == "assistant_message"
            and f["event"]["seq"] > state["seq"], timeout=30,
        )
        asked = json.dumps(ollama_server.chat_requests()[-1]["messages"])
        assert "Region" in asked and "kernel state now" in asked

        # A busy kernel: the turn does not wait for it, and the context says so.
        busy = client.execute("import time; time.sleep(6)")
        while True:  # the kernel is in the sleep once it has announced that cell
            msg = await client.get_iopub_msg(timeout=30)
            if msg["msg_type"] == "execute_input" and msg["parent_header"].get("msg_id") == busy:
                break
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        await sidebar.send({"type": "chat", "notebook": NB, "text": "and now?", "client_id": "q2"})
        note = (await sidebar.until(
            lambda f: f.get("type") == "event" and f["event"]["kind"] == "kernel_state" and f["event"].get("note"),
            timeout=30,
        ))["event"]
        waited = asyncio.get_running_loop().time() - started
        print(f"busy kernel: the state note came after {waited:.1f}s")
        assert waited < 5 and "could not be asked" in note["note"]
        while True:  # let the sleeping cell finish
            reply = await client.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == busy:
                break
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")

    # No kernel at all: said so at once, and the question is still answered.
    await sidebar.send({"type": "chat", "notebook": NB, "text": "still there?", "client_id": "q3"})
    gone = (await sidebar.until(
        lambda f: f.get("type") == "event" and f["event"]["kind"] == "kernel_state"
        and "no kernel is running" in (f["event"].get("note") or ""),
        timeout=30,
    ))["event"]
    answer = (await sidebar.until(
        lambda f: f.get("type") == "event" and f["event"]["kind"] == "assistant_message"
        and f["event"]["seq"] > gone["seq"], timeout=30,
    ))["event"]
    assert answer["state"] == "complete"


async def _restarted(kernel: Any) -> None:
    """Wait until the server's restarter has noticed the death and started a new kernel
    (else the test's teardown shuts down a kernel halfway through its restart)."""
    for _ in range(600):
        if kernel._restarter is not None and kernel._restarter._restarting and kernel.ready.done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the kernel was not restarted")


async def test_a_kernel_that_dies_in_a_cell_is_recorded_by_the_server(
    jp_fetch, jp_ws_fetch, jp_serverapp, jp_root_dir: Path, ambient_db: Path
):
    """The kernel cannot record its own death and its cell never replies: the server sees
    both (its restarter, the kernel's IOPub), records ``kernel_died`` naming the cell, and
    every tab gets it. The restarted kernel records again once the extension is loaded."""
    session = await open_session(jp_fetch, jp_root_dir)
    sidebar = Client(await jp_ws_fetch("ambient", "ws"))
    await sidebar.hello(NB)
    kernel_id = session["kernel"]["id"]
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    # Killed a moment after it starts (an out-of-memory kill comes mid-computation): a
    # kernel killed at once may not have published the cell yet (see kernel_deaths.py).
    fatal = "import os, signal, time\ntime.sleep(0.5)\nos.kill(os.getpid(), signal.SIGKILL)"
    try:
        await client.wait_for_ready(timeout=60)
        await _execute(client, "%load_ext ambient_jupyter")
        await _execute(client, "x = 1")
        await sidebar.until(is_event("cell_executed", code="x = 1"), timeout=30)
        await asyncio.sleep(1.5)  # the watch attaches to new kernels once a second
        client.execute(fatal)
        died = (await sidebar.until(is_event("kernel_died"), timeout=60))["event"]
        assert died["code"] == fatal and died["by"] == "server"
        await _restarted(kernel)
    finally:
        client.stop_channels()
    with History(ambient_db) as history:
        kinds = [e["kind"] for e in history.read(str(jp_root_dir / NB))]
    # Recorded once, after the last cell that finished; the killing cell never finished.
    assert kinds.count("kernel_died") == 1 and kinds[-1] == "kernel_died", kinds
    assert kinds.count("cell_executed") == 1

    # The restarted kernel, once the extension is loaded again, finds the cell the dead
    # one left (kernel/inflight.py): the same death, under the same key, stays one record.
    left = folder_for(ambient_db)
    assert [p.name for p in left.glob("*.cell")], "the dead kernel left no page"
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        await _execute(client, "%load_ext ambient_jupyter")
        await _execute(client, "y = 2")
        await sidebar.until(is_event("cell_executed", code="y = 2"), timeout=30)
    finally:
        client.stop_channels()
    with History(ambient_db) as history:
        kinds = [e["kind"] for e in history.read(str(jp_root_dir / NB))]
    assert kinds == ["cell_executed", "kernel_died", "cell_executed"], kinds
    pid = int(kernel.provisioner.pid)
    assert [int(p.name.split("-")[1]) for p in left.glob("*.cell")] == [pid]  # only the live kernel's


async def test_the_death_of_an_unwatched_kernel_writes_no_history(
    jp_fetch, jp_serverapp, jp_root_dir: Path, ambient_db: Path
):
    """A notebook that never loaded the extension has no history; its kernel's death
    must not start one."""
    session = await open_session(jp_fetch, jp_root_dir)
    hub = jp_serverapp.web_app.settings["ambient_hub"]
    hub.start()
    await asyncio.sleep(1.5)
    kernel = jp_serverapp.kernel_manager.get_kernel(session["kernel"]["id"])
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        client.execute("import os, signal, time; time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)")
        await asyncio.sleep(1.0)
        await _restarted(kernel)
        await asyncio.sleep(0.5)  # room for a (wrong) record to be written
    finally:
        client.stop_channels()
    with History(ambient_db) as history:
        assert history.notebooks() == []
