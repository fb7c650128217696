"""The recorder: turns executed cells and widget changes into history events.

Hot path, per cell: ``pre_run_cell`` creates a small capture object, the
``Session.send`` observer files output messages into it, and the cell is handed to
the writer thread when its ``execute_reply`` is sent: by then ipykernel has flushed
stdout/stderr, so every output is in, and the user's cell has already finished.
Nothing here waits on the disk, the network or a model.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from ..config import AmbientSettings
from ..history import History, default_path, normalize_notebook
from ..identity import detect_notebook
from ..redact import redact_text
from .capture import OUTPUT_TYPES, CellCapture, DisplayIds
from .inflight import InFlight, folder_for, record_deaths
from .output_widgets import OutputWidgets
from .widgets import WidgetWatcher
from .writer import Writer

__all__ = ["Recorder"]

log = logging.getLogger("ambient_jupyter.kernel")

_MAX_OPEN_CAPTURES = 64


def _report_deaths(history: History) -> None:
    """Record what kernels that died during a cell left behind (on the writer thread)."""
    found = record_deaths(history, folder_for(history.path))
    if found:
        log.warning("ambient-jupyter recorded %d kernel death(s) it found on starting", found)


def _inflight(redact: bool) -> InFlight | None:
    """This kernel's page for the kernel after it (None if it cannot be made: then only
    the server and the runner can tell of a death)."""
    try:
        from ipykernel.kernelapp import IPKernelApp

        connection = IPKernelApp.instance().connection_file if IPKernelApp.initialized() else ""
        return InFlight(folder_for(default_path()), connection, redact_text if redact else None)
    except Exception:
        log.warning("ambient-jupyter cannot keep the running cell for the next kernel", exc_info=True)
        return None


class Recorder:
    """Records one shell's activity; created by ``%load_ext``, closed by ``%unload_ext``."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.settings = AmbientSettings(parent=shell)
        self.notebook, self._known = detect_notebook(shell)
        kernel = getattr(shell, "kernel", None)
        self._session = getattr(kernel, "session", None)
        self._kernel = kernel if self._session is not None else None
        self._captures: dict[str, CellCapture] = {}
        self._current: CellCapture | None = None
        self._agent_running = False
        self._agent_capture: CellCapture | None = None
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self._exit_listeners: list[Callable[[], None]] = []
        self._inflight = _inflight(self.settings.redact) if self._kernel is not None else None
        self._inflight_request = ""
        """The request whose cell the page names ("" while idle): its reply ends it."""
        self._exiting = False
        self.writer = Writer(
            lambda: History(redact=self.settings.redact),
            lambda: self.notebook,
            self._committed,
            on_open=_report_deaths,
        )
        self._displays = DisplayIds()
        self.output_widgets = OutputWidgets(
            self.writer.submit, self.settings.output_limit, pending=lambda msg_id: msg_id in self._captures
        )
        self.widgets = WidgetWatcher(self.writer.submit, self.output_widgets)
        self._original_send: Any = None
        self._closing = False

    @property
    def busy(self) -> bool:
        """Whether a cell is running now (main thread's view; read from any thread)."""
        return self._current is not None

    def on_commit(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call ``listener`` on the writer thread with each batch of committed events."""
        self._listeners.append(listener)

    def on_exit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the kernel is asked to shut down, once the running cell
        is no longer the next kernel's to report."""
        self._exit_listeners.append(listener)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        if self._session is not None:
            self._original_send = self._session.send
            self._session.send = self._send
        self.widgets.start()
        # ipykernel sets exit_now when it handles a shutdown request: from then on the
        # running cell is not a death for the next kernel to report.
        self.shell.observe(self._on_exit_now, names="exit_now")

    def _on_exit_now(self, change: Any) -> None:
        if change["new"]:
            # Asked to shut down (a restart, too): whatever is cut from here on, the
            # person asked for it, and the next kernel must not call it a death.
            self._exiting = True  # and no cell after this one counts
            self._inflight_request = ""
            if self._inflight is not None:
                self._inflight.idle()
            for listener in self._exit_listeners:
                try:
                    listener()
                except Exception:  # one listener's failure must not keep the others from their last chance
                    log.warning("ambient-jupyter: a shutdown step failed", exc_info=True)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.shell.unobserve(self._on_exit_now, names="exit_now")
        for name, hook in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            with contextlib.suppress(ValueError):
                self.shell.events.unregister(name, hook)
        if self._session is not None and self._original_send is not None:
            # Remove our instance attribute: the class's send shows through again.
            self._session.__dict__.pop("send", None)
            self._original_send = None
        self.widgets.stop()
        self.output_widgets.flush()
        self._inflight_request = ""
        if self._inflight is not None:
            self._inflight.close()
            self._inflight = None
        self._closing = True
        self.writer.close()

    # -- IPython events -------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        code = info.raw_cell or ""
        if getattr(info, "silent", False) or code.lstrip().startswith("%%ask"):
            # Silent executes are frontends' own plumbing; %%ask is recorded as chat.
            self._current = None
            return
        if not self._known:
            vsc = self.shell.user_ns.get("__vsc_ipynb_file__")
            if isinstance(vsc, str) and vsc:
                self.notebook, self._known = normalize_notebook(vsc), True
        msg_id = ""
        if self._kernel is not None:
            parent = self._kernel.get_parent("shell") or {}
            header = parent.get("header", {})
            # Only an execute_request gets an execute_reply to finish the cell on. Code
            # run from elsewhere (a widget's comm message running approved code) is
            # finished at post_run_cell, as in plain IPython.
            if header.get("msg_type") == "execute_request":
                msg_id = header.get("msg_id", "")
        capture = CellCapture(msg_id, code, time.perf_counter(), self.settings.output_limit, self._displays)
        self._current = capture
        if self._agent_running and self._agent_capture is None:
            self._agent_capture = capture
        if msg_id:
            if len(self._captures) >= _MAX_OPEN_CAPTURES:
                self._captures.pop(next(iter(self._captures)))
            self._captures[msg_id] = capture
            if self._inflight is not None and not self._inflight_request:
                self._keep_running(msg_id, code)

    def post_run_cell(self, result: Any) -> None:
        capture, self._current = self._current, None
        if capture is None:
            return
        capture.finished = time.perf_counter()
        capture.execution_count = result.execution_count
        capture.success = bool(result.success)
        if not capture.success:
            exc = result.error_in_exec or result.error_before_exec
            if exc is not None:
                if capture.error is None:
                    capture.error = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
                # Hints and state now, while the namespace is as the failure left it.
                from .diagnose import diagnose

                capture.hints, capture.state = diagnose(self.shell, exc, capture.code, self.notebook)
        if capture is self._agent_capture:
            # Agent code run inside the asking cell: it shares that cell's execute
            # request, so finish it now rather than at that request's reply.
            self._agent_capture = None
            _flush_std_streams()  # ipykernel sends what is buffered, and we see it
            if self._captures.get(capture.msg_id) is capture:
                del self._captures[capture.msg_id]
        elif capture.msg_id:
            return  # finished when its execute_reply is sent
        # No execute_reply comes for this one (plain IPython, a comm message's code): finish it now.
        self.writer.submit(capture.event)
        self.output_widgets.flush()

    def _keep_running(self, msg_id: str, code: str) -> None:
        """Name the cell in this kernel's page (the outermost one: agent code run from a
        cell belongs to that cell's request, which ends it)."""
        assert self._inflight is not None
        if self._exiting:
            return  # shutting down as asked: a kill from here on is not a death
        try:
            self._inflight.running(self.notebook, code)
            self._inflight_request = msg_id
        except Exception:  # the page is a courtesy to the next kernel; the cell runs regardless
            log.warning("ambient-jupyter could not keep the running cell for the next kernel", exc_info=True)

    def record_state(self, question: str | None = None) -> None:
        """Record what the kernel holds now, for a question about to be answered (main thread only)."""
        from .diagnose import snapshot

        event = {"kind": "kernel_state", "entries": snapshot(self.shell, question=question)}
        self.writer.submit(lambda: event)
        self.writer.flush()

    # -- the kernel's send path -----------------------------------------------

    def _send(self, *args: Any, **kwargs: Any) -> Any:
        msg = self._original_send(*args, **kwargs)
        try:
            msg_type = msg["header"]["msg_type"]
            if msg_type in OUTPUT_TYPES:
                parent = msg["parent_header"].get("msg_id", "")
                if self.output_widgets.taken(parent, msg_type, msg["content"]):
                    return msg  # shown inside an Output widget, not in the cell
                capture = self._captures.get(parent)
                if capture is not None:
                    capture.observe(msg_type, msg["content"])
            elif msg_type == "execute_reply":
                parent = msg["parent_header"].get("msg_id", "")
                if parent == self._inflight_request and self._inflight is not None:
                    self._inflight_request = ""
                    self._inflight.idle()
                capture = self._captures.pop(parent, None)
                if capture is not None:
                    self.writer.submit(capture.event)
                    self.output_widgets.flush()  # the Output widgets it wrote to, after it
        except (KeyError, TypeError, AttributeError):
            pass  # not a message we understand; it was sent all the same
        return msg

    # -- after commit ---------------------------------------------------------

    def _committed(self, events: list[dict[str, Any]]) -> None:
        if not self._closing:
            for listener in self._listeners:
                listener(events)

    def run_agent_cell(self, code: str) -> tuple[Any, dict[str, Any] | None]:
        """Run approved agent code as a cell of its own, from inside the cell that asked.

        Returns IPython's result and the committed ``cell_executed`` event (``None``
        if it did not arrive), so the host can link the action to it.
        """
        history = self.writer.history
        before = history.last_seq(self.notebook)
        _flush_std_streams()  # the asking cell's own text is not the agent cell's output
        self._agent_running = True
        try:
            result = self.shell.run_cell(code, store_history=True)
        finally:
            self._agent_running = False
            self._agent_capture = None
        self.writer.flush()
        cells = (e for e in history.read(self.notebook, before) if e.get("kind") == "cell_executed")
        return result, next((e for e in cells if e.get("execution_count") == result.execution_count), None)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a replaced stream may not flush
            stream.flush()
