"""``ambient_jupyter.chat()``: the notebook's conversation in a cell's output.

For frontends without the Ambient sidebar (Notebook 7, VS Code, Colab-style), hosted
by the in-kernel host: the same assistant as ``%%ask``, the same history as the sidebar.

Wire: anywidget custom messages, JSON objects discriminated by ``type``.

* view → kernel: ``hello{view, after_seq}``, ``chat{text, client_id}``, ``stop``,
  ``decide{action_id, decision, sha256}``, ``run{action_id}``;
* kernel → view: ``replay{view, events, done}`` (the answer to one view's hello),
  ``events{events}`` (live, to every view), ``token{reply_id, text}``,
  ``error{message, action_id?, client_id?}`` and ``run{action_id}``.

Comm handlers run on the kernel's main thread, so they never wait on the model: a
chat is handed to the host's own event loop, and tokens come back from there.
Approved code runs on the main thread, inside a comm handler, as the user's cells do.
A turn the mode approves on its own (``auto``) is finished on the host's loop, so
its run is handed back to the main thread through the view (``run``), and accepted
only for actions this kernel asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from traitlets import Unicode

from .act import Acted, ActEngine
from .act import Refused as NotAllowed
from .act import Run as Runner
from .assistant import NO_EXPERT_HELP, Role
from .chat_feed import Feed, join, leave
from .kernel import hosting_of, load

try:
    import anywidget
except ImportError as exc:  # anywidget is optional for the recorder, required here
    msg = "ambient_jupyter.chat() needs anywidget: pip install anywidget"
    raise ImportError(msg) from exc

__all__ = ["ChatWidget", "chat"]

log = logging.getLogger("ambient_jupyter.widget")

_STATIC = Path(__file__).parent / "static"


# -- what a view may send ------------------------------------------------------------


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Hello(_Msg):
    type: Literal["hello"]
    view: str = Field(min_length=1, max_length=100)
    after_seq: int = Field(0, ge=0)


class Chat(_Msg):
    type: Literal["chat"]
    text: str = Field(min_length=1, max_length=20_000)
    client_id: str = Field(min_length=1, max_length=200)


class Stop(_Msg):
    type: Literal["stop"]


class Decide(_Msg):
    type: Literal["decide"]
    action_id: str = Field(min_length=1, max_length=200)
    decision: Literal["approve", "reject"]
    sha256: str = Field("", max_length=128)


class Run(_Msg):
    type: Literal["run"]
    action_id: str = Field(min_length=1, max_length=200)


ViewMessage = Annotated[Union[Hello, Chat, Stop, Decide, Run], Field(discriminator="type")]
_view_message: TypeAdapter[ViewMessage] = TypeAdapter(ViewMessage)


class Refused(ValueError):
    """A view's request was refused; the message goes back to the view as is."""

    def __init__(self, message: str, **about: str) -> None:
        super().__init__(message)
        self.about = about


# -- the widget -----------------------------------------------------------------------


