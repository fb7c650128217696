"""The Ambient sidebar in a real JupyterLab, in a real Chromium (issue #3).

Each test starts ``python -m jupyterlab`` with its own root, token and history file,
opens a notebook in Debian's Chromium through Playwright, and does what a person
would: runs cells with Shift+Enter, types in the sidebar, reloads, approves. The
model is the embedded SmolLM2 (``@pytest.mark.model``) or, where a test needs a
deterministic reply, a fake Ollama speaking Ollama's real wire protocol.

Locally a missing Chromium skips these tests; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_lab import (
    LabServer,
    Sidebar,
    cell_output,
    launch_chromium,
    notebook_cell,
    open_notebook,
    require_browser,
    run_cell,
    widen_sidebar,
)
from conftest import ROOT, make_notebook
from fakes.ollama_server import FakeOllama

from ambient_jupyter.history import History

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = ROOT / "tests" / "artifacts"
FAKE_MODEL = "tiny:1b"
LOAD = "%load_ext ambient_jupyter"


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """pytest-jupyter's autouse loop is not wanted here: the server runs in a subprocess,
    and Playwright's sync API keeps its own loop running on this thread."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    """No in-process ServerApp to clean up (see ``jp_asyncio_loop``)."""
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
def fake_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama({FAKE_MODEL: 4096}).start()
    fake.token_delay = 0.03
    try:
        yield fake
    finally:
        fake.stop()


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
        # What the page looked like at the end: the first thing to look at when a test fails.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
        context.close()


def fake_env(fake: FakeOllama) -> dict[str, str]:
    return {"AMBIENT_MODEL": f"ollama:{FAKE_MODEL}", "OLLAMA_HOST": fake.url}


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def assert_unique_and_ordered(seqs: list[int]) -> None:
    assert seqs == sorted(seqs), seqs
    assert len(seqs) == len(set(seqs)), f"duplicate events: {seqs}"


# -- a cell run shows up ------------------------------------------------------------


def test_running_a_cell_shows_its_card(page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama) -> None:
    lab = start_lab({"cells.ipynb": [LOAD, "total = 6 * 7\nprint(total)", "1 / 0"]}, **fake_env(fake_ollama))
    sidebar = open_notebook(page, lab, "cells.ipynb")

    run_cell(page, 0)
    run_cell(page, 1)
    cards = sidebar.locator('.jp-Ambient-card[data-kind="cell_executed"]')
    ok = cards.filter(has_text="total = 6 * 7")
    ok.wait_for()
    assert "✓ ok" in ok.inner_text()
    assert re.search(r"\[\d+\]", ok.inner_text())

    run_cell(page, 2)
    failed = cards.filter(has_text="1 / 0")
    failed.wait_for()
    assert "ZeroDivisionError: division by zero" in failed.inner_text()
    assert "jp-mod-error" in (failed.get_attribute("class") or "")
    assert_unique_and_ordered(sidebar.stored_seqs())
    assert page.errors == []


# -- a streamed reply from the real embedded model ------------------------------------

