"""The WebSocket protocol against a real Jupyter server (pytest-jupyter), with the model
behind a fake Ollama speaking the real NDJSON wire."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_notebook
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError
from ws_client import Client, is_event, masked_text_frame, stalled_socket

from ambient_jupyter.history import History
from ambient_jupyter.server.hub import code_sha256

MODEL = "ollama:tiny:1b"
NB = "work/analysis.ipynb"


@pytest.fixture
def fake(ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> FakeOllama:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    return ollama_server


@pytest.fixture
def jp_server_config(fake: FakeOllama) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
        "AmbientExtension": {"model": MODEL, "poll_interval": 0.02, "cooldown": 0.0},
    }


@pytest.fixture
def notebook_id(jp_root_dir: Path) -> str:
    (jp_root_dir / "work").mkdir(exist_ok=True)
    return os.path.join(str(jp_root_dir), *NB.split("/"))


@pytest.fixture
def kernel_side(ambient_db: Path):
    """A second connection to the history, standing in for a kernel process."""
    h = History(ambient_db)
    yield h
    h.close()


async def connect(jp_ws_fetch: Any) -> Client:
    return Client(await jp_ws_fetch("ambient", "ws"))


def all_rows(db: Path) -> list[tuple[str, int]]:
    with History(db) as h:
        return [(nb, seq) for nb, seq, _ in h.notebooks()]


async def test_chat_streams_tokens_then_stores_the_reply(jp_ws_fetch, fake, notebook_id, ambient_db):
    fake.reply = "The mean is 4.2; the outlier in row 7 pulls it up."
    c = await connect(jp_ws_fetch)
    ready = await c.hello(NB)
    assert ready == {"type": "ready", "notebook": NB, "last_seq": 0, "reset": False}
    await c.send({"type": "chat", "notebook": NB, "text": "why is the mean high?", "client_id": "c-1"})
    reply = (await c.until(is_event("assistant_message")))["event"]

    tokens = [f for f in c.frames if f["type"] == "token"]
    assert len(tokens) > 3, "the reply was not streamed token by token"
    assert {t["reply_id"] for t in tokens} == {reply["reply_id"]}
    assert "".join(t["text"] for t in tokens) == reply["text"] == fake.reply
    (question,) = c.events("user_message")
    assert question["text"] == "why is the mean high?" and question["source"] == "sidebar"
    assert reply["reply_to"] == question["seq"] and reply["state"] == "complete" and reply["model"] == MODEL
    assert reply["notebook"] == NB, "clients see the contents path, not the server's file system"
    await c.until(lambda f: f["type"] == "status" and f["state"] == "idle")
    states = [f["state"] for f in c.frames if f["type"] == "status"]
    assert states == ["idle", "thinking", "streaming", "idle"]

    with History(ambient_db) as h:
        stored = h.read(notebook_id)
    assert [e["kind"] for e in stored] == ["user_message", "assistant_message"]
    assert stored[1]["text"] == fake.reply and stored[1]["state"] == "complete"
    c.close()


async def test_reconnect_after_seq_gives_exactly_the_missing_events(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = "ok"
    for i in range(3):
        kernel_side.append(notebook_id, {"kind": "cell_executed", "code": f"x = {i}", "status": "ok"})
    first = await connect(jp_ws_fetch)
    await first.hello(NB)
    seen = [e["seq"] for e in first.events()]
    assert seen == [1, 2, 3]
    first.close()

    # While it is away: kernel events, and a chat from another tab.
    for i in range(3, 6):
        kernel_side.append(notebook_id, {"kind": "cell_executed", "code": f"x = {i}", "status": "ok"})
    other = await connect(jp_ws_fetch)
    await other.hello(NB, after_seq=3)
    await other.send({"type": "chat", "notebook": NB, "text": "and now?", "client_id": "c-2"})
    await other.until(is_event("assistant_message"))
    other.close()

    back = await connect(jp_ws_fetch)
    ready = await back.hello(NB, after_seq=seen[-1])
    missing = [e["seq"] for e in back.events()]
    assert missing == [e["seq"] for e in kernel_side.read(notebook_id, 3)] == [4, 5, 6, 7, 8]
    assert ready["last_seq"] == 8

    # Live events keep coming after the replay, once each.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "x = 9", "status": "ok"})
    live = await back.until(is_event("cell_executed", code="x = 9"))
    assert live["event"]["seq"] == 9
    await asyncio.sleep(0.2)
    seqs = [e["seq"] for e in back.events()]
    assert seqs == sorted(set(seqs)), "duplicates or disorder after reconnect"
    back.close()


async def test_a_client_ahead_of_the_history_is_started_over(jp_ws_fetch, fake, notebook_id, kernel_side):
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "a", "status": "ok"})
    c = await connect(jp_ws_fetch)
    ready = await c.hello(NB, after_seq=500)
    assert ready["reset"] is True and [e["seq"] for e in c.events()] == [1]
    c.close()


async def test_a_resent_client_id_is_stored_once(jp_ws_fetch, fake, notebook_id, ambient_db):
    fake.reply = "Once."
    fake.token_delay = 0.05
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    chat = {"type": "chat", "notebook": NB, "text": "hello?", "client_id": "same-id"}
    await c.send(chat)
    await c.send(chat)  # a resend while the first is being answered
    await c.until(is_event("assistant_message"))
    await c.send(chat)  # and one after (a reconnecting tab)
    await asyncio.sleep(0.5)
    with History(ambient_db) as h:
        kinds = [e["kind"] for e in h.read(notebook_id)]
    assert kinds == ["user_message", "assistant_message"]
    assert len(fake.chat_requests()) == 1
    c.close()


async def test_stop_ends_the_reply_as_incomplete_within_a_second(jp_ws_fetch, fake, notebook_id):
    fake.reply = [f"word{i} " for i in range(400)]
    fake.token_delay = 0.05
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    await c.send({"type": "chat", "notebook": NB, "text": "talk a lot", "client_id": "c-3"})
    await c.until(lambda f: f["type"] == "token")
    started = time.monotonic()
    await c.send({"type": "stop", "notebook": NB})
    reply = (await c.until(is_event("assistant_message")))["event"]
    elapsed = time.monotonic() - started
    print(f"stop_to_stored_s={elapsed:.3f}")
    assert reply["state"] == "incomplete"
    assert elapsed < 1.0
    assert reply["text"] and reply["text"] != "".join(fake.reply)


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        ("this is not json", "JSON"),
        (b"\x00\x01binary", "binary"),
        ("[1, 2, 3]", "JSON objects"),
        (json.dumps({"type": "launch_missiles"}), "unknown frame type"),
        (json.dumps({"type": "chat", "notebook": NB, "text": "x" * 2_000_000}), "too large"),
        (json.dumps({"type": "chat", "notebook": NB, "text": ""}), "non-empty"),
        (json.dumps({"type": "hello", "notebook": NB, "after_seq": "zero"}), "after_seq"),
        (json.dumps({"type": "decide", "notebook": NB, "action_id": "nope", "decision": "approve"}), "no proposed"),
    ],
)
async def test_malformed_frames_get_an_error_and_change_nothing(jp_ws_fetch, fake, notebook_id, ambient_db, frame,
                                                                 what):
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    before = all_rows(ambient_db)
    await c.send(frame)
    error = await c.until(lambda f: f["type"] == "error")
    assert what in error["message"]
    assert all_rows(ambient_db) == before
    # The connection and the server carry on.
    fake.reply = "still here"
    await c.send({"type": "chat", "notebook": NB, "text": "still there?", "client_id": "after"})
    assert (await c.until(is_event("assistant_message")))["event"]["text"] == "still here"
    c.close()


async def test_a_ten_megabyte_frame_is_refused_and_the_server_survives(jp_ws_fetch, fake, notebook_id, ambient_db):
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    before = all_rows(ambient_db)
    # Tornado closes a connection whose frame exceeds its 10 MiB limit (possibly while
    # we are still writing it); below it we answer with an error frame. Either way
    # nothing is stored.
    try:
        await c.send(json.dumps({"type": "chat", "notebook": NB, "text": "y" * 10 * 1024 * 1024}))
        while True:
            frame = await c.read(20)
            if frame is None or frame["type"] == "error":
                break
    except (WebSocketClosedError, StreamClosedError):
        pass
    assert all_rows(ambient_db) == before
    again = await connect(jp_ws_fetch)
    assert (await again.hello(NB))["type"] == "ready"
    again.close()


@pytest.mark.parametrize(
    "path",
    [
        "../outside.ipynb", "/etc/passwd.ipynb", "work/../../x.ipynb", "%2e%2e/x.ipynb", "work/notes.txt", "",
        "a\\b.ipynb", "link/x.ipynb",
    ],
)
async def test_path_like_identifiers_are_refused(jp_ws_fetch, jp_fetch, fake, jp_root_dir, ambient_db, path, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    if not (jp_root_dir / "link").exists():
        (jp_root_dir / "link").symlink_to(outside)
    before = all_rows(ambient_db)
    c = await connect(jp_ws_fetch)
    for frame in (
        {"type": "hello", "notebook": path, "after_seq": 0},
        {"type": "chat", "notebook": path, "text": "hi", "client_id": "p"},
        {"type": "stop", "notebook": path},
    ):
        await c.send(frame)
        assert (await c.until(lambda f: f["type"] in ("error", "ready")))["type"] == "error"
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("ambient", "api", "history", params={"notebook": path})
    assert err.value.code == 400
    assert all_rows(ambient_db) == before
    assert not list(outside.iterdir())
    c.close()


async def test_approval_is_bound_to_the_code_hash(jp_ws_fetch, fake, notebook_id, kernel_side, ambient_db):
    code = "total = 41 + 1\nprint(total)\n"
    fake.reply = f"Add the missing one:\n```python\n{code}```\nThen rerun."
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    await c.send({"type": "chat", "notebook": NB, "text": "fix it", "client_id": "c-4"})
    proposal = (await c.until(is_event("action_proposed")))["event"]
    assert proposal["code"] == code and proposal["sha256"] == code_sha256(code)
    assert proposal["action"] == "insert_cell" and proposal["model"] == MODEL
    reply = c.events("assistant_message")[0]
    assert proposal["reply_to"] == reply["seq"]

    decide = {"type": "decide", "notebook": NB, "action_id": proposal["action_id"], "decision": "approve"}
    await c.send({**decide, "sha256": code_sha256("import os; os.remove('x')\n")})
    assert "does not match" in (await c.until(lambda f: f["type"] == "error"))["message"]
    await c.send({**decide, "sha256": None})
    assert "does not match" in (await c.until(lambda f: f["type"] == "error"))["message"]
    assert not [e for e in kernel_side.read(notebook_id) if e["kind"] == "action_decided"]

    await c.send({**decide, "sha256": proposal["sha256"]})
    decided = (await c.until(is_event("action_decided")))["event"]
    assert decided["decision"] == "approved" and decided["by"] == "user"
    await c.send({**decide, "sha256": proposal["sha256"]})
    assert "already decided" in (await c.until(lambda f: f["type"] == "error"))["message"]

    # Another cell runs first: it is not the approved code, so it is not the action.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "print('unrelated')", "status": "ok"})
    cell = kernel_side.append(notebook_id, {"kind": "cell_executed", "code": code, "status": "ok"})
    executed = (await c.until(is_event("action_executed")))["event"]
    assert executed["action_id"] == proposal["action_id"] and executed["cell_event_seq"] == cell["seq"]
    c.close()


async def test_rejected_and_agent_off(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = "```python\nprint('hi')\n```"
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    await c.send({"type": "chat", "notebook": NB, "text": "go", "client_id": "c-5"})
    proposal = (await c.until(is_event("action_proposed")))["event"]
    await c.send({"type": "decide", "notebook": NB, "action_id": proposal["action_id"], "decision": "reject"})
    assert (await c.until(is_event("action_decided")))["event"]["decision"] == "rejected"
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "print('hi')\n", "status": "ok"})
    await c.until(is_event("cell_executed"))
    await asyncio.sleep(0.3)
    assert not c.events("action_executed"), "a rejected action was counted as executed"
    c.close()


class TestFanOut:
    @pytest.fixture
    def jp_server_config(self, fake: FakeOllama) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
            "AmbientExtension": {"model": MODEL, "poll_interval": 0.02, "client_queue_limit": 500},
        }

    async def test_twenty_clients_see_the_same_order_and_a_stalled_one_blocks_nobody(
        self, jp_ws_fetch, jp_serverapp, jp_http_port, jp_base_url, fake, notebook_id, kernel_side
    ):
        # 1,200 frames of ~8 KB (10 MB) at ~120 frames/s: more than the stalled
        # client's socket buffers (4 MB) and its 500-frame queue hold, so it really
        # falls behind, while the twenty readers keep up.
        pieces = 1200
        fake.reply = [f"t{i} " + "x" * 8000 for i in range(pieces)]
        fake.token_delay = 0.008
        clients = [await connect(jp_ws_fetch) for _ in range(20)]
        for c in clients:
            await c.hello(NB)
        # (in a thread: the server runs on this test's event loop)
        stalled = await asyncio.to_thread(
            stalled_socket, jp_http_port, f"{jp_base_url}ambient/ws", jp_serverapp.identity_provider.token
        )
        stalled.sendall(masked_text_frame(json.dumps({"type": "hello", "notebook": NB, "after_seq": 0})))
        hub = jp_serverapp.web_app.settings["ambient_hub"]
        room = next(iter(hub.rooms.values()))
        for _ in range(100):
            if len(room.subscribers) == 21:
                break
            await asyncio.sleep(0.05)
        assert len(room.subscribers) == 21

        await clients[0].send({"type": "chat", "notebook": NB, "text": "stream a lot", "client_id": "c-6"})
        for i in range(20):
            kernel_side.append(notebook_id, {"kind": "widget_changed", "widget": "w", "widget_class": "IntSlider",
                                             "trait": "value", "old": i, "new": i + 1})
        started = time.monotonic()
        await asyncio.gather(*(c.until(is_event("assistant_message"), timeout=90) for c in clients))
        elapsed = time.monotonic() - started
        kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "done", "status": "ok"})
        await asyncio.gather(*(c.until(is_event("cell_executed", code="done")) for c in clients))

        def stream(c: Client) -> list[Any]:
            return [(f["type"], f["event"]["seq"]) if f["type"] == "event" else (f["type"], f.get("text"))
                    for f in c.frames if f["type"] in ("event", "token")]

        reference = stream(clients[0])
        assert sum(1 for kind, _ in reference if kind == "token") == pieces
        for c in clients[1:]:
            assert stream(c) == reference
        print(f"clients=20 frames_each={len(reference)} seconds={elapsed:.2f}")
        # The stalled client was cut loose (it would reconnect with after_seq); the
        # twenty readers were not.
        assert len(room.subscribers) == 20 and all(not c.closed for c in clients)
        stalled.close()
        for c in clients:
            c.close()


async def test_headless_run_then_live_share_one_history(jp_ws_fetch, fake, jp_root_dir, notebook_id):
    path = make_notebook(Path(notebook_id), ["x = 40 + 2", "print(x)", "1 / 0"])
    fake.reply = "Division by zero: the divisor is 0."
    env = {**os.environ, "OLLAMA_HOST": fake.url}
    run = subprocess.run(
        [sys.executable, "-m", "ambient_jupyter", "run", str(path), "--model", MODEL],
        env=env, capture_output=True, text=True, timeout=300, cwd=jp_root_dir,
    )
    assert run.returncode == 1, run.stderr  # the last cell fails, as written
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    cells = c.events("cell_executed")
    assert [e["code"] for e in cells] == ["x = 40 + 2", "print(x)", "1 / 0"]
    (diagnosis,) = c.events("assistant_message")
    assert diagnosis["reply_to"] == cells[2]["seq"] and diagnosis["text"] == fake.reply
    c.close()


async def test_rest_history_models_and_status(jp_fetch, fake, notebook_id, kernel_side):
    for i in range(5):
        kernel_side.append(notebook_id, {"kind": "cell_executed", "code": f"c{i}", "status": "ok"})
    r = await jp_fetch("ambient", "api", "history", params={"notebook": NB, "after": "2"})
    events = json.loads(r.body)["events"]
    assert [e["seq"] for e in events] == [3, 4, 5] and {e["notebook"] for e in events} == {NB}
    models = json.loads((await jp_fetch("ambient", "api", "models")).body)
    assert models["default"] == MODEL
    assert {"spec": MODEL, "backend": "ollama", "status": "ready"} in models["models"]
    status = json.loads((await jp_fetch("ambient", "api", "status")).body)
    assert status["model"] == MODEL and "version" in status
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("ambient", "api", "history", params={"notebook": NB, "after": "x"})
    assert err.value.code == 400
