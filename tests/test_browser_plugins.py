"""The todo plugin in a real JupyterLab and Chromium: what a person clicks reaches the sidebar.

The example notebook is opened as it ships; its cells run with Shift+Enter; the test
types an item into the plugin's own UI, ticks its box, and waits for the
``widget_changed`` cards in the Ambient sidebar (and the events in the history).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_lab import LabServer, cell_output, launch_chromium, open_notebook, require_browser, run_cell
from conftest import ROOT

from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(300)

TODO = ROOT / "notebooks" / "todo.ipynb"
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """No pytest-jupyter loop: the server runs in a subprocess, and Playwright's sync API
    keeps its own loop on this thread."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabServer]:
    server = LabServer(tmp_path / "lab", {"AMBIENT_QUIET": "1", "AMBIENT_MODEL": "ollama:none"})
    server.root.mkdir(parents=True)
    shutil.copy(TODO, server.root / "todo.ipynb")
    with server:
        yield server


@pytest.fixture
def page(lab: LabServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors
        try:
            yield page
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
            browser.close()


def test_clicking_the_todo_plugin_shows_widget_changes_in_the_sidebar(page: Any, lab: LabServer) -> None:
    cells = nbformat.read(TODO, as_version=4).cells
    code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    created = next(i for i in code if cells[i].source.startswith("todo = TodoList()"))
    sidebar = open_notebook(page, lab, "todo.ipynb")
    for index in [i for i in code if i <= created]:
        run_cell(page, index)

    widget = cell_output(page, created)
    box = widget.locator('input[placeholder="New item"]')
    box.wait_for(timeout=60_000)
    box.fill("buy milk")
    widget.locator('button:has-text("Add")').click()
    item = widget.locator("li", has_text="1. buy milk")
    item.wait_for()

    cards = sidebar.locator('.jp-Ambient-card[data-kind="widget_changed"]').filter(has_text="TodoList")
    cards.first.wait_for(timeout=30_000)
    assert 'items: [] → [{"id":1,"text":"buy milk","done":false}]' in cards.first.inner_text()

    item.locator('input[type="checkbox"]').check()
    page.wait_for_function(
        """() => [...document.querySelectorAll('#jp-ambient-sidebar .jp-Ambient-card[data-kind="widget_changed"]')]
                 .some(n => n.innerText.replace(/\\s/g, '').includes('"done":true'))""",
        timeout=30_000,
    )

    with History(lab.db) as history:
        notebook = next(path for path, _seq, _at in history.notebooks() if path.endswith("todo.ipynb"))
        events = history.read(notebook)
    changes = [e for e in events if e["kind"] == "widget_changed"]
    assert [(c["widget_class"], c["trait"]) for c in changes] == [("TodoList", "items")] * 2
    assert changes[0]["new"] == [{"id": 1, "text": "buy milk", "done": False}]
    assert changes[1]["new"] == [{"id": 1, "text": "buy milk", "done": True}]
    assert [e["plugin"] for e in events if e["kind"] == "plugin_registered"] == ["todo"]
    assert page.errors == []
