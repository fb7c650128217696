"""``ambient_jupyter.chat()`` in a real JupyterLab, in Debian's Chromium (issue 4, item 4).

A notebook cell shows the chat widget; the test types a question into it, watches
the reply stream in over the kernel's own WebSocket (token custom messages) and then
settle as the stored reply, reloads the page, and sees the same conversation, once,
in the restored view and in a freshly rendered one. The model is a fake Ollama on
the real wire protocol; everything else is real.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_lab import (
    LabServer,
    dismiss_notifications,
    launch_chromium,
    notebook_cell,
    require_browser,
    run_cell,
    wait_kernel_idle,
)
from conftest import ROOT, make_notebook
from fakes.ollama_server import FakeOllama

from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = ROOT / "tests" / "artifacts"
FAKE_MODEL = "tiny:1b"
CHAT_CELL = "import ambient_jupyter\nambient_jupyter.chat()"
# The widget is the sidebar's renderer bundled on its own (labextension/src/widget.ts): same markup.
WIDGET = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Ambient-chat"


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


class Probe:
    """A local HTTP server that records every request: model output must make none."""

    def __init__(self) -> None:
        requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama({FAKE_MODEL: 4096}).start()
    server.token_delay = 0.05
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def probe() -> Iterator[Probe]:
    server = Probe()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def lab(tmp_path: Path, fake: FakeOllama) -> Iterator[LabServer]:
    server = LabServer(tmp_path / "lab", {"AMBIENT_MODEL": f"ollama:{FAKE_MODEL}", "OLLAMA_HOST": fake.url})
    server.root.mkdir(parents=True)
    make_notebook(server.root / "chat.ipynb", [CHAT_CELL])
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, lab: LabServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    try:
        yield page
    finally:
        # What the page looked like at the end: the first thing to look at when a test fails.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
        context.close()


class KernelTap:
    """Reads the kernel WebSocket's frames as the page receives them: the widget's custom messages."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.custom: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        """Custom messages the page sent to the kernel."""
        self.received: list[str] = []
        """msg_type of every kernel message the page received."""
        page.on("websocket", self._watch)

    def _watch(self, ws: Any) -> None:
        if "/api/kernels/" in ws.url and "/channels" in ws.url:
            ws.on("framereceived", self._frame)
            ws.on("framesent", lambda payload: self._frame(payload, sent=True))

    def _frame(self, payload: str | bytes, sent: bool = False) -> None:
        if isinstance(payload, (bytes, bytearray)):
            from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1

            _channel, parts = deserialize_msg_from_ws_v1(bytes(payload))
            header, content = json.loads(parts[0]), json.loads(parts[3])
        else:
            msg = json.loads(payload)
            header, content = msg.get("header", {}), msg.get("content", {})
        if not sent:
            self.received.append(str(header.get("msg_type")))
        data = content.get("data") if isinstance(content, dict) else None
        if header.get("msg_type") == "comm_msg" and isinstance(data, dict) and data.get("method") == "custom":
            (self.sent if sent else self.custom).append(data["content"])

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.custom if m.get("type") == kind]

    def wait_widgets_ready(self, already: int = 0, timeout: float = 60.0) -> None:
        """Wait for the widget manager's comm_info_reply: the kernel connection is set up.

        The status bar says idle a moment before that, and a Shift+Enter pressed in
        between advances to the next cell without running anything.
        """
        deadline = time.monotonic() + timeout
        while self.received.count("comm_info_reply") <= already:
            assert time.monotonic() < deadline, "the notebook's kernel connection was never set up"
            self.page.wait_for_timeout(100)


STREAM_WATCH = """
window.__chatStreamed = 0;
new MutationObserver(() => {
  if (document.querySelector('.jp-Ambient-chat .jp-Ambient-assistant.jp-mod-streaming')) window.__chatStreamed += 1;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def reply_text(probe: str) -> str:
    return (
        "Sorting puts the small numbers first, step by step, until the list is in order.\n"
        "```python\nsorted([3, 1, 2])\n```\n"
        f'<img src="{probe}/pixel.png" onerror="window.__chatPwned = 1"> <b>not bold</b>'
    )


def open_chat_notebook(page: Any, lab: LabServer) -> None:
    page.goto(lab.url("lab/tree/chat.ipynb"), wait_until="domcontentloaded", timeout=60_000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    wait_kernel_idle(page)
    dismiss_notifications(page)


def transcript(page: Any) -> list[tuple[str, str, str]]:
    """(seq, kind, text) of every stored event the widget shows, in order."""
    return [tuple(x) for x in page.locator(f"{WIDGET} .jp-Ambient-log > [data-seq]").evaluate_all(
        "nodes => nodes.map(n => [n.dataset.seq, n.dataset.kind, n.innerText.trim()])"
    )]


def wait_transcript(page: Any, expected: list[tuple[str, str, str]]) -> None:
    page.wait_for_function(
        f"document.querySelectorAll('{WIDGET} .jp-Ambient-log > [data-seq]').length >= {len(expected)}",
        timeout=60_000,
    )
    time.sleep(1.0)  # anything replayed twice would arrive now
    assert transcript(page) == expected


def test_chat_widget_streams_a_reply_and_survives_a_reload(
    page: Any, lab: LabServer, fake: FakeOllama, probe: Probe
) -> None:
    text = reply_text(probe.url)
    fake.reply = json.dumps({"action": "explain", "text": text})
    tap = KernelTap(page)
    page.add_init_script(STREAM_WATCH)
    open_chat_notebook(page, lab)
    tap.wait_widgets_ready()
    run_cell(page, 0)
    widget = page.locator(WIDGET)
    widget.wait_for(timeout=60_000)
    assert "ollama:tiny:1b" in widget.locator(".jp-Ambient-model").inner_text()
    assert widget.locator(".jp-Ambient-modeBadge").inner_text() == "agent: ask"

    box = widget.locator(".jp-Ambient-input")
    box.click()
    box.type("What does sorted")
    box.press("Shift+Enter")
    box.type("do?")
    box.press("Enter")
    assert box.input_value() == ""
    user = widget.locator('.jp-Ambient-log > [data-kind="user_message"]')
    user.wait_for()
    assert user.inner_text().strip() == "What does sorted\ndo?"

    reply = widget.locator('.jp-Ambient-log > [data-kind="assistant_message"]')
    reply.wait_for(timeout=60_000)
    tokens = tap.of_type("token")
    assert len(tokens) >= 5, f"the reply did not stream in pieces ({len(tokens)} token messages)"
    assert "".join(t["text"] for t in tokens) == text
    assert page.evaluate("window.__chatStreamed") > 0, "no streaming bubble was shown"
    assert widget.locator(".jp-Ambient-live .jp-mod-streaming").count() == 0, "the streamed text was not replaced"
    assert widget.locator(".jp-Ambient-live .jp-mod-pending").count() == 0
    page.locator(f'{WIDGET}[data-status="idle"]').wait_for()
    assert widget.locator(".jp-Ambient-stop").is_hidden()

    # The stored reply, as text: the fence became a <pre>, the markup stayed inert text.
    assert reply.locator(".jp-Ambient-markdown pre").inner_text() == "sorted([3, 1, 2])"
    assert '<img src="' in reply.inner_text() and "<b>not bold</b>" in reply.inner_text()
    assert reply.locator(".jp-Ambient-meta .jp-Ambient-modelName").inner_text() == "ollama:tiny:1b"
    assert reply.locator(".jp-Ambient-meta .jp-Ambient-role").inner_text() == "watcher"
    assert widget.locator("img, b, a, script, iframe").count() == 0
    before = transcript(page)
    # JupyterLab watches the notebook from its kernel's start, so the cell that made the
    # widget is recorded; the kernel's state for the question comes right before it.
    assert [kind for _, kind, _ in before] == ["cell_executed", "kernel_state", "user_message", "assistant_message"]

    # Reload: the saved output's view is restored from the kernel and replays from seq 0.
    # Ctrl+S from the chat's input box reaches JupyterLab (only plain keys stay in the box).
    box.click()
    page.keyboard.press("Control+s")
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached", timeout=30_000)
    saved = nbformat.read(lab.root / "chat.ipynb", as_version=4)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in saved.cells[0].outputs)
    page.reload()
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    wait_kernel_idle(page)
    page.locator(WIDGET).wait_for(timeout=60_000)
    wait_transcript(page, before)

    # Re-running the cell renders a new widget: the same conversation, once, and now
    # the re-run itself (recording has been on since the kernel started).
    run_cell(page, 0)
    # (The first run's card is there already: wait for the re-run's, the one after it.)
    page.locator(f'{WIDGET} .jp-Ambient-log > [data-kind="cell_executed"]').nth(1).wait_for(timeout=60_000)
    time.sleep(1.0)
    after = transcript(page)
    assert after[: len(before)] == before
    assert [(kind, text.splitlines()[-1]) for _, kind, text in after[len(before):]] == [
        ("cell_executed", "import ambient_jupyter …")
    ]
    assert [int(seq) for seq, _, _ in after] == list(range(1, len(after) + 1))
    assert page.locator(WIDGET).count() == 1
    replays = [m for m in tap.of_type("replay") if m.get("done")]
    assert len(replays) == 3, "each render asks for its own replay"

    assert page.evaluate("window.__chatPwned") is None
    assert probe.requests == [], f"model output made the browser fetch {probe.requests}"
    assert page.errors == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    notebook_cell(page, 0).scroll_into_view_if_needed()
    page.locator(WIDGET).screenshot(path=str(ARTIFACTS / "chat_widget.png"))


PROPOSED = "widget_result = 6 * 7\nprint('approved from the widget', widget_result)\n"


def test_approve_in_the_widget_runs_the_shown_code(page: Any, lab: LabServer, fake: FakeOllama) -> None:
    fake.reply = json.dumps({"action": "insert_cell", "text": "This computes it.", "code": PROPOSED, "after": None})
    tap = KernelTap(page)
    open_chat_notebook(page, lab)
    tap.wait_widgets_ready()
    run_cell(page, 0)
    widget = page.locator(WIDGET)
    box = widget.locator(".jp-Ambient-input")
    box.click()
    box.fill("Compute six times seven.")
    box.press("Enter")

    card = widget.locator('.jp-Ambient-log > [data-kind="action_proposed"]')
    card.wait_for(timeout=60_000)
    assert card.locator(".jp-Ambient-proposedCode").inner_text() == PROPOSED  # the exact code
    approve = card.locator(".jp-Ambient-approve")
    page.wait_for_function("el => !el.disabled", arg=approve.element_handle())  # the shown code's hash checked
    approve.click()
    widget.locator('.jp-Ambient-log > [data-kind="action_executed"]').wait_for(timeout=60_000)
    # It ran as an agent cell of its own (recorded as cell_executed): the card says which one.
    page.wait_for_function(
        r"el => /^ran as \[\d+\]$/.test(el.textContent)", arg=card.locator(".jp-Ambient-outcome").element_handle()
    )
    assert card.locator(".jp-Ambient-actionState").inner_text() == "approved by you"
    assert approve.is_hidden()
    executed = widget.locator('.jp-Ambient-log > [data-kind="action_executed"]')
    assert executed.locator(".jp-Ambient-output").inner_text().strip() == "approved from the widget 42"
    with History(lab.db) as history:
        events = [e for nb, _, _ in history.notebooks() for e in history.read(nb)]
    proposal = next(e for e in events if e["kind"] == "action_proposed")
    decided = [e for e in events if e["kind"] == "action_decided"]
    assert [(d["decision"], d["by"], d["sha256"]) for d in decided] == [("approved", "user", proposal["sha256"])]
    assert [e["code"] for e in events if e["kind"] == "cell_executed" and e["code"] == PROPOSED] == [PROPOSED]
    assert [e["ok"] for e in events if e["kind"] == "action_executed"] == [True]
    decides = [m for m in tap.sent if m.get("type") == "decide"]
    assert [(m["decision"], m["sha256"]) for m in decides] == [("approve", proposal["sha256"])]
    assert page.errors == []
