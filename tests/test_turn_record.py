"""A reply's record of what its model was given, and a question that carries a cell's current source.

Over a real History and the real Ollama client; the model server is the fake on the
real wire, so each test can compare the record with the request the model received.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)

from ambient_jupyter.assistant import Assistant
from ambient_jupyter.backends.ollama import OllamaBackend
from ambient_jupyter.context import Transcript
from ambient_jupyter.events import CellError, CellExecuted, Hint
from ambient_jupyter.history import History
from ambient_jupyter.server.frames import parse_frame
from ambient_jupyter.server.handoff import FrameError

NB = "kernel:test-turn-record"
MODEL = "tiny:1b"


def cell(
    count: int, code: str, *, error: tuple[str, str] | None = None, hints: list[Hint] | None = None
) -> dict[str, Any]:
    event = CellExecuted(
        code=code,
        execution_count=count,
        status="error" if error else "ok",
        error=CellError(ename=error[0], evalue=error[1]) if error else None,
        hints=hints or [],
    )
    return event.model_dump(exclude={"seq", "notebook"})


def run(history: History, server: FakeOllama, step: Any, *, agent: str = "ask") -> Any:
    async def go() -> Any:
        backend = OllamaBackend(MODEL, host=server.url)
        assistant = Assistant(history, NB, backend, agent=agent)
        try:
            return await step(assistant)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_a_reply_records_the_events_its_prompt_held(history: History, ollama_server: FakeOllama) -> None:
    one = history.append(NB, cell(1, "import pandas as pd"))
    two = history.append(NB, cell(2, "df.head()", error=("NameError", "name 'df' is not defined")))
    ollama_server.reply = json.dumps({"action": "explain", "text": "df was never defined."})

    turn = run(history, ollama_server, lambda a: a.ask("What broke?"))

    seen = turn.message["seen"]
    question = turn.message["reply_to"]
    assert seen["events"] == [one["seq"], two["seq"], question]
    assert seen["summarised"] == 0 and seen["images"] == 0 and seen["note"] is None
    # The record is the prompt: one message per recorded event, after the system prompt.
    (request,) = ollama_server.chat_requests()
    sent = request["messages"][1:]
    assert len(sent) == len(seen["events"])
    assert "import pandas as pd" in sent[0]["content"] and "df.head()" in sent[1]["content"]
    assert sent[2]["content"] == "What broke?"
    # Stored with the reply, and read back the same.
    (stored,) = [e for e in history.read(NB) if e["kind"] == "assistant_message"]
    assert stored["seen"] == seen


def test_a_failure_turn_records_the_hosts_note_and_the_hints_it_carried(
    history: History, ollama_server: FakeOllama
) -> None:
    hint = Hint(kind="name", text="'df' is not defined. Did you mean 'dg'?", missing="df", candidates=["dg"])
    failed = history.append(NB, cell(4, "df.head()", error=("NameError", "name 'df' is not defined"), hints=[hint]))
    ollama_server.reply = json.dumps({"action": "explain", "text": "Use dg."})

    turn = run(history, ollama_server, lambda a: a.react(failed), agent="off")

    seen = turn.message["seen"]
    assert seen["events"] == [failed["seq"]]
    (request,) = ollama_server.chat_requests()
    # The note is the host's own words, exactly as the model got them, last.
    assert seen["note"] == request["messages"][-1]["content"]
    assert seen["note"].startswith("Cell 4 just failed with NameError")
    # The hint the turn used is in the event the record names, and in the prompt.
    (recorded,) = [e for e in history.read(NB) if e["seq"] == seen["events"][0]]
    assert recorded["hints"][0]["text"] == hint.text
    assert hint.text in request["messages"][1]["content"]


def test_events_cut_from_the_window_are_counted_as_the_digest(tmp_path: Path) -> None:
    server = FakeOllama({MODEL: 1024}).start()
    try:
        with History(tmp_path / "h.sqlite") as history:
            for i in range(1, 41):
                history.append(NB, cell(i, f"values_{i} = list(range({i}))  # " + "x" * 120))
            server.reply = json.dumps({"action": "explain", "text": "ok"})
            turn = run(history, server, lambda a: a.ask("Summary?"))
            seen = turn.message["seen"]
            assert seen["summarised"] > 0
            assert len(seen["events"]) + seen["summarised"] == 41  # 40 cells and the question
            (request,) = server.chat_requests()
            digest = request["messages"][1]["content"]
            assert digest.startswith(f"[Earlier in this notebook: {seen['summarised']} events")
            assert len(request["messages"]) == 2 + len(seen["events"])
    finally:
        server.stop()


def test_a_question_with_a_cells_current_source_gets_an_edit_made_against_it(
    history: History, ollama_server: FakeOllama
) -> None:
    history.append(NB, cell(3, "total = sum(values)", error=("NameError", "name 'values' is not defined")))
    edited = "values = [1, 2]\ntotal = sum(vals)"
    fixed = "values = [1, 2]\ntotal = sum(values)"
    ollama_server.reply = json.dumps({"action": "edit_cell", "text": "Use values.", "cell": 3, "code": fixed})

    turn = run(
        history,
        ollama_server,
        lambda a: a.ask("Propose the change again for the cell as it is now.", cells={3: edited}),
    )

    (question,) = [e for e in history.read(NB) if e["kind"] == "user_message"]
    assert question["cells"] == {"3": edited} or question["cells"] == {3: edited}
    (request,) = ollama_server.chat_requests()
    assert "Cell 3 as the user has it now" in request["messages"][-1]["content"]
    assert edited in request["messages"][-1]["content"]
    (proposal,) = turn.proposals
    # Made against the person's source, not the code that last ran: the tab's check
    # (old source still in the cell) then passes, and the diff shows their line.
    assert proposal.old_code == edited
    assert ["-", "total = sum(vals)"] in proposal.diff and ["+", "total = sum(values)"] in proposal.diff


@pytest.mark.parametrize(
    "cells",
    [
        {"three": "x"},
        {"3": 3},
        {str(i): "x" for i in range(11)},
        {"3": "x" * 20_001},
        ["3", "x"],
    ],
    ids=["not-a-number", "not-a-string", "too-many", "too-long", "not-an-object"],
)
def test_a_chat_frame_with_malformed_cells_is_refused_with_the_rule(cells: Any) -> None:
    with pytest.raises(FrameError, match="'cells' must map at most 10 cell numbers"):
        parse_frame({"type": "chat", "text": "again", "cells": cells})


def test_a_chat_frame_with_cells_is_typed() -> None:
    frame = parse_frame({"type": "chat", "text": "again", "cells": {"3": "x = 1"}})
    assert frame.cells == {"3": "x = 1"}  # type: ignore[union-attr]


def test_a_cells_source_is_the_base_of_an_edit_only_and_only_until_the_cell_runs_again(
    history: History, ollama_server: FakeOllama
) -> None:
    """Sent sources never become code to run, name no cell that never ran, and give way to
    a newer run; an emptied cell is a source too (the tab then checks it is still empty)."""
    history.append(NB, cell(2, "a = 1"))
    history.append(NB, cell(3, "b = a + 1"))
    rerun = json.dumps({"action": "run_cell", "text": "Run it again.", "cell": 3})
    edit = json.dumps({"action": "edit_cell", "text": "Fill it.", "cell": 3, "code": "b = a + 2"})
    ollama_server.reply = rerun
    turn = run(history, ollama_server, lambda a: a.ask("Run 3 again.", cells={3: "import os", 9: "never ran"}))
    (proposal,) = turn.proposals
    assert proposal.code == "b = a + 1", "a sent source became code to run"
    # Cell 9 never ran: its source is not kept, so it names no cell an action could target.
    transcript = Transcript(budget=4000, count_tokens=len)
    transcript.extend(history.read(NB))
    assert transcript.sources == {3: "import os"} and 9 not in transcript.cells
    ollama_server.reply = edit
    turn = run(history, ollama_server, lambda a: a.ask("Fill 3.", cells={3: ""}))
    (proposal,) = turn.proposals
    assert proposal.old_code == "" and ["+", "b = a + 2"] in proposal.diff
    # A newer run of [3] is what an edit replaces from then on.
    history.append(NB, cell(3, "b = 40"))
    turn = run(history, ollama_server, lambda a: a.ask("Again."))
    (proposal,) = turn.proposals
    assert proposal.old_code == "b = 40"


def test_the_sources_sent_with_a_question_stay_within_one_events_share_of_the_prompt(
    history: History, ollama_server: FakeOllama
) -> None:
    history.append(NB, cell(1, "x = 1"))
    ollama_server.reply = json.dumps({"action": "explain", "text": "ok"})
    big = {n: f"# cell {n}\n" + "y = 2\n" * 4000 for n in range(1, 11)}
    run(history, ollama_server, lambda a: a.ask("Look at these.", cells=big))
    (request,) = ollama_server.chat_requests()
    question = request["messages"][-1]["content"]
    assert question.startswith("Look at these.")
    assert len(question) < 3 * 2000, len(question)  # one event's limit (2000) for all ten, and the labels
    assert "x = 1" in request["messages"][1]["content"], "the question pushed the notebook out of the prompt"


@pytest.mark.model
def test_a_reply_records_how_much_of_its_prompt_the_model_had_to_read(history: History) -> None:
    """``seen.read``: after a prefill (what the hosts' Warmer does while the notebook is
    quiet), a reply reads only what came since; without one, the whole prompt."""
    from ambient_jupyter.backends.llamacpp import LlamaCppBackend

    for count in range(1, 30):
        history.append(NB, cell(count, f"value_{count} = {count} * 7\nprint(value_{count})"))

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        backend = LlamaCppBackend()
        assistant = Assistant(history, NB, backend, max_reply_tokens=32)
        await backend.prefill([{"role": "system", "content": "something else entirely"}])  # a cold cache
        cold = (await assistant.ask("Which value is largest?")).message
        history.append(NB, cell(30, "value_30 = 0"))
        await assistant.prefill()  # the quiet moment after the new cell
        warm = (await assistant.ask("And now?")).message
        return cold["seen"], warm["seen"]

    cold, warm = asyncio.run(go())
    # Cold: all but the template's first tokens, which match the other prompt's.
    assert cold["prompt_tokens"] > 500 and cold["read"] > 0.95 * cold["prompt_tokens"], cold
    # Warm: the prefill covered the history, so the reply read the question and the
    # template's turn markers, not the notebook again.
    assert 0 < warm["read"] < 60 < warm["prompt_tokens"], warm
