"""A real JupyterLab server in a subprocess, and Debian's Chromium driven by Playwright.

``LabServer`` starts ``python -m jupyterlab`` on a free port with its own token,
root, history file and settings/workspace directories, and takes down the whole
process tree (server and kernels) when the test ends. ``Sidebar`` wraps the Ambient
panel's stable class names for the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fakes import free_port

CHROMIUM = os.environ.get("AMBIENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 90.0


def require_browser() -> None:
    """Skip (locally) or fail (under CI=true) when Chromium or Playwright is missing."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the Python package playwright is not installed (pip install playwright)"
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run: {problem}", pytrace=False)
    pytest.skip(f"browser tests skipped: {problem}")


class LabServer:
    """``python -m jupyterlab`` in its own process group, with everything in ``base``.

    ``python`` is the interpreter to run it with (another venv's, say); by default
    the one running the tests.
    """

    def __init__(
        self, base: Path, env: dict[str, str] | None = None, *, python: str | Path | None = None,
        app: str = "jupyterlab",
    ) -> None:
        self.app = app
        """``jupyterlab``, or ``notebook`` (Notebook 7, JupyterLab's parts in another shell)."""
        self.base = base
        self.python = str(python or sys.executable)
        self.root = base / "root"
        self.db = base / "history.sqlite"
        self.log_path = base / "jupyterlab.log"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LabServer:
        self.root.mkdir(parents=True, exist_ok=True)
        settings = self.base / "lab-settings"
        # No "Would you like to get notified about official Jupyter news?" prompt.
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {
            **os.environ,
            "AMBIENT_DB": str(self.db),
            "JUPYTER_CONFIG_DIR": str(self.base / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.pop("JPY_SESSION_NAME", None)
        app_class = "JupyterNotebookApp" if self.app == "notebook" else "LabApp"
        cmd = [
            self.python, "-m", self.app, "--no-browser", "--allow-root",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--{app_class}.user_settings_dir={settings}",
            f"--{app_class}.workspaces_dir={self.base / 'workspaces'}",
            "--ServerApp.open_browser=False",
        ]
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                msg = f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}"
                raise RuntimeError(msg)
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.2)
        msg = f"JupyterLab did not answer within {START_TIMEOUT:.0f} s:\n{self.log_tail()}"
        raise RuntimeError(msg)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return json.loads(response.read())

    def shutdown_kernels(self) -> None:
        """End every kernel session (a module's tests share one server: idle kernels add up)."""
        for session in self.api("api/sessions"):
            request = urllib.request.Request(self.url(f"api/sessions/{session['id']}"), method="DELETE")
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
                pass

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server and every process it started (kernels run in sessions of their own)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        import psutil

        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class Sidebar:
    """The Ambient panel of one page, through the class names the extension promises."""

    ROOT = "#jp-ambient-sidebar"

    def __init__(self, page: Any) -> None:
        self.page = page

    def open(self) -> None:
        tab = self.page.locator('.lm-TabBar-tab[data-id="jp-ambient-sidebar"]')
        tab.wait_for(timeout=60_000)
        panel = self.page.locator(self.ROOT)
        for attempt in range(4):
            # After a reload the layout restorer may reopen the panel by itself, a
            # moment after the tab appears: look before (and after) clicking.
            try:
                panel.wait_for(state="visible", timeout=1_500)
                break
            except Exception:
                if attempt == 3:
                    raise
            if "lm-mod-current" not in (tab.get_attribute("class") or ""):
                tab.click()
        self.page.locator(f'{self.ROOT} .jp-Ambient-connection[data-state="open"]').wait_for(timeout=30_000)

    def locator(self, selector: str) -> Any:
        return self.page.locator(f"{self.ROOT} {selector}")

    def send(self, text: str) -> None:
        box = self.locator(".jp-Ambient-input")
        box.click()
        box.fill(text)
        box.press("Enter")

    def stored_seqs(self) -> list[int]:
        return [int(s) for s in self.locator(".jp-Ambient-log > [data-seq]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.seq)"
        )]

    def transcript(self) -> list[tuple[str, str]]:
        """(kind, text) of every stored event shown, in order."""
        return [tuple(x) for x in self.locator(".jp-Ambient-log > [data-seq]").evaluate_all(
            "nodes => nodes.map(n => [n.dataset.kind, n.innerText.trim()])"
        )]


