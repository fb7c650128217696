"""``ambient_jupyter.chat()`` on a real ipykernel, driven the way a frontend drives it.

The test plays JupyterLab's widget manager: it sends the widget's comm the custom
messages its view sends (hello, chat, decide, run, stop) and reads what the kernel
sends back on IOPub. The model is a fake Ollama on the real wire protocol; the
kernel, the recorder, the in-kernel host and the SQLite history are real.
"""

from __future__ import annotations

import hashlib
import json
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import events_of
from fakes.ollama_server import FakeOllama
from jupyter_client.manager import start_new_kernel

from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(240)

MODEL = "tiny:1b"
EXPERT = "big:70b"
EXPLAIN = "Sorting puts the smallest numbers first and the largest last."
PROPOSED = "ran_by_agent = 6 * 7\nprint('agent ran', ran_by_agent)\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def explain(text: str) -> str:
    return json.dumps({"action": "explain", "text": text})


def insert_cell(code: str) -> str:
    return json.dumps({"action": "insert_cell", "text": "This cell computes it.", "code": code, "after": None})


class WidgetFrontend:
    """A kernel client that talks to one widget's comm, as a frontend's widget manager does."""

    def __init__(self, kc: Any) -> None:
        self.kc = kc
        self.comm_id = ""
        self.frames: list[dict[str, Any]] = []
        """Custom messages from the kernel to the widget, in arrival order."""
        self.states: list[dict[str, Any]] = []
        """Trait updates of the widget."""

    def execute(self, code: str, **expressions: str) -> dict[str, str]:
        msg_id = self.kc.execute(code, user_expressions=expressions, allow_stdin=False)
        deadline = time.monotonic() + 60
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        self.pump()
        content = reply["content"]
        assert content["status"] == "ok", content
        return {k: v["data"]["text/plain"] for k, v in content.get("user_expressions", {}).items()}

    def value(self, expression: str) -> Any:
        """A Python literal evaluated in the kernel (without running a cell)."""
        import ast

        return ast.literal_eval(self.execute("", v=expression)["v"])

    def pump(self, timeout: float = 0.05) -> None:
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                return
            if msg["msg_type"] != "comm_msg" or msg["content"].get("comm_id") != self.comm_id:
                continue
            data = msg["content"]["data"]
            if data.get("method") == "custom":
                self.frames.append(data["content"])
            elif data.get("method") in ("update", "echo_update"):
                self.states.append(data.get("state") or {})

    def send(self, content: dict[str, Any]) -> None:
        data = {"method": "custom", "content": content}
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    def wait_for(self, found: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            result = found()
            if result:
                return result
        raise AssertionError(f"timed out waiting for {what or found}; frames: {self.frames[-10:]}")

    # -- reading the frames --------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def live_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for f in self.of_type("events") for e in f["events"] if kind is None or e["kind"] == kind]

    def replay(self, view: str) -> list[dict[str, Any]] | None:
        """The events replayed to ``view``, once its replay is done."""
        frames = [f for f in self.of_type("replay") if f["view"] == view]
        if not frames or not frames[-1]["done"]:
            return None
        return [e for f in frames for e in f["events"]]

    def errors(self) -> list[dict[str, Any]]:
        return self.of_type("error")

    def statuses(self) -> list[str]:
        return [s["status"] for s in self.states if "status" in s]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama({MODEL: 4096}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def notebook(tmp_path: Path) -> str:
    return str(tmp_path / "chat.ipynb")


@pytest.fixture
def frontend(fake: FakeOllama, notebook: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[WidgetFrontend]:
    fake.models[EXPERT] = 8192
    monkeypatch.setenv("AMBIENT_EXPERT", f"ollama:{EXPERT}")
    monkeypatch.setenv("AMBIENT_NOTEBOOK", notebook)
    monkeypatch.setenv("AMBIENT_MODEL", f"ollama:{MODEL}")
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    monkeypatch.setenv("AMBIENT_QUIET", "1")  # no unprompted diagnoses in between
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        fe = WidgetFrontend(kc)
        ids = fe.execute("import ambient_jupyter\nchat = ambient_jupyter.chat()", id="chat.model_id")
        fe.comm_id = ids["id"].strip("'")
        yield fe
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def ask(fe: WidgetFrontend, text: str, client_id: str) -> dict[str, Any]:
    """Send a chat as the view does and wait for the stored reply to it."""
    fe.send({"type": "chat", "text": text, "client_id": client_id})
    user = fe.wait_for(
        lambda: next((e for e in fe.live_events("user_message") if e.get("client_id") == client_id), None),
        what="the stored user message",
    )
    return fe.wait_for(
        lambda: next((e for e in fe.live_events("assistant_message") if e.get("reply_to") == user["seq"]), None),
        what="the stored reply",
    )


def proposal_of(fe: WidgetFrontend, reply: dict[str, Any]) -> dict[str, Any]:
    return fe.wait_for(
        lambda: next((e for e in fe.live_events("action_proposed") if e.get("reply_to") == reply["seq"]), None),
        what="the proposal",
    )


# -- chat, streaming, replay ---------------------------------------------------------


def test_chat_streams_stores_and_replays(frontend: WidgetFrontend, fake: FakeOllama, history: History,
                                         notebook: str) -> None:
    fe = frontend
    fake.reply = explain(EXPLAIN)
    fake.token_delay = 0.03
    fe.execute("numbers = sorted([3, 1, 2])")
    fe.execute("import ipywidgets\nslider = ipywidgets.IntSlider(value=1, description='n')\nslider.value = 2")

    fe.wait_for(lambda: len(fe.live_events()) == 3, what="the cells to reach the widget")

    # A view renders: it asks for everything after seq 0 and gets exactly the history.
    fe.send({"type": "hello", "view": "first", "after_seq": 0})
    replayed = fe.wait_for(lambda: fe.replay("first"), what="the replay")
    stored = history.read(notebook)
    assert [e["seq"] for e in replayed] == [e["seq"] for e in stored]
    assert next(e["code"] for e in replayed if e["kind"] == "cell_executed") == "numbers = sorted([3, 1, 2])"
    assert all("outputs" not in e for e in replayed), "the view gets no raw outputs"

    reply = ask(fe, "What does sorted do?", "client-1")
    tokens = fe.of_type("token")
    assert len(tokens) >= 3, "the reply did not stream in pieces"
    assert "".join(t["text"] for t in tokens) == EXPLAIN
    assert {t["reply_id"] for t in tokens} == {reply["reply_id"]}
    last_token = max(i for i, f in enumerate(fe.frames) if f.get("type") == "token")
    stored_at = next(i for i, f in enumerate(fe.frames)
                     if f.get("type") == "events" and any(e["seq"] == reply["seq"] for e in f["events"]))
    assert last_token < stored_at, "the stored reply must come after its tokens"
    assert (reply["text"], reply["state"], reply["model"], reply["role"]) == (
        EXPLAIN, "complete", f"ollama:{MODEL}", "watcher"
    )
    assert "thinking" in fe.statuses() and "streaming" in fe.statuses()
    fe.wait_for(lambda: fe.statuses()[-1] == "idle", what="idle")

    users = events_of(history, notebook, "user_message")
    assert [(u["text"], u["source"], u["client_id"]) for u in users] == [("What does sorted do?", "widget", "client-1")]
    assert [a["seq"] for a in events_of(history, notebook, "assistant_message")] == [reply["seq"]]
    # The kernel's state was taken on its main thread, right before the question.
    [state] = events_of(history, notebook, "kernel_state")
    assert state["seq"] == users[0]["seq"] - 1 and "note" not in state

    # A resend of the same chat (a view that lost its connection) is answered once.
    fe.send({"type": "chat", "text": "What does sorted do?", "client_id": "client-1"})
    fe.wait_for(lambda: fe.statuses().count("idle") >= 2, what="the resend to finish")
    assert len(events_of(history, notebook, "user_message")) == 1
    assert len(events_of(history, notebook, "kernel_state")) == 1, "a resend takes no second state"
    assert len(fake.chat_requests()) == 1

    # A second view that has everything up to the question gets only what came after.
    fe.send({"type": "hello", "view": "second", "after_seq": users[0]["seq"] - 1})
    second = fe.wait_for(lambda: fe.replay("second"), what="the second replay")
    assert [e["seq"] for e in second] == [e["seq"] for e in history.read(notebook, users[0]["seq"] - 1)]
    assert [e["kind"] for e in second] == ["user_message", "assistant_message"]

    # Its own traits (status went thinking -> streaming -> idle) are never recorded;
    # a plain widget's change is.
    changes = events_of(history, notebook, "widget_changed")
    assert [(c["widget_class"], c["trait"], c["new"]) for c in changes] == [("IntSlider", "value", 2)]
    assert fe.errors() == []


def test_kernel_stays_responsive_and_stop_ends_the_reply(frontend: WidgetFrontend, fake: FakeOllama,
                                                          history: History, notebook: str) -> None:
    fe = frontend
    fake.reply = explain(" ".join(f"word{i}" for i in range(120)))
    fake.token_delay = 0.1
    fe.send({"type": "chat", "text": "Count slowly.", "client_id": "slow"})
    fe.wait_for(lambda: len(fe.of_type("token")) >= 3, what="the first tokens")

    started = time.monotonic()
    assert fe.value("6 * 7") == 42
    assert time.monotonic() - started < 3.0, "a cell waited for the model"
    assert events_of(history, notebook, "assistant_message") == [], "the reply was not streaming any more"

    fe.send({"type": "stop"})
    started = time.monotonic()
    reply = fe.wait_for(lambda: next(iter(fe.live_events("assistant_message")), None), what="the stopped reply")
    assert time.monotonic() - started < 5.0
    assert reply["state"] == "incomplete"
    assert "word110" not in reply["text"]
    fe.wait_for(lambda: fe.statuses()[-1] == "idle", what="idle")


# -- approve, reject, a wrong hash ------------------------------------------------------


def test_approve_runs_exactly_the_shown_code_once(frontend: WidgetFrontend, fake: FakeOllama, history: History,
                                                  notebook: str) -> None:
    fe = frontend
    fake.reply = insert_cell(PROPOSED)
    proposal = proposal_of(fe, ask(fe, "Compute six times seven.", "c-approve"))
    assert proposal["code"] == PROPOSED
    action_id = proposal["action_id"]

    # An approval for other code (a view showing something else) is refused, visibly.
    fe.send({"type": "decide", "action_id": action_id, "decision": "approve", "sha256": sha("print('other')\n")})
    refusal = fe.wait_for(lambda: next(iter(fe.errors()), None), what="the refusal")
    assert refusal["action_id"] == action_id
    assert "sha256" in refusal["message"]
    assert events_of(history, notebook, "action_decided") == []
    assert fe.value("'ran_by_agent' in globals()") is False

    fe.send({"type": "decide", "action_id": action_id, "decision": "approve", "sha256": proposal["sha256"]})
    executed = fe.wait_for(lambda: next(iter(fe.live_events("action_executed")), None), what="the run")
    decided = events_of(history, notebook, "action_decided")
    assert [(d["decision"], d["by"], d["rule"], d["sha256"]) for d in decided] == [
        ("approved", "user", "user", sha(PROPOSED))
    ]
    ran = [c for c in events_of(history, notebook, "cell_executed") if c["code"] == PROPOSED]
    assert len(ran) == 1 and ran[0]["status"] == "ok"
    assert (executed["action_id"], executed["ok"], executed["cell_event_seq"]) == (action_id, True, ran[0]["seq"])
    assert executed["result"] == "agent ran 42\n", "what it printed is its result (it has no cell to print in)"
    assert fe.value("ran_by_agent") == 42

    # Approving again, or a view asking to run it, runs nothing more.
    fe.send({"type": "decide", "action_id": action_id, "decision": "approve", "sha256": proposal["sha256"]})
    fe.wait_for(lambda: len(fe.errors()) == 2, what="the second refusal")
    assert "already decided" in fe.errors()[-1]["message"]
    fe.send({"type": "run", "action_id": action_id})
    fe.execute("pass")
    assert len([c for c in events_of(history, notebook, "cell_executed") if c["code"] == PROPOSED]) == 1
    assert len(events_of(history, notebook, "action_executed")) == 1


def test_reject_runs_nothing(frontend: WidgetFrontend, fake: FakeOllama, history: History, notebook: str) -> None:
    fe = frontend
    fake.reply = insert_cell(PROPOSED)
    proposal = proposal_of(fe, ask(fe, "Compute six times seven.", "c-reject"))
    fe.send({"type": "decide", "action_id": proposal["action_id"], "decision": "reject", "sha256": proposal["sha256"]})
    decided = fe.wait_for(lambda: next(iter(fe.live_events("action_decided")), None), what="the rejection")
    assert (decided["decision"], decided["by"]) == ("rejected", "user")

    # Nothing can run it afterwards: not an approval, not a view asking to run it.
    fe.send({"type": "decide", "action_id": proposal["action_id"], "decision": "approve",
             "sha256": proposal["sha256"]})
    fe.wait_for(lambda: fe.errors(), what="the refusal")
    fe.send({"type": "run", "action_id": proposal["action_id"]})
    fe.execute("pass")
    assert fe.value("'ran_by_agent' in globals()") is False
    assert [c for c in events_of(history, notebook, "cell_executed") if c["code"] == PROPOSED] == []
    assert events_of(history, notebook, "action_executed") == []


def test_approved_code_that_fails_is_reported(frontend: WidgetFrontend, fake: FakeOllama, history: History,
                                              notebook: str) -> None:
    fe = frontend
    fake.reply = insert_cell("print('before')\n1 / 0\n")
    proposal = proposal_of(fe, ask(fe, "Divide by zero.", "c-fail"))
    fe.send({"type": "decide", "action_id": proposal["action_id"], "decision": "approve",
             "sha256": proposal["sha256"]})
    executed = fe.wait_for(lambda: next(iter(fe.live_events("action_executed")), None), what="the run")
    assert (executed["ok"], executed["error"], executed["result"]) == (
        False, "ZeroDivisionError: division by zero", "before\n"
    )
    cell = next(c for c in events_of(history, notebook, "cell_executed") if c["seq"] == executed["cell_event_seq"])
    assert (cell["code"], cell["status"], cell["error"]["ename"]) == (proposal["code"], "error", "ZeroDivisionError")
    assert fe.value("6 * 7") == 42, "the kernel goes on"


def test_malformed_messages_are_refused(frontend: WidgetFrontend, history: History, notebook: str) -> None:
    fe = frontend
    before = history.read(notebook)
    fe.send({"type": "decide", "action_id": "x", "decision": "maybe"})
    fe.send({"type": "launch"})
    fe.send({"type": "chat", "text": "/expert", "client_id": "e"})
    fe.send({"type": "decide", "action_id": "nope", "decision": "approve", "sha256": sha("x")})
    fe.wait_for(lambda: len(fe.errors()) == 4, what="four refusals")
    messages = [e["message"] for e in fe.errors()]
    assert "cannot use" in messages[0] and "cannot use" in messages[1]
    assert (fe.errors()[2]["client_id"], messages[2]) == ("e", "Write your question after /expert.")
    assert fe.errors()[3]["action_id"] == "nope"
    assert history.read(notebook) == before


def test_expert_takes_the_turn_and_is_named(frontend: WidgetFrontend, fake: FakeOllama, history: History,
                                            notebook: str) -> None:
    fe = frontend
    fake.reply = lambda body: explain(f"answered by {body['model']}")
    fe.send({"type": "chat", "text": "/expert Why is my join slow?", "client_id": "x-1"})
    reply = fe.wait_for(lambda: next(iter(fe.live_events("assistant_message")), None), what="the expert's reply")
    assert (reply["role"], reply["model"], reply["text"]) == ("expert", f"ollama:{EXPERT}", f"answered by {EXPERT}")
    user = events_of(history, notebook, "user_message")
    assert [(u["text"], u["to"], u["source"]) for u in user] == [("Why is my join slow?", "expert", "widget")]
    assert fe.value("chat.expert_spec") == f"ollama:{EXPERT}"  # what the widget's header shows

    # The watcher goes on over the same history.
    reply = ask(fe, "And now?", "x-2")
    assert (reply["role"], reply["model"]) == ("watcher", f"ollama:{MODEL}")


# -- auto mode: the policy approves, the run comes back through the view -----------------


def test_auto_mode_runs_what_the_policy_approved(frontend: WidgetFrontend, fake: FakeOllama, history: History,
                                                 notebook: str) -> None:
    fe = frontend
    # The notebook's mode, as the sidebar or %ambient sets it: a settings_changed event.
    history.append(notebook, {"kind": "settings_changed", "agent": "auto", "by": "sidebar"})
    fe.wait_for(lambda: any(s.get("mode") == "auto" for s in fe.states), what="the mode to reach the widget")
    fake.reply = insert_cell(PROPOSED)
    proposal = proposal_of(fe, ask(fe, "Compute six times seven.", "c-auto"))
    run = fe.wait_for(lambda: next(iter(fe.of_type("run")), None), what="the run request")
    assert run["action_id"] == proposal["action_id"]
    decided = events_of(history, notebook, "action_decided")
    assert [(d["decision"], d["by"], d["rule"]) for d in decided] == [("approved", "policy", "auto")]
    assert fe.value("'ran_by_agent' in globals()") is False, "nothing runs before the view hands it back"

    # Every view answers the run request; it runs once.
    fe.send({"type": "run", "action_id": proposal["action_id"]})
    fe.send({"type": "run", "action_id": proposal["action_id"]})
    executed = fe.wait_for(lambda: next(iter(fe.live_events("action_executed")), None), what="the run")
    assert executed["ok"] is True
    fe.execute("pass")
    assert fe.value("ran_by_agent") == 42
    assert len([c for c in events_of(history, notebook, "cell_executed") if c["code"] == PROPOSED]) == 1
    assert fe.errors() == []


# -- the mode in force when code is about to run is the one that counts ---------------------


def set_mode(history: History, notebook: str, mode: str) -> None:
    """What the sidebar does on another tab: a settings_changed event in the shared history."""
    history.append(notebook, {"kind": "settings_changed", "agent": mode, "by": "sidebar"})


def test_a_switch_to_ask_while_the_model_streams_waits_for_a_click(
    frontend: WidgetFrontend, fake: FakeOllama, history: History, notebook: str
) -> None:
    fe = frontend
    set_mode(history, notebook, "auto")
    fe.wait_for(lambda: any(s.get("mode") == "auto" for s in fe.states), what="auto to reach the widget")
    fake.reply = insert_cell(PROPOSED)
    fake.token_delay = 0.05
    fe.send({"type": "chat", "text": "Compute six times seven.", "client_id": "c-switch"})
    fe.wait_for(fake.chat_requests, what="the model to be asked")
    set_mode(history, notebook, "ask")  # while the reply streams
    proposal = fe.wait_for(lambda: next(iter(fe.live_events("action_proposed")), None), what="the proposal")
    fe.wait_for(lambda: fe.statuses() and fe.statuses()[-1] == "idle", what="the end of the turn")
    fe.execute("pass")
    assert events_of(history, notebook, "action_decided") == [], "under ask, only a person decides"
    assert fe.of_type("run") == [] and fe.value("'ran_by_agent' in globals()") is False

    # The click runs it.
    fe.send({"type": "decide", "action_id": proposal["action_id"], "decision": "approve",
             "sha256": proposal["sha256"]})
    executed = fe.wait_for(lambda: next(iter(fe.live_events("action_executed")), None), what="the run")
    assert executed["ok"] is True and fe.value("ran_by_agent") == 42
    assert [d["rule"] for d in events_of(history, notebook, "action_decided")] == ["user"]


def test_an_auto_approval_lapses_when_the_mode_changes_before_it_runs(
    frontend: WidgetFrontend, fake: FakeOllama, history: History, notebook: str
) -> None:
    fe = frontend
    set_mode(history, notebook, "auto")
    fe.wait_for(lambda: any(s.get("mode") == "auto" for s in fe.states), what="auto to reach the widget")
    fake.reply = insert_cell(PROPOSED)
    proposal = proposal_of(fe, ask(fe, "Compute six times seven.", "c-lapse"))
    fe.wait_for(lambda: fe.of_type("run"), what="the run request")
    set_mode(history, notebook, "ask")  # before the view hands the run back
    fe.send({"type": "run", "action_id": proposal["action_id"]})
    refusal = fe.wait_for(lambda: next(iter(fe.errors()), None), what="the refusal")
    assert refusal["action_id"] == proposal["action_id"]
    assert "only because the agent mode was auto; it is now ask" in refusal["message"]
    assert fe.value("'ran_by_agent' in globals()") is False
    assert events_of(history, notebook, "action_executed") == []


def test_a_switch_to_off_expires_what_waits_for_approval(
    frontend: WidgetFrontend, fake: FakeOllama, history: History, notebook: str
) -> None:
    fe = frontend
    fake.reply = insert_cell(PROPOSED)
    proposal = proposal_of(fe, ask(fe, "Compute six times seven.", "c-off"))
    fe.execute("%ambient agent=off")
    expired = events_of(history, notebook, "action_decided")
    assert [(d["action_id"], d["decision"], d["rule"]) for d in expired] == [
        (proposal["action_id"], "rejected", "off")
    ]
    # Neither an approval now, nor one after switching back to ask, runs it.
    for mode in ("off", "ask"):
        fe.execute(f"%ambient agent={mode}")
        refused = len(fe.errors())
        fe.send({"type": "decide", "action_id": proposal["action_id"], "decision": "approve",
                 "sha256": proposal["sha256"]})
        fe.wait_for(lambda: len(fe.errors()) > refused, what="the refusal")  # noqa: B023 (used at once)
        assert "already decided" in fe.errors()[-1]["message"]
    assert fe.value("'ran_by_agent' in globals()") is False
    assert events_of(history, notebook, "action_executed") == []


# -- plugin calls go through ambient_jupyter.plugins.dispatch --------------------------

COUNTER = '''
import traitlets
import ambient_jupyter

class Counter(ambient_jupyter.Plugin):
    """A counter the model can move."""

    _esm = "export default { render({ model, el }) { el.textContent = model.get('value'); } }"
    value = traitlets.Int(0).tag(sync=True)

    @ambient_jupyter.action
    def add(self, step: int = 1) -> int:
        """Add to the counter.

        Parameters
        ----------
        step
            How much to add.
        """
        self.value += step
        return self.value

    @ambient_jupyter.action(safe=True)
    def peek(self) -> int:
        """What the counter shows."""
        return self.value

counter = Counter()
'''


def plugin_call(name: str, **args: Any) -> str:
    return json.dumps({"action": "call_plugin", "text": "On it.", "plugin": "counter", "name": name, "args": args})


def test_plugin_calls_run_through_dispatch(frontend: WidgetFrontend, fake: FakeOllama, history: History,
                                           notebook: str) -> None:
    fe = frontend
    fe.execute(COUNTER)
    fe.wait_for(lambda: fe.live_events("plugin_registered"), what="the plugin to be announced")

    # Not declared safe: it waits for a person, and runs once they approve the shown call.
    fake.reply = plugin_call("add", step=2)
    proposal = proposal_of(fe, ask(fe, "Add two to the counter.", "c-plugin"))
    assert proposal["code"] == "counter.add(step=2)"
    assert fe.value("counter.value") == 0
    fe.send({"type": "decide", "action_id": proposal["action_id"], "decision": "approve",
             "sha256": proposal["sha256"]})
    executed = fe.wait_for(lambda: next(iter(fe.live_events("action_executed")), None), what="the plugin call")
    assert (executed["action_id"], executed["ok"], executed["result"]) == (proposal["action_id"], True, 2)
    assert fe.value("counter.value") == 2

    # Declared safe: in ask mode the policy approves it, and it runs once a view hands it back.
    fake.reply = plugin_call("peek")
    safe = proposal_of(fe, ask(fe, "What does the counter show?", "c-safe"))
    run = fe.wait_for(lambda: next(iter(fe.of_type("run")), None), what="the run request")
    assert run["action_id"] == safe["action_id"]
    fe.send(run)
    fe.wait_for(lambda: len(fe.live_events("action_executed")) == 2, what="the safe call")
    decided = {d["action_id"]: (d["decision"], d["by"]) for d in events_of(history, notebook, "action_decided")}
    assert decided == {proposal["action_id"]: ("approved", "user"), safe["action_id"]: ("approved", "policy")}
    assert fe.live_events("action_executed")[-1]["result"] == 2
    assert fe.errors() == []
