"""A faithful record: for every cell of real third-party notebooks, the history says
what the executed notebook shows (issue 13).

The corpus is nbclient's own test notebooks (``tests/corpus/nbclient``, copied from
jupyter/nbclient at 0811ff4 under its BSD licence) and notebooks of our own that
aim at the messaging protocol's corners. Each is executed twice through the
product: by ``ambient-jupyter run``, and by plain ``jupyter nbconvert --execute``
with ``%load_ext ambient_jupyter`` as its first cell. The executed notebook is the
reference; the record is read back from the history file.

The two sides are normalised independently (nothing here calls the capture code):
a notebook output becomes ``(kind, name, text)`` items, adjacent stream chunks of
one name merged as nbformat and JupyterLab do; the record's outputs become the same
items after its display updates are applied, in order, to the displays they target.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import ROOT

from ambient_jupyter.history import History

CORPUS = ROOT / "tests" / "corpus" / "nbclient"
TRIMMED = "[... trimmed by ambient-jupyter"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


@dataclass
class Case:
    name: str
    checks: str
    """What this notebook exercises, for the person reading a failure."""
    args: list[str] = field(default_factory=list)
    """Extra ``ambient-jupyter run`` flags; the nbconvert equivalents are derived from them."""
    own: list[str] | None = None
    """Cells of a notebook of our own (None: the file of that name in the corpus)."""
    died: bool = False
    """The kernel dies in this notebook: the runner must record it, naming the cell."""


CASES = [
    Case("Output", "Output widgets: prints, an exception, clear_output (waiting or not), nesting; "
         "none of it is the cell's, and each widget's record matches its saved state"),
    Case("Clear Output", "clear_output now and with wait=True, across display ids and later updates"),
    Case("update-display-id", "display ids shown in several cells, updated from later cells and as results"),
    Case("Autokill", "the kernel kills itself: a kernel_died event names the cell", died=True),
    Case("Interrupt", "a cell interrupted at its timeout fails; the next one runs",
         ["--timeout", "3", "--allow-errors"]),
    Case("Unicode", "non-ASCII stream text"),
    Case("UnicodePy3", "non-ASCII stream text, Python 3 kernel"),
    Case("SVG", "an execute_result with image/svg+xml"),
    Case("Inline Image", "an execute_result with a PNG, measured and kept"),
    Case("JupyterWidgets", "a widget display and a custom comm message"),
    Case("Other Comms", "a comm with no frontend handler"),
    Case("Empty Cell", "an empty cell between results"),
    Case("Factorials", "plain stdout across cells"),
    Case("HelloWorld", "one print"),
    Case("Error", "a failing cell: the record's error is the notebook's", ["--allow-errors"]),
    Case("Skip Exceptions", "a failure, then a cell that runs", ["--allow-errors"]),
    Case("Skip Exceptions with Cell Tags", "stdout and stderr before an expected failure (raises-exception)"),
    Case("Skip Execution with Cell Tag", "a cell skipped by tag is not recorded"),
    Case("Disable Stdin", "input() with no stdin fails cleanly", ["--allow-errors"]),
    Case("Sleep1s", "streams with no trailing newline"),
    Case("Check History in Memory", "the kernel's own history is untouched"),
    Case(
        "stream-order",
        "stdout, stderr and displays keep their order; adjacent chunks of one stream merge",
        own=[
            "import sys\nfrom IPython.display import display\n"
            "print('a')\nprint('b', file=sys.stderr)\nprint('c')\ndisplay('d')\nprint('e')",
            "for i in range(3):\n    print(i)\n    sys.stdout.flush()\n    print('err', i, file=sys.stderr)\n"
            "    sys.stderr.flush()",
        ],
    ),
    Case(
        "display-updates",
        "updates to an earlier cell's display survive this cell's clears and its 30-output cap; "
        "a loop of with-blocks on one Output widget",
        own=[
            "from IPython.display import clear_output, display\nh = display('0', display_id=True)",
            "for i in range(3):\n    clear_output(wait=True)\n    h.update(str(i))\n    print(i)",
            "h.update('final')\nclear_output()",
            "g = display('first', display_id=True)",
            "for i in range(30):\n    display(i)\ng.update('LATE')",
            "own = display('mine', display_id=True)\nclear_output()\nown.update('nobody sees this')\nprint('shown')",
            "import ipywidgets as w\nout = w.Output()\nout",
            "for i in range(50):\n    with out:\n        print('turn', i)",
        ],
    ),
    Case(
        "widgets-corners",
        "Output widgets through capture(), a handled error inside one, a Box of an Image (bytes) and ANSI text",
        own=[
            "import ipywidgets as w\nout = w.Output()\nout",
            "@out.capture(clear_output=True)\ndef shout(x):\n    print('\\x1b[31m' + x + '\\x1b[0m')\n"
            "shout('first')\nshout('second')\nprint('cell text')",
            "with out:\n    1 / 0\nprint('after the handled error')",
            "import base64\npng = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
            "DwAEhQGAhKmMIQAAAABJRU5ErkJggg==')\nbox = w.HBox([w.Image(value=png), w.Label('one pixel')])\nbox",
            "from IPython.display import display\nh = display('before', display_id=True)\nh.update('after')",
        ],
    ),
]


# -- executing the corpus -------------------------------------------------------------


def _source(case: Case, folder: Path) -> Path:
    path = folder / f"{case.name}.ipynb"
    if case.own is None:
        shutil.copy(CORPUS / path.name, path)
        shutil.copy(CORPUS / "python.png", folder)  # what Inline Image shows
    else:
        nb = nbformat.v4.new_notebook(
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        )
        nb.cells = [nbformat.v4.new_code_cell(c) for c in case.own]
        nbformat.write(nb, path)
    return path


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AMBIENT_NOTEBOOK", "AMBIENT_HOST", "JPY_SESSION_NAME")}
    # Recording only: no model is consulted, so nothing here depends on one.
    return {**env, "AMBIENT_DB": str(db), "AMBIENT_QUIET": "1", "NBEXECUTE_TEST_PARALLEL_TMPDIR": str(db.parent)}


def _run(case: Case, folder: Path, db: Path) -> subprocess.CompletedProcess[str]:
    src = _source(case, folder)
    command = [sys.executable, "-m", "ambient_jupyter", "run", str(src), "-o", str(folder / f"{case.name}.out.ipynb"),
               "--kernel", "python3", "--no-progress", *case.args]
    return subprocess.run(command, cwd=folder, env=_env(db), capture_output=True, text=True, timeout=240)


def _nbconvert(case: Case, folder: Path, db: Path) -> subprocess.CompletedProcess[str]:
    src = _source(case, folder)
    nb = nbformat.read(src, as_version=4)
    load = nbformat.v4.new_code_cell("%load_ext ambient_jupyter")
    if int(nb.get("nbformat_minor", 5)) < 5:
        load.pop("id")  # cell ids exist from nbformat 4.5 on
    nb.cells.insert(0, load)
    # nbconvert refuses to write a notebook that fails validation, and some of the corpus
    # does (a kernelspec with no name, older than the rule): name the kernel it runs.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    flags = ["--ExecutePreprocessor.kernel_name=python3"]
    if "--allow-errors" in case.args:
        flags.append("--allow-errors")
    if "--timeout" in case.args:
        seconds = case.args[case.args.index("--timeout") + 1]
        flags += [f"--ExecutePreprocessor.timeout={seconds}", "--ExecutePreprocessor.interrupt_on_timeout=True"]
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", *flags,
               "--output", f"{case.name}.out.ipynb", src.name]
    return subprocess.run(command, cwd=folder, env=_env(db), capture_output=True, text=True, timeout=60)


@dataclass
class Executed:
    case: Case
    source: Path
    output: Path
    proc: subprocess.CompletedProcess[str]
    db: Path
    offset: int
    """Cells in the executed notebook that are not the corpus notebook's (the nbconvert %load_ext cell)."""