def dismiss_notifications(page: Any) -> None:
    """Close any toast (e.g. the "Jupyter news" question) so it hides nothing."""
    for label in ("No", "Dismiss", "Close"):
        button = page.locator(f'.Toastify button:has-text("{label}")')
        for i in range(button.count()):
            with contextlib.suppress(Exception):
                button.nth(i).click(timeout=1000)
    for close in page.locator(".Toastify__close-button").all():
        with contextlib.suppress(Exception):
            close.click(timeout=1000)


def open_notebook(page: Any, lab: LabServer, notebook: str, workspace: str | None = None) -> Sidebar:
    """Open ``notebook`` in JupyterLab with its kernel idle, and the Ambient sidebar shown.

    With ``workspace``, in a JupyterLab workspace of that name (a new name starts
    empty: tests sharing a server do not get each other's notebooks restored).
    """
    where = f"lab/workspaces/{workspace}/tree/{notebook}" if workspace else f"lab/tree/{notebook}"
    page.goto(lab.url(where), wait_until="domcontentloaded", timeout=60_000)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(timeout=60_000)
    wait_kernel_idle(page)
    dismiss_notifications(page)
    sidebar = Sidebar(page)
    sidebar.open()
    return sidebar


def wait_kernel_idle(page: Any, timeout: float = 60_000) -> None:
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
        timeout=timeout
    )


def notebook_cell(page: Any, index: int) -> Any:
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)


def run_cell(page: Any, index: int, *, timeout: float = 60_000) -> None:
    """Run cell ``index`` with Shift+Enter, as a user would, and wait until it has run."""
    cell = notebook_cell(page, index)
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.inner_text()
    editor = cell.locator(".jp-InputArea-editor .cm-content")
    changed = "([el, before]) => el.innerText.trim() !== before.trim()"
    finished = (
        "([el, before]) => { const t = el.innerText.trim(); return t !== before.trim() && /^\\[\\d+\\]/.test(t); }"
    )
    for attempt in range(3):
        editor.click()
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell.jp-mod-active .cm-editor.cm-focused").wait_for(
            timeout=10_000
        )
        page.keyboard.press("Shift+Enter")
        try:
            # A key press can be lost while the editor is still settling: retry
            # until the prompt shows the cell queued ("[*]:") or run ("[n]:").
            page.wait_for_function(changed, arg=[prompt.element_handle(), before], timeout=5_000)
            break
        except Exception:
            if attempt == 2:
                raise
    page.wait_for_function(finished, arg=[prompt.element_handle(), before], timeout=timeout)


def cell_output(page: Any, index: int) -> Any:
    return notebook_cell(page, index).locator(".jp-OutputArea-output")


def widen_sidebar(page: Any, width: int) -> None:
    """Drag the splitter between the notebook and the right sidebar, as a person would."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle:not(.lm-mod-hidden)").last
    box = handle.bounding_box()
    panel = page.locator(Sidebar.ROOT).bounding_box()
    if not box or not panel or panel["width"] >= width:
        return
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - (width - panel["width"]), y, steps=8)
    page.mouse.up()


class SocketTap:
    """Routes the sidebar's WebSocket through the test (``page.route_web_socket``).

    It records the frames each way and can rewrite them in flight: ``outgoing`` and
    ``incoming`` are functions from a frame to the frame to pass on. Frames move only
    while Playwright is working (waiting on a locator, ``page.wait_for_timeout``), not
    during ``time.sleep``.
    """

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.outgoing: Any = None
        self.incoming: Any = None

    def __call__(self, route: Any) -> None:
        server = route.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            self.sent.append(frame)
            server.send(json.dumps(self.outgoing(frame)) if self.outgoing else message)

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            self.received.append(frame)
            route.send(json.dumps(self.incoming(frame)) if self.incoming else message)

        route.on_message(from_page)
        server.on_message(from_server)

    def to_server(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f.get("type") == kind]

    def to_page(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.received if f.get("type") == kind]
