"""A failed cell, the kernel's checked fix, and approving it, in a real JupyterLab and Chromium.

The scenario people hit: a column spelled with the wrong case. The kernel checks the
failure against the live DataFrame and records hints (did-you-mean 'Region') and a
candidate fix; the server stores the candidate as an ``edit_cell`` proposal with a
line diff before the model says a word. The sidebar shows the hints under the error
line and the proposal as a diff, badged as the kernel's checked fix; Approve edits the
same cell and runs it. The model is asked nothing about a failure the kernel fixed; it
answers when a person asks.

The first test uses the real embedded model (``@pytest.mark.model``); the others a
fake Ollama on the real wire: a person's edit made after the proposal is never
overwritten, and the chat widget and the kernel-state card show the same facts.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_lab import (
    LabServer,
    Sidebar,
    cell_output,
    dismiss_notifications,
    launch_chromium,
    notebook_cell,
    open_notebook,
    require_browser,
    run_cell,
    widen_sidebar,
)
from conftest import ROOT, make_notebook
from fakes import free_port
from fakes.ollama_server import FakeOllama

from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(600)

ARTIFACTS = ROOT / "tests" / "artifacts"
FAKE_MODEL = "tiny:1b"
LOAD = "%load_ext ambient_jupyter"
SETUP = "import pandas as pd\nsales = pd.DataFrame({'Region': ['North', 'South', 'North'], 'units': [3, 4, 5]})"
FAILING = "totals = sales.groupby('region')['units'].sum()"
FIXED = "totals = sales.groupby('Region')['units'].sum()"
SHOW = "totals"
CELLS = [LOAD, SETUP, FAILING, SHOW]
"""Run in order, these show [1], [2], [3] (a KeyError) and then [4]."""

CELL_CARDS = '.jp-Ambient-card[data-kind="cell_executed"]'
CANDIDATE = '.jp-Ambient-proposal[data-origin="hint"]'
NOTEBOOK_CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """The server runs in a subprocess; Playwright's sync API keeps its own loop on this thread."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def start_lab(tmp_path: Path) -> Iterator[Callable[..., LabServer]]:
    """Start JupyterLab with the given notebooks ``{name: [cell sources]}`` and env."""
    servers: list[LabServer] = []

    def start(notebooks: dict[str, list[str]], **env: str) -> LabServer:
        lab = LabServer(tmp_path / f"lab{len(servers)}", env)
        servers.append(lab)
        lab.root.mkdir(parents=True)
        for name, cells in notebooks.items():
            make_notebook(lab.root / name, list(cells))
        return lab.start()

    yield start
    for lab in servers:
        lab.stop()


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama({FAKE_MODEL: 8192}).start()
    server.token_delay = 0.005
    server.reply = json.dumps({"action": "explain", "text": "The column is spelled 'Region', with a capital R."})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, start_lab: Callable[..., LabServer], request: pytest.FixtureRequest) -> Iterator[Any]:
    # Depends on start_lab so that the servers outlive the page (and its last screenshot).
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
        context.close()


# -- helpers -----------------------------------------------------------------------


def source(page: Any, index: int) -> str:
    return str(notebook_cell(page, index).locator(".jp-InputArea-editor .cm-content").inner_text())


def prompt(page: Any, index: int) -> str:
    return str(notebook_cell(page, index).locator(".jp-InputArea-prompt").inner_text()).strip()


def approve(page: Any, card: Any) -> None:
    button = card.locator(".jp-Ambient-approve")
    page.wait_for_function("el => !el.disabled", arg=button.element_handle())  # the shown code's hash checked
    button.click()


def events(lab: LabServer, name: str, *kinds: str) -> list[dict[str, Any]]:
    with History(lab.db) as history:
        return [e for e in history.read(str(lab.root / name)) if not kinds or e["kind"] in kinds]


def executed(lab: LabServer, name: str, action_id: str, page: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(lab, name, "action_executed") if e["action_id"] == action_id]
        if found:
            return found[0]
        page.wait_for_timeout(200)
    raise AssertionError(f"action {action_id} was never recorded as executed")