NBCONVERT_ATTEMPTS = 3
"""Plain nbconvert (nbclient) can hang for good on Output widgets on a loaded machine: its
Output-widget mimic sends on the shell socket while it polls that socket for the reply,
and the poll misses the reply (ZeroMQ's edge-triggered descriptor). ``ambient-jupyter
run`` works around it (``cell_driver._poll_in_slices``); nbconvert is not ours to patch,
so a hung nbconvert is retried, in a fresh folder with a fresh history."""


def _execute_all(tmp: Path, how: str) -> dict[str, Executed]:
    def one(case: Case) -> Executed:
        slug = re.sub(r"\W+", "-", case.name)
        for attempt in range(NBCONVERT_ATTEMPTS if how == "nbconvert" else 1):
            folder = tmp / f"{slug}-{attempt}"
            folder.mkdir()
            db = folder / "history.sqlite"
            try:
                proc = (_run if how == "run" else _nbconvert)(case, folder, db)
            except subprocess.TimeoutExpired:
                if how == "run" or attempt + 1 == NBCONVERT_ATTEMPTS:
                    raise
                print(f"nbconvert hung on {case.name} (attempt {attempt + 1}); retrying")
                continue
            return Executed(case, folder / f"{case.name}.ipynb", folder / f"{case.name}.out.ipynb", proc, db,
                            0 if how == "run" else 1)
        raise AssertionError("unreachable")

    # Three at a time on two cores: every notebook has a kernel of its own, and the
    # runner must not hang under load (it did, before _poll_in_slices).
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(one, CASES))
    return {e.case.name: e for e in done}


