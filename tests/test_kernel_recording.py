"""The kernel extension on a real ipykernel: what gets recorded, and only once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import events_of, make_notebook, run_with_nbclient

from ambient_jupyter.history import History

QUIET = {"AMBIENT_QUIET": "1"}  # recording only: no model is loaded in these tests

CELLS = [
    "%load_ext ambient_jupyter",
    "total = sum(range(10))\nprint('total', total)",
    "import ipywidgets as widgets\nslider = widgets.IntSlider(value=3, description='speed')\nslider",
    "slider.value = 9",
    "{'a': 1}['b']",
    "%load_ext ambient_jupyter",
    "total * 2",
]


def _only_notebook(history: History) -> str:
    books = history.notebooks()
    assert len(books) == 1, books
    return books[0][0]


def _check_standard_run(history: History, notebook: str) -> None:
    cells = events_of(history, notebook, "cell_executed")
    # One event per executed code cell, in order, with the exact code (the first
    # %load_ext ran before recording started, so it is not in the history).
    assert [c["code"] for c in cells] == CELLS[1:]
    assert [c["execution_count"] for c in cells] == list(range(2, len(CELLS) + 1))
    assert cells[0]["outputs"] == [{"type": "stream", "name": "stdout", "text": "total 45\n", "chars": 9}]
    failed = [c for c in cells if c["status"] == "error"]
    assert len(failed) == 1
    assert failed[0]["code"] == "{'a': 1}['b']"
    assert failed[0]["error"]["ename"] == "KeyError"
    assert all("\x1b[" not in line for line in failed[0]["error"]["traceback"])
    assert cells[-1]["outputs"] == [{"type": "result", "text": "90"}]
    widget = events_of(history, notebook, "widget_changed")
    assert [(w["widget_class"], w["description"], w["trait"], w["old"], w["new"]) for w in widget] == [
        ("IntSlider", "speed", "value", 3, 9)
    ]
    seqs = [e["seq"] for e in history.read(notebook)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_plain_nbclient_records_cells_errors_and_widgets(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "plain.ipynb", CELLS)
    run_with_nbclient(nb, env=QUIET)
    # No host told the kernel which notebook this is: it falls back to a per-kernel id.
    notebook = _only_notebook(history)
    assert notebook.startswith("kernel:")
    _check_standard_run(history, notebook)


def test_notebook_identity_from_the_environment(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "named.ipynb", CELLS)
    # Jupyter Server sets JPY_SESSION_NAME for a notebook's kernel.
    run_with_nbclient(nb, env={**QUIET, "JPY_SESSION_NAME": str(nb)})
    assert _only_notebook(history) == str(nb)
    _check_standard_run(history, str(nb))


def test_nbconvert_execute_records_the_same(tmp_path: Path, history: History, monkeypatch) -> None:
    nb = make_notebook(tmp_path / "conv.ipynb", [*CELLS[:4], CELLS[5], CELLS[6], CELLS[4]])
    monkeypatch.setenv("AMBIENT_QUIET", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--allow-errors", "--output", "conv.out.ipynb", str(nb)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    notebook = _only_notebook(history)
    kinds = {e["kind"] for e in history.read(notebook)}
    assert kinds == {"cell_executed", "widget_changed"}
    cells = events_of(history, notebook, "cell_executed")
    assert [c["status"] for c in cells] == ["ok"] * 5 + ["error"]
    assert cells[-1]["error"]["ename"] == "KeyError"


# The kernel's open file descriptors on the history file (the database, not -wal/-shm).
_OPEN_ON_HISTORY = (
    "import os\n"
    "print(sum(os.path.realpath(f'/proc/self/fd/{fd}') == os.path.realpath(os.environ['AMBIENT_DB'])"
    " for fd in os.listdir('/proc/self/fd')))"
)


def test_unload_stops_recording(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "unload.ipynb", [
        "%load_ext ambient_jupyter", "a = 1", _OPEN_ON_HISTORY, "%unload_ext ambient_jupyter", "b = 2",
        _OPEN_ON_HISTORY, "%load_ext ambient_jupyter", "c = 3",
    ])
    ran = run_with_nbclient(nb, env={**QUIET, "AMBIENT_NOTEBOOK": str(nb)})
    codes = [c["code"] for c in events_of(history, nb, "cell_executed")]
    # "%unload_ext" itself finishes after recording stopped; "b = 2" is not recorded.
    assert codes == ["a = 1", _OPEN_ON_HISTORY, "c = 3"]
    # Unloading closes the history: a kernel that loads and unloads keeps no connection.
    loaded, unloaded = (ran.cells[i].outputs[0]["text"].strip() for i in (2, 5))
    assert (loaded, unloaded) == ("1", "0")


def test_widget_change_from_a_frontend_is_recorded(tmp_path: Path, history: History, monkeypatch) -> None:
    """A comm message from the frontend (a person dragging the slider) becomes an event."""
    from jupyter_client.manager import start_new_kernel

    notebook = str(tmp_path / "frontend.ipynb")
    monkeypatch.setenv("AMBIENT_NOTEBOOK", notebook)
    monkeypatch.setenv("AMBIENT_QUIET", "1")
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext ambient_jupyter", timeout=30)
        reply = kc.execute_interactive(
            "import ipywidgets as w\ns = w.FloatSlider(value=0.5, description='alpha')\ns.model_id",
            timeout=30, user_expressions={"id": "s.model_id"},
        )
        comm_id = reply["content"]["user_expressions"]["id"]["data"]["text/plain"].strip("'")
        # What JupyterLab's widget manager sends when the user drags the slider.
        msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
            "method": "update", "state": {"value": 0.75}, "buffer_paths": []}})
        kc.shell_channel.send(msg)
        kc.execute_interactive("s.value", timeout=30)
        deadline = time.monotonic() + 10
        changes: list[dict] = []
        while time.monotonic() < deadline and not changes:
            changes = events_of(history, notebook, "widget_changed")
            time.sleep(0.05)
        assert [(c["trait"], c["old"], c["new"], c["description"]) for c in changes] == [
            ("value", 0.5, 0.75, "alpha")
        ]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_huge_and_odd_outputs_stay_within_budget(tmp_path: Path, history: History) -> None:
    nb = make_notebook(tmp_path / "huge.ipynb", [
        "%load_ext ambient_jupyter",
        "print('x' * 50_000_000)",
        "def deep(n):\n    if n == 0:\n        raise ValueError('line\\n' * 10_000)\n    return deep(n - 1)\ndeep(200)",
        "import base64\nfrom IPython.display import Image, display\n"
        "display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + bytes(20_000_000), format='png'))",
        "import sys\nsys.stdout.write(b'caf\\xe9 \\xff\\xfe'.decode('utf-8', 'surrogateescape'))\nprint()",
        "import os\nos.write(1, b'raw \\xff\\xfe bytes\\n')",
        "print('still fine')",
    ])
    run_with_nbclient(nb, env={**QUIET, "AMBIENT_NOTEBOOK": str(nb)}, timeout=300)
    cells = events_of(history, nb, "cell_executed")
    assert len(cells) == 6
    big, traceback, image, odd, raw, fine = cells
    limit = 8000  # AmbientSettings.output_limit

    text = big["outputs"][0]["text"]
    assert big["outputs"][0]["chars"] == 50_000_001
    assert len(text) < limit + 200
    assert "original size 50,000,001 chars" in text

    assert traceback["status"] == "error" and traceback["error"]["ename"] == "ValueError"
    tb_chars = sum(len(line) for line in traceback["error"]["traceback"])
    assert tb_chars < limit + 200
    assert any("trimmed by ambient-jupyter" in line for line in traceback["error"]["traceback"])

    images = [o for o in image["outputs"] if o["type"] == "image"]
    assert images == [{"type": "image", "mime": "image/png", "bytes": 20_000_008}]

    assert odd["status"] == "ok" and "caf" in odd["outputs"][0]["text"]
    assert raw["status"] == "ok"
    assert fine["outputs"][0]["text"] == "still fine\n"
    # The whole stored row stays small although the cells produced ~90 MB.
    for cell in cells:
        assert len(json.dumps(cell)) < 4 * limit


def test_corrupt_history_is_moved_aside_and_recording_continues(tmp_path: Path, ambient_db: Path) -> None:
    ambient_db.write_bytes(b"this is not a database" * 100)
    nb = make_notebook(tmp_path / "corrupt.ipynb", ["%load_ext ambient_jupyter", "x = 42"])
    run_with_nbclient(nb, env={**QUIET, "AMBIENT_NOTEBOOK": str(nb)})
    aside = list(ambient_db.parent.glob("history.sqlite.bad-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == b"this is not a database" * 100
    with History(ambient_db) as h:
        assert [c["code"] for c in events_of(h, nb, "cell_executed")] == ["x = 42"]


def test_an_error_the_cell_handled_is_not_a_failure(tmp_path: Path, history: History) -> None:
    """An Output widget swallows what is raised inside ``with out:``; so does an except block that
    shows the traceback. The cell succeeded: the record says so (issue 13, item 1)."""
    cells = [
        "%load_ext ambient_jupyter",
        "import ipywidgets as widgets\nout = widgets.Output()\nwith out:\n    raise ValueError('inside the widget')",
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    get_ipython().showtraceback()",
        "raise KeyError('a real failure')",
    ]
    nb = make_notebook(tmp_path / "handled.ipynb", cells)
    executed = run_with_nbclient(nb, env={**QUIET, "JPY_SESSION_NAME": str(nb)})
    # The handled traceback still shows (under nbclient the widget's goes into the widget).
    assert [o["output_type"] for o in executed.cells[2].outputs] == ["error"]
    recorded = events_of(history, nb, "cell_executed")
    assert [c["status"] for c in recorded] == ["ok", "ok", "error"]
    assert recorded[0]["error"] is None and recorded[1]["error"] is None
    # What the widget took is the widget's (its outputs, synced back by nbclient), not the cell's.
    assert "inside the widget" not in json.dumps(recorded[0]["outputs"])
    widget = [e for e in events_of(history, nb, "widget_changed") if e["trait"] == "outputs"]
    assert widget[-1]["new"] == [{"type": "display", "text": "ValueError: inside the widget"}]
    assert recorded[2]["error"]["ename"] == "KeyError"


_WATCH_MAIN_THREAD_IMPORTS = """\
import sys, threading
_main_imports = []
def _on_audit(event, args, _main=threading.main_thread()):
    if event == "import" and threading.current_thread() is _main:
        _main_imports.append(args[0])