def failed_card_with_hint(sidebar: Sidebar) -> Any:
    """The failed cell's card, once it shows its column hint; asserts what the hint says."""
    failed = sidebar.locator(f"{CELL_CARDS}.jp-mod-error").filter(has_text="groupby('region')")
    failed.wait_for(timeout=60_000)
    assert "KeyError" in failed.locator(".jp-Ambient-errorLine").inner_text()
    hint = failed.locator('.jp-Ambient-hint[data-kind="column"]')
    hint.wait_for()
    text = hint.locator(".jp-Ambient-hintText").inner_text()
    assert "'region'" in text and "Did you mean 'Region'?" in text, text
    assert hint.locator(".jp-Ambient-hintFix").inner_text() == "fix: 'region' → 'Region'"
    return failed


def assert_candidate_diff(card: Any) -> None:
    """The candidate shows old against new, the kernel's badge, and the whole code one click away."""
    removed = card.locator(".jp-Ambient-diff .jp-Ambient-diffDel")
    added = card.locator(".jp-Ambient-diff .jp-Ambient-diffAdd")
    assert removed.count() == 1 and added.count() == 1
    assert removed.locator(".jp-Ambient-diffText").inner_text() == FAILING
    assert removed.locator(".jp-Ambient-diffOp").inner_text() == "-"
    assert added.locator(".jp-Ambient-diffText").inner_text() == FIXED
    assert added.locator(".jp-Ambient-diffOp").inner_text() == "+"
    assert card.locator(".jp-Ambient-what").inner_text() == "edit cell [3] and run it"
    who = card.locator(".jp-Ambient-who")
    assert who.locator('.jp-Ambient-origin[data-origin="hint"]').inner_text() == "✓ checked fix"
    assert "proposed by the kernel's analysis" in who.inner_text()
    assert card.locator(".jp-Ambient-role").count() == 0 and card.locator(".jp-Ambient-modelName").count() == 0
    # What is approved is the whole cell: it is in the card, folded under the diff.
    full = card.locator(".jp-Ambient-fullCode")
    code = full.locator(".jp-Ambient-proposedCode")
    toggle = full.locator(".jp-Ambient-fullToggle")
    assert code.is_hidden() and toggle.inner_text() == "full cell"
    toggle.click()
    assert code.is_visible() and code.inner_text() == FIXED
    toggle.click()
    assert code.is_hidden()


# -- the real embedded model --------------------------------------------------------------


@pytest.mark.model
def test_the_kernels_checked_fix_is_shown_as_a_diff_and_approved_into_the_same_cell(
    page: Any, start_lab: Callable[..., LabServer]
) -> None:
    lab = start_lab({"sales.ipynb": CELLS}, AMBIENT_MODEL="embedded")
    sidebar = open_notebook(page, lab, "sales.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, 2)
    failed_at = time.monotonic()
    cell_output(page, 2).filter(has_text="KeyError").wait_for()
    failed_card_with_hint(sidebar)

    card = sidebar.locator(CANDIDATE)
    card.wait_for(timeout=60_000)
    proposal_s = time.monotonic() - failed_at
    assert_candidate_diff(card)
    (stored,) = [e for e in events(lab, "sales.ipynb", "action_proposed") if e.get("origin") == "hint"]
    assert stored["model"] is None and stored["code"] == FIXED and stored["old_code"] == FAILING
    assert card.get_attribute("data-action-id") == stored["action_id"]

    # The sidebar as people see it, for the docs (the news toast, if any, dismissed first).
    dismiss_notifications(page)
    widen_sidebar(page, 460)
    card.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = page.locator(Sidebar.ROOT).screenshot(path=str(ARTIFACTS / "hint-fix.png"))
    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "img" / "hint-fix.png").write_bytes(shot)

    cells = page.locator(NOTEBOOK_CELLS).count()
    approve(page, card)
    outcome = card.locator(".jp-Ambient-outcome")
    outcome.filter(has_text="ran as [4]").wait_for(timeout=60_000)
    assert "raised" not in outcome.inner_text()
    assert card.locator(".jp-Ambient-actionState").inner_text() == "approved by you"
    assert page.locator(NOTEBOOK_CELLS).count() == cells, "the fix was inserted instead of edited in"
    assert source(page, 2) == FIXED, "the failing cell does not hold the fix"
    assert prompt(page, 2) == "[4]:"
    assert cell_output(page, 2).count() == 0, "the fixed cell still shows an error"
    record = executed(lab, "sales.ipynb", stored["action_id"], page)
    assert record["ok"] is True

    run_cell(page, 3)
    cell_output(page, 3).filter(has_text=re.compile(r"North\s+8")).wait_for()

    # The model answers when asked; the kernel's state is looked at first (a cold
    # first reply of the embedded model can take a while).
    asked_at = time.monotonic()
    sidebar.send("What does totals hold now?")
    state = sidebar.locator('.jp-Ambient-card[data-kind="kernel_state"]')
    state.wait_for(timeout=60_000)
    names = state.locator(".jp-Ambient-stateNames").inner_text()
    assert "totals" in names.removeprefix("state: ").split(", "), names
    reply = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant")
    reply.first.wait_for(timeout=300_000)
    print(f"\ncandidate proposal shown {proposal_s:.1f} s after the failed cell ran; "
          f"the model's reply {time.monotonic() - asked_at:.1f} s after the question")
    assert page.errors == []


