"""The JSON action API (schema, parsing and repair, streaming) and the approval gate.

Pure functions, plus the gate over a real SQLite history: approvals are read from
the history only, and are bound to the sha256 of exactly the code that runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ambient_jupyter.act import ActEngine
from ambient_jupyter.actions import (
    ACTIONS,
    ActionInvalid,
    CallPlugin,
    EditCell,
    Explain,
    InsertCell,
    PluginCatalog,
    ProposeNextCell,
    RunCell,
    TextStream,
    action_code,
    action_schema,
    code_sha256,
    parse_action,
)
from ambient_jupyter.assistant import Assistant
from ambient_jupyter.gate import NotApproved, approval, policy
from ambient_jupyter.history import History

NB = "kernel:test-actions"
TODO = {
    "kind": "plugin_registered",
    "plugin": "todo",
    "widget": "w1",
    "widget_class": "TodoList",
    "actions": [
        {
            "name": "add",
            "safe": True,
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
        },
        {
            "name": "remove",
            "safe": True,
            "parameters": {"type": "object", "properties": {"index": {"type": "integer"}}, "required": ["index"]},
        },
    ],
}


def catalog() -> PluginCatalog:
    return PluginCatalog.from_events([TODO])


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"action": "explain", "text": "It sorts."}', Explain(action="explain", text="It sorts.")),
        (
            '{"action": "insert_cell", "text": "t", "code": "x = 1", "after": 2}',
            InsertCell(action="insert_cell", text="t", code="x = 1", after=2),
        ),
        (
            '{"action": "edit_cell", "text": "t", "cell": 2, "code": "y"}',
            EditCell(action="edit_cell", text="t", cell=2, code="y"),
        ),
        ('{"action": "run_cell", "text": "t", "cell": 1}', RunCell(action="run_cell", text="t", cell=1)),
        (
            '{"action": "call_plugin", "text": "t", "plugin": "todo", "name": "add", "args": {"title": "milk"}}',
            CallPlugin(action="call_plugin", text="t", plugin="todo", name="add", args={"title": "milk"}),
        ),
        (
            '{"action": "propose_next_cell", "text": "t", "code": "z"}',
            ProposeNextCell(action="propose_next_cell", text="t", code="z"),
        ),
    ],
)
def test_every_action_parses(raw: str, expected: Any) -> None:
    assert parse_action(raw, ACTIONS, catalog(), cells=[1, 2]) == expected


def test_repairs_that_are_unambiguous() -> None:
    fenced = 'Here you go:\n```json\n{"action": "run_cell", "text": "again", "cell": 1}\n```'
    assert parse_action(fenced, ACTIONS, cells=[1]) == RunCell(action="run_cell", text="again", cell=1)
    prose = "The name is misspelled.\n\n```python\nprint(name)\n```\nThat should do it."
    assert parse_action(prose, ACTIONS) == InsertCell(
        action="insert_cell", text="The name is misspelled.", code="print(name)\n"
    )
    # Prose with code, where no code action is allowed, is just an explanation.
    assert parse_action(prose, ("explain",)) == Explain(action="explain", text=prose.strip())
    # A JSON object without "action" but with text is an explanation.
    assert parse_action('{"text": "hi"}', ACTIONS) == Explain(action="explain", text="hi")
    # Cut off while explaining: the words so far are kept.
    assert parse_action('{"action": "explain", "text": "The loop st', ACTIONS) == Explain(
        action="explain", text="The loop st"
    )


@pytest.mark.parametrize(
    ("raw", "allowed", "problem"),
    [
        ('{"action": "insert_cell", "text": "t", "code": "import os; os.rem', ACTIONS, "cut off"),
        ('{"action": "insert_cell", "text": "t", "code": "x = 1"}', ("explain",), "not allowed"),
        ('{"action": "insert_cell", "text": "t", "code": ""}', ACTIONS, "code"),
        ('{"action": "run_cell", "text": "t", "cell": 9}', ACTIONS, r"no cell \[9\]"),
        ('{"action": "edit_cell", "text": "t", "cell": "two", "code": "x"}', ACTIONS, "cell"),
        (
            '{"action": "call_plugin", "text": "t", "plugin": "todo", "name": "drop_all", "args": {}}',
            ACTIONS,
            "no plugin action",
        ),
        ('{"action": "call_plugin", "text": "t", "plugin": "todo", "name": "add", "args": {}}', ACTIONS, "needs title"),
        (
            '{"action": "call_plugin", "text": "t", "plugin": "todo", "name": "remove", "args": {"index": "1"}}',
            ACTIONS,
            "must be integer",
        ),
        (
            '{"action": "call_plugin", "text": "t", "plugin": "todo", "name": "add", "args": {"title": "a", "x": 1}}',
            ACTIONS,
            "no argument",
        ),
        ('{"action": "delete_notebook", "text": "t"}', ACTIONS, "not allowed"),
    ],
)
def test_invalid_actions_are_rejected_with_a_reason(raw: str, allowed: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ActionInvalid, match=problem):
        parse_action(raw, allowed, catalog(), cells=[1, 2])


# -- the schema --------------------------------------------------------------------------


def test_schema_offers_only_what_is_allowed_and_exists() -> None:
    schema = action_schema(ACTIONS, catalog(), cells=[1, 3])
    variants = {
        (v["properties"]["action"]["const"], v["properties"].get("name", {}).get("const")) for v in schema["anyOf"]
    }
    assert variants == {
        ("explain", None),
        ("insert_cell", None),
        ("edit_cell", None),
        ("run_cell", None),
        ("call_plugin", "add"),
        ("call_plugin", "remove"),
        ("propose_next_cell", None),
    }
    ok = [
        {"action": "run_cell", "text": "t", "cell": 3},
        {"action": "insert_cell", "text": "t", "code": "x", "after": None},
        {"action": "call_plugin", "text": "t", "plugin": "todo", "name": "add", "args": {"title": "a"}},
    ]
    for value in ok:
        jsonschema.validate(value, schema)
    bad = [
        {"action": "run_cell", "text": "t", "cell": 2},  # no cell [2]
        {"action": "call_plugin", "text": "t", "plugin": "todo", "name": "add", "args": {"index": 1}},
        {"action": "explain", "text": ""},  # people read text: never empty
        {"action": "explain", "text": "t", "extra": 1},
    ]
    for value in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, schema)
    # No plugins: no call_plugin; no cells yet: nothing refers to one.
    bare = action_schema(ACTIONS, PluginCatalog(), cells=[])
    assert {v["properties"]["action"]["const"] for v in bare["anyOf"]} == {
        "explain",
        "insert_cell",
        "propose_next_cell",
    }
    assert action_schema(("explain",)) == bare["anyOf"][0]


# -- streaming the text -----------------------------------------------------------------


def test_text_streams_while_the_json_is_written() -> None:
    whole = json.dumps({"action": "insert_cell", "text": 'Use "total".\nThen run it.', "code": "total = 1\n"})
    stream = TextStream()
    pieces = [stream.feed(whole[i : i + 3]) for i in range(0, len(whole), 3)]
    assert "".join(pieces) == 'Use "total".\nThen run it.'
    assert stream.shown == 'Use "total".\nThen run it.' and stream.raw == whole and stream.is_json
    assert sum(1 for p in pieces if p) > 3, "the text did not arrive in pieces"

    prose = TextStream()
    assert [prose.feed(p) for p in ["  ", "Hello", " there"]] == ["", "  Hello", " there"]
    assert not prose.is_json


# -- what runs ---------------------------------------------------------------------------


def test_action_code_is_exactly_what_runs() -> None:
    assert action_code(InsertCell(action="insert_cell", code="x = 1")) == "x = 1\n"
    assert action_code(RunCell(action="run_cell", cell=2), cell_code="y = 2") == "y = 2"
    call = CallPlugin(action="call_plugin", plugin="todo", name="add", args={"title": "milk", "done": False})
    assert action_code(call) == "todo.add(title='milk', done=False)"


# -- the gate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "safe", "person", "verdict", "rule"),
    [
        ("auto", False, False, "approve", "auto"),
        ("ask", True, False, "approve", "safe_plugin"),
        ("ask", False, True, "ask", None),
        ("ask", False, False, "reject", "no_person"),
        ("off", True, True, "reject", "off"),
    ],
)
def test_policy(mode: str, safe: bool, person: bool, verdict: str, rule: str | None) -> None:
    decided = policy(mode, safe=safe, person_present=person)
    assert (decided.verdict, decided.rule) == (verdict, rule)
    assert bool(decided.reason) == (rule is not None)


def propose(history: History, code: str, action_id: str = "a1") -> dict[str, Any]:
    return history.append(
        NB,
        {
            "kind": "action_proposed",
            "action_id": action_id,
            "action": "insert_cell",
            "code": code,
            "sha256": code_sha256(code),
        },
    )


def decide(history: History, action_id: str, decision: str, sha256: str, **more: Any) -> None:
    history.append(
        NB,
        {"kind": "action_decided", "action_id": action_id, "decision": decision, "by": "user", "sha256": sha256}
        | more,
    )


def test_approval_is_read_from_the_history_and_bound_to_the_hash(tmp_path: Path) -> None:
    a, b = "print('A')\n", "import os; os.remove('x')\n"
    with History(tmp_path / "h.sqlite") as history:
        proposal = propose(history, a)
        with pytest.raises(NotApproved, match="not been approved"):
            approval(history, NB, "a1", mode="ask")
        decide(history, "a1", "approved", proposal["sha256"])
        granted = approval(history, NB, "a1", mode="ask")
        assert granted.code == a
        # Approving A never runs B.
        with pytest.raises(NotApproved, match="not the code that was proposed"):
            approval(history, NB, "a1", code=b, mode="ask")
        # One run per approval.
        history.append(NB, {"kind": "action_executed", "action_id": "a1", "ok": True})
        with pytest.raises(NotApproved, match="already run"):
            approval(history, NB, "a1", mode="ask")

        # A decision recorded for other code approves nothing.
        other = propose(history, b, "a2")
        decide(history, "a2", "approved", code_sha256(a))
        with pytest.raises(NotApproved, match="other code"):
            approval(history, NB, "a2", mode="ask")
        # A proposal whose stored hash does not match its code (tampered row) is refused.
        history.append(
            NB,
            {
                "kind": "action_proposed",
                "action_id": "a3",
                "action": "insert_cell",
                "code": b,
                "sha256": code_sha256(a),
            },
        )
        decide(history, "a3", "approved", code_sha256(a))
        with pytest.raises(NotApproved, match="not the code that was proposed"):
            approval(history, NB, "a3", mode="ask")
        # Rejected stays rejected, even if an approval follows.
        propose(history, a, "a4")
        decide(history, "a4", "rejected", other["sha256"])
        decide(history, "a4", "approved", code_sha256(a))
        with pytest.raises(NotApproved, match="rejected"):
            approval(history, NB, "a4", mode="ask")
        with pytest.raises(NotApproved, match="no proposed action"):
            approval(history, NB, "nope", mode="ask")
        # An outcome that cannot be read may be the run that used the approval up: refused.
        propose(history, a, "a5")
        decide(history, "a5", "approved", code_sha256(a))
        history.append(NB, {"kind": "action_executed", "action_id": "a5", "reason": "from a newer version"})
        with pytest.raises(NotApproved, match="cannot be read"):
            approval(history, NB, "a5", mode="ask")


def test_the_mode_in_force_when_code_is_about_to_run_is_the_one_that_counts(tmp_path: Path) -> None:
    code = "print('A')\n"
    with History(tmp_path / "h.sqlite") as history:
        # Approved by a person: good under ask and auto, never under off.
        propose(history, code, "by-user")
        decide(history, "by-user", "approved", code_sha256(code), rule="user")
        assert approval(history, NB, "by-user", mode="ask").rule == "user"
        assert approval(history, NB, "by-user", mode="auto").rule == "user"
        with pytest.raises(NotApproved, match="mode is now off"):
            approval(history, NB, "by-user", mode="off")
        # Approved because the mode was auto: lapses as soon as the mode is not auto.
        propose(history, code, "by-auto")
        decide(history, "by-auto", "approved", code_sha256(code), by="policy", rule="auto", reason="agent mode is auto")
        assert approval(history, NB, "by-auto", mode="auto").rule == "auto"
        with pytest.raises(NotApproved, match="only because the agent mode was auto; it is now ask"):
            approval(history, NB, "by-auto", mode="ask")
        # A decision written before rules were recorded is read by its reason.
        propose(history, code, "old")
        decide(history, "old", "approved", code_sha256(code), by="policy", reason="agent mode is auto")
        with pytest.raises(NotApproved, match="only because the agent mode was auto"):
            approval(history, NB, "old", mode="ask")


def test_string_limits_leave_room_for_a_whole_action() -> None:
    """Strings are limited so that, even at one character per token, an action fits its budget."""
    for max_tokens in (128, 400, 1024, 4096):
        schema = action_schema(ACTIONS, catalog(), cells=[1, 2], max_tokens=max_tokens)
        for variant in schema["anyOf"]:
            props = variant["properties"]
            strings = [p["maxLength"] for p in props.values() if p.get("type") == "string"]
            strings += [
                p["maxLength"]
                for p in (props.get("args") or {}).get("properties", {}).values()
                if p.get("type") == "string"
            ]
            assert strings and all(strings), variant
            assert sum(strings) + 48 <= max(max_tokens, 112), (max_tokens, variant)
    explain = action_schema(("explain",), max_tokens=1024)
    assert explain["properties"]["text"] == {"type": "string", "minLength": 1, "maxLength": 976}


def test_switching_off_rejects_what_waits_even_a_proposal_that_cannot_be_read(tmp_path: Path) -> None:
    """``off`` expires every waiting proposal, one this version cannot read included: a
    process that can read it must not find it still waiting for a click."""
    with History(tmp_path / "h.sqlite") as history:
        propose(history, "x = 1\n", "plain")
        history.append(NB, {"kind": "action_proposed", "action_id": "odd", "action": "insert_cell", "code": "y = 2\n"})
        assistant = Assistant(history, NB, "ollama:never-called", agent="ask")
        asyncio.run(ActEngine(assistant).set_mode("off", "sidebar"))
        decided = [e for e in history.read(NB) if e["kind"] == "action_decided"]
        assert [(d["action_id"], d["decision"], d["rule"]) for d in decided] == [
            ("plain", "rejected", "off"),
            ("odd", "rejected", "off"),
        ]
        assert history.undecided(NB) == []
