"""Hints and state recorded by a real kernel: only for failed cells, bounded, and harmless to the kernel."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from conftest import events_of, make_notebook, run_with_nbclient

from ambient_jupyter.history import History

QUIET = {"AMBIENT_QUIET": "1"}  # recording only: no model is loaded here

HOSTILE = """
import time
class Hostile:
    # The cell's own access fails at once; everything the analysis might touch does not.
    def __dir__(self):
        time.sleep(10)
        return []
    def __len__(self):
        time.sleep(10)
        return 0
    def __repr__(self):
        raise SystemExit('not today')
h = Hostile()
"""


def seconds(cell: Any) -> float:
    timing = cell.metadata["execution"]
    started = dt.datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
    replied = dt.datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    return (replied - started).total_seconds()


def test_a_failed_cell_carries_hints_and_state_a_good_one_does_not(tmp_path: Path, history: History) -> None:
    cells = [
        "%load_ext ambient_jupyter",
        "import pandas as pd\nsales = pd.DataFrame({'Region': ['N', 'S'], 'units': [3, 4]})",
        "n = len(sales)",
        "sales.groupby('region')['units'].sum()",
        "print(later * 2)",
        "later = 21",
        HOSTILE,
        "h.valeu",
        "print('still working', n)",
    ]
    nb = make_notebook(tmp_path / "hints.ipynb", cells)
    out = run_with_nbclient(nb, env={**QUIET, "AMBIENT_NOTEBOOK": str(nb)})
    recorded = events_of(history, nb, "cell_executed")
    by_code = {c["code"]: c for c in recorded}

    # A successful cell: no analysis was made, nothing extra was stored.
    assert "hints" not in by_code[cells[2]] and "state" not in by_code[cells[2]]

    failed = by_code[cells[3]]
    [hint] = failed["hints"]
    assert hint["kind"] == "column" and hint["candidates"] == ["Region"]
    assert hint["fix"] == "sales.groupby('Region')['units'].sum()"
    state = {e["name"]: e for e in failed["state"]}
    assert state["sales"]["type"] == "pandas.DataFrame"
    assert "Region" in state["sales"]["text"] and "units" in state["sales"]["text"]

    # The notebook's own cells say where the missing name is defined.
    order = by_code[cells[4]]["hints"][0]
    assert order["kind"] == "out_of_order" and order["fix"] == "later = 21\nprint(later * 2)"

    # A hostile object: its __dir__ and __len__ sleep, its __repr__ raises SystemExit.
    hostile = by_code[cells[7]]
    assert hostile["status"] == "error" and hostile["error"]["ename"] == "AttributeError"
    took = seconds(out.cells[7])
    print(f"failed cell with a hostile object: {took:.2f}s from execute_input to execute_reply")
    assert took < 2.0, f"the analysis of a hostile object took {took:.2f}s"
    assert all("fix" not in h for h in hostile.get("hints", []))
    # ...and the kernel carried on, recording as before.
    assert by_code[cells[8]]["status"] == "ok"
    assert "still working 2" in json.dumps(by_code[cells[8]]["outputs"])


def test_a_notebook_that_is_not_on_disk_only_loses_the_out_of_order_hint(tmp_path: Path, history: History) -> None:
    cells = ["%load_ext ambient_jupyter", "print(later * 2)", "later = 21", "print('next')"]
    nb = make_notebook(tmp_path / "gone.ipynb", cells)
    elsewhere = tmp_path / "never-saved.ipynb"  # the kernel is told of a notebook that is not there
    run_with_nbclient(nb, env={**QUIET, "AMBIENT_NOTEBOOK": str(elsewhere)})
    recorded = events_of(history, elsewhere, "cell_executed")
    assert [c["code"] for c in recorded] == cells[1:]
    assert recorded[0]["hints"][0]["kind"] == "name" and "fix" not in recorded[0]["hints"][0]
    assert recorded[-1]["status"] == "ok"
