"""Plugins and the in-kernel agent: schemas, the gate where plugins run, and both example
notebooks driven by a deterministic model (the Ollama wire fake) on a real kernel.

The example notebooks are run as they ship (their own ``%%ask`` cells dropped), with
``%%ask`` cells and state printouts added: the fake model answers each question with
one ``call_plugin`` action, the kernel's host runs it through the gate, and the test
reads back the widget's state and the recorded events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Optional

import nbformat
import pytest
import traitlets
from conftest import ROOT, events_of
from fakes.ollama_server import FakeOllama
from fakes.openai_server import FakeOpenAI
from nbclient import NotebookClient

import ambient_jupyter
from ambient_jupyter.actions import code_sha256
from ambient_jupyter.gate import NotApproved, policy
from ambient_jupyter.history import History
from ambient_jupyter.plugins import dispatch

pytestmark = pytest.mark.timeout(300)

FAKE_MODEL = "tiny:1b"
SAFE_REASON = policy("ask", safe=True, person_present=False)[1]
NO_ONE_REASON = policy("ask", safe=False, person_present=False)[1]
TODO = ROOT / "notebooks" / "todo.ipynb"
EXPLORER = ROOT / "notebooks" / "dataframe_explorer.ipynb"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama({FAKE_MODEL: 8192}).start()
    try:
        yield server
    finally:
        server.stop()


def plugin_call(plugin: str, name: str, args: dict[str, Any]) -> str:
    action = {"action": "call_plugin", "text": f"Calling {name}.", "plugin": plugin, "name": name, "args": args}
    return json.dumps(action)


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def script(fake: FakeOllama, answers: dict[str, str]) -> None:
    """The model answers a question containing KEY with answers[KEY]."""

    def reply(body: dict[str, Any]) -> str:
        question = last_user_text(body)
        for key, answer in answers.items():
            if key in question:
                return answer
        return json.dumps({"action": "explain", "text": "I cannot help with that."})

    fake.reply = reply


def example_cells(path: Path) -> list[str]:
    """The code cells of an example notebook, without its own %%ask cells."""
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and not c.source.startswith("%%ask")]


def write_notebook(path: Path, cells: list[str], metadata: dict[str, Any] | None = None) -> Path:
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.metadata.update(metadata or {})
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


def execute(path: Path, fake: FakeOllama, **extra_env: str) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``path`` with plain nbclient (the in-kernel host answers %%ask); returns the
    executed notebook and every cell's execute_reply content, in order."""
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
    env = {
        **os.environ,
        "AMBIENT_MODEL": f"ollama:{FAKE_MODEL}",
        "OLLAMA_HOST": fake.url,
        "AMBIENT_NOTEBOOK": str(path),
        "AMBIENT_AGENT": "ask",
        **extra_env,
    }
    client.execute(env=env)
    return nb, replies


