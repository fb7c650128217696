"""Replay, then live: one notebook's events for the views that show them.

Both the server's rooms (``server/hub.py``) and the chat widget's feed
(``chat_feed.py``) show a notebook's history to several views that arrive at any
time. The guarantee is the same for both: a view gets every event once, in order,
with no gap between what it replays and what it then receives live. A :class:`Tail`
holds the one number that makes this work, the last seq sent live; its owner calls
it under the lock that also orders its live sends, so a replay stops exactly where
the live stream goes on. Reads are in pages, so a long history is never held whole.
"""

from __future__ import annotations

from typing import Any

from .history import History

__all__ = ["Tail"]


class Tail:
    """The live position in one notebook's history; not thread-safe (the owner locks)."""

    def __init__(self, history: History, notebook: str, page: int, start: int | None = None) -> None:
        self.history = history
        self.notebook = notebook
        self.page = page
        self.sent_seq = history.last_seq(notebook) if start is None else start
        """The last seq sent live: later events are new to every view."""

    def live(self) -> list[dict[str, Any]]:
        """The next page of new events (empty: none), which now count as sent."""
        page = self.history.read(self.notebook, self.sent_seq, limit=self.page)
        if page:
            self.sent_seq = int(page[-1]["seq"])
        return page

    def more(self, page: list[dict[str, Any]]) -> bool:
        """True if another page may follow ``page``."""
        return len(page) >= self.page

    def start(self, after_seq: int) -> tuple[int, bool]:
        """Where a view that has seen ``after_seq`` replays from, and whether it starts over.

        A view that claims more than has been sent saw another history (the file was
        replaced): it starts over rather than miss events.
        """
        reset = after_seq > self.sent_seq
        return (0 if reset else max(0, after_seq)), reset

    def backlog(self, after: int) -> list[dict[str, Any]]:
        """The next page of a replay after ``after``, up to the live position (empty: done)."""
        if after >= self.sent_seq:
            return []
        return [e for e in self.history.read(self.notebook, after, limit=self.page) if int(e["seq"]) <= self.sent_seq]