@pytest.fixture(scope="module")
def by_runner(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Executed]:
    return _execute_all(tmp_path_factory.mktemp("runner"), "run")


@pytest.fixture(scope="module")
def by_nbconvert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Executed]:
    return _execute_all(tmp_path_factory.mktemp("nbconvert"), "nbconvert")


# -- the two sides, normalised ----------------------------------------------------------


Item = tuple[str, str, str]


def _text(value: Any) -> str:
    return ANSI.sub("", "".join(value) if isinstance(value, list) else str(value))


def _data_items(kind: str, data: dict[str, Any]) -> list[Item]:
    # A picture is recorded as its type and size: compare both.
    items: list[Item] = [
        ("image", mime, "" if mime == "image/svg+xml" else str(len(base64.b64decode(_text(value)))))
        for mime, value in data.items()
        if mime.startswith("image/")
    ]
    if "text/plain" in data:
        items.append((kind, "", _text(data["text/plain"])))
    else:
        rich = [m for m in data if not m.startswith("image/")]
        if rich:
            items.append((kind, "", f"<{rich[0]}>"))
    return items


def notebook_items(outputs: list[dict[str, Any]], failed: bool) -> tuple[list[Item], Item | None]:
    """What a notebook cell shows, and its failure (the last error, when the record says it failed)."""
    items: list[Item] = []
    errors = [i for i, o in enumerate(outputs) if o["output_type"] == "error"]
    failure_at = errors[-1] if failed and errors else -1
    failure = None
    for i, out in enumerate(outputs):
        kind = out["output_type"]
        if kind == "stream":
            text = _text(out["text"])
            if items and items[-1][0] == "stream" and items[-1][1] == out["name"]:
                items[-1] = ("stream", out["name"], items[-1][2] + text)
            else:
                items.append(("stream", out["name"], text))
        elif kind == "error":
            item = ("display", "", f"{out['ename']}: {_text(out['evalue'])}")
            if i == failure_at:
                failure = item
            else:
                items.append(item)
        else:
            items.extend(_data_items("result" if kind == "execute_result" else "display", out.get("data", {})))
    return items, failure