def stdout(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def stderr(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")


def state(cell: Any) -> Any:
    """A state printout cell prints one JSON line."""
    return json.loads(stdout(cell).strip().splitlines()[-1])


def action_events(events: list[dict[str, Any]], code: str) -> dict[str, Any]:
    """The model's proposal of exactly ``code``, and what the history says happened to it."""
    proposals = [e for e in events if e["kind"] == "action_proposed" and e["code"] == code and e.get("reply_to")]
    assert len(proposals) == 1, [e.get("code") for e in events if e["kind"] == "action_proposed"]
    proposal = proposals[0]
    related = [e for e in events if e.get("action_id") == proposal["action_id"] and e is not proposal]
    decided = [e for e in related if e["kind"] == "action_decided"]
    executed = [e for e in related if e["kind"] == "action_executed"]
    assert len(decided) == 1 and len(executed) <= 1, related
    between = [e for e in events if proposal["seq"] < e["seq"] < (executed[0]["seq"] if executed else 0)]
    return {
        "proposal": proposal,
        "decided": decided[0],
        "executed": executed[0] if executed else None,
        "widget_changes": [e for e in between if e["kind"] == "widget_changed"],
    }


def check_ran_safely(events: list[dict[str, Any]], code: str, *, traits: set[str]) -> dict[str, Any]:
    """``code`` was proposed, approved by policy as a safe action, changed ``traits``, and ran."""
    found = action_events(events, code)
    proposal, decided, executed = found["proposal"], found["decided"], found["executed"]
    assert proposal["action"] == "call_plugin" and proposal["safe"] is True
    assert proposal["sha256"] == code_sha256(code)
    assert (decided["decision"], decided["by"], decided["reason"]) == ("approved", "policy", SAFE_REASON)
    assert decided["sha256"] == proposal["sha256"]
    assert executed is not None and executed["ok"] is True and executed["error"] is None, executed
    assert {w["trait"] for w in found["widget_changes"]} == traits
    assert all(w["widget"] == found["widget_changes"][0]["widget"] for w in found["widget_changes"])
    return executed["result"]


# -- schemas, in-process --------------------------------------------------------------------


class Shelf(ambient_jupyter.Plugin):
    """A shelf of books.

    A longer explanation that the model does not need.
    """

    books = traitlets.List().tag(sync=True)
    _shown = traitlets.Int(0).tag(sync=True)

    @ambient_jupyter.action(safe=True)
    def add(self, title: str, year: int, tags: list[str] | None = None, rating: float = 3.5) -> dict:
        """Put a book on the shelf.

        Parameters
        ----------
        title : str
            The book's title.
        year
            When it was published,
            as a four-digit year.
        tags
            Labels for it.
        rating
            Out of five.
        """
        book = {"title": title, "year": year, "tags": tags or [], "rating": rating}
        self.books = [*self.books, book]
        return book

    @ambient_jupyter.action
    def shelve(
        self,
        order: Literal["title", "year"],
        reverse: bool = False,
        limit: Optional[int] = None,  # noqa: UP045 (typing.Optional is what many authors write)
        where: dict[str, int] | None = None,
    ) -> list:
        """Sort the shelf."""
        return sorted(self.books, key=lambda b: b[order], reverse=reverse)[:limit]

    def helper(self, anything: object) -> None:
        """Not an action: no decorator."""


def test_schema_comes_from_type_hints_and_numpy_docstrings() -> None:
    shelf = Shelf(name="schema_shelf")
    try:
        assert shelf.plugin_name == "schema_shelf"
        assert shelf.plugin_description() == "A shelf of books."
        specs = {s["name"]: s for s in shelf.action_specs()}
        assert list(specs) == ["add", "shelve"]  # in definition order; helper is not an action
        add = specs["add"]
        assert (add["description"], add["safe"]) == ("Put a book on the shelf.", True)
        assert add["parameters"] == {
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "The book's title."},
                "year": {"type": "integer", "description": "When it was published, as a four-digit year."},
                "tags": {
                    "type": ["array", "null"],
                    "items": {"type": "string"},
                    "description": "Labels for it.",
                    "default": None,
                },
                "rating": {"type": "number", "description": "Out of five.", "default": 3.5},
            },
            "required": ["title", "year"],
            "additionalProperties": False,
        }
        shelve = specs["shelve"]
        assert (shelve["description"], shelve["safe"]) == ("Sort the shelf.", False)
        assert shelve["parameters"]["properties"] == {
            "order": {"type": "string", "enum": ["title", "year"]},
            "reverse": {"type": "boolean", "default": False},
            "limit": {"type": ["integer", "null"], "default": None},
            "where": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}, "default": None},
        }
        assert shelve["parameters"]["required"] == ["order"]
    finally:
        shelf.close()