# -- a fake model on the real wire -----------------------------------------------------------


def test_a_cell_edited_after_the_proposal_keeps_the_persons_text(
    page: Any, start_lab: Callable[..., LabServer], fake: FakeOllama
) -> None:
    lab = start_lab({"mine.ipynb": CELLS}, AMBIENT_MODEL=f"ollama:{FAKE_MODEL}", OLLAMA_HOST=fake.url)
    sidebar = open_notebook(page, lab, "mine.ipynb")
    for index in range(3):
        run_cell(page, index)
    failed_card_with_hint(sidebar)
    card = sidebar.locator(CANDIDATE)
    card.wait_for(timeout=60_000)
    assert_candidate_diff(card)
    cells = page.locator(NOTEBOOK_CELLS).count()

    # The person fixes it their own way before approving.
    editor = notebook_cell(page, 2).locator(".jp-InputArea-editor .cm-content")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("  # mine")
    mine = f"{FAILING}  # mine"
    assert source(page, 2) == mine
    approve(page, card)
    outcome = card.locator(".jp-Ambient-outcome")
    outcome.filter(has_text="not run").wait_for()
    assert "cell [3] changed since the proposal; nothing was edited" in outcome.inner_text()
    record = executed(lab, "mine.ipynb", card.get_attribute("data-action-id"), page)
    assert record["ok"] is False and "changed since the proposal" in record["error"]
    page.wait_for_timeout(1000)
    assert source(page, 2) == mine, "the person's edit was overwritten"
    assert prompt(page, 2) == "[3]:", "the cell ran"
    assert page.locator(NOTEBOOK_CELLS).count() == cells
    assert FIXED not in [e["code"] for e in events(lab, "mine.ipynb", "cell_executed")]

    # Propose again: the model is asked with the cell as the person has it now, and its
    # new edit is made against that source, so it applies.
    theirs = f"{FIXED}  # mine"

    def reply(body: dict[str, Any]) -> str:
        said = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        saw_it = "Cell 3 as the user has it now" in said and mine in said
        code = theirs if saw_it else "x = 0"
        return json.dumps({"action": "edit_cell", "text": "Capital R.", "cell": 3, "code": code})

    fake.reply = reply
    again = card.locator(".jp-Ambient-again")
    assert again.is_visible() and again.inner_text() == "Propose again"
    again.click()
    renewed = sidebar.locator('.jp-Ambient-proposal[data-origin="model"]')
    renewed.wait_for(timeout=60_000)
    assert again.inner_text() == "Asked again" and again.is_disabled()
    lines = [t.replace("\n", "") for t in renewed.locator(".jp-Ambient-diffLine").all_inner_texts()]
    assert lines == [f"-{mine}", f"+{theirs}"], lines
    (question,) = events(lab, "mine.ipynb", "user_message")
    assert question["cells"] == {"3": mine} and "was not applied" in question["text"]
    approve(page, renewed)
    renewed.locator(".jp-Ambient-outcome").filter(has_text="ran as [4]").wait_for(timeout=60_000)
    assert source(page, 2).rstrip("\n") == theirs and page.locator(NOTEBOOK_CELLS).count() == cells
    # After a reload the refused card still says it was asked again, and offers nothing twice.
    refused_id = card.get_attribute("data-action-id")
    page.reload()
    sidebar = Sidebar(page)
    sidebar.open()
    again = sidebar.locator(f'.jp-Ambient-proposal[data-action-id="{refused_id}"] .jp-Ambient-again')
    again.wait_for()
    assert again.inner_text() == "Asked again" and again.is_disabled()
    assert len(events(lab, "mine.ipynb", "user_message")) == 1
    assert page.errors == []