sys.addaudithook(_on_audit)
_already = set(sys.modules)"""


def test_loading_imports_nothing_heavy_on_the_kernels_main_thread(tmp_path: Path, history: History) -> None:
    """The extension's modules (pydantic's models, ipywidgets) are imported on a helper
    thread: a kernel whose main thread imported them ran every later tiny cell about 20%
    slower (benchmark P1, interleaved), even after an unload."""
    nb = make_notebook(tmp_path / "aside.ipynb", [
        _WATCH_MAIN_THREAD_IMPORTS,
        "%load_ext ambient_jupyter",
        "print(sorted({m for m in _main_imports if m not in _already}))",
        "print(sorted(m for m in ('pydantic', 'ipywidgets', 'ambient_jupyter.events') if m in sys.modules))",
    ])
    ran = run_with_nbclient(nb, allow_errors=False, env={**QUIET, "AMBIENT_NOTEBOOK": str(nb)})
    on_main, loaded = (ran.cells[i].outputs[0]["text"].strip() for i in (2, 3))
    assert loaded == "['ambient_jupyter.events', 'ipywidgets', 'pydantic']"  # they were imported, elsewhere
    assert on_main == "[]", on_main
    assert [e["code"] for e in events_of(history, nb, "cell_executed")][-2:] == [
        "print(sorted({m for m in _main_imports if m not in _already}))",
        "print(sorted(m for m in ('pydantic', 'ipywidgets', 'ambient_jupyter.events') if m in sys.modules))",
    ]


def test_the_imports_aside_report_a_missing_module_and_pass_over_a_broken_ipywidgets(monkeypatch) -> None:
    import pytest

    import ambient_jupyter

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # installed but broken: import raises ImportError
    ambient_jupyter._import_aside(("json", "ipywidgets"))  # the widget watcher does without it
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        ambient_jupyter._import_aside(("no_such_module_here",))  # raised on the caller's thread
