"""The extension in a plain IPython shell (no kernel, no Session): the VS Code/terminal path."""

from __future__ import annotations

from pathlib import Path

from conftest import events_of
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython

import ambient_jupyter
from ambient_jupyter.history import History


def test_plain_ipython_records_once_even_if_loaded_twice(tmp_path: Path, monkeypatch, ambient_db: Path) -> None:
    notebook = tmp_path / "terminal.ipynb"
    monkeypatch.setenv("AMBIENT_NOTEBOOK", str(notebook))
    monkeypatch.setenv("AMBIENT_QUIET", "1")
    # globalipapp's own get_ipython() gives None once another test has started it.
    start_ipython()
    ip = get_ipython()
    assert ip is not None
    # Called directly (not through %load_ext, which IPython itself guards): our own
    # guard must keep a single recorder.
    ambient_jupyter.load_ipython_extension(ip)
    ambient_jupyter.load_ipython_extension(ip)
    try:
        ip.run_cell("answer = 6 * 7", store_history=True)
        ip.run_cell("answer / 0", store_history=True)
        ip.run_cell("pass", silent=True)  # frontends' plumbing: never recorded
    finally:
        ambient_jupyter.unload_ipython_extension(ip)
    ip.run_cell("after_unload = 1", store_history=True)
    with History(ambient_db) as history:
        cells = events_of(history, notebook, "cell_executed")
    assert [c["code"] for c in cells] == ["answer = 6 * 7", "answer / 0"]
    assert cells[1]["status"] == "error" and cells[1]["error"]["ename"] == "ZeroDivisionError"