def test_a_failure_card_shows_its_hints_when_the_model_has_nothing_to_add(
    page: Any, start_lab: Callable[..., LabServer]
) -> None:
    """The hints are the kernel's, not the model's: with the model server down they are
    still under the error, with the checked fix, and the question gets a clear error."""
    lab = start_lab({"down.ipynb": CELLS}, AMBIENT_MODEL=f"ollama:{FAKE_MODEL}",
                    OLLAMA_HOST=f"http://127.0.0.1:{free_port()}")
    sidebar = open_notebook(page, lab, "down.ipynb")
    for index in range(3):
        run_cell(page, index)
    failed_card_with_hint(sidebar)
    # The candidate is stored after the failure it fixes: its card may come a moment later.
    card = sidebar.locator(CANDIDATE)
    card.wait_for(timeout=60_000)
    assert_candidate_diff(card)
    sidebar.send("Why did it fail?")
    error = sidebar.locator('.jp-Ambient-card[data-kind="model_error"]')
    error.wait_for(timeout=60_000)
    assert "ollama" in error.inner_text().lower()
    # Still there, unchanged, after the model failed.
    failed_card_with_hint(sidebar)
    assert page.errors == []


def test_a_reply_shows_what_its_model_saw(
    page: Any, start_lab: Callable[..., LabServer], fake: FakeOllama
) -> None:
    """Under each reply, folded: the events of its prompt (the failed cell with its hint and
    the question), as the reply's record names them, one line each, as text."""
    lab = start_lab({"saw.ipynb": CELLS}, AMBIENT_MODEL=f"ollama:{FAKE_MODEL}", OLLAMA_HOST=fake.url)
    sidebar = open_notebook(page, lab, "saw.ipynb")
    for index in range(3):
        run_cell(page, index)
    failed_card_with_hint(sidebar)
    sidebar.send("<b>Why</b> did it fail?")
    reply = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant").last
    reply.wait_for(timeout=60_000)
    (stored,) = [e for e in events(lab, "saw.ipynb", "assistant_message") if e["reply_to"] is not None
                 and e["seq"] == int(reply.get_attribute("data-seq"))]
    saw = reply.locator(".jp-Ambient-saw")
    summary = saw.locator("summary")
    count = len(stored["seen"]["events"])
    assert summary.inner_text() == f"what the model saw ({count} events)"
    assert saw.locator(".jp-Ambient-sawBody").is_hidden()
    summary.click()
    items = saw.locator(".jp-Ambient-sawEvent")
    items.first.wait_for()
    assert [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.seq)")] == stored["seen"]["events"]
    failed = saw.locator('.jp-Ambient-sawEvent[data-kind="cell_executed"]').filter(has_text="groupby('region')")
    assert failed.locator(".jp-Ambient-sawLabel").inner_text() == (
        f"[3] {FAILING} → KeyError: 'region'"
    )
    assert "Did you mean 'Region'?" in failed.locator(".jp-Ambient-hintText").inner_text()
    question = saw.locator('.jp-Ambient-sawEvent[data-kind="user_message"]').last
    assert question.locator(".jp-Ambient-sawLabel").inner_text() == "question: <b>Why</b> did it fail?"
    assert saw.locator("b").count() == 0
    # For the README: the reply with what its model saw, opened.
    dismiss_notifications(page)
    widen_sidebar(page, 460)
    reply.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    shot = reply.screenshot(path=str(ARTIFACTS / "model-saw.png"))
    (ROOT / "docs" / "img" / "model-saw.png").write_bytes(shot)
    assert page.errors == []