def test_plugin_names_and_unusable_hints() -> None:
    class DataFrameExplorerX(ambient_jupyter.Plugin):
        pass

    default = DataFrameExplorerX()
    try:
        assert default.plugin_name == "data_frame_explorer_x"
        with pytest.raises(ValueError, match="already exists"):
            Shelf(name="data_frame_explorer_x")  # another class may not take the name
        again = DataFrameExplorerX()  # the same class again (a re-run cell) replaces it
        assert ambient_jupyter.plugins._registry.find("data_frame_explorer_x") is again
        again.close()
        assert ambient_jupyter.plugins._registry.find("data_frame_explorer_x") is None
    finally:
        default.close()
    with pytest.raises(ValueError, match="identifier"):
        Shelf(name="my shelf")

    class Bad(ambient_jupyter.Plugin):
        @ambient_jupyter.action
        def load(self, frame: Path) -> None:
            """Load something the model cannot write."""

    with pytest.raises(TypeError, match=r"parameter 'frame'.*cannot describe"):
        Bad()


def test_plugins_made_before_load_ext_are_announced_and_bookkeeping_is_not_recorded(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.testing.globalipapp import get_ipython

    notebook = str(tmp_path / "early.ipynb")
    monkeypatch.setenv("AMBIENT_NOTEBOOK", notebook)
    monkeypatch.setenv("AMBIENT_QUIET", "1")
    early = Shelf(name="early_shelf")
    ip = get_ipython()
    ambient_jupyter.load_ipython_extension(ip)
    try:
        late = Shelf(name="late_shelf")
        early._shown = 3  # bookkeeping: a synced trait whose name starts with _
        early.add(title="Emma", year=1815)
        late.close()
    finally:
        ambient_jupyter.unload_ipython_extension(ip)
        early.close()
    events = history.read(notebook)
    assert [(e["kind"], e.get("plugin")) for e in events if e["kind"] != "widget_changed"] == [
        ("plugin_registered", "early_shelf"),
        ("plugin_registered", "late_shelf"),
    ]
    assert [e["actions"][0]["name"] for e in events if e["kind"] == "plugin_registered"] == ["add", "add"]
    changes = [(e["widget_class"], e["trait"]) for e in events if e["kind"] == "widget_changed"]
    assert changes == [("Shelf", "books")]


# -- dispatch, in-process (no recorder: it opens the history itself) --------------------------


def _propose(history: History, notebook: str, code: str, args: dict[str, Any], **extra: Any) -> str:
    action_id = f"a{history.last_seq(notebook) + 1}"
    history.append(
        notebook,
        {"kind": "action_proposed", "action_id": action_id, "action": "call_plugin", "code": code,
         "sha256": code_sha256(code), "args": args, "safe": True, **extra},
    )
    return action_id


def _decide(history: History, notebook: str, action_id: str, code: str, **extra: Any) -> None:
    history.append(
        notebook,
        {"kind": "action_decided", "action_id": action_id, "decision": "approved", "by": "user",
         "sha256": code_sha256(code), **extra},
    )


def test_dispatch_runs_only_what_the_history_approved(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = str(tmp_path / "inprocess.ipynb")
    monkeypatch.setenv("AMBIENT_NOTEBOOK", notebook)
    shelf = Shelf(name="dispatch_shelf")
    try:
        good = "dispatch_shelf.add(title='Dune', year=1965)"
        call = {"plugin": "dispatch_shelf", "name": "add", "args": {"title": "Dune", "year": 1965}}

        unapproved = _propose(history, notebook, good, call)
        with pytest.raises(NotApproved, match="has not been approved"):
            dispatch(unapproved)

        # The approved code is harmless; the stored arguments are not that code.
        swapped = _propose(history, notebook, good, {**call, "args": {"title": "Evil", "year": 1}})
        _decide(history, notebook, swapped, good)
        with pytest.raises(NotApproved, match="not the approved call"):
            dispatch(swapped)

        # An approval given for other code.
        other = _propose(history, notebook, good, call)
        _decide(history, notebook, other, "dispatch_shelf.add(title='Other', year=2000)")
        with pytest.raises(NotApproved, match="other code"):
            dispatch(other)

        # A cell action is never run by dispatch, even approved.
        cell = "print('cell')\n"
        not_plugin = _propose(history, notebook, cell, {}, action="insert_cell")
        _decide(history, notebook, not_plugin, cell)
        with pytest.raises(NotApproved, match="not a plugin call"):
            dispatch(not_plugin)

        # Announced as safe, approved by policy for that reason; the live action is not safe.
        unsafe = "dispatch_shelf.shelve(order='year')"
        unsafe_id = _propose(history, notebook, unsafe, {"plugin": "dispatch_shelf", "name": "shelve",
                                                         "args": {"order": "year"}})
        _decide(history, notebook, unsafe_id, unsafe, by="policy", reason=SAFE_REASON)
        with pytest.raises(NotApproved, match="not declared safe"):
            dispatch(unsafe_id)
        assert shelf.books == []
        assert events_of(history, notebook, "action_executed") == []

        approved = _propose(history, notebook, good, call)
        _decide(history, notebook, approved, good)
        assert dispatch(approved) == {"title": "Dune", "year": 1965, "tags": [], "rating": 3.5}
        assert shelf.books == [{"title": "Dune", "year": 1965, "tags": [], "rating": 3.5}]
        executed = events_of(history, notebook, "action_executed")
        assert [(e["action_id"], e["ok"], e["result"]) for e in executed] == [
            (approved, True, {"title": "Dune", "year": 1965, "tags": [], "rating": 3.5})
        ]
        with pytest.raises(NotApproved, match="already run"):
            dispatch(approved)  # an approval is good for one run
        assert len(shelf.books) == 1

        # Approved, but the plugin is gone: a failed run the model can read about.
        gone = "nobody.add(title='x', year=1)"
        gone_id = _propose(history, notebook, gone, {"plugin": "nobody", "name": "add",
                                                     "args": {"title": "x", "year": 1}})
        _decide(history, notebook, gone_id, gone)
        with pytest.raises(LookupError, match="no plugin 'nobody'"):
            dispatch(gone_id)
        failed = events_of(history, notebook, "action_executed")[-1]
        assert (failed["action_id"], failed["ok"]) == (gone_id, False) and "nobody" in failed["error"]
    finally:
        shelf.close()


# -- the todo example, driven by the fake model on a real kernel ------------------------------

TODO_STATE = "print(json.dumps(todo.items))"


def plant_refusals(history: History, notebook: str) -> dict[str, str]:
    """Proposals in the history that dispatch must refuse, planted before the kernel starts."""
    remove = "todo.remove(id=1)"
    call = {"plugin": "todo", "name": "remove", "args": {"id": 1}}
    ids = {
        "unapproved": _propose(history, notebook, remove, call),
        "tampered_args": _propose(history, notebook, "todo.list_items()", call),
        "other_hash": _propose(history, notebook, remove, call),
        "metadata": _propose(history, notebook, remove, call),
    }
    _decide(history, notebook, ids["tampered_args"], "todo.list_items()")
    _decide(history, notebook, ids["other_hash"], "todo.list_items()")
    return ids


REFUSE = """from ambient_jupyter.gate import NotApproved
from ambient_jupyter.plugins import dispatch
for action_id in {ids!r}:
    try:
        dispatch(action_id)
        print("RAN", action_id)
    except NotApproved as exc:
        print("refused:", exc)
print(json.dumps(todo.items))"""


def test_the_model_drives_every_todo_action(tmp_path: Path, history: History, fake: FakeOllama) -> None:
    notebook = tmp_path / "todo.ipynb"
    refusals = plant_refusals(history, str(notebook))
    exported = tmp_path / "exported.json"
    script(
        fake,
        {
            "ADD-BREAD": plugin_call("todo", "add", {"text": "buy bread"}),
            "WHAT-IS-OPEN": plugin_call("todo", "list_items", {"done": False}),
            "RENAME-2": plugin_call("todo", "update", {"id": 2, "text": "call the bank at 9"}),
            "DONE-2": plugin_call("todo", "complete", {"id": 2, "done": True}),
            "DROP-1": plugin_call("todo", "remove", {"id": 1}),
            "EXPORT": plugin_call("todo", "save", {"path": str(exported)}),
        },
    )
    cells = [
        *example_cells(TODO),
        TODO_STATE,
        "%%ask\nADD-BREAD: put bread on my list",
        TODO_STATE,
        "%%ask\nWHAT-IS-OPEN on my list?",
        TODO_STATE,
        "%%ask\nRENAME-2 to 'call the bank at 9'",
        TODO_STATE,
        "%%ask\nDONE-2: I called the bank",
        TODO_STATE,
        "%%ask\nDROP-1 please",
        TODO_STATE,
        "%%ask\nEXPORT the list",
        f"import os\nprint(json.dumps([os.path.exists({str(exported)!r}), todo.items]))",
        REFUSE.format(ids=list(refusals.values())),
        "%ambient agent=auto",
        "%ambient",
        "%%ask\nEXPORT the list again",
        f"print(json.dumps(json.load(open({str(exported)!r}))))",
    ]
    # A shared notebook that claims its own approvals: they must be ignored.
    claimed = {"ambient": {"approvals": [{"action_id": refusals["metadata"], "decision": "approved",
                                          "sha256": code_sha256("todo.remove(id=1)")}]}}
    write_notebook(notebook, cells, metadata=claimed)
    nb, _replies = execute(notebook, fake)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = len(example_cells(TODO))
    assert not [c.source for c in code if any(o.get("output_type") == "error" for o in c.outputs)]

    milk = {"id": 1, "text": "buy milk", "done": True}
    bank = {"id": 2, "text": "call the bank", "done": False}
    bread = {"id": 3, "text": "buy bread", "done": False}
    assert state(code[first]) == [milk, bank]
    # Each answer runs in the kernel, and says so under the answer.
    assert "Ran todo.add(text='buy bread')" in stdout(code[first + 1])
    assert state(code[first + 2]) == [milk, bank, bread]
    assert state(code[first + 4]) == [milk, bank, bread]  # reading changes nothing
    bank_at_9 = {**bank, "text": "call the bank at 9"}
    assert state(code[first + 6]) == [milk, bank_at_9, bread]
    assert state(code[first + 8]) == [milk, {**bank_at_9, "done": True}, bread]
    final = [{**bank_at_9, "done": True}, bread]
    assert state(code[first + 10]) == final

    # Not safe, ask mode, nobody to ask: not run, and the cell says why.
    assert "Not run: todo.save(" in stdout(code[first + 11])
    assert state(code[first + 12]) == [False, final]

    refused = stdout(code[first + 13])
    assert "RAN" not in refused
    assert refused.count("refused:") == 4
    assert "has not been approved" in refused and "not the approved call" in refused and "other code" in refused
    assert state(code[first + 13]) == final

    assert "agent:    auto" in stdout(code[first + 14]) and "agent:    auto" in stdout(code[first + 15])
    assert "Ran todo.save(" in stdout(code[first + 16])
    assert state(code[first + 17]) == final

    events = events_of(history, notebook)
    registered = [e for e in events if e["kind"] == "plugin_registered"]
    assert [(r["plugin"], r["widget_class"]) for r in registered] == [("todo", "TodoList")]
    actions = {a["name"]: a for a in registered[0]["actions"]}
    assert list(actions) == ["add", "list_items", "update", "complete", "remove", "save"]
    assert actions["add"]["parameters"]["required"] == ["text"]
    assert [a["safe"] for a in actions.values()] == [True] * 5 + [False]

    assert check_ran_safely(events, "todo.add(text='buy bread')", traits={"items"}) == {**bread}
    # The model READS the list through the recorded result.
    assert check_ran_safely(events, "todo.list_items(done=False)", traits=set()) == [bank, bread]
    assert check_ran_safely(events, "todo.update(id=2, text='call the bank at 9')", traits={"items"}) == bank_at_9
    done = check_ran_safely(events, "todo.complete(id=2, done=True)", traits={"items"})
    assert done == {**bank_at_9, "done": True}
    assert check_ran_safely(events, "todo.remove(id=1)", traits={"items"}) == milk

    first_save, second_save = [
        e for e in events if e["kind"] == "action_proposed" and e["code"].startswith("todo.save(") and e.get("reply_to")
    ]
    decisions = {e["action_id"]: e for e in events if e["kind"] == "action_decided"}
    executed = {e["action_id"]: e for e in events if e["kind"] == "action_executed"}
    assert first_save["safe"] is False
    assert (decisions[first_save["action_id"]]["decision"], decisions[first_save["action_id"]]["by"]) == (
        "rejected", "policy")
    assert decisions[first_save["action_id"]]["reason"] == NO_ONE_REASON
    assert first_save["action_id"] not in executed
    assert decisions[second_save["action_id"]]["reason"] == "agent mode is auto"
    assert executed[second_save["action_id"]]["ok"] is True

    settings = [e for e in events if e["kind"] == "settings_changed"]
    assert [(s["agent"], s["by"]) for s in settings] == [("auto", "magic")]
    # Refused: nothing recorded as run, and no decision appeared (the metadata one is not read).
    assert not set(refusals.values()) & set(executed)
    assert refusals["unapproved"] not in decisions and refusals["metadata"] not in decisions


# -- the explorer example ------------------------------------------------------------------------

EXPLORER_STATE = (
    "print(json.dumps({'filters': explorer.filters, 'sort_by': explorer.sort_by, 'ascending': explorer.ascending, "
    "'plot': explorer.plot_column, 'rows': [[r['year'], r['region']] for r in explorer._rows]}))"
)


def test_the_model_drives_every_explorer_action(tmp_path: Path, history: History, fake: FakeOllama) -> None:
    notebook = tmp_path / "explorer.ipynb"
    script(
        fake,
        {
            "only 2024 sales": plugin_call("explorer", "filter", {"column": "year", "op": "==", "value": 2024}),
            "BY-REGION": plugin_call("explorer", "sort", {"column": "region", "ascending": True}),
            "CHART-YEARS": plugin_call("explorer", "plot", {"column": "year"}),
            "START-OVER": plugin_call("explorer", "reset", {}),
        },
    )
    cells = [
        *example_cells(EXPLORER),
        EXPLORER_STATE,
        "%%ask\nShow me only 2024 sales.",
        EXPLORER_STATE,
        "%%ask\nBY-REGION please",
        EXPLORER_STATE,
        "%%ask\nCHART-YEARS",
        EXPLORER_STATE,
        "%%ask\nSTART-OVER",
        EXPLORER_STATE,
    ]
    write_notebook(notebook, cells)
    nb, _replies = execute(notebook, fake)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = len(example_cells(EXPLORER))
    assert not [c.source for c in code if any(o.get("output_type") == "error" for o in c.outputs)]

    before = state(code[first])
    assert (before["sort_by"], before["ascending"], before["plot"]) == ("sales", False, "sales")  # the example's own
    assert len(before["rows"]) == 12

    after_filter = state(code[first + 2])
    assert after_filter["filters"] == [{"column": "year", "op": "==", "value": 2024.0}]
    assert {year for year, _ in after_filter["rows"]} == {2024} and len(after_filter["rows"]) == 4

    by_region = state(code[first + 4])
    assert by_region["rows"] == [[2024, r] for r in ("East", "North", "South", "West")]

    assert state(code[first + 6])["plot"] == "year"

    reset = state(code[first + 8])
    assert (reset["filters"], reset["sort_by"], reset["plot"]) == ([], "", "")
    assert len(reset["rows"]) == 12

    events = events_of(history, notebook)
    registered = [e for e in events if e["kind"] == "plugin_registered"]
    assert [(r["plugin"], [a["name"] for a in r["actions"]]) for r in registered] == [
        ("explorer", ["filter", "sort", "plot", "reset"])
    ]
    filtered = check_ran_safely(events, "explorer.filter(column='year', op='==', value=2024)", traits={"filters"})
    assert filtered["rows"] == 4 and {r["year"] for r in filtered["first_rows"]} == {2024}
    check_ran_safely(events, "explorer.sort(column='region', ascending=True)", traits={"sort_by", "ascending"})
    assert check_ran_safely(events, "explorer.plot(column='year')", traits={"plot_column"}) == {
        "plotted": "year", "bars": 4}
    assert check_ran_safely(events, "explorer.reset()", traits={"filters", "sort_by", "plot_column"})["rows"] == 12
    # The rows on screen (_rows) are bookkeeping: never recorded.
    assert {e["trait"] for e in events if e["kind"] == "widget_changed"} <= {
        "filters", "sort_by", "ascending", "plot_column"}


# -- code actions in the kernel: ask offers a cell, auto runs it ----------------------------------


def test_ask_mode_offers_code_as_the_next_cell_and_auto_runs_it(
    tmp_path: Path, history: History, fake: FakeOllama
) -> None:
    notebook = tmp_path / "agent.ipynb"
    marker = tmp_path / "made_by_agent.txt"
    offered = f"with open({str(marker)!r}, 'w') as f:\n    f.write('x')\n"
    auto = "auto_value = 6 * 7\nprint('auto', auto_value)\n"
    script(
        fake,
        {
            "MAKE-FILE": json.dumps({"action": "insert_cell", "text": "This writes the file.", "code": offered,
                                     "after": None}),
            "COMPUTE": json.dumps({"action": "insert_cell", "text": "Computing it.", "code": auto, "after": None}),
        },
    )
    cells = [
        "%load_ext ambient_jupyter",
        "%ambient",
        "%%ask\nMAKE-FILE for me",
        f"import os\nprint(os.path.exists({str(marker)!r}))",
        "%ambient agent=auto",
        "%%ask\nCOMPUTE the answer",
        "print('after', auto_value)",
    ]
    write_notebook(notebook, cells)
    nb, replies = execute(notebook, fake)
    code = nb.cells

    assert "agent:    ask" in stdout(code[1]) and "expert:   none" in stdout(code[1])
    # Ask mode: nothing ran; the exact code is offered as the next cell, for the user to run.
    assert "Proposed, not run" in stdout(code[2])
    assert replies[2]["payload"] == [{"source": "set_next_input", "text": offered, "replace": False}]
    assert stdout(code[3]).strip() == "False" and not marker.exists()

    assert "agent:    auto" in stdout(code[4])
    assert "auto 42" in stdout(code[5]) and "Ran it as cell" in stdout(code[5])
    assert replies[5].get("payload") == []
    assert stdout(code[6]).strip() == "after 42"

    events = events_of(history, notebook)
    offered_events = action_events(events, offered)
    assert offered_events["proposal"]["action"] == "insert_cell"
    assert (offered_events["decided"]["decision"], offered_events["decided"]["reason"]) == ("rejected", NO_ONE_REASON)
    assert offered_events["executed"] is None
    ran = action_events(events, auto)
    assert (ran["decided"]["decision"], ran["decided"]["by"]) == ("approved", "policy")
    cell = next(e for e in events if e["seq"] == ran["executed"]["cell_event_seq"])
    assert cell["kind"] == "cell_executed" and cell["code"] == auto and cell["status"] == "ok"
    assert cell["outputs"] == [{"type": "stream", "name": "stdout", "text": "auto 42\n", "chars": 8}]
    assert [e["code"] for e in events if e["kind"] == "cell_executed"].count(offered) == 0


def test_expert_turns_go_to_the_expert(tmp_path: Path, history: History, fake: FakeOllama) -> None:
    notebook = tmp_path / "expert.ipynb"
    fake.reply = json.dumps({"action": "explain", "text": "The watcher speaks."})
    with FakeOpenAI(["big-model"]) as expert:
        expert.reply = json.dumps({"action": "explain", "text": "The expert speaks."})
        write_notebook(notebook, [
            "%load_ext ambient_jupyter",
            "%%ask --expert\nIs this right?",
            "%ambient expert=openai:big-model",
            "%%ask --expert\nIs this right?",
            "%%ask\nAnd you?",
        ])
        nb, _ = execute(notebook, fake, OPENAI_BASE_URL=expert.base_url)
    code = nb.cells
    assert "No expert model is set" in stderr(code[1])
    assert "expert:   openai:big-model" in stdout(code[2])
    assert "The expert speaks." in stdout(code[3]) and "The watcher speaks." in stdout(code[4])
    asked = events_of(history, notebook, "user_message")
    assert [(m["text"], m["to"]) for m in asked] == [("Is this right?", "expert"), ("And you?", "watcher")]
    replies = events_of(history, notebook, "assistant_message")
    assert [(r["role"], r["model"], r["text"]) for r in replies] == [
        ("expert", "openai:big-model", "The expert speaks."),
        ("watcher", f"ollama:{FAKE_MODEL}", "The watcher speaks."),
    ]


def test_unprompted_reactions_in_the_kernel_only_explain(tmp_path: Path, history: History, fake: FakeOllama) -> None:
    notebook = tmp_path / "react.ipynb"
    marker = tmp_path / "reaction_ran.txt"
    # A model that obeys whatever an output told it: it tries to run code.
    fake.reply = json.dumps({"action": "insert_cell", "text": "Let me fix that.",
                             "code": f"open({str(marker)!r}, 'w').write('x')\n", "after": None})
    write_notebook(notebook, [
        "%load_ext ambient_jupyter",
        "%ambient agent=auto",  # even when the agent may run its own code
        "1 / 0",
        "import time\ntime.sleep(2)",  # the reaction happens while the kernel is idle
    ])
    execute(notebook, fake)
    formats = [body.get("format") for body in fake.chat_requests()]
    assert formats, "the failure was not diagnosed"
    # Only the explain action is offered: one object, action fixed to "explain", nothing but text besides.
    for f in formats:
        assert f["properties"]["action"] == {"const": "explain"}
        assert set(f["properties"]) == {"action", "text"} and f["required"] == ["action", "text"]
        assert f["additionalProperties"] is False and "anyOf" not in f and "oneOf" not in f
    failed = events_of(history, notebook, "cell_executed")[-2]
    replies = events_of(history, notebook, "assistant_message")
    assert replies and all(r["reply_to"] == failed["seq"] for r in replies)
    assert events_of(history, notebook, "action_proposed") == []
    assert not marker.exists()


def test_a_reaction_cut_by_the_kernels_shutdown_is_stored_as_incomplete(
    tmp_path: Path, history: History, fake: FakeOllama
) -> None:
    """The in-kernel host is closed when the kernel is asked to shut down: its reply in
    flight is stored for what it is (incomplete, with what had streamed), not lost."""
    notebook = tmp_path / "cut.ipynb"
    words = [f"w{i} " for i in range(400)]
    fake.reply = ['{"action": "explain", "text": "', *words, '"}']
    fake.token_delay = 0.05  # 20 s in all: nbclient shuts the kernel down long before
    write_notebook(notebook, ["%load_ext ambient_jupyter", "1 / 0", "import time\ntime.sleep(1.5)"])
    execute(notebook, fake)
    (failed,) = [c for c in events_of(history, notebook, "cell_executed") if c["status"] == "error"]
    (reply,) = events_of(history, notebook, "assistant_message")
    assert reply["reply_to"] == failed["seq"] and reply["state"] == "incomplete"
    assert reply["text"] and "".join(words).startswith(reply["text"].strip())


# -- the examples run headless as they ship ------------------------------------------------------


@pytest.mark.parametrize("example", [TODO, EXPLORER], ids=["todo", "explorer"])
def test_example_notebook_runs_headless(example: Path, tmp_path: Path, history: History, fake: FakeOllama) -> None:
    script(
        fake,
        {
            "water the plants": plugin_call("todo", "add", {"text": "water the plants"}),
            "only 2024 sales": plugin_call("explorer", "filter", {"column": "year", "op": "==", "value": 2024}),
        },
    )
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "OLLAMA_HOST": fake.url}
    run = subprocess.run(
        [sys.executable, "-m", "ambient_jupyter", "run", str(example), "-o", str(out), "--no-progress",
         "--model", f"ollama:{FAKE_MODEL}"],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    executed = nbformat.read(out, as_version=4)
    last = stdout(executed.cells[-1])
    assert ("water the plants" in last) if example == TODO else ("filters: [{'column': 'year'" in last)
    assert events_of(history, example, "action_executed")[-1]["ok"] is True
