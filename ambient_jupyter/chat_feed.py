"""One notebook's events, tailed from the history and pushed to its chat widgets.

The chat widget (``widget.py``) shows the conversation; this module keeps it fed:
one poller per (history file, notebook) in the kernel, shared by every chat widget
of that notebook, with the ordering guarantees the sidebar has (no gap, nothing twice).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from .gate import AGENT_MODES
from .history import History, HistoryError
from .tail import Tail

__all__ = ["Feed", "View", "for_view", "join", "leave"]

log = logging.getLogger("ambient_jupyter.widget")

POLL_INTERVAL = 0.25
"""Seconds between checks for events committed elsewhere (the kernel's writer, a server)."""
PAGE = 200
"""Events per message: a long history replays in several messages, none of them huge."""
_DROPPED = ("outputs", "raw", "notebook")
"""Event fields the view never shows: kept out of the comm messages."""


class View(Protocol):
    """A chat widget, as the feed sees it."""

    status: str
    mode: str

    def send(self, content: dict[str, Any]) -> None: ...


def for_view(event: dict[str, Any]) -> dict[str, Any]:
    """The part of a stored event a view shows (no outputs, no tracebacks)."""
    out = {k: v for k, v in event.items() if k not in _DROPPED}
    error = out.get("error")
    if isinstance(error, dict):
        out["error"] = {"ename": error.get("ename"), "evalue": error.get("evalue")}
    return out


class Feed:
    """Tails one notebook's history and pushes new events to every chat widget of it.

    It has its own SQLite connection: ``PRAGMA data_version`` changes only when
    *another* connection commits, and every writer here (the kernel's writer thread,
    the assistant) uses the recorder's. One lock orders the live stream and each
    view's replay, so a view never sees a gap or an event twice.
    """

    def __init__(self, path: Path, notebook: str, default_mode: str) -> None:
        self.history = History(path)
        self.notebook = notebook
        self.lock = threading.Lock()
        self.widgets: list[View] = []
        self.tail = Tail(self.history, notebook, PAGE)
        # Later settings_changed events are observed again as they are pumped: the last one wins.
        self.mode = self.history.agent_mode(notebook, default_mode)
        self.status = "idle"
        self.awaiting_run: set[str] = set()
        """Actions approved by the mode whose run this kernel handed to a view."""
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._poll, name="ambient-chat", daemon=True)
        self._thread.start()

    def broadcast(self, frame: dict[str, Any]) -> None:
        for widget in list(self.widgets):
            widget.send(frame)

    def set_status(self, status: str) -> None:
        self.status = status
        for widget in list(self.widgets):
            widget.status = status  # a synced trait: setting the value it has sends nothing

    def token(self, reply_id: str, text: str) -> None:
        if self.status != "streaming":
            self.set_status("streaming")
        self.broadcast({"type": "token", "reply_id": reply_id, "text": text})

    def wake(self) -> None:
        """Pump now (something was just stored)."""
        self._wake.set()

    def pump(self) -> None:
        """Send every event after the live position to every widget, in order."""
        with self.lock:
            while page := self.tail.live():
                for event in page:
                    if event.get("kind") == "settings_changed" and event.get("agent") in AGENT_MODES:
                        self.mode = str(event["agent"])
                self.broadcast({"type": "events", "events": [for_view(e) for e in page]})
                for widget in list(self.widgets):
                    widget.mode = self.mode
                if not self.tail.more(page):
                    return

    def replay(self, widget: View, view: str, after_seq: int) -> None:
        """Send one view what it lacks, up to the live position; it goes live after."""
        with self.lock:
            after, reset = self.tail.start(after_seq)
            while page := self.tail.backlog(after):
                after = int(page[-1]["seq"])
                widget.send({"type": "replay", "view": view, "events": [for_view(e) for e in page], "done": False})
            widget.send({"type": "replay", "view": view, "events": [], "done": True, "reset": reset})

    def _poll(self) -> None:
        seen = -1
        while not self._stopped:
            woken = self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            if self._stopped:
                return
            try:
                version = self.history.data_version()
                if woken or version != seen:
                    seen = version
                    self.pump()
            except (sqlite3.Error, HistoryError) as exc:
                # Keep polling: the next read may work (a busy or replaced file).
                log.warning("the chat widget could not read the history: %s", exc)
                self._wake.wait(1.0)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(2.0)
        self.history.close()


_feeds: dict[tuple[str, str], Feed] = {}
"""One feed per (history file, notebook) in this kernel, shared by its chat widgets."""
_feeds_lock = threading.Lock()


def join(widget: View, path: Path, notebook: str, default_mode: str) -> Feed:
    with _feeds_lock:
        feed = _feeds.get((str(path), notebook)) or Feed(path, notebook, default_mode)
        _feeds[(str(path), notebook)] = feed
        feed.widgets.append(widget)
        return feed


def leave(widget: View, feed: Feed) -> None:
    """The last widget to leave stops the feed's poller."""
    with _feeds_lock:
        feed.widgets = [w for w in feed.widgets if w is not widget]
        if feed.widgets:
            return
        _feeds.pop((str(feed.history.path), feed.notebook), None)
    feed.stop()