class ChatWidget(anywidget.AnyWidget):
    """The notebook's conversation, with a box to ask and buttons to decide.

    Create it with :func:`chat`. Its traits describe what it shows; the
    conversation itself travels as custom messages (see the module docstring).
    """

    _esm = _STATIC / "widget.js"  # built from labextension/src/widget.ts (scripts/build-widget.js)
    _css = _STATIC / "widget.css"  # the sidebar's stylesheet, labextension/style/base.css
    _ambient_record = False
    """Its traits are the conversation's own state, not something the user did."""

    notebook = Unicode("", help="The notebook whose conversation this is.").tag(sync=True)
    model_spec = Unicode("", help="The watcher model.").tag(sync=True)
    expert_spec = Unicode("", help="The expert model, if one is set.").tag(sync=True)
    mode = Unicode("ask", help="The notebook's agent mode: off, ask or auto.").tag(sync=True)
    status = Unicode("idle", help="idle, thinking or streaming.").tag(sync=True)

    def __init__(self, recorder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._recorder = recorder
        self._host = hosting_of(recorder.shell).ensure()
        self._assistant = self._host.assistant
        self._acts: ActEngine = self._host.acts
        self._runner: Runner = self._host.runner(recorder, keep_output=True)
        feed = join(self, self._assistant.history.path, self._assistant.notebook, recorder.settings.agent)
        self._feed: Feed | None = feed
        self.notebook, self.mode, self.status = self._assistant.notebook, feed.mode, feed.status
        self._show_models()
        self.on_msg(self._on_msg)

    def close(self) -> None:
        """Close the widget; the last one of a notebook stops its poller."""
        feed, self._feed = getattr(self, "_feed", None), None
        if feed is not None:
            leave(self, feed)
        super().close()

    def _show_models(self) -> None:
        self.model_spec = self._assistant.model_spec
        self.expert_spec = self._assistant.expert_spec or ""

    # -- messages from a view ------------------------------------------------------

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        feed = self._feed
        if feed is None:
            return
        try:
            message = _view_message.validate_python(content)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            self.send({"type": "error", "message": f"The chat sent a message the kernel cannot use ({problem}); "
                       "reload the page."})
            return
        try:
            if isinstance(message, Hello):
                feed.replay(self, message.view, message.after_seq)
            elif isinstance(message, Chat):
                self._chat(feed, message)
            elif isinstance(message, Stop):
                self._host.stop()
            elif isinstance(message, Decide):
                self._decide(feed, message)
            elif message.action_id in feed.awaiting_run:
                # A run the mode approved, handed back by a view; the first view's wins.
                feed.awaiting_run.discard(message.action_id)
                self._act(feed, self._acts.run(message.action_id, self._runner), message.action_id)
        except Refused as exc:
            self.send({"type": "error", "message": str(exc), **exc.about})

    def _chat(self, feed: Feed, message: Chat) -> None:
        text, role, about = message.text.strip(), "watcher", {"client_id": message.client_id}
        command, *rest = text.split(maxsplit=1) or [""]
        if command == "/expert":
            if not rest:
                raise Refused("Write your question after /expert.", **about)
            if not self._assistant.expert_spec:
                raise Refused(NO_EXPERT_HELP, **about)
            text, role = rest[0].strip(), "expert"
        if not text:
            raise Refused("Write a question first.", **about)
        feed.set_status("thinking")
        # What the question names, summarised here on the kernel's main thread (where the
        # summary's time box works), right before the question; not again for a resend.
        if self._assistant.history.keyed(feed.notebook, f"chat:{message.client_id}") is None:
            self._recorder.record_state(text)
        future = self._host.submit(self._turn(feed, text, message.client_id, role))  # type: ignore[arg-type]
        future.add_done_callback(lambda f: self._turn_done(feed, f))

    async def _turn(self, feed: Feed, text: str, client_id: str, role: Role) -> None:
        """On the host's loop: answer, stream, and let the mode decide what the model proposed."""
        # Everything run so far must be in the history before the model reads it.
        await asyncio.to_thread(self._recorder.writer.flush, 5.0)
        try:
            turn = await self._assistant.ask(text, source="widget", client_id=client_id, on_token=feed.token, role=role)
        finally:
            feed.set_status("idle")
            feed.wake()
        self._show_models()
        proposal = turn.proposal
        if proposal is None or turn.state != "complete":
            return
        settled = await self._acts.settle(proposal, person_present=True)
        feed.wake()
        if settled.state == "ran":
            # Approved by the mode in force now. Code runs on the kernel's main thread,
            # which only a comm message reaches; the engine checks the mode again there.
            feed.awaiting_run.add(proposal.action_id)
            feed.broadcast({"type": "run", "action_id": proposal.action_id})

    def _turn_done(self, feed: Feed, future: Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            # The assistant stores model failures itself; this is anything else.
            log.error("the chat widget's turn failed", exc_info=exc)
            feed.set_status("idle")
            feed.broadcast({"type": "error", "message": f"The assistant failed: {exc}. See the kernel's log."})

    def _decide(self, feed: Feed, message: Decide) -> None:
        """A person's Approve / Reject; an approval runs at once, here on the main thread."""

        async def decide() -> Acted | None:
            await self._acts.decide(message.action_id, message.decision, message.sha256)
            if message.decision != "approve":
                return None
            return await self._acts.run(message.action_id, self._runner)

        self._act(feed, decide(), message.action_id)

    def _act(self, feed: Feed, coro: Coroutine[Any, Any, Acted | None], action_id: str) -> None:
        """Run an act-engine step, serving the main-thread work it hands over; refusals go to the view."""
        about = {"action_id": action_id}
        try:
            acted = self._host.serve(coro)
        except NotAllowed as exc:
            raise Refused(f"{str(exc)[:1].upper()}{str(exc)[1:]}.", **about) from None
        except TimeoutError:
            raise Refused("The history did not answer in time; nothing more was done. Try again.", **about) from None
        finally:
            feed.wake()
        if acted is not None and acted.state == "refused":
            raise Refused(f"Not run: {acted.reason}", **about)


def chat() -> ChatWidget:
    """Show this notebook's conversation with the assistant, in the cell's output.

    Works in any frontend that renders anywidget widgets (JupyterLab, Notebook 7,
    VS Code, Colab). Loads the ``ambient_jupyter`` kernel extension if it is not
    loaded yet, so what runs is recorded.

    Returns
    -------
    ChatWidget
        Display it (make it the cell's last expression).
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        msg = "ambient_jupyter.chat() needs IPython: call it from a notebook cell"
        raise RuntimeError(msg)
    return ChatWidget(load(shell))
