"""The WebSocket protocol against a real Jupyter server (pytest-jupyter), with the model
behind a fake Ollama speaking the real NDJSON wire."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_notebook
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)
from fakes.openai_server import FakeOpenAI, openai_server_fixture  # noqa: F401 (the `openai_server` fixture)
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError
from ws_client import Client, is_event, masked_text_frame, stalled_socket

from ambient_jupyter.actions import code_sha256
from ambient_jupyter.history import History

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
        "AmbientExtension": {"poll_interval": 0.02},
        "AmbientSettings": {"model": MODEL, "cooldown": 0.0},
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
    assert ready == {"type": "ready", "notebook": NB, "last_seq": 0, "reset": False, "replayed_from": 0}
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
    # No kernel runs for this notebook: the model is told so, once, right before the question.
    assert [e["kind"] for e in stored] == ["kernel_state", "user_message", "assistant_message"]
    assert "no kernel is running" in stored[0]["note"] and stored[0]["entries"] == []
    assert stored[2]["text"] == fake.reply and stored[2]["state"] == "complete"
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
    # (the chat added a kernel_state note, the question and the reply)
    assert missing == [e["seq"] for e in kernel_side.read(notebook_id, 3)] == [4, 5, 6, 7, 8, 9]
    assert ready["last_seq"] == 9

    # Live events keep coming after the replay, once each.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "x = 9", "status": "ok"})
    live = await back.until(is_event("cell_executed", code="x = 9"))
    assert live["event"]["seq"] == 10
    await asyncio.sleep(0.2)
    seqs = [e["seq"] for e in back.events()]
    assert seqs == sorted(set(seqs)), "duplicates or disorder after reconnect"
    back.close()


async def test_a_long_history_replays_to_a_slow_tab_without_a_drop(jp_ws_fetch, fake, notebook_id, kernel_side):
    """5,000 events, more than twice the client's queue (2,000 frames): the replay waits for the
    tab to read, so the tab gets every event once, in order, and is never cut off; live events
    committed during the replay come right after it, while another tab is served throughout."""
    cell = {"kind": "cell_executed", "code": "x = 1", "status": "ok"}
    kernel_side.append_many(notebook_id, [(dict(cell), None) for _ in range(5000)])
    watcher = await connect(jp_ws_fetch)
    await watcher.hello(NB, after_seq=5000)  # a tab that is up to date, following live
    slow = await connect(jp_ws_fetch)
    await slow.send({"type": "hello", "notebook": NB, "after_seq": 0})
    for n in range(1, 5001):
        await slow.read()
        if n % 500 == 0:
            await asyncio.sleep(0.2)  # a slow link, or a busy browser
        if n == 2500:  # committed mid-replay: it must come once, after the replay
            kernel_side.append(notebook_id, {**cell, "code": "live"})
            await watcher.until(is_event("cell_executed", code="live"))
    ready = await slow.until(lambda f: f["type"] in ("ready", "error"))
    assert ready["type"] == "ready", ready
    await slow.until(is_event("cell_executed", code="live"))
    seqs = [e["seq"] for e in slow.events()]
    assert seqs == list(range(1, 5002))
    assert not slow.closed
    slow.close()
    watcher.close()


async def test_a_fresh_view_can_ask_for_only_the_newest_events(jp_ws_fetch, jp_fetch, fake, notebook_id, kernel_side):
    """``tail``: the newest N are replayed, ``ready`` says where the replay began, and the
    older ones are there to read over REST; live events follow as usual."""
    cell = {"kind": "cell_executed", "code": "x = 1", "status": "ok"}
    kernel_side.append_many(notebook_id, [(dict(cell), None) for _ in range(1000)])
    c = await connect(jp_ws_fetch)
    await c.send({"type": "hello", "notebook": NB, "after_seq": 0, "tail": 100})
    ready = await c.until(lambda f: f["type"] in ("ready", "error"))
    assert ready["type"] == "ready" and ready["replayed_from"] == 900 and ready["last_seq"] == 1000
    assert [e["seq"] for e in c.events()] == list(range(901, 1001))
    older = json.loads((await jp_fetch("ambient", "api", "history", params={"notebook": NB, "after": "800",
                                                                           "limit": "100"})).body)["events"]
    assert [e["seq"] for e in older] == list(range(801, 901))
    kernel_side.append(notebook_id, {**cell, "code": "live"})
    assert (await c.until(is_event("cell_executed", code="live")))["event"]["seq"] == 1001
    # Without a tail, or with one longer than the history, everything comes; a bad tail is refused.
    whole = await connect(jp_ws_fetch)
    ready = await whole.hello(NB)
    assert ready["replayed_from"] == 0 and len(whole.events()) == 1001
    await whole.send({"type": "hello", "notebook": NB, "after_seq": 0, "tail": 0})
    assert "'tail'" in (await whole.until(lambda f: f["type"] == "error"))["message"]
    c.close()
    whole.close()


async def test_undone_is_recorded_once_and_only_for_an_applied_change(jp_ws_fetch, fake, notebook_id, kernel_side):
    """The tab that took back an edit says so; the server records it for every tab, once,
    and refuses what cannot have been undone (never ran, not a change to the cells)."""
    def proposal(action_id: str, action: str) -> dict:
        return {"kind": "action_proposed", "action_id": action_id, "action": action, "code": "a = 5\n",
                "sha256": hashlib.sha256(b"a = 5\n").hexdigest(), "args": {"cell": 1}, "text": "", "old_code": "a = 1"}

    kernel_side.append_many(notebook_id, [
        (proposal("edit-1", "edit_cell"), None),
        ({"kind": "action_executed", "action_id": "edit-1", "ok": True}, None),
        (proposal("waiting", "edit_cell"), None),
        (proposal("rerun", "run_cell"), None),
        ({"kind": "action_executed", "action_id": "rerun", "ok": True}, None),
    ])
    c = await connect(jp_ws_fetch)
    other = await connect(jp_ws_fetch)
    await c.hello(NB)
    await other.hello(NB)
    refusals = (("waiting", "nothing to undo"), ("rerun", "cannot be undone"), ("nope", "no proposed action"))
    for action_id, why in refusals:
        await c.send({"type": "undone", "notebook": NB, "action_id": action_id})
        error = await c.until(lambda f: f["type"] == "error")
        assert why in error["message"] and error.get("action_id") == action_id
    await c.send({"type": "undone", "notebook": NB, "action_id": "edit-1"})
    seen = (await other.until(is_event("action_undone")))["event"]
    assert (seen["action_id"], seen["by"]) == ("edit-1", "user")
    await c.send({"type": "undone", "notebook": NB, "action_id": "edit-1"})
    assert "already undone" in (await c.until(lambda f: f["type"] == "error"))["message"]
    assert [e["action_id"] for e in kernel_side.read(notebook_id) if e["kind"] == "action_undone"] == ["edit-1"]
    c.close()
    other.close()


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
    # One note that no kernel runs here (not one per resend), one question, one answer.
    assert kinds == ["kernel_state", "user_message", "assistant_message"]
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


async def test_a_flood_of_chats_is_bounded_and_stop_clears_the_queue(jp_ws_fetch, fake, notebook_id, ambient_db):
    """1,000 chat frames at once: two are taken (one answered, one waiting), the rest refused
    (too many waiting, or too fast);
    Stop ends the answer and drops the waiting one, and the model is not asked again."""
    fake.reply = [f"word{i} " for i in range(400)]
    fake.token_delay = 0.05
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    await asyncio.gather(
        *(c.send({"type": "chat", "notebook": NB, "text": f"question {i}", "client_id": f"f-{i}"}) for i in range(1000))
    )
    await c.until(lambda f: f["type"] == "token")
    await drain(c, seconds=0.5)
    busy = [f for f in c.frames if f["type"] == "error" and f["message"].startswith("busy:")]
    slowed = [f for f in c.frames if f["type"] == "error" and f["message"].startswith("slow down:")]
    # About 500 pass the rate limit (its burst, plus what refills meanwhile): 2 are taken, the
    # rest are busy; the others came too fast.
    assert len(busy) + len(slowed) == 998 and 400 <= len(slowed) <= 500, (len(busy), len(slowed))
    # Each busy refusal names its question, so the tab drops just that one from its pending list.
    refused = sorted(int(f["client_id"][2:]) for f in busy)
    assert len(set(refused)) == len(busy) and not {0, 1} & set(refused)
    with History(ambient_db) as h:
        assert sorted(e["text"] for e in stored_kinds(h, notebook_id, "user_message")) == ["question 0", "question 1"]
    await c.send({"type": "stop", "notebook": NB})
    replies = []
    while len(replies) < 2:
        replies.append((await c.until(is_event("assistant_message")))["event"])
    assert [r["state"] for r in replies] == ["incomplete", "incomplete"]
    assert replies[1]["text"].startswith("Stopped before it was answered")
    await asyncio.sleep(1.0)
    assert len(fake.chat_requests()) == 1  # the waiting question never reached the model
    # The tab may ask again once its questions are settled.
    fake.reply = "Fine."
    fake.token_delay = 0
    await c.send({"type": "chat", "notebook": NB, "text": "again", "client_id": "f-again"})
    assert (await c.until(is_event("assistant_message")))["event"]["text"] == "Fine."
    assert len(fake.chat_requests()) == 2
    c.close()


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
        (json.dumps({"type": "decide", "notebook": NB, "action_id": "a", "decision": "maybe"}), "'decision'"),
        (json.dumps({"type": "mode", "notebook": NB, "agent": "sometimes"}), "off, ask or auto"),
        (json.dumps({"type": "run_failed", "notebook": NB, "action_id": "a", "error": "no"}), "not handed"),
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


# -- the agent: proposals, the gate, and handing approved actions to one tab ------------


def act(action: str, text: str = "Here is what I would do.", **fields: Any) -> str:
    """A model turn: one JSON action, as a constrained model writes it."""
    return json.dumps({"action": action, "text": text, **fields})


def runs(*clients: Client) -> list[tuple[int, dict[str, Any]]]:
    """Every `run` frame the clients have read, as (client index, frame)."""
    return [(i, f) for i, c in enumerate(clients) for f in c.frames if f["type"] == "run"]


async def drain(*clients: Client, seconds: float = 0.4) -> None:
    """Read whatever the clients are sent for a while (to see that something did NOT come)."""

    async def one(c: Client) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                if await c.read(left) is None:
                    return
            except (asyncio.TimeoutError, TimeoutError):
                return

    await asyncio.gather(*(one(c) for c in clients))


async def propose(c: Client, text: str = "fix it", client_id: str | None = None) -> dict[str, Any]:
    await c.send({"type": "chat", "notebook": NB, "text": text, "client_id": client_id or f"c-{time.monotonic()}"})
    return (await c.until(is_event("action_proposed")))["event"]


def decide_frame(proposal: dict[str, Any], decision: str = "approve", sha256: Any = "same") -> dict[str, Any]:
    return {
        "type": "decide", "notebook": NB, "action_id": proposal["action_id"], "decision": decision,
        "sha256": proposal["sha256"] if sha256 == "same" else sha256,
    }


def stored_kinds(history: History, notebook: str, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in history.read(notebook) if e["kind"] in kinds]


async def test_approval_is_bound_to_the_code_hash(jp_ws_fetch, fake, notebook_id, kernel_side):
    code = "total = 41 + 1\nprint(total)\n"
    fake.reply = act("insert_cell", "Add the missing one.", code=code, after=None)
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    proposal = await propose(c)
    assert proposal["code"] == code and proposal["sha256"] == code_sha256(code)
    assert proposal["action"] == "insert_cell" and proposal["model"] == MODEL and proposal["role"] == "watcher"
    reply = c.events("assistant_message")[0]
    assert proposal["reply_to"] == reply["seq"] and reply["text"] == "Add the missing one."
    assert fake.chat_requests()[-1]["format"], "the model's output was not constrained to the action schema"
    await drain(c)
    assert runs(c) == [], "ask mode ran something before anyone decided"

    await c.send(decide_frame(proposal, sha256=code_sha256("import os; os.remove('x')\n")))
    assert "does not match" in (await c.until(lambda f: f["type"] == "error"))["message"]
    await c.send(decide_frame(proposal, sha256=None))
    assert "does not match" in (await c.until(lambda f: f["type"] == "error"))["message"]
    await drain(c)
    assert not stored_kinds(kernel_side, notebook_id, "action_decided")
    assert runs(c) == [], "a refused approval handed out code"

    await c.send(decide_frame(proposal))
    run = await c.until(lambda f: f["type"] == "run")
    decided = c.events("action_decided")[-1]
    assert decided["decision"] == "approved" and decided["by"] == "user" and decided["sha256"] == proposal["sha256"]
    assert run == {
        "type": "run", "notebook": NB, "action_id": proposal["action_id"], "action": "insert_cell", "code": code,
        "sha256": proposal["sha256"], "args": {}, "model": MODEL, "role": "watcher", "reply_to": reply["seq"],
        "decided_by": "user", "rule": "user", "approved_at": decided["at"],
    }
    assert decided["rule"] == "user"
    await c.send(decide_frame(proposal))
    assert "already decided" in (await c.until(lambda f: f["type"] == "error"))["message"]
    await drain(c)
    assert len(runs(c)) == 1

    # Another cell runs first: it is not the approved code, so it is not the action.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "print('unrelated')", "status": "ok"})
    cell = kernel_side.append(notebook_id, {"kind": "cell_executed", "code": code, "status": "ok",
                                            "execution_count": 3})
    executed = (await c.until(is_event("action_executed")))["event"]
    assert executed["action_id"] == proposal["action_id"] and executed["cell_event_seq"] == cell["seq"]
    assert executed["ok"] is True
    c.close()


async def test_reject_sends_nothing_and_records_nothing_as_run(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = act("propose_next_cell", "Plot it next.", code="print('hi')\n")
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    proposal = await propose(c)
    assert proposal["action"] == "propose_next_cell"
    await c.send(decide_frame(proposal, "reject", sha256=None))
    decided = (await c.until(is_event("action_decided")))["event"]
    assert decided["decision"] == "rejected" and decided["by"] == "user"
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "print('hi')\n", "status": "ok"})
    await c.until(is_event("cell_executed"))
    await drain(c)
    assert runs(c) == []
    assert not c.events("action_executed"), "a rejected action was counted as executed"
    c.close()


async def test_every_cell_action_is_handed_out_with_its_arguments(jp_ws_fetch, fake, notebook_id, kernel_side):
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "x = 1\n", "status": "ok", "execution_count": 1})
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "y = x\n", "status": "ok", "execution_count": 2})
    turns = {
        "insert": act("insert_cell", code="z = 3\n", after=2),
        "edit": act("edit_cell", cell=1, code="x = 10\n"),
        "rerun": act("run_cell", cell=2),
        "next": act("propose_next_cell", code="print(x + y)\n"),
    }
    fake.reply = lambda body: turns[last_user(body)]
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    expected = {
        "insert": ("insert_cell", "z = 3\n", {"after": 2}),
        "edit": ("edit_cell", "x = 10\n", {"cell": 1}),
        "rerun": ("run_cell", "y = x\n", {"cell": 2}),  # what runs is the cell's recorded code
        "next": ("propose_next_cell", "print(x + y)\n", {}),
    }
    for ask, (action, code, args) in expected.items():
        proposal = await propose(c, ask)
        assert (proposal["action"], proposal["code"], proposal["args"]) == (action, code, args)
        await c.send(decide_frame(proposal))
        run = await c.until(lambda f, p=proposal: f["type"] == "run" and f["action_id"] == p["action_id"])
        assert (run["action"], run["code"], run["args"], run["sha256"]) == (action, code, args, code_sha256(code))
    c.close()


def last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return str(users[-1]["content"]).strip() if users else ""


async def test_mode_frame_sets_the_notebooks_agent_mode(jp_ws_fetch, fake, notebook_id, kernel_side):
    a, b = await connect(jp_ws_fetch), await connect(jp_ws_fetch)
    await a.hello(NB)
    await b.hello(NB)
    first = await a.until(lambda f: f["type"] == "status")
    assert first["agent"] == "ask" and first["expert"] is None and first["model"] == MODEL

    await a.send({"type": "mode", "notebook": NB, "agent": "auto"})
    for c in (a, b):
        status = await c.until(lambda f: f["type"] == "status" and f["agent"] == "auto")
        assert status["notebook"] == NB
    (changed,) = stored_kinds(kernel_side, notebook_id, "settings_changed")
    assert changed["agent"] == "auto" and changed["by"] == "sidebar"

    for bad in ("AUTO", "yolo", None, 1, ["auto"]):
        await a.send({"type": "mode", "notebook": NB, "agent": bad})
        assert "off, ask or auto" in (await a.until(lambda f: f["type"] == "error"))["message"]
    assert len(stored_kinds(kernel_side, notebook_id, "settings_changed")) == 1

    # A mode set elsewhere (a kernel's %ambient) reaches the sidebars too.
    kernel_side.append(notebook_id, {"kind": "settings_changed", "agent": "off", "by": "magic"})
    await b.until(lambda f: f["type"] == "status" and f["agent"] == "off")
    # ...and a new connection (or a server restart) starts from it.
    late = await connect(jp_ws_fetch)
    await late.hello(NB)
    assert (await late.until(lambda f: f["type"] == "status"))["agent"] == "off"
    for c in (a, b, late):
        c.close()


async def test_auto_mode_hands_one_run_frame_to_the_asking_tab(jp_ws_fetch, fake, notebook_id, kernel_side):
    code = "print('auto')\n"
    fake.reply = act("insert_cell", "Running it.", code=code, after=None)
    tabs = [await connect(jp_ws_fetch) for _ in range(3)]
    for t in tabs:
        await t.hello(NB)
    await tabs[0].send({"type": "mode", "notebook": NB, "agent": "auto"})
    await tabs[0].until(lambda f: f["type"] == "status" and f["agent"] == "auto")

    proposal = await propose(tabs[1], "do it")  # the middle tab asks
    decided = (await tabs[1].until(is_event("action_decided")))["event"]
    assert decided["decision"] == "approved" and decided["by"] == "policy"
    assert decided["reason"] == "agent mode is auto" and decided["rule"] == "auto"
    await tabs[1].until(lambda f: f["type"] == "run")
    await drain(*tabs)
    assert [(i, f["action_id"]) for i, f in runs(*tabs)] == [(1, proposal["action_id"])]
    for c in tabs:
        c.close()


async def test_a_switch_to_ask_while_the_model_streams_waits_for_a_click(
    jp_ws_fetch, fake, notebook_id, kernel_side
):
    code = "print('switched')\n"
    fake.reply = act("insert_cell", "Running it, slowly.", code=code, after=None)
    fake.token_delay = 0.05
    tab, other = await connect(jp_ws_fetch), await connect(jp_ws_fetch)
    for t in (tab, other):
        await t.hello(NB)
    await tab.send({"type": "mode", "notebook": NB, "agent": "auto"})
    await tab.until(lambda f: f["type"] == "status" and f["agent"] == "auto")

    await tab.send({"type": "chat", "notebook": NB, "text": "do it", "client_id": "c-switch"})
    await tab.until(lambda f: f["type"] == "token")  # the model is streaming
    await other.send({"type": "mode", "notebook": NB, "agent": "ask"})
    proposal = (await tab.until(is_event("action_proposed")))["event"]
    await drain(tab, other)
    assert not stored_kinds(kernel_side, notebook_id, "action_decided"), "under ask, only a person decides"
    assert runs(tab, other) == []

    await tab.send(decide_frame(proposal))
    run = await tab.until(lambda f: f["type"] == "run")
    assert (run["action_id"], run["rule"]) == (proposal["action_id"], "user")
    for t in (tab, other):
        t.close()


async def test_a_switch_to_off_expires_what_waits_for_approval(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = act("insert_cell", "Here.", code="print('expired')\n", after=None)
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    proposal = await propose(c)
    await c.send({"type": "mode", "notebook": NB, "agent": "off"})
    expired = (await c.until(is_event("action_decided")))["event"]
    assert (expired["action_id"], expired["decision"], expired["rule"]) == (proposal["action_id"], "rejected", "off")
    for mode in ("off", "ask"):
        await c.send({"type": "mode", "notebook": NB, "agent": mode})
        await c.send(decide_frame(proposal))
        assert "already decided" in (await c.until(lambda f: f["type"] == "error"))["message"]
    await drain(c)
    assert runs(c) == [] and not stored_kinds(kernel_side, notebook_id, "action_executed")
    c.close()


async def test_auto_mode_without_the_asking_tab_goes_to_the_newest(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = [*split_json(act("insert_cell", "Slowly.", code="print('newest')\n", after=None))]
    fake.token_delay = 0.05
    kernel_side.append(notebook_id, {"kind": "settings_changed", "agent": "auto", "by": "magic"})
    old, asker, newest = [await connect(jp_ws_fetch) for _ in range(3)]
    for t in (old, asker, newest):
        await t.hello(NB)
    await asker.send({"type": "chat", "notebook": NB, "text": "go", "client_id": "gone"})
    await asker.until(lambda f: f["type"] == "token")
    asker.close()  # the tab that asked goes away before the turn ends
    run = await newest.until(lambda f: f["type"] == "run")
    await drain(old, newest)
    assert [i for i, _ in runs(old, newest)] == [1]
    assert run["code"] == "print('newest')\n" and run["decided_by"] == "policy"
    old.close()
    newest.close()


def split_json(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def test_two_tabs_approving_at_once_run_it_once(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = act("insert_cell", code="print('once')\n", after=None)
    a, b = await connect(jp_ws_fetch), await connect(jp_ws_fetch)
    await a.hello(NB)
    await b.hello(NB)
    proposal = await propose(a)
    await b.until(is_event("action_proposed"))
    await asyncio.gather(a.send(decide_frame(proposal)), b.send(decide_frame(proposal)))
    await drain(a, b, seconds=0.8)
    assert len(runs(a, b)) == 1
    assert len(stored_kinds(kernel_side, notebook_id, "action_decided")) == 1
    errors = [f for c in (a, b) for f in c.frames if f["type"] == "error"]
    assert len(errors) == 1 and "already decided" in errors[0]["message"]
    a.close()
    b.close()


async def test_a_tab_that_cannot_run_it_says_so(jp_ws_fetch, fake, notebook_id, kernel_side):
    fake.reply = act("run_cell", cell=1)
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "x = 1\n", "status": "ok", "execution_count": 1})
    a, b = await connect(jp_ws_fetch), await connect(jp_ws_fetch)
    await a.hello(NB)
    await b.hello(NB)
    proposal = await propose(a)
    await a.send(decide_frame(proposal))
    await a.until(lambda f: f["type"] == "run")
    failed = {"type": "run_failed", "notebook": NB, "action_id": proposal["action_id"],
              "error": "cell [1] changed since the proposal, so it was not run"}
    for bad, why in (
        ({**failed, "error": ""}, "say why"),
        ({**failed, "error": 42}, "say why"),
        ({**failed, "error": "x" * 5000}, "at most"),
        ({**failed, "action_id": None}, "action_id"),
        ({**failed, "action_id": "nope"}, "not handed to this tab"),
    ):
        await a.send(bad)
        assert why in (await a.until(lambda f: f["type"] == "error"))["message"]
    await b.send(failed)  # only the tab it was handed to may report on it
    assert "not handed to this tab" in (await b.until(lambda f: f["type"] == "error"))["message"]
    assert not stored_kinds(kernel_side, notebook_id, "action_executed")

    await a.send(failed)
    executed = (await a.until(is_event("action_executed")))["event"]
    assert executed["ok"] is False and executed["cell_event_seq"] is None
    assert "changed since the proposal" in executed["error"]
    await a.send(failed)
    assert "already run" in (await a.until(lambda f: f["type"] == "error"))["message"]
    # The cell running later is not linked to the failed action.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "x = 1\n", "status": "ok", "execution_count": 2})
    await a.until(is_event("cell_executed", execution_count=2))
    await drain(a)
    assert len(stored_kinds(kernel_side, notebook_id, "action_executed")) == 1
    a.close()
    b.close()


TODO_PLUGIN = {
    "kind": "plugin_registered", "plugin": "todo", "widget": "w1", "widget_class": "TodoList",
    "description": "A todo list.",
    "actions": [
        {"name": "add", "description": "Add an item.", "safe": False,
         "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}},
        {"name": "count", "description": "Count the items.", "safe": True,
         "parameters": {"type": "object", "properties": {}}},
    ],
}


async def test_an_approved_plugin_call_goes_to_the_kernel_not_a_tab(jp_ws_fetch, fake, notebook_id, kernel_side):
    kernel_side.append(notebook_id, TODO_PLUGIN)
    fake.reply = act("call_plugin", "Adding it.", plugin="todo", name="add", args={"title": "x"})
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    proposal = await propose(c)
    assert proposal["action"] == "call_plugin" and proposal["code"] == "todo.add(title='x')"
    assert proposal["args"] == {"plugin": "todo", "name": "add", "args": {"title": "x"}}
    assert proposal["safe"] is False
    await drain(c)
    assert not c.events("action_decided"), "an unsafe plugin call was approved without a person"
    await c.send(decide_frame(proposal))
    # This server has no kernel for the notebook: the call cannot run, and that is recorded.
    executed = (await c.until(is_event("action_executed")))["event"]
    assert executed["ok"] is False and "no running kernel" in executed["error"]
    await drain(c)
    assert runs(c) == [], "a plugin call was handed to a tab"
    c.close()


async def test_a_safe_plugin_call_is_approved_by_policy_in_ask_mode(jp_ws_fetch, fake, notebook_id, kernel_side):
    kernel_side.append(notebook_id, TODO_PLUGIN)
    fake.reply = act("call_plugin", "Counting.", plugin="todo", name="count", args={})
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    proposal = await propose(c)
    assert proposal["safe"] is True
    decided = (await c.until(is_event("action_decided")))["event"]
    assert decided["by"] == "policy" and decided["decision"] == "approved"
    assert "changes only its widget" in decided["reason"]
    c.close()


async def test_stop_during_a_json_turn_proposes_nothing(jp_ws_fetch, fake, notebook_id, kernel_side):
    words = " ".join(f"step{i}" for i in range(300))
    fake.reply = split_json(act("insert_cell", words, code="import os\nos.remove('data.csv')\n", after=None))
    fake.token_delay = 0.02
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    await c.send({"type": "chat", "notebook": NB, "text": "clean up", "client_id": "stop-json"})
    await c.until(lambda f: f["type"] == "token")
    started = time.monotonic()
    await c.send({"type": "stop", "notebook": NB})
    reply = (await c.until(is_event("assistant_message")))["event"]
    elapsed = time.monotonic() - started
    print(f"stop_json_turn_s={elapsed:.3f}")
    assert elapsed < 1.0
    assert reply["state"] == "incomplete" and reply["text"] and words.startswith(reply["text"])
    assert len(reply["text"]) < len(words)
    await c.until(lambda f: f["type"] == "status" and f["state"] == "idle")
    await drain(c, seconds=1.0)
    assert not stored_kinds(kernel_side, notebook_id, "action_proposed", "action_decided")
    assert runs(c) == []
    c.close()


async def test_expert_without_an_expert_is_a_clear_error(jp_ws_fetch, fake, notebook_id, ambient_db):
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    await c.send({"type": "chat", "notebook": NB, "text": "/expert why is it slow?", "client_id": "e-1"})
    error = await c.until(lambda f: f["type"] == "error")
    assert "No expert model is set" in error["message"] and "AMBIENT_EXPERT" in error["message"]
    assert all_rows(ambient_db) == []
    assert fake.chat_requests() == []
    c.close()


class TestExpert:
    @pytest.fixture
    def jp_server_config(self, fake: FakeOllama, openai_server: FakeOpenAI,
                         monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        return {
            "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
            "AmbientExtension": {"poll_interval": 0.02},
            "AmbientSettings": {"model": MODEL, "expert": "openai:fake-gpt"},
        }

    async def test_expert_answers_in_its_own_name(self, jp_ws_fetch, fake, openai_server, notebook_id, kernel_side):
        openai_server.reply = act("explain", "The loop is quadratic; use a dict.")
        fake.reply = act("explain", "Watcher here.")
        c = await connect(jp_ws_fetch)
        await c.hello(NB)
        assert (await c.until(lambda f: f["type"] == "status"))["expert"] == "openai:fake-gpt"
        for text in ("/expert why is it slow?", "/expert\n  and now?"):
            await c.send({"type": "chat", "notebook": NB, "text": text, "client_id": text})
            reply = (await c.until(is_event("assistant_message", role="expert")))["event"]
            assert reply["text"] == "The loop is quadratic; use a dict." and reply["model"] == "openai:fake-gpt"
        questions = stored_kinds(kernel_side, notebook_id, "user_message")
        assert [(q["text"], q["to"]) for q in questions] == [("why is it slow?", "expert"), ("and now?", "expert")]
        assert fake.chat_requests() == [], "the watcher answered an /expert question"
        # The watcher answers the next plain question, on the same history.
        await c.send({"type": "chat", "notebook": NB, "text": "thanks", "client_id": "plain"})
        reply = (await c.until(is_event("assistant_message", role="watcher")))["event"]
        assert reply["model"] == MODEL and reply["text"] == "Watcher here."
        await c.send({"type": "chat", "notebook": NB, "text": "/expert   ", "client_id": "empty"})
        assert "after /expert" in (await c.until(lambda f: f["type"] == "error"))["message"]
        c.close()


class TestFanOut:
    @pytest.fixture
    def jp_server_config(self, fake: FakeOllama) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
            "AmbientExtension": {"poll_interval": 0.02, "client_queue_limit": 500},
            "AmbientSettings": {"model": MODEL},
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
        warnings: list[str] = []
        collector = logging.Handler(logging.WARNING)
        collector.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
        (extension,) = jp_serverapp.extension_manager.extension_apps["ambient_jupyter"]
        extension.log.addHandler(collector)  # the handlers' log
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
        extension.log.removeHandler(collector)
        # One line for the dropped client, not one per frame it would have been sent.
        assert sum("dropping a client" in w for w in warnings) == 1, warnings[:5]
        stalled.close()
        for c in clients:
            c.close()


async def test_headless_run_then_live_share_one_history(jp_ws_fetch, fake, jp_root_dir, notebook_id):
    path = make_notebook(Path(notebook_id), ["x = 40 + 2", "print(x)", "1 / 0"])
    fake.reply = "Division by zero: the divisor is 0."
    env = {**os.environ, "OLLAMA_HOST": fake.url}
    run = subprocess.run(
        # (--agent off: a diagnosis in words; the fix loop has tests of its own)
        [sys.executable, "-m", "ambient_jupyter", "run", str(path), "--model", MODEL, "--agent", "off"],
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


async def test_the_server_lets_the_model_read_new_cells_while_the_notebook_is_quiet(
    jp_ws_fetch, fake, notebook_id, kernel_side
):
    """A room prefills after a quiet spell (what the kernel recorded, before anyone asks),
    and a question then asks for a reply as before: prefills are not turns."""
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "before = 0", "status": "ok"})
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    for _ in range(300):  # a new room reads the notebook so far (a hang guard, not a speed figure)
        if fake.prefill_requests():
            break
        await asyncio.sleep(0.02)
    assert "before = 0" in fake.prefill_requests()[0]["messages"][-1]["content"]
    for i in range(3):
        kernel_side.append(notebook_id, {"kind": "cell_executed", "code": f"warm_{i} = {i}", "status": "ok"})
    await c.until(lambda f: f["type"] == "event" and f["event"]["seq"] == 4)
    for _ in range(300):  # the quiet spell is 1 s (a hang guard, not a speed figure)
        if any("warm_2 = 2" in m["content"] for p in fake.prefill_requests() for m in p["messages"]):
            break
        await asyncio.sleep(0.02)
    prefill = fake.prefill_requests()[-1]
    assert "warm_2 = 2" in prefill["messages"][-1]["content"]
    assert fake.chat_requests() == []
    fake.reply = "Three cells ran."
    await c.send({"type": "chat", "notebook": NB, "text": "what ran?", "client_id": "w-1"})
    await c.until(is_event("assistant_message"))
    (chat,) = fake.chat_requests()
    # The turn's prompt starts with what was prefilled: the model's cache holds that part.
    assert chat["messages"][: len(prefill["messages"])] == prefill["messages"]
    c.close()


async def test_only_the_notebook_active_last_is_kept_warm(jp_ws_fetch, fake, jp_root_dir, notebook_id, kernel_side):
    """The model keeps one prompt cached per process: two notebooks busy at once would
    each evict the other's prefill and queue on one model, so only the one with the
    latest activity is read ahead."""
    other_nb = "work/other.ipynb"
    other_id = os.path.join(str(jp_root_dir), *other_nb.split("/"))
    c, other = await connect(jp_ws_fetch), await connect(jp_ws_fetch)
    await c.hello(NB)
    await other.hello(other_nb)
    # Both at once: the server reads them in one pass, the rooms in the order they were
    # made, so the second notebook is the one active last whatever the machine's speed.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "first_nb = 1", "status": "ok"})
    kernel_side.append(other_id, {"kind": "cell_executed", "code": "second_nb = 2", "status": "ok"})
    await c.until(lambda f: f["type"] == "event" and f["event"]["code"] == "first_nb = 1")
    await other.until(lambda f: f["type"] == "event" and f["event"]["code"] == "second_nb = 2")

    def read(code: str) -> bool:
        return any(code in m["content"] for p in fake.prefill_requests() for m in p["messages"])

    for _ in range(300):  # the quiet spell is 1 s (a hang guard, not a speed figure)
        if read("second_nb = 2"):
            break
        await asyncio.sleep(0.02)
    assert read("second_nb = 2")
    await asyncio.sleep(2.5)  # more than two quiet spells of the first notebook
    assert not read("first_nb = 1"), "a notebook that is not the active one was read ahead"
    # Activity moves the warmth: the first notebook is read once it is active again.
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "again_nb = 3", "status": "ok"})
    for _ in range(300):
        if read("again_nb = 3"):
            break
        await asyncio.sleep(0.02)
    assert read("again_nb = 3") and read("first_nb = 1")
    c.close()
    other.close()


@pytest.mark.parametrize("jp_server_config", [{
    "ServerApp": {"jpserver_extensions": {"ambient_jupyter": True}},
    "AmbientExtension": {"poll_interval": 0.02},
    "AmbientSettings": {"model": MODEL, "cooldown": 0.0, "warm": False},
}])
async def test_with_warm_off_the_model_reads_only_when_asked(jp_ws_fetch, fake, notebook_id, kernel_side):
    c = await connect(jp_ws_fetch)
    await c.hello(NB)
    kernel_side.append(notebook_id, {"kind": "cell_executed", "code": "cold = 1", "status": "ok"})
    await c.until(lambda f: f["type"] == "event" and f["event"]["seq"] == 1)
    await asyncio.sleep(2.5)  # more than two quiet spells
    assert fake.prefill_requests() == []
    c.close()