def record_items(cells: list[dict[str, Any]]) -> list[list[Item]]:
    """Each recorded cell's outputs, after every display update is applied where it lands.

    The contract: an output with a ``display_id`` (a display, a result or an ``update``)
    makes every earlier output with that id show its text; an ``update`` shows nothing
    where it was sent.
    """
    shown: list[list[dict[str, Any]]] = []
    for cell in cells:
        mine: list[dict[str, Any]] = []
        for out in cell["outputs"]:
            display_id = out.get("display_id")
            if display_id and out["type"] != "image":
                for earlier in [o for c in shown for o in c] + mine:
                    if earlier.get("display_id") == display_id and earlier["type"] in ("display", "result"):
                        earlier["text"] = out["text"]
            if out["type"] != "update" and not out.get("update"):
                mine.append(dict(out))
        shown.append(mine)
    return [
        [(o["type"], o.get("name", o.get("mime", "")), _record_text(o)) for o in cell] for cell in shown
    ]


def _record_text(out: dict[str, Any]) -> str:
    if out["type"] == "image":
        return "" if out["mime"] == "image/svg+xml" else str(out["bytes"])
    return str(out.get("text", ""))


def _same_text(recorded: str, expected: str) -> bool:
    if TRIMMED not in recorded:
        return recorded == expected
    head, _, rest = recorded.partition("\n" + TRIMMED)
    tail = rest.split("...]\n", 1)[-1]
    return expected.startswith(head) and expected.endswith(tail)


def _assert_same(recorded: list[Item], expected: list[Item], where: str) -> None:
    assert [(k, n) for k, n, _ in recorded] == [(k, n) for k, n, _ in expected], where
    for (kind, name, got), (_, _, want) in zip(recorded, expected, strict=True):
        assert _same_text(got, want), f"{where}: {kind} {name}: recorded {got!r}, the notebook shows {want!r}"


# -- the checks -------------------------------------------------------------------------


def _events(run: Executed, notebook: Path) -> list[dict[str, Any]]:
    with History(run.db) as history:
        return history.read(str(notebook))


def _check(run: Executed) -> None:
    case = run.case
    assert run.output.exists(), f"{case.name}: no executed notebook\n{run.proc.stderr[-3000:]}"
    executed = nbformat.read(run.output, as_version=4)
    events = _events(run, run.source)
    assert events, f"{case.name}: nothing recorded under {run.source}\n{run.proc.stderr[-3000:]}"
    recorded = [e for e in events if e["kind"] == "cell_executed"]
    # The cells that ran, in order (a cell skipped by tag, or after a dead kernel, did not).
    code_cells = [c for c in executed.cells[run.offset:] if c.cell_type == "code"]
    # A cell the kernel died in never finished: its record is the host's kernel_died event.
    ran = [c for c in code_cells if c.get("execution_count") is not None and not _died_in(c)]
    assert [e["code"] for e in recorded] == [c.source for c in ran], f"{case.name}: the recorded cells"
    assert [e["execution_count"] for e in recorded] == [c.execution_count for c in ran], case.name
    shown = record_items(recorded)
    for cell, event, items in zip(ran, recorded, shown, strict=True):
        where = f"{case.name}, cell [{cell.execution_count}] ({case.checks})"
        expected, failure = notebook_items(cell.outputs, event["status"] == "error")
        _assert_same(items, expected, where)
        if event["status"] == "error":
            assert failure is not None, f"{where}: recorded as failed, the notebook shows no error"
            error = event["error"]
            assert f"{error['ename']}: {error['evalue']}" == failure[2], where
        else:
            assert event["error"] is None, where
    _check_output_widgets(case, executed, events)


def _died_in(cell: nbformat.NotebookNode) -> bool:
    return any(o.get("ename") == "DeadKernelError" for o in cell.get("outputs", []))


def _check_output_widgets(case: Case, executed: nbformat.NotebookNode, events: list[dict[str, Any]]) -> None:
    """Each Output widget's last recorded ``outputs`` is what the notebook saved for it."""
    state = executed.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    saved = {
        model_id: model["state"].get("outputs", [])
        for model_id, model in state.get("state", {}).items()
        if model.get("model_name") == "OutputModel"
    }
    last: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["kind"] == "widget_changed" and event["widget_class"] == "Output" and event["trait"] == "outputs":
            last[event["widget"]] = event["new"]
    for model_id, outputs in saved.items():
        if not outputs:
            assert not last.get(model_id), f"{case.name}: Output {model_id[:8]} is empty in the notebook"
            continue
        assert model_id in last, f"{case.name}: Output {model_id[:8]} shows {outputs} but has no record"
        expected, _ = notebook_items(outputs, failed=False)
        got = [(o["type"], o.get("name", o.get("mime", "")), o.get("text", "")) for o in last[model_id]]
        _assert_same(got, expected, f"{case.name}: Output widget {model_id[:8]}")


