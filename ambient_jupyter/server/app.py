"""The Jupyter server extension: hosts the assistant for every notebook in this server."""

from __future__ import annotations

import asyncio
import os
import queue
import uuid
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, Unicode

from ..config import AmbientSettings
from ..cpus import usable_cpus
from ..history import History
from .handlers import AmbientSocket, HistoryHandler, ModelsHandler, StatusHandler
from .hub import Hub, HubSettings, KernelCallError
from .kernel_deaths import KernelDeaths
from .paths import resolve_notebook

__all__ = ["AmbientExtension"]

class AmbientExtension(ExtensionApp):
    """ambient-jupyter inside Jupyter Server: the chat sidebar's backend."""

    name = "ambient_jupyter"
    load_other_extensions = True

    # The server's assistant is configured by the one AmbientSettings (a child
    # configurable, as ServerApp makes its managers), so that c.AmbientSettings.x means
    # the same thing here as in a kernel or a headless run.
    classes = [*ExtensionApp.classes, AmbientSettings]

    model_threads = Int(
        0,
        help="Threads for an in-process model (embedded, llamacpp:). 0: every CPU but one while it writes, "
        "so that Jupyter and the kernels stay responsive, and every CPU while it reads a prompt (a short "
        "burst). Env: AMBIENT_THREADS (writing), AMBIENT_BATCH_THREADS (reading).",
    ).tag(config=True)
    poll_interval = Float(
        0.05, help="Seconds between checks for events committed by kernels (a cheap SQLite probe)."
    ).tag(config=True)
    client_queue_limit = Int(
        2000, help="Frames a client may fall behind by before it is disconnected (it then catches up with after_seq)."
    ).tag(config=True)
    max_pending_chats = Int(
        2,
        min=1,
        help="Questions one tab may have waiting or being answered at once; more get a 'busy' error "
        "(Stop drops the waiting ones).",
    ).tag(config=True)
    client_frame_rate = Float(
        100.0, min=0.1, help="Frames per second a tab may send, on average; more get an error and are ignored."
    ).tag(config=True)
    client_frame_burst = Int(
        500, min=1, help="Frames a tab may send at once before client_frame_rate applies."
    ).tag(config=True)
    plugin_timeout = Float(
        60.0, help="Seconds to wait for the kernel to run an approved plugin call before it counts as failed."
    ).tag(config=True)
    state_timeout = Float(
        2.0, help="Seconds to wait for the kernel's summary of its objects before a chat turn (busy: the last known)."
    ).tag(config=True)
    db = Unicode("", help="The history file. Default: $AMBIENT_DB, else the Jupyter data dir.").tag(config=True)

    hub: Hub | None = None
    ambient: AmbientSettings | None = None
    """The assistant's settings, made in :meth:`initialize_settings`."""

    def initialize_settings(self) -> None:
        # Kernels started by this server inherit its environment: tell their recorder
        # that a host (us) diagnoses failures, so the kernel doesn't answer as well.
        os.environ["AMBIENT_HOST"] = "server"
        if self.model_threads > 0 or not os.environ.get("AMBIENT_THREADS", "").strip():
            # An in-process model would otherwise take every core from the server and
            # the user's kernels (benchmark P7); kernels inherit this too.
            os.environ["AMBIENT_THREADS"] = str(self.model_threads or max(1, usable_cpus() - 1))
            if not self.model_threads and not os.environ.get("AMBIENT_BATCH_THREADS", "").strip():
                # Reading a prompt is short: on every CPU, so a reaction starts sooner (P13).
                os.environ["AMBIENT_BATCH_THREADS"] = str(usable_cpus())
        if self.db:
            os.environ["AMBIENT_DB"] = self.db
        self.ambient = AmbientSettings(parent=self)
        if self.ambient.redact:
            os.environ["AMBIENT_REDACT"] = "1"  # the kernels this server starts redact too
        history = History(self.db or None, redact=self.ambient.redact)
        assert self.serverapp is not None
        root_dir = self.serverapp.root_dir
        settings = HubSettings(
            assistant=self.ambient,
            poll_interval=self.poll_interval,
            client_queue_limit=self.client_queue_limit,
            max_pending_chats=self.max_pending_chats,
            client_frame_rate=self.client_frame_rate,
            client_frame_burst=self.client_frame_burst,
            state_timeout=self.state_timeout,
        )
        self.hub = Hub(
            history,
            settings,
            resolve=lambda path: resolve_notebook(root_dir, path),
            open_notebooks=self._open_notebooks,
            kernel_runner=self._run_in_kernel,
            background=[KernelDeaths(self.serverapp.kernel_manager, self._kernel_died).run],
            kernel_busy=self._kernel_busy,
        )
        self.settings["ambient_hub"] = self.hub
        self.log.info("ambient-jupyter: model %s, history %s", self.ambient.model, history.path)

    async def _open_notebooks(self) -> set[str]:
        assert self.serverapp is not None
        sessions = await self.serverapp.session_manager.list_sessions()
        return {s["path"] for s in sessions if s.get("type") in (None, "notebook") and s.get("path")}

    async def _kernel_of(self, api_path: str) -> str | None:
        """The id of the kernel of the notebook's session, if it has one."""
        assert self.serverapp is not None
        sessions = await self.serverapp.session_manager.list_sessions()
        return next((s["kernel"]["id"] for s in sessions if s.get("path") == api_path and s.get("kernel")), None)

    async def _kernel_busy(self, api_path: str) -> bool:
        """True while the kernel of the notebook's session is executing (as its status says)."""
        assert self.serverapp is not None
        kernel_id = await self._kernel_of(api_path)
        if kernel_id is None or kernel_id not in self.serverapp.kernel_manager:
            return False
        return getattr(self.serverapp.kernel_manager.get_kernel(kernel_id), "execution_state", "") == "busy"

    async def _kernel_died(self, kernel_id: str, code: str, key: str) -> None:
        """A kernel of this server died: tell its notebook's history, if it has one."""
        assert self.serverapp is not None and self.hub is not None
        sessions = await self.serverapp.session_manager.list_sessions()
        path = next((s.get("path") for s in sessions if (s.get("kernel") or {}).get("id") == kernel_id), None)
        if not path:
            return  # a console, or a kernel with no session
        try:
            ref = resolve_notebook(self.serverapp.root_dir, path)
        except ValueError:
            return
        await self.hub.kernel_died(ref, code, key)

    async def _run_in_kernel(self, api_path: str, code: str, timeout: float | None = None) -> None:
        """Run ``code`` silently in the kernel of the notebook's session (plugin calls, state requests).

        Waits at most ``timeout`` seconds (default ``plugin_timeout``) for the reply.
        """
        limit = self.plugin_timeout if timeout is None else timeout
        assert self.serverapp is not None
        kernel_id = await self._kernel_of(api_path)
        if kernel_id is None:
            msg = f"{api_path} has no running kernel in this server; open it and run a cell first"
            raise LookupError(msg)
        manager = self.serverapp.kernel_manager.get_kernel(kernel_id)
        # A session of its own: clients made from the kernel manager share its session,
        # whose id is their shell socket's identity; two sockets with one identity steal
        # each other's replies, and closing ours would leave the other deaf.
        session = manager.session.clone()
        session.session = uuid.uuid4().hex
        client = manager.client(session=session)
        client.start_channels()
        try:
            msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
            # Wait for this request's reply, bounded, so that a failure is recorded.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit
            while (left := deadline - loop.time()) > 0:
                try:
                    # The server's kernel clients are async; ensure_async (as in nbclient) says so to mypy.
                    reply = await ensure_async(client.get_shell_msg(timeout=left))
                except queue.Empty:
                    break
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                content = reply.get("content", {})
                if content.get("status") != "ok":
                    msg = f"the kernel raised {content.get('ename')}: {content.get('evalue')}"
                    raise KernelCallError(msg)
                return
            msg = f"the kernel did not answer within {limit:g} s (is it busy running a cell?)"
            raise KernelCallError(msg)
        finally:
            client.stop_channels()

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            [
                (r"/ambient/ws", AmbientSocket),
                (r"/ambient/api/history", HistoryHandler),
                (r"/ambient/api/models", ModelsHandler),
                (r"/ambient/api/status", StatusHandler),
            ]
        )

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.hub is not None:
            self.hub.start()

    async def stop_extension(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
