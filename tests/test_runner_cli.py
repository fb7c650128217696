"""``ambient-jupyter run | history | models`` and ``%%ask``, on the real embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, events_of, make_notebook, run_with_nbclient

from ambient_jupyter.history import History

TOUR = ROOT / "notebooks" / "tour.ipynb"


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambient_jupyter", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.model
def test_tour_runs_headless_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "tour.out.ipynb"
    run = cli("run", str(TOUR), "-o", str(out), "--model", "embedded", "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ambient> " in run.stdout  # the diagnosis streamed to the terminal
    # The kernel's channels are private Unix sockets, not plaintext TCP (ipykernel warns about TCP).
    assert "without encryption" not in run.stderr, run.stderr[-3000:]
    assert out.exists()

    listed = cli("history", "--json", "--notebook", str(TOUR))
    assert listed.returncode == 0, listed.stderr
    events = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    # One cell_executed per code cell, in order, with the code as written; %%ask is
    # recorded as chat instead.
    tour = nbformat.read(TOUR, as_version=4)
    code_cells = [c.source for c in tour.cells if c.cell_type == "code"]
    cells = [e for e in events if e["kind"] == "cell_executed"]
    assert [c["code"] for c in cells] == [c for c in code_cells if not c.startswith("%%ask")]

    failed = [c for c in cells if c["status"] == "error"]
    assert [f["error"]["ename"] for f in failed] == ["AttributeError"]

    slider = [e for e in events if e["kind"] == "widget_changed"]
    assert [(s["widget_class"], s["trait"], s["old"], s["new"]) for s in slider] == [("IntSlider", "value", 7, 28)]

    # The embedded model diagnosed the failure on its own, right after it.
    replies = [e for e in events if e["kind"] == "assistant_message"]
    diagnosis = replies[0]
    assert diagnosis["model"] == "embedded"
    assert diagnosis["reply_to"] == failed[0]["seq"]
    assert diagnosis["state"] == "complete" and diagnosis["text"].strip()
    assert diagnosis["seq"] > failed[0]["seq"]

    # The %%ask cell: question and answer stored like chat, answer in the cell output.
    asked = [e for e in events if e["kind"] == "user_message"]
    assert asked and asked[0]["source"] == "magic"
    answer = [r for r in replies if r["reply_to"] == asked[0]["seq"]]
    assert answer and answer[0]["text"].strip()
    executed = nbformat.read(out, as_version=4)
    ask_cell = next(c for c in executed.cells if c.cell_type == "code" and c.source.startswith("%%ask"))
    streamed = "".join(o.get("text", "") for o in ask_cell.outputs if o.output_type == "stream")
    assert answer[0]["text"].strip() in streamed

    text = cli("history", "--notebook", str(TOUR))
    assert "AttributeError" in text.stdout and "IntSlider" in text.stdout

    after = cli("history", "--json", "--notebook", str(TOUR), "--after", str(events[-3]["seq"]))
    assert [json.loads(line)["seq"] for line in after.stdout.splitlines()] == [e["seq"] for e in events[-2:]]


@pytest.mark.model
def test_ask_magic_under_plain_nbclient_streams_and_records(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "ask.ipynb", [
        "%load_ext ambient_jupyter",
        "prices = [3, 5, 8]\nsum(prices)",
        "%%ask\nWhat is the total of the prices?",
    ])
    executed = run_with_nbclient(nb, env={"AMBIENT_MODEL": "embedded", "AMBIENT_NOTEBOOK": str(nb)})
    streamed = "".join(o.get("text", "") for o in executed.cells[2].outputs if o.output_type == "stream")
    events = events_of(history, nb)
    kinds = [e["kind"] for e in events]
    # What the question names was looked at in the kernel first, then asked and answered.
    assert kinds[:4] == ["cell_executed", "kernel_state", "user_message", "assistant_message"]
    # The answer is a JSON action: it may also propose something (never run unapproved).
    assert set(kinds[4:]) <= {"action_proposed", "action_decided"}, kinds
    state, question, answer = events[1], events[2], events[3]
    assert state["entries"][0]["name"] == "prices" and "len 3" in state["entries"][0]["text"]
    assert question == {**question, "text": "What is the total of the prices?", "source": "magic"}
    assert answer["state"] == "complete" and answer["model"] == "embedded"
    assert answer["reply_to"] == question["seq"]
    assert answer["text"].strip() and answer["text"].strip() in streamed


def test_run_exit_code_and_quiet(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "broken.ipynb", ["a = 1", "undefined_name + 1", "b = 2"])
    run = cli("run", str(nb), "--quiet", "--no-progress")
    assert run.returncode == 1
    out = nbformat.read(tmp_path / "broken.run.ipynb", as_version=4)
    assert out.cells[1].outputs[0]["ename"] == "NameError"
    assert "execution_count" not in out.cells[2] or out.cells[2].execution_count is None
    events = events_of(history, nb)
    # Recorded without any %load_ext in the notebook; quiet: no reply at all.
    assert [e["kind"] for e in events] == ["cell_executed", "cell_executed"]
    assert events[1]["error"]["ename"] == "NameError"

    allowed = cli("run", str(nb), "--quiet", "--allow-errors", "--no-progress")
    assert allowed.returncode == 1
    assert [e["code"] for e in events_of(history, nb, "cell_executed")][-1] == "b = 2"


def test_an_early_stop_leaves_no_stale_outputs(tmp_path: Path, history: History) -> None:
    """Cells the run never reached show nothing from an earlier run, as nbconvert's would."""
    nb = make_notebook(tmp_path / "stale.ipynb", ["a = 1", "undefined_name + 1", "print('old')", "", "x = 2"])
    source = nbformat.read(nb, as_version=4)
    old = nbformat.v4.new_output("stream", name="stdout", text="from last week\n")
    for index in (0, 2, 4):
        source.cells[index].outputs = [old]
        source.cells[index].execution_count = 40 + index
    source.cells[4].metadata["tags"] = ["skip-execution"]  # nbclient leaves such a cell as it is
    nbformat.write(source, nb)
    run = cli("run", str(nb), "--quiet", "--no-progress")
    assert run.returncode == 1
    out = nbformat.read(tmp_path / "stale.run.ipynb", as_version=4)
    assert out.cells[0].outputs == [] and out.cells[0].execution_count == 1  # this run's
    assert out.cells[1].outputs[0]["ename"] == "NameError"
    assert (out.cells[2].outputs, out.cells[2].execution_count) == ([], None)  # never reached
    assert out.cells[4].outputs == [old] and out.cells[4].execution_count == 44