STREAM_WATCH = """
window.__ambientStreamed = 0;
new MutationObserver(() => {
  if (document.querySelector('.jp-Ambient-live .jp-mod-streaming')) window.__ambientStreamed += 1;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.mark.model
def test_chat_streams_a_reply_from_the_embedded_model(page: Any, start_lab: Callable[..., LabServer]) -> None:
    lab = start_lab({"chat.ipynb": [LOAD, "numbers = [3, 1, 2]\nsorted(numbers)"]}, AMBIENT_MODEL="embedded")
    tokens: list[str] = []

    def on_frame(payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "token":
            tokens.append(frame["text"])

    def watch(ws: Any) -> None:
        if "/ambient/ws" in ws.url:
            ws.on("framereceived", on_frame)

    page.on("websocket", watch)
    page.add_init_script(STREAM_WATCH)
    sidebar = open_notebook(page, lab, "chat.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    sidebar.locator('.jp-Ambient-card[data-kind="cell_executed"]').filter(has_text="numbers").wait_for()

    sidebar.send("In one short sentence: what does sorted() do?")
    sidebar.locator(".jp-Ambient-log > .jp-Ambient-user").wait_for()
    reply = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant")
    reply.wait_for(timeout=240_000)

    assert len(tokens) >= 2, "the reply did not stream in pieces"
    assert page.evaluate("window.__ambientStreamed") > 0, "no live bubble was shown while streaming"
    text = reply.locator(".jp-Ambient-markdown").inner_text().strip()
    assert text, "the stored reply is empty"
    assert "jp-mod-error" not in (reply.get_attribute("class") or "")
    assert "embedded" in sidebar.locator(".jp-Ambient-model").inner_text()
    assert sidebar.locator(".jp-Ambient-live .jp-mod-streaming").count() == 0, "the live bubble was not replaced"
    before = sidebar.transcript()

    # A reload rebuilds the same conversation from the server, once.
    page.reload()
    sidebar = Sidebar(page)
    sidebar.open()
    sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant").wait_for()
    page.wait_for_function(
        f"document.querySelectorAll('#jp-ambient-sidebar .jp-Ambient-log > [data-seq]').length >= {len(before)}"
    )
    assert sidebar.transcript() == before
    assert_unique_and_ordered(sidebar.stored_seqs())
    assert page.errors == []


# -- reload and reconnect: no duplicates, no gaps ---------------------------------------


class SocketTap:
    """Routes the sidebar's WebSocket through the test: it records client frames and
    can swallow chats, drop the connection, and refuse reconnects for a while."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.routes: list[Any] = []
        self.swallow_chats = False
        self.refuse = False

    def __call__(self, route: Any) -> None:
        if self.refuse:
            route.close()
            return
        server = route.connect_to_server()
        self.routes.append(route)

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            self.sent.append(frame)
            if frame.get("type") == "chat" and self.swallow_chats:
                return
            server.send(message)

        route.on_message(from_page)

    def drop(self) -> None:
        for route in self.routes:
            route.close()
        self.routes.clear()

    def frames(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f.get("type") == kind]