# The chat widget is the sidebar's renderer bundled on its own (labextension/src/widget.ts): same markup.
WIDGET = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Ambient-chat"
MARKUP_SETUP = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'Region': ['North', 'South', 'North'], 'units': [3, 4, 5], '<b>note</b>': [0, 0, 0]})"
)


def test_the_chat_widget_and_the_state_card_show_the_same_facts_as_text(
    page: Any, start_lab: Callable[..., LabServer], fake: FakeOllama
) -> None:
    """Hints, the diff and the kernel's state in the chat widget, and the state card in the
    sidebar; a column named like markup stays text on every surface."""
    chat = "import ambient_jupyter\nambient_jupyter.chat()"
    lab = start_lab({"facts.ipynb": [LOAD, chat, MARKUP_SETUP, FAILING]}, AMBIENT_MODEL=f"ollama:{FAKE_MODEL}",
                    OLLAMA_HOST=fake.url)
    sidebar = open_notebook(page, lab, "facts.ipynb")
    for index in range(4):
        run_cell(page, index)
    failed = failed_card_with_hint(sidebar)
    assert "<b>note</b>" in failed.locator(".jp-Ambient-hintText").inner_text()
    assert failed.locator("b").count() == 0
    sidebar.locator(CANDIDATE).wait_for(timeout=60_000)

    widget = page.locator(WIDGET)
    cell = widget.locator('.jp-Ambient-card[data-kind="cell_executed"].jp-mod-error')
    hint = cell.locator('.jp-Ambient-hint[data-kind="column"]')
    hint.wait_for(timeout=60_000)
    assert "Did you mean 'Region'?" in hint.inner_text() and "<b>note</b>" in hint.inner_text()
    assert hint.locator(".jp-Ambient-hintFix").inner_text() == "fix: 'region' → 'Region'"
    assert cell.locator("b").count() == 0
    proposal = widget.locator('.jp-Ambient-proposal[data-origin="hint"]')
    proposal.wait_for(timeout=60_000)
    assert proposal.locator(".jp-Ambient-origin").inner_text() == "✓ checked fix"
    assert proposal.locator(".jp-Ambient-diffDel .jp-Ambient-diffText").inner_text() == FAILING
    assert proposal.locator(".jp-Ambient-diffAdd .jp-Ambient-diffText").inner_text() == FIXED
    full = proposal.locator(".jp-Ambient-fullCode .jp-Ambient-proposedCode")
    assert full.text_content() == FIXED and full.is_hidden(), "the whole cell is not there, folded"

    # A question makes the server ask the kernel what it holds, before the turn.
    sidebar.send("what is in sales?")
    state = sidebar.locator('.jp-Ambient-card[data-kind="kernel_state"]')
    state.wait_for(timeout=60_000)
    names = state.locator(".jp-Ambient-stateNames").inner_text()
    assert names.startswith("state: ") and "sales" in names.split(": ", 1)[1].split(", "), names
    details = state.locator("details.jp-Ambient-stateDetails")
    assert details.get_attribute("open") is None, "the details are not folded"
    details.locator("summary").click()
    entry = details.locator('.jp-Ambient-stateEntry[data-name="sales"]')
    assert "sales (pandas.DataFrame)" in entry.locator(".jp-Ambient-stateName").inner_text()
    assert "<b>note</b>" in entry.locator(".jp-Ambient-stateText").inner_text()
    assert state.locator("b").count() == 0
    widget_state = widget.locator('.jp-Ambient-card[data-kind="kernel_state"]')
    widget_state.wait_for(timeout=60_000)
    assert widget_state.locator(".jp-Ambient-stateNames").inner_text() == names
    assert widget_state.locator("details.jp-Ambient-stateDetails").get_attribute("open") is None
    assert widget_state.locator("b").count() == 0
    assert page.errors == []