def test_run_reports_a_missing_model_clearly(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "nomodel.ipynb", ["1/0"])
    run = cli("run", str(nb), "--model", "ollama:gemma2:2b", "--no-progress")
    assert run.returncode == 1
    replies = events_of(history, nb, "assistant_message")
    assert [r["state"] for r in replies] == ["error"]
    errors = events_of(history, nb, "model_error")
    assert "ollama serve" in errors[0]["message"] and "127.0.0.1:9" in errors[0]["message"]


def test_models_and_bad_arguments() -> None:
    listed = cli("models")
    assert "embedded" in listed.stdout and "ready" in listed.stdout
    assert "unavailable at http://127.0.0.1:9" in listed.stdout
    missing = cli("run", "no/such/notebook.ipynb")
    assert missing.returncode == 2 and "no notebook at" in missing.stderr


def test_history_of_a_notebook_with_no_events_says_so(tmp_path: Path, history: History) -> None:
    """Under nbconvert the kernel cannot know the notebook: its events sit under a kernel id."""
    history.append(f"kernel:{tmp_path}/3f2a", {"kind": "cell_executed", "code": "x = 1", "status": "ok"})
    history.append(str(tmp_path / "other.ipynb"), {"kind": "cell_executed", "code": "y = 2", "status": "ok"})
    missing = cli("history", "--notebook", str(tmp_path / "report.ipynb"))
    assert missing.returncode == 1
    assert f"no events recorded for {tmp_path / 'report.ipynb'}" in missing.stderr
    listed = missing.stderr.splitlines()[2:]
    assert listed[0].strip() == f"kernel:{tmp_path}/3f2a", missing.stderr
    assert missing.stdout == ""


