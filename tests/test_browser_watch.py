"""Watching without typing (issue 14): JupyterLab loads the kernel extension by itself.

A real JupyterLab in a real Chromium. The notebooks here never run ``%load_ext``
unless a test says so: the panel's extension loads it silently into each notebook's
kernel, at start and after a restart, and the panel's toggle turns it off and on.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import test_browser as _shared
from browser_lab import (
    LabServer,
    Sidebar,
    dismiss_notifications,
    notebook_cell,
    open_notebook,
    run_cell,
    wait_kernel_idle,
)
from conftest import make_notebook

from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(300)

# The browser tests' fixtures (a real Chromium, a JupyterLab per test), shared.
browser = _shared.browser
page = _shared.page
start_lab = _shared.start_lab
jp_asyncio_loop = _shared.jp_asyncio_loop
jp_server_cleanup = _shared.jp_server_cleanup

WATCH = ".jp-Ambient-watch"
CELL_CARDS = '.jp-Ambient-log > [data-kind="cell_executed"]'
QUIET = {"AMBIENT_QUIET": "1"}  # recording only: these tests need no model


def recorded(lab: LabServer, notebook: str) -> list[str]:
    """The code of every cell the history holds for ``notebook``, in order."""
    with History(lab.db) as history:
        return [e["code"] for e in history.read(str(lab.root / notebook)) if e["kind"] == "cell_executed"]


def wait_watch(sidebar: Sidebar, state: str, timeout: float = 60_000) -> None:
    sidebar.locator(f'{WATCH}[data-state="{state}"]').wait_for(timeout=timeout)


def restart_kernel(page: Any) -> None:
    """Kernel → Restart Kernel…, and confirm, as a person would."""
    page.locator('.lm-MenuBar-itemLabel:text-is("Kernel")').click()
    page.locator('.lm-Menu-itemLabel:text-is("Restart Kernel…")').click()
    page.locator(".jp-Dialog .jp-mod-accept").click()


def test_a_notebook_is_watched_without_load_ext_across_a_restart_until_turned_off(
    page: Any, start_lab: Callable[..., LabServer]
) -> None:
    cells = ["total = 6 * 7\nprint(total)", "after_restart = 1", "not_recorded = 2", "%load_ext ambient_jupyter",
             "watched_again = 3"]
    lab = start_lab({"plain.ipynb": cells}, **QUIET)
    sidebar = open_notebook(page, lab, "plain.ipynb")
    wait_watch(sidebar, "watching")
    assert sidebar.locator(".jp-Ambient-unwatched").is_hidden()

    run_cell(page, 0)
    sidebar.locator(CELL_CARDS).filter(has_text="total = 6 * 7").wait_for()
    assert notebook_cell(page, 0).locator(".jp-OutputArea-output").inner_text().strip() == "42"

    # A restart is a new process with nothing loaded: it is watched again by itself.
    restart_kernel(page)
    sidebar.locator(f'{WATCH}:not([data-state="watching"])').wait_for()
    wait_watch(sidebar, "watching")
    wait_kernel_idle(page)
    run_cell(page, 1)
    sidebar.locator(CELL_CARDS).filter(has_text="after_restart").wait_for()

    # Turned off for this notebook: the extension is unloaded, and the choice is kept in the notebook.
    sidebar.locator(WATCH).click()
    wait_watch(sidebar, "off")
    notice = sidebar.locator(".jp-Ambient-unwatched")
    notice.wait_for()
    assert "turned watching off" in notice.inner_text()
    run_cell(page, 2)
    time.sleep(1.5)  # room for a (wrong) record to be committed and shown
    assert recorded(lab, "plain.ipynb") == ["total = 6 * 7\nprint(total)", "after_restart = 1"]
    assert sidebar.locator(CELL_CARDS).count() == 2
    page.keyboard.press("Control+s")
    saved = lab.root / "plain.ipynb"
    for _ in range(100):
        if nbformat.read(saved, as_version=4).metadata.get("ambient_jupyter") == {"watch": False}:
            break
        time.sleep(0.1)
    assert nbformat.read(saved, as_version=4).metadata["ambient_jupyter"] == {"watch": False}

    # Typed by hand, %load_ext still works, and the header says so (it asks the kernel).
    run_cell(page, 3)
    wait_watch(sidebar, "watching")
    notice.wait_for(state="hidden")
    # Loaded again by the panel (the header's toggle, off then on): still one record per cell.
    sidebar.locator(WATCH).click()
    wait_watch(sidebar, "off")
    sidebar.locator(WATCH).click()
    wait_watch(sidebar, "watching")
    run_cell(page, 4)
    sidebar.locator(CELL_CARDS).filter(has_text="watched_again").wait_for()
    # (The %load_ext cell itself is not recorded: recording starts once it has run, as always.)
    assert recorded(lab, "plain.ipynb") == ["total = 6 * 7\nprint(total)", "after_restart = 1", "watched_again = 3"]
    assert sidebar.locator(CELL_CARDS).count() == 3
    assert page.errors == []


def test_automatic_watching_can_be_turned_off_in_the_settings(
    page: Any, start_lab: Callable[..., LabServer]
) -> None:
    """With the setting off, nothing is loaded: the panel says so, and Watch still works."""
    lab = start_lab({"manual.ipynb": ["x = 1", "y = 2"]}, **QUIET)
    settings = lab.base / "lab-settings" / "ambient-jupyter" / "sidebar.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"watchAutomatically": False}))
    sidebar = open_notebook(page, lab, "manual.ipynb")
    wait_watch(sidebar, "off")
    notice = sidebar.locator(".jp-Ambient-unwatched")
    assert "Automatic watching is off" in notice.inner_text()
    run_cell(page, 0)
    time.sleep(1.5)
    assert recorded(lab, "manual.ipynb") == []
    notice.locator(".jp-Ambient-watchNow").click()
    wait_watch(sidebar, "watching")
    run_cell(page, 1)
    sidebar.locator(CELL_CARDS).filter(has_text="y = 2").wait_for()
    assert recorded(lab, "manual.ipynb") == ["y = 2"]
    assert page.errors == []


def test_a_kernel_that_is_not_python_is_not_supported_and_nothing_fails(
    page: Any, start_lab: Callable[..., LabServer], tmp_path: Path
) -> None:
    # A kernel whose spec says another language (ipykernel underneath: the panel must go
    # by the spec, and send it nothing).
    data = tmp_path / "jupyter-data"
    spec = data / "kernels" / "other"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Other", "language": "other",
    }))
    lab = start_lab({}, JUPYTER_PATH=str(data), **QUIET)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "other", "display_name": "Other",
                                                           "language": "other"}})
    nb.cells.append(nbformat.v4.new_code_cell("z = 1"))
    nbformat.write(nb, lab.root / "other.ipynb")
    sidebar = open_notebook(page, lab, "other.ipynb")
    wait_watch(sidebar, "unsupported")
    assert sidebar.locator(WATCH).is_disabled()
    assert "Python kernels" in sidebar.locator(".jp-Ambient-unwatched").inner_text()
    run_cell(page, 0)
    time.sleep(1.0)
    assert recorded(lab, "other.ipynb") == []
    assert page.errors == []


def test_notebook_7_opens_the_panel_from_its_toolbar_and_shows_a_card(page: Any, tmp_path: Path) -> None:
    """Notebook 7 starts with its right sidebar collapsed and no tab for the panel: the
    notebook toolbar's Ambient button is the visible way in."""
    lab = LabServer(tmp_path / "nb7", QUIET, app="notebook")
    lab.root.mkdir(parents=True)
    make_notebook(lab.root / "seven.ipynb", ["seven = 7 * 6\nprint(seven)"])
    try:
        lab.start()
        page.goto(lab.url("notebooks/seven.ipynb"), wait_until="domcontentloaded", timeout=60_000)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
        wait_kernel_idle(page)
        dismiss_notifications(page)
        panel = page.locator(Sidebar.ROOT)
        assert not panel.is_visible()  # a fresh page: nobody can see it yet
        page.locator(".jp-NotebookPanel-toolbar .jp-Ambient-open").click()
        panel.wait_for(state="visible")
        sidebar = Sidebar(page)
        sidebar.locator('.jp-Ambient-connection[data-state="open"]').wait_for(timeout=30_000)
        wait_watch(sidebar, "watching")
        run_cell(page, 0)
        sidebar.locator(CELL_CARDS).filter(has_text="seven = 7 * 6").wait_for()
        assert recorded(lab, "seven.ipynb") == ["seven = 7 * 6\nprint(seven)"]
        # Notebook 7.6's own page throws "Cannot read properties of undefined (reading
        # 'schema')" while it loads settings, with this extension disabled too.
        assert [e for e in page.errors if "reading 'schema'" not in e] == []
    finally:
        lab.stop()