def _ids() -> list[Any]:
    return [pytest.param(case.name, id=case.name) for case in CASES]


@pytest.mark.parametrize("name", _ids())
def test_the_record_matches_the_notebook_under_the_runner(by_runner: dict[str, Executed], name: str) -> None:
    run = by_runner[name]
    _check(run)
    if run.case.died:
        died = [e for e in _events(run, run.source) if e["kind"] == "kernel_died"]
        executed = nbformat.read(run.output, as_version=4)
        assert [d["code"] for d in died] == [c.source for c in executed.cells if _died_in(c)] == [
            executed.cells[0].source
        ], "the kernel_died event names the cell"
        assert run.proc.returncode == 1


@pytest.mark.parametrize("name", _ids())
def test_the_record_matches_the_notebook_under_nbconvert(by_nbconvert: dict[str, Executed], name: str) -> None:
    run = by_nbconvert[name]
    if run.case.died:
        # nbconvert writes nothing when the kernel dies, and no host is there to see the
        # death: the record holds the cells that finished (here only the extension's own).
        assert run.proc.returncode != 0 and "DeadKernelError" in run.proc.stderr
        assert not run.output.exists()
        assert [e["kind"] for e in _events(run, run.source) if e["kind"] == "cell_executed"] == []
        return
    _check(run)


def test_output_widgets_take_their_outputs_away_from_the_cell(by_runner: dict[str, Executed]) -> None:
    """The finding this issue began with, said outright: nothing printed, raised or cleared
    inside ``with out:`` is the cell's, and the exception there is not a failure."""
    run = by_runner["Output"]
    cells = [e for e in _events(run, run.source) if e["kind"] == "cell_executed"]
    texts = json.dumps([c["outputs"] for c in cells])
    for inside in ("in output", "trigger msg_type=error", "hello world", "in inner", "in outer"):
        assert inside not in texts, inside
    assert all(c["status"] == "ok" for c in cells)
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]


def test_parallel_notebooks_each_keep_their_own_record(tmp_path: Path) -> None:
    """nbclient's two notebooks that wait for each other, run at once: two identities, two records."""
    db = tmp_path / "history.sqlite"
    cases = {label: Case(f"Parallel Execute {label}", "two notebooks at once") for label in ("A", "B")}
    folders = {label: tmp_path / label for label in cases}
    for folder in folders.values():
        folder.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {label: pool.submit(_run, case, folders[label], db) for label, case in cases.items()}
        procs = {label: future.result() for label, future in futures.items()}
    for label, case in cases.items():
        proc = procs[label]
        assert proc.returncode == 0, proc.stderr[-2000:]
        folder = folders[label]
        _check(Executed(case, folder / f"{case.name}.ipynb", folder / f"{case.name}.out.ipynb", proc, db, 0))


def test_a_loop_of_blocks_on_one_output_widget_is_one_change(by_runner: dict[str, Executed]) -> None:
    """50 ``with out:`` blocks in one cell are one recorded change of the widget, after the
    cell, holding what the widget shows: the record grows with cells, not with blocks."""
    run = by_runner["display-updates"]
    events = _events(run, run.source)
    loop = next(i for i, e in enumerate(events) if e["kind"] == "cell_executed" and "range(50)" in e["code"])
    changes = [e for e in events[loop + 1 :] if e["kind"] == "widget_changed"]
    assert len(changes) == 1 and changes[0]["trait"] == "outputs"
    assert changes[0]["new"] == [{"type": "stream", "name": "stdout",
                                  "text": "".join(f"turn {i}\n" for i in range(50)), "chars": 390}]