def test_history_shows_a_failures_hints_and_a_proposals_diff_as_the_run_does(tmp_path: Path, history: History) -> None:
    """``history`` and ``run`` print code, diffs and hints one way; text from the notebook cannot drive the terminal."""
    nb = str(tmp_path / "nb.ipynb")
    hint = {"kind": "name", "text": "`dat` is not defined. Did you mean `data`?\x1b[2K", "change": "'dat' → 'data'"}
    error = {"ename": "NameError", "evalue": "name 'dat' is not defined"}
    code = "a = 1\n\nprint(dat)\n"
    history.append(nb, {"kind": "cell_executed", "execution_count": 1, "status": "error", "code": code,
                        "error": error, "hints": [hint]})
    diff = [["-", "print(dat)"], ["+", "print(data)"]]
    history.append(nb, {"kind": "action_proposed", "action": "edit_cell", "action_id": "a1", "code": "print(data)",
                        "sha256": "0" * 64, "args": {}, "model": "m", "diff": diff})
    shown = cli("history", "--notebook", nb)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("#1 ") and lines[0].endswith(" cell [1] error 0 ms"), shown.stdout
    # Every line of the code keeps its gutter, the blank one too; the hint and its fix follow the error.
    assert lines[1:7] == [
        "    | a = 1",
        "    | ",
        "    | print(dat)",
        "    ! NameError: name 'dat' is not defined",
        "    hint: `dat` is not defined. Did you mean `data`?\\x1b[2K",
        "    fix:  'dat' → 'data'",
    ], shown.stdout
    assert lines[7].startswith("#2 ") and lines[7].endswith(" proposed by m: edit_cell {}"), shown.stdout
    assert lines[8:] == ["    - print(dat)", "    + print(data)"], shown.stdout


def test_a_kernel_death_is_recorded_and_written(tmp_path: Path, history: History) -> None:
    """The kernel cannot record its own death: the runner does, and the model is told."""
    killer = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    nb = make_notebook(tmp_path / "dies.ipynb", ["a = 1", killer, "b = 2"])
    run = cli("run", str(nb), "--quiet", "--no-progress")
    assert run.returncode == 1
    assert "the kernel died while running cell 2" in run.stderr
    kinds = [e["kind"] for e in events_of(history, nb)]
    assert kinds == ["cell_executed", "kernel_died"]
    (died,) = events_of(history, nb, "kernel_died")
    assert (died["code"], died["cell_index"], died["by"]) == (killer, 1, "runner")
    out = nbformat.read(tmp_path / "dies.run.ipynb", as_version=4)
    assert out.cells[1].outputs[0]["ename"] == "DeadKernelError"
    assert out.cells[2].outputs == [] and out.cells[2].execution_count is None
    from ambient_jupyter.context import Transcript

    transcript = Transcript(budget=4000, count_tokens=len)
    transcript.extend(history.read(str(nb)))
    assert "the kernel died while this cell ran" in json.dumps(transcript.messages())


@pytest.mark.parametrize("tool", ["nbconvert", "execute"])
def test_jupyter_nbconvert_execute_records_under_the_notebooks_own_path(
    tmp_path: Path, history: History, tool: str
) -> None:
    """nbconvert gives the kernel no notebook path; its command line names the notebook."""
    nb = make_notebook(tmp_path / "report.ipynb", ["%load_ext ambient_jupyter", "total = 6 * 7"])
    (tmp_path / "other.ipynb").write_text(nb.read_text())  # a second notebook in the folder
    env = {k: v for k, v in os.environ.items() if k not in ("AMBIENT_NOTEBOOK", "JPY_SESSION_NAME")}
    command = (
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "report.ipynb",
         "--output", "report.out.ipynb"]
        if tool == "nbconvert"
        else [str(Path(sys.executable).with_name("jupyter-execute")), "report.ipynb"]
    )
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = events_of(history, nb, "cell_executed")
    assert [c["code"] for c in cells] == ["total = 6 * 7"]
    assert not [p for p, *_ in history.notebooks() if p.startswith("kernel:")]