def test_reconnect_and_reload_show_each_event_once(
    page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama
) -> None:
    fake_ollama.reply = "Sorted numbers go from small to large."
    lab = start_lab({"again.ipynb": [LOAD, "a = 1", "b = 2", "c = a + b"]}, **fake_env(fake_ollama))
    tap = SocketTap()
    page.route_web_socket(re.compile(r"/ambient/ws"), tap)
    sidebar = open_notebook(page, lab, "again.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    sidebar.send("first question")
    sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant").wait_for()
    seen = max(sidebar.stored_seqs())

    # The next chat never reaches the server, and the connection drops.
    tap.swallow_chats = True
    sidebar.send("second question")
    sidebar.locator(".jp-Ambient-live .jp-Ambient-user.jp-mod-pending").wait_for()
    tap.refuse = True
    tap.drop()
    sidebar.locator('.jp-Ambient-connection:not([data-state="open"])').wait_for()
    # While the sidebar is away, the notebook goes on.
    run_cell(page, 2)
    time.sleep(1.0)
    tap.swallow_chats = False
    tap.refuse = False

    sidebar.locator('.jp-Ambient-connection[data-state="open"]').wait_for(timeout=60_000)
    sidebar.locator('.jp-Ambient-card[data-kind="cell_executed"]').filter(has_text="b = 2").wait_for()
    page.wait_for_function(
        "document.querySelectorAll('#jp-ambient-sidebar .jp-Ambient-log > .jp-Ambient-assistant').length === 2",
        timeout=60_000,
    )
    assert sidebar.locator(".jp-Ambient-live .jp-mod-pending").count() == 0

    hellos = tap.frames("hello")
    assert hellos[0]["after_seq"] == 0
    assert hellos[-1]["after_seq"] >= seen, hellos
    chats = [f for f in tap.frames("chat") if f["text"] == "second question"]
    assert len(chats) >= 2, "the unacknowledged chat was not resent"
    assert len({f["client_id"] for f in chats}) == 1, "a resend must keep its client_id"

    transcript = sidebar.transcript()
    kinds = [kind for kind, _ in transcript]
    assert kinds.count("user_message") == 2
    assert [text for kind, text in transcript if kind == "user_message"] == ["first question", "second question"]
    assert sum(1 for kind, text in transcript if kind == "cell_executed" and "b = 2" in text) == 1
    assert_unique_and_ordered(sidebar.stored_seqs())

    # A reload starts from nothing and rebuilds exactly the same conversation.
    page.reload()
    sidebar = Sidebar(page)
    sidebar.open()
    page.wait_for_function(
        f"document.querySelectorAll('#jp-ambient-sidebar .jp-Ambient-log > [data-seq]').length >= {len(transcript)}"
    )
    time.sleep(0.5)
    assert sidebar.transcript() == transcript
    assert tap.frames("hello")[-1]["after_seq"] == 0
    assert page.errors == []


def wait_for_notebook(page: Any, name: str) -> None:
    page.wait_for_function(
        "name => document.querySelector('#jp-ambient-sidebar .jp-Ambient-notebook').textContent === name", arg=name
    )


def test_sidebar_follows_the_active_notebook(
    page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama
) -> None:
    fake_ollama.reply = "Answered."
    lab = start_lab({"one.ipynb": [LOAD, "x = 'one'"], "two.ipynb": [LOAD, "y = 'two'"]}, **fake_env(fake_ollama))
    tap = SocketTap()
    page.route_web_socket(re.compile(r"/ambient/ws"), tap)
    sidebar = open_notebook(page, lab, "one.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    sidebar.send("about notebook one")
    sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant").wait_for()
    one = sidebar.transcript()
    one_last = max(sidebar.stored_seqs())

    # Open the second notebook from the file browser: the sidebar switches to it.
    page.locator('.jp-DirListing-item[title*="two.ipynb"]').dblclick()
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").filter(has_text="y = 'two'").wait_for()
    wait_for_notebook(page, "two.ipynb")
    assert sidebar.locator(".jp-Ambient-log > [data-seq]").count() == 0
    run_cell(page, 0)
    run_cell(page, 1)
    sidebar.locator('.jp-Ambient-card[data-kind="cell_executed"]').filter(has_text="y = 'two'").wait_for()
    assert "x = 'one'" not in sidebar.locator(".jp-Ambient-log").inner_text()

    # Back to the first: its conversation was kept, and the socket resumes after it.
    page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab[data-type="document-title"]').filter(has_text="one.ipynb").click()
    wait_for_notebook(page, "one.ipynb")
    time.sleep(0.5)
    assert sidebar.transcript() == one
    hellos = [f for f in tap.frames("hello") if f["notebook"] == "one.ipynb"]
    assert hellos[-1]["after_seq"] == one_last
    assert page.errors == []


def test_stop_ends_a_streaming_reply(page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama) -> None:
    fake_ollama.reply = " ".join(f"word{i}" for i in range(200))
    fake_ollama.token_delay = 0.2
    lab = start_lab({"stop.ipynb": [LOAD]}, **fake_env(fake_ollama))
    sidebar = open_notebook(page, lab, "stop.ipynb")

    box = sidebar.locator(".jp-Ambient-input")
    box.click()
    box.type("first line")
    box.press("Shift+Enter")
    box.type("second line")
    box.press("Enter")
    user = sidebar.locator(".jp-Ambient-log > .jp-Ambient-user")
    user.wait_for()
    assert user.inner_text().strip() == "first line\nsecond line"
    assert box.input_value() == ""

    sidebar.locator(".jp-Ambient-live .jp-mod-streaming").filter(has_text="word3").wait_for()
    stop = sidebar.locator(".jp-Ambient-stop")
    assert stop.is_visible()
    assert sidebar.locator(".jp-Ambient-activity").inner_text() in ("thinking…", "streaming…")
    started = time.monotonic()
    stop.click()
    stored = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant")
    stored.wait_for(timeout=10_000)
    assert time.monotonic() - started < 5
    assert "jp-mod-incomplete" in (stored.get_attribute("class") or "")
    assert "stopped before the end" in stored.inner_text()
    assert "word150" not in stored.inner_text()
    page.wait_for_function("document.querySelector('#jp-ambient-sidebar .jp-Ambient-stop').hidden")
    assert sidebar.locator(".jp-Ambient-live .jp-mod-streaming").count() == 0
    assert page.errors == []


# -- approving a proposed cell -------------------------------------------------------

PROPOSED = "ambient_result = 6 * 7\nprint('approved', ambient_result)\n"


def test_approved_cell_is_inserted_and_run(
    page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama
) -> None:
    fake_ollama.reply = lambda body: (
        f"Here is a cell that computes it:\n\n```python\n{PROPOSED}```\n\nApprove it to run it."
        if "compute" in last_user_text(body)
        else "Noted."
    )
    lab = start_lab(
        {"agent.ipynb": [LOAD, "import statistics\nvalues = [4, 8, 15, 16, 23, 42]", "statistics.mean(values)"]},
        **fake_env(fake_ollama),
    )
    sidebar = open_notebook(page, lab, "agent.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, 2)
    cell_output(page, 2).wait_for()
    # The cell that will be active when the approval arrives: the new one goes below it.
    notebook_cell(page, 1).locator(".jp-InputArea-editor").click()
    cells_before = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").count()

    sidebar.send("Please compute six times seven in a new cell.")
    proposal = sidebar.locator(".jp-Ambient-proposal")
    proposal.wait_for(timeout=60_000)
    assert proposal.locator(".jp-Ambient-proposedCode").inner_text() == PROPOSED
    approve = proposal.locator(".jp-Ambient-approve")
    page.wait_for_function("el => !el.disabled", arg=approve.element_handle())
    approve.click()

    new_cell = notebook_cell(page, 2)
    page.wait_for_function(
        f"document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length === {cells_before + 1}"
    )
    new_cell.locator(".jp-OutputArea-output").filter(has_text="approved 42").wait_for(timeout=60_000)
    assert "ambient_result = 6 * 7" in new_cell.locator(".jp-InputArea-editor").inner_text()
    sidebar.locator('.jp-Ambient-card[data-kind="action_decided"]').wait_for()
    sidebar.locator('.jp-Ambient-card[data-kind="action_executed"]').wait_for(timeout=60_000)
    assert proposal.locator(".jp-Ambient-approve").is_hidden()

    # The cell carries where it came from; save and read the file to check.
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    path = lab.root / "agent.ipynb"
    deadline = time.monotonic() + 30
    tagged: list[Any] = []
    while time.monotonic() < deadline and not tagged:
        time.sleep(0.3)
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "ambient" in c.metadata]
    assert len(tagged) == 1, "the approved cell was not saved with its metadata"
    cell = tagged[0]
    assert cell.source == PROPOSED
    assert nb.cells.index(cell) == 2
    meta = cell.metadata["ambient"]
    assert set(meta) >= {"action_id", "model", "reply_to", "sha256", "approved_at"}
    assert meta["sha256"] == hashlib.sha256(PROPOSED.encode()).hexdigest()
    assert meta["model"]
    assert isinstance(meta["reply_to"], int)

    widen_sidebar(page, 440)
    sidebar.locator(".jp-Ambient-body").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    time.sleep(0.3)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = page.locator(Sidebar.ROOT).screenshot(path=str(ARTIFACTS / "sidebar.png"))
    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "img" / "sidebar.png").write_bytes(shot)
    assert page.errors == []


# -- model output is inert ----------------------------------------------------------------


class Probe:
    """A local HTTP server that records every request (it must get none)."""

    def __init__(self) -> None:
        requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hostile_reply(probe: str) -> str:
    return f"""Hello, here is what I found.

<script>window.__ambientPwned = 'script';</script>
<img src=x onerror="window.__ambientPwned = 'onerror'">
<svg onload="window.__ambientPwned = 'svg'"><circle r="4"/></svg>
[a markdown link](javascript:window.__ambientPwned='md-link')
<a href="javascript:window.__ambientPwned='a-link'">an html link</a>
<a href=" JaVaScRiPt:window.__ambientPwned='spaced-link'">a spaced link</a>
<button data-commandlinker-command="notebook:run-all-cells" data-commandlinker-args="{{}}">run everything</button>
<span data-commandlinker-command="notebook:run-all-cells">click here</span>
<form id="ambientClobber" name="ambientClobber"><input name="ambientInput" value="x"></form>
<div id="jp-ambient-sidebar">fake root</div>
<button class="jp-Ambient-approve">Approve</button>
<p style="position:fixed;top:0;left:0;width:100vw;height:100vh">overlay</p>
<iframe src="{probe}/frame"></iframe>
<div style="background-image:url({probe}/bg.png)">styled</div>

![tracking pixel]({probe}/pixel.png)
<img src="{probe}/raw.png" alt="raw">
<img srcset="{probe}/srcset.png 2x">
<video poster="{probe}/poster.png" src="{probe}/video.mp4"></video>
<a href="https://example.org/page">a fine link</a>
"""


def test_model_output_is_inert(page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama) -> None:
    probe = Probe()
    try:
        fake_ollama.reply = hostile_reply(probe.url)
        lab = start_lab({"xss.ipynb": [LOAD, "print('must not run')"]}, **fake_env(fake_ollama))
        sidebar = open_notebook(page, lab, "xss.ipynb")
        run_cell(page, 0)
        sidebar.send("Show me something.")
        reply = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant .jp-Ambient-markdown")
        reply.filter(has_text="a fine link").wait_for(timeout=60_000)
        time.sleep(1.5)  # time for anything that would load or run to do so

        found = page.evaluate(
            """() => {
              const root = document.querySelector('#jp-ambient-sidebar');
              const md = root.querySelectorAll('.jp-Ambient-markdown');
              const inside = sel => Array.from(md).flatMap(m => Array.from(m.querySelectorAll(sel)));
              const all = inside('*');
              return {
                pwned: window.__ambientPwned ?? null,
                clobbered: typeof window.ambientClobber !== 'undefined',
                byId: document.getElementById('ambientClobber') !== null,
                roots: document.querySelectorAll('#jp-ambient-sidebar').length,
                handlers: all.flatMap(el => el.getAttributeNames().filter(n => n.toLowerCase().startsWith('on'))),
                commandLinker: root.querySelectorAll('[data-commandlinker-command], [data-commandlinker-args]').length,
                jsLinks: inside('a[href]').map(a => a.getAttribute('href'))
                  .filter(h => !/^(https?:|mailto:)/i.test(h.trim())),
                ids: inside('[id], [name]').length,
                styles: inside('[style]').length,
                scripts: inside('script, iframe, svg, form, input, video, object, embed').length,
                remoteImages: inside('img').map(i => i.getAttribute('src')).filter(s => !/^data:/i.test(s || '')),
                forgedButtons: inside('.jp-Ambient-approve, button').length,
                blocked: root.querySelectorAll('.jp-Ambient-blockedImage').length,
                fineLinks: inside('a[href="https://example.org/page"]').length,
              };
            }"""
        )
        assert found["pwned"] is None, found
        assert not found["clobbered"] and not found["byId"], found
        assert found["roots"] == 1, found
        assert found["handlers"] == [], found
        assert found["commandLinker"] == 0, found
        assert found["jsLinks"] == [], found
        assert found["ids"] == 0, found
        assert found["styles"] == 0, found
        assert found["scripts"] == 0, found
        assert found["remoteImages"] == [], found
        assert found["forgedButtons"] == 0, found
        assert found["blocked"] >= 2, found
        assert found["fineLinks"] == 1, found

        # Clicking what used to be a command linker or a javascript: link does nothing.
        reply.get_by_text("run everything").click()
        reply.get_by_text("click here").click()
        reply.get_by_text("an html link").click()
        time.sleep(1.0)
        assert page.evaluate("window.__ambientPwned ?? null") is None
        assert cell_output(page, 1).count() == 0, "a command linker in model output ran the notebook"
        assert probe.requests == [], f"model output made the browser fetch {probe.requests}"
        assert page.errors == []
    finally:
        probe.close()


def test_chromium_policy_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Chromium the browser tests skip locally and fail under CI=true."""
    import browser_lab

    monkeypatch.setattr(browser_lab, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        browser_lab.require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        browser_lab.require_browser()


# -- a long history ---------------------------------------------------------------------


def test_a_long_history_shows_the_newest_at_once_and_older_pages_on_request(
    page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama
) -> None:
    """5,000 events (more than twice a tab's 2,000-frame queue): a reload shows the newest 500
    at once, over one connection; "Show earlier events" reads the page before, and a proposal
    decided later still shows its decision there."""
    lab = start_lab({"long.ipynb": [LOAD, "x = 1"]}, **fake_env(fake_ollama))
    count, tail = 5000, 500
    code = "x = 2\n"
    proposal = {
        "kind": "action_proposed", "action_id": "old-proposal", "action": "insert_cell", "code": code,
        "sha256": hashlib.sha256(code.encode()).hexdigest(), "args": {}, "text": "", "role": "watcher",
    }
    decided = {"kind": "action_decided", "action_id": "old-proposal", "decision": "rejected", "by": "user",
               "sha256": proposal["sha256"]}
    events: list[tuple[dict[str, Any], None]] = []
    for i in range(1, count + 1):
        if i == 4400:
            events.append((proposal, None))  # on the page just before the newest 500
        elif i == 4990:
            events.append((decided, None))  # decided among the newest
        else:
            events.append(({"kind": "cell_executed", "code": f"x = {i}", "status": "ok", "execution_count": i}, None))
    with History(lab.db) as history:
        history.append_many(str(lab.root / "long.ipynb"), events)
    newest = f'.jp-Ambient-log > [data-seq="{count}"]'
    sidebar = open_notebook(page, lab, "long.ipynb")
    sidebar.locator(newest).wait_for(timeout=60_000)

    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url) if "/ambient/ws" in ws.url else None)
    page.reload(wait_until="domcontentloaded")
    # Timed from the moment the panel's socket is open (the page itself takes a while to load;
    # the panel may still be hidden while the layout is restored).
    sidebar.locator('.jp-Ambient-connection[data-state="open"]').wait_for(state="attached", timeout=60_000)
    connected = time.monotonic()
    sidebar.locator(newest).wait_for(state="attached", timeout=60_000)
    newest_s = time.monotonic() - connected
    sidebar.open()
    sidebar.locator(newest).wait_for(state="visible")
    assert sidebar.stored_seqs() == list(range(count - tail + 1, count + 1))
    assert len(sockets) == 1, sockets  # no drop, no reconnect
    print(f"long_history events={count} newest_visible_s={newest_s:.2f} sockets={len(sockets)}")
    assert newest_s < 2.0

    earlier = sidebar.locator(".jp-Ambient-earlier")
    assert earlier.inner_text() == f"Show earlier events ({count - tail:,} more)"
    earlier.click()
    sidebar.locator('.jp-Ambient-log > [data-seq="4001"]').wait_for()
    assert sidebar.stored_seqs() == list(range(count - 2 * tail + 1, count + 1))
    card = sidebar.locator('.jp-Ambient-proposal[data-action-id="old-proposal"]')
    assert card.get_attribute("data-state") == "rejected"
    assert card.locator(".jp-Ambient-approve").is_hidden()
    assert earlier.inner_text() == f"Show earlier events ({count - 2 * tail:,} more)"

    # Scrolling up to the top reads the next older page, and the reader stays where they were.
    body = sidebar.locator(".jp-Ambient-body")
    anchor = sidebar.locator('.jp-Ambient-log > [data-seq="4001"]')
    anchor.scroll_into_view_if_needed()
    page.mouse.move(*center(body))
    older = sidebar.locator('.jp-Ambient-log > [data-seq="3501"]')
    for _ in range(100):  # the reader scrolls up until the older page is there, then stops
        if older.count():
            break
        page.mouse.wheel(0, -500)
        page.wait_for_timeout(50)
    older.wait_for()
    page.wait_for_timeout(300)  # nothing more arrives once the reader stopped
    assert sidebar.stored_seqs() == list(range(count - 3 * tail + 1, count + 1))
    assert body.evaluate("b => b.scrollTop") > 0  # the older page went in above the view
    top = body.bounding_box()
    kept = anchor.bounding_box()
    assert top["y"] <= kept["y"] < top["y"] + top["height"], (top, kept)
    assert page.errors == []


def center(locator: Any) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_a_reply_that_never_came_can_be_asked_again(
    page: Any, start_lab: Callable[..., LabServer], fake_ollama: FakeOllama
) -> None:
    """A question left unanswered (here: a server killed mid-reply marked it) has an
    "Ask again" button on its interrupted reply; one click asks it again, once."""
    fake_ollama.reply = "Forty-two."
    lab = start_lab({"again.ipynb": [LOAD]}, **fake_env(fake_ollama))
    question = "what is the answer?"
    with History(lab.db) as history:
        failed = history.append(
            str(lab.root / "again.ipynb"), {"kind": "cell_executed", "code": "1 / 0", "status": "error"}
        )["seq"]
        history.append(  # a reaction to a failed cell cut short: there is no question to ask again
            str(lab.root / "again.ipynb"),
            {"kind": "assistant_message", "text": "The cell divides", "model": "tiny", "state": "incomplete",
             "reply_to": failed, "reply_id": "r0", "role": "watcher"},
        )
        asked = history.append(
            str(lab.root / "again.ipynb"),
            {"kind": "user_message", "text": question, "source": "sidebar", "client_id": "old-tab"},
        )["seq"]
        history.append(
            str(lab.root / "again.ipynb"),
            {"kind": "assistant_message", "text": "Interrupted: ask again if you still want an answer.",
             "model": "tiny", "state": "incomplete", "reply_to": asked, "reply_id": "r1", "role": "watcher"},
        )
    sidebar = open_notebook(page, lab, "again.ipynb")
    again = sidebar.locator(".jp-Ambient-assistant.jp-mod-incomplete .jp-Ambient-askAgain")
    again.wait_for()
    assert again.count() == 1  # on the unanswered question only
    assert fake_ollama.chat_requests() == []
    again.click()
    answer = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant.jp-mod-complete")
    answer.wait_for()
    assert "Forty-two." in answer.inner_text()
    users = sidebar.locator(".jp-Ambient-log > .jp-Ambient-user")
    assert [u.inner_text().strip() for u in users.all()] == [question, question]
    assert again.is_disabled()
    assert again.inner_text() == "Asked again"
    assert [last_user_text(b) for b in fake_ollama.chat_requests()][-1].endswith(question)
    with History(lab.db) as history:
        stored = [e for e in history.read(str(lab.root / "again.ipynb")) if e["kind"] == "user_message"]
    assert [e["text"] for e in stored] == [question, question]
    # A reload rebuilds the conversation: the question shows as asked again already.
    page.reload(wait_until="domcontentloaded")
    sidebar.open()
    again.wait_for()
    assert again.is_disabled() and again.inner_text() == "Asked again"
    assert page.errors == []
