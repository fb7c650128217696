"""Every action type, headless, through the in-kernel host (``%%ask`` under plain nbclient).

A deterministic model (the Ollama wire fake) answers ``%%ask`` with one action of
each type. In ``ask`` mode, with no one to approve it, nothing runs (a code action is
only offered as the next cell); in ``auto`` mode exactly the proposed code runs, once,
and the history links the action to what ran. The browser counterparts are in
``test_browser_actions.py``; the headless fix loop is in ``test_agent_headless.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import events_of, make_notebook
from fakes.ollama_server import FakeOllama
from nbclient import NotebookClient

from ambient_jupyter.actions import code_sha256
from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(300)

MODEL = "tiny:1b"
PLUGIN = '''
import traitlets, ambient_jupyter

class Box(ambient_jupyter.Plugin):
    """Holds things."""
    things = traitlets.List().tag(sync=True)

    @ambient_jupyter.action
    def put(self, thing: str) -> int:
        """Put a thing in the box (not declared safe: it needs approval)."""
        hits.append(f"put {thing}")
        self.things = [*self.things, thing]
        return len(self.things)

box = Box(name="box")
'''
SETUP = ["%load_ext ambient_jupyter", "import json\nhits = []", "hits.append('cell3')", PLUGIN]
# (the model's action, what `hits` must end as when it runs, the code that must run)
ACTIONS: dict[str, tuple[dict[str, Any], list[str], str | None]] = {
    "insert_cell": (
        {"action": "insert_cell", "text": "Adding a cell.", "code": "hits.append('inserted')\n", "after": 3},
        ["cell3", "inserted"],
        "hits.append('inserted')\n",
    ),
    "edit_cell": (
        {"action": "edit_cell", "text": "Changing cell 3.", "cell": 3, "code": "hits.append('edited')\n"},
        ["cell3", "edited"],
        "hits.append('edited')\n",
    ),
    "run_cell": ({"action": "run_cell", "text": "Again.", "cell": 3}, ["cell3", "cell3"], "hits.append('cell3')"),
    "propose_next_cell": (
        {"action": "propose_next_cell", "text": "Next, this.", "code": "hits.append('next')\n"},
        ["cell3", "next"],
        "hits.append('next')\n",
    ),
    "call_plugin": (
        {"action": "call_plugin", "text": "Into the box.", "plugin": "box", "name": "put", "args": {"thing": "key"}},
        ["cell3", "put key"],
        "box.put(thing='key')",
    ),
    "explain": ({"action": "explain", "text": "Nothing to do."}, ["cell3"], None),
}


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama({MODEL: 8192}).start()
    try:
        yield server
    finally:
        server.stop()


def run(path: Path, fake: FakeOllama, **env: str) -> tuple[Any, list[dict[str, Any]]]:
    nb = nbformat.read(path, as_version=4)
    replies: list[dict[str, Any]] = []
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_executed=lambda cell, cell_index, execute_reply: replies.append(execute_reply["content"]),
    )
    client.execute(
        env={
            **os.environ,
            "AMBIENT_MODEL": f"ollama:{MODEL}",
            "OLLAMA_HOST": fake.url,
            "AMBIENT_NOTEBOOK": str(path),
            **env,
        }
    )
    return nb, replies


def hits_of(cell: Any) -> list[str]:
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["ask", "auto"])
@pytest.mark.parametrize("kind", list(ACTIONS))
def test_every_action_type_headless(tmp_path: Path, history: History, fake: FakeOllama, kind: str, mode: str) -> None:
    action, ran_hits, code = ACTIONS[kind]
    fake.reply = json.dumps(action)
    path = make_notebook(
        tmp_path / f"{kind}.ipynb",
        [*SETUP, f"%ambient agent={mode}", "%%ask\nPlease do it.", "print(json.dumps(hits))"],
    )
    nb, replies = run(path, fake)
    assert all(r["status"] == "ok" for r in replies), replies

    events = events_of(history, path)
    proposals = [e for e in events if e["kind"] == "action_proposed"]
    if code is None:  # explain: only talk
        assert proposals == [] and hits_of(nb.cells[-1]) == ["cell3"]
        assert "Nothing to do." in "".join(o.get("text", "") for o in nb.cells[-2].outputs)
        return
    (proposal,) = proposals
    assert (proposal["action"], proposal["code"], proposal["sha256"]) == (kind, code, code_sha256(code))
    decided = [e for e in events if e["kind"] == "action_decided"]
    executed = [e for e in events if e["kind"] == "action_executed"]
    assert [d["action_id"] for d in decided] == [proposal["action_id"]]
    assert decided[0]["sha256"] == proposal["sha256"] and decided[0]["by"] == "policy"
    assert decided[0]["rule"] == ("auto" if mode == "auto" else "no_person")

    if mode == "ask":
        # No one to ask: nothing ran; a code action is offered as the next cell instead.
        assert decided[0]["decision"] == "rejected" and executed == []
        assert hits_of(nb.cells[-1]) == ["cell3"]
        if kind != "call_plugin":
            assert replies[-2]["payload"] == [{"source": "set_next_input", "text": code, "replace": False}]
        return

    # auto: exactly the proposed code ran, once, and is linked to the action.
    assert decided[0]["decision"] == "approved"
    assert hits_of(nb.cells[-1]) == ran_hits
    (done,) = executed
    assert done["action_id"] == proposal["action_id"] and done["ok"] is True
    if kind == "call_plugin":
        assert done["result"] == 1
        changed = [e for e in events if e["kind"] == "widget_changed" and e["widget_class"] == "Box"]
        assert [(c["trait"], c["new"]) for c in changed] == [("things", ["key"])]
    else:
        cell = next(e for e in events if e["seq"] == done["cell_event_seq"])
        assert (cell["kind"], cell["code"], cell["status"]) == ("cell_executed", code, "ok")
        assert [e["code"] for e in events if e["kind"] == "cell_executed"].count(code) == (
            2 if kind == "run_cell" else 1
        )


def test_a_switch_to_ask_while_the_model_streams_runs_nothing_without_a_click(
    tmp_path: Path, history: History, fake: FakeOllama
) -> None:
    """``%%ask`` under ``auto``; the sidebar switches the notebook to ``ask`` mid-reply."""
    code = "hits.append('ran')\n"
    fake.reply = json.dumps({"action": "insert_cell", "text": "Adding it, slowly.", "code": code, "after": 3})
    fake.token_delay = 0.05
    path = make_notebook(
        tmp_path / "switch.ipynb",
        [*SETUP, "%ambient agent=auto", "%%ask\nPlease do it.", "print(json.dumps(hits))"],
    )

    def switch() -> None:
        deadline = time.monotonic() + 120
        while not fake.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        history.append(str(path), {"kind": "settings_changed", "agent": "ask", "by": "sidebar"})

    switcher = threading.Thread(target=switch)
    switcher.start()
    # AMBIENT_HOST=server: a sidebar can ask a person, so the proposal waits for its click.
    nb, replies = run(path, fake, AMBIENT_HOST="server")
    switcher.join()
    assert all(r["status"] == "ok" for r in replies), replies
    events = events_of(history, path)
    (proposal,) = [e for e in events if e["kind"] == "action_proposed"]
    assert proposal["code"] == code
    assert [e for e in events if e["kind"] in ("action_decided", "action_executed")] == []
    assert hits_of(nb.cells[-1]) == ["cell3"]
    said = "".join(o.get("text", "") for o in nb.cells[-2].outputs)
    assert "Proposed, not run (waiting for your approval in the Ambient sidebar)" in said


def test_ask_output_shows_control_characters_escaped(tmp_path: Path, history: History, fake: FakeOllama) -> None:
    """A reply or code that returns the carriage or erases the line cannot rewrite what the cell shows."""
    hidden = "import os  # \x1b[2K\x1b[1G\u202e looks harmless\x07"
    fake.reply = json.dumps({"action": "propose_next_cell", "text": "Fine.\rAll good", "code": hidden})
    path = make_notebook(tmp_path / "hostile.ipynb", ["%load_ext ambient_jupyter", "%%ask\nWhat next?"])
    nb, _ = run(path, fake, AMBIENT_AGENT="auto")
    shown = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.get("output_type") == "stream")
    assert "Fine.\\x0dAll good" in shown, shown
    assert "import os  # \\x1b[2K\\x1b[1G\\u202e looks harmless\\x07" in shown, shown
    for raw in ("\r", "\x1b", "\u202e", "\x07"):
        assert raw not in shown, (raw, shown)
    # The record keeps the proposal exactly as the model wrote it.
    (proposal,) = events_of(history, path, "action_proposed")
    assert proposal["code"].startswith(hidden)
