"""Actions through the Assistant, and the local watcher <-> frontier expert hand-off.

The watcher is a real ``OllamaBackend`` on the Ollama wire fake, the expert a real
``OpenAIBackend`` on the OpenAI SSE fake; the history is a real SQLite file. What is
checked: who said what, that the two models take turns over one history, and that a
prompt carries each event exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)
from fakes.openai_server import FakeOpenAI, openai_server_fixture  # noqa: F401 (the `openai_server` fixture)

from ambient_jupyter.act import ActEngine
from ambient_jupyter.actions import code_sha256
from ambient_jupyter.assistant import NO_EXPERT_HELP, Assistant
from ambient_jupyter.backends.ollama import OllamaBackend
from ambient_jupyter.backends.openai import OpenAIBackend
from ambient_jupyter.history import History

NB = "kernel:test-expert"
WATCHER = "tiny:1b"
FIX = "total = sum(prices)\n"


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "h.sqlite")
    try:
        yield h
    finally:
        h.close()


def seed(history: History) -> None:
    history.append(NB, {"kind": "cell_executed", "code": "prices = [3, 5, 8]", "execution_count": 1, "status": "ok"})
    history.append(
        NB,
        {
            "kind": "cell_executed",
            "code": "totl",
            "execution_count": 2,
            "status": "error",
            "error": {"ename": "NameError", "evalue": "name 'totl' is not defined", "traceback": []},
        },
    )


def action(**fields: Any) -> str:
    return json.dumps(fields)


def run(coro_fn: Any) -> Any:
    return asyncio.run(coro_fn())


def contents(body: dict[str, Any]) -> list[str]:
    return [str(m["content"]) for m in body["messages"]]


def assert_each_event_once(messages: list[str], needles: list[str]) -> None:
    for needle in needles:
        hits = sum(1 for m in messages if needle in m)
        assert hits == 1, f"{needle!r} appears in {hits} messages"
    history_part = messages[1:]
    assert len(history_part) == len(set(history_part)), "a message is repeated in the prompt"


def test_a_turn_proposes_exactly_the_code_and_the_mode_decides(history: History, ollama_server: FakeOllama) -> None:
    seed(history)
    ollama_server.reply = action(action="insert_cell", text="A typo: use sum.", code=FIX, after=2)

    async def go() -> tuple[Any, str, str]:
        backend = OllamaBackend(WATCHER, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, agent="ask")
        try:
            turn = await assistant.ask("Fix it", source="sidebar")
            acts = ActEngine(assistant)
            asked = await acts.settle(turn.proposal, person_present=True)
            nobody = await acts.settle(turn.proposal, person_present=False)
            return turn, asked.state, nobody.state
        finally:
            await backend.aclose()

    turn, asked, nobody = run(go)
    assert turn.text == "A typo: use sum."
    proposal = turn.proposal
    assert proposal.action == "insert_cell" and proposal.code == FIX
    assert proposal.sha256 == code_sha256(FIX) and proposal.args == {"after": 2}
    assert proposal.reply_to == turn.message["seq"] and proposal.role == "watcher"
    # The raw JSON is kept for the model's own later turns; people read the text.
    assert json.loads(turn.message["raw"])["code"] == FIX
    # The backend was asked for the action schema, with the cells that exist.
    sent = ollama_server.chat_requests()[0]
    variants = {v["properties"]["action"]["const"]: v for v in sent["format"]["anyOf"]}
    assert set(variants) == {"explain", "insert_cell", "edit_cell", "run_cell", "propose_next_cell"}
    assert variants["run_cell"]["properties"]["cell"] == {"enum": [1, 2]}
    assert (asked, nobody) == ("waiting", "rejected")
    decided = [e for e in history.read(NB) if e["kind"] == "action_decided"]
    assert [(d["decision"], d["by"], d["rule"], d["sha256"]) for d in decided] == [
        ("rejected", "policy", "no_person", code_sha256(FIX))
    ]
    assert "no one to ask" in decided[0]["reason"]


def test_agent_off_only_talks(history: History, ollama_server: FakeOllama) -> None:
    seed(history)
    ollama_server.reply = action(action="explain", text="Cell 2 has a typo.")

    async def go() -> Any:
        backend = OllamaBackend(WATCHER, host=ollama_server.url)
        try:
            return await Assistant(history, NB, backend, agent="off").ask("Fix it")
        finally:
            await backend.aclose()

    turn = run(go)
    assert turn.proposal is None and turn.text == "Cell 2 has a typo."
    schema = ollama_server.chat_requests()[0]["format"]
    assert schema["properties"]["action"] == {"const": "explain"}


def test_the_expert_takes_a_turn_and_the_watcher_carries_on(
    history: History, ollama_server: FakeOllama, openai_server: FakeOpenAI
) -> None:
    seed(history)
    ollama_server.reply = lambda body: action(action="explain", text=f"watcher reply {len(body['messages'])}")
    openai_server.reply = action(action="edit_cell", text="Expert: rename totl.", cell=2, code=FIX)

    async def go() -> tuple[Any, Any, Any]:
        watcher = OllamaBackend(WATCHER, host=ollama_server.url)
        expert = OpenAIBackend("fake-gpt", base_url=openai_server.base_url, api_key="sk-test")
        assistant = Assistant(history, NB, watcher, expert=expert)
        try:
            first = await assistant.ask("What went wrong?")
            handed = await assistant.ask("Please fix it properly.", role="expert")
            after = await assistant.ask("Thanks. Anything else?")
            return first, handed, after
        finally:
            await watcher.aclose()
            await expert.aclose()

    first, handed, after = run(go)
    # Which model said what is recorded with every message and proposal.
    assert (first.message["role"], first.message["model"]) == ("watcher", f"ollama:{WATCHER}")
    assert (handed.message["role"], handed.message["model"]) == ("expert", "openai:fake-gpt")
    assert handed.proposal.role == "expert" and handed.proposal.model == "openai:fake-gpt"
    assert handed.proposal.action == "edit_cell" and handed.proposal.args == {"cell": 2}
    asked = [e for e in history.read(NB) if e["kind"] == "user_message"]
    assert [m["to"] for m in asked] == ["watcher", "expert", "watcher"]
    assert (after.message["role"], after.message["model"]) == ("watcher", f"ollama:{WATCHER}")

    # The expert saw the whole history once, including the watcher's first reply...
    (expert_body,) = openai_server.chat_requests()
    expert_prompt = contents(expert_body)
    assert_each_event_once(
        expert_prompt, ["prices = [3, 5, 8]", "totl", "What went wrong?", first.text, "Please fix it properly."]
    )
    # ...and the watcher, afterwards, sees the expert's turn once, in order, on the same history.
    watcher_prompt = contents(ollama_server.chat_requests()[-1])
    assert_each_event_once(
        watcher_prompt,
        [
            "prices = [3, 5, 8]",
            "What went wrong?",
            "Please fix it properly.",
            "Expert: rename totl.",
            "total = sum(prices)",
            "Anything else?",
        ],
    )
    order = [
        next(i for i, m in enumerate(watcher_prompt) if n in m)
        for n in ["What went wrong?", "Please fix it properly.", "Expert: rename totl.", "Anything else?"]
    ]
    assert order == sorted(order)


def test_the_watcher_escalates_after_two_invalid_actions(
    history: History, ollama_server: FakeOllama, openai_server: FakeOpenAI
) -> None:
    seed(history)
    # The watcher keeps naming a cell that does not exist (a fake ignores the schema).
    ollama_server.reply = action(action="run_cell", text="Run it again.", cell=7)
    openai_server.reply = action(action="insert_cell", text="Define it first.", code=FIX, after=1)

    async def go() -> Any:
        watcher = OllamaBackend(WATCHER, host=ollama_server.url)
        expert = OpenAIBackend("fake-gpt", base_url=openai_server.base_url, api_key="sk-test")
        try:
            return await Assistant(history, NB, watcher, expert=expert).ask("Fix it")
        finally:
            await watcher.aclose()
            await expert.aclose()

    turn = run(go)
    assert turn.message["role"] == "expert" and turn.proposal.code == FIX
    replies = [e for e in history.read(NB) if e["kind"] == "assistant_message"]
    assert [(r["role"], r["state"]) for r in replies] == [
        ("watcher", "error"),
        ("watcher", "error"),
        ("expert", "complete"),
    ]
    assert "no cell [7]" in replies[0]["text"]
    # The second try was shown what was wrong with the first.
    retry = contents(ollama_server.chat_requests()[1])
    assert any("not a valid action" in m and "no cell [7]" in m for m in retry)
    assert len(openai_server.chat_requests()) == 1


def test_no_expert_says_how_to_set_one(history: History, ollama_server: FakeOllama) -> None:
    async def go() -> Any:
        backend = OllamaBackend(WATCHER, host=ollama_server.url)
        try:
            return await Assistant(history, NB, backend).ask("Hard question", role="expert")
        finally:
            await backend.aclose()

    turn = run(go)
    assert turn.state == "error" and "AMBIENT_EXPERT" in turn.text and turn.text == NO_EXPERT_HELP
    assert ollama_server.chat_requests() == []


def test_switching_models_keeps_the_history(history: History, ollama_server: FakeOllama) -> None:
    seed(history)
    ollama_server.reply = action(action="explain", text="first model")
    other = FakeOllama({"other:2b": 8192}).start()
    other.reply = action(action="explain", text="second model")

    async def go() -> None:
        one = OllamaBackend(WATCHER, host=ollama_server.url)
        two = OllamaBackend("other:2b", host=other.url)
        assistant = Assistant(history, NB, one)
        try:
            await assistant.ask("Hello?")
            assistant.set_model(two)
            await assistant.ask("And now?")
        finally:
            await one.aclose()
            await two.aclose()

    try:
        run(go)
        prompt = contents(other.chat_requests()[0])
    finally:
        other.stop()
    assert_each_event_once(prompt, ["prices = [3, 5, 8]", "Hello?", "first model", "And now?"])


def test_stop_during_an_action_proposes_nothing(history: History, ollama_server: FakeOllama) -> None:
    seed(history)
    ollama_server.reply = action(action="insert_cell", text="Let me write a long explanation " * 10, code=FIX)
    ollama_server.token_delay = 0.2
    received: list[str] = []

    async def go() -> tuple[Any, float]:
        backend = OllamaBackend(WATCHER, host=ollama_server.url)
        assistant = Assistant(history, NB, backend, agent="auto", on_token=lambda _r, t: received.append(t))
        try:
            task = asyncio.ensure_future(assistant.ask("Fix it"))
            while not received:
                await asyncio.sleep(0.01)
            stopped = time.monotonic()
            assistant.stop()
            turn = await task
            return turn, time.monotonic() - stopped
        finally:
            await backend.aclose()

    turn, elapsed = run(go)
    assert elapsed < 1.0
    assert turn.state == "incomplete" and turn.proposal is None
    assert turn.text and turn.text == "".join(received)
    assert not [e for e in history.read(NB) if e["kind"].startswith("action_")]
