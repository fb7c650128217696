"""Capture of one cell's outputs as the kernel publishes them, in bounded memory.

We observe the messages the kernel sends (``Session.send``), so we see exactly
what any frontend sees, whatever drives the kernel. That call is on the hot path
(the IOPub thread for streams, the shell thread for the rest): observing only
files a reference or slices a string, never encodes, copies or waits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from .._trim import clean_text, readable, strip_ansi, trim_marker, trim_text

__all__ = [
    "OUTPUT_TYPES",
    "Bounded",
    "CellCapture",
    "DisplayIds",
    "summarize_nbformat",
    "summarize_outputs",
    "within_budget",
]

OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}
)
MAX_OUTPUTS = 30
"""Per cell; beyond this, outputs are only counted."""
IMAGE_KEEP_BYTES = 256 * 1024
"""PNG and JPEG images up to this size are kept (base64) for models that can see; bigger
ones, like every other image, are only measured."""
KEPT_IMAGES = ("image/png", "image/jpeg")


class Bounded:
    """A text sink that keeps its first and last ``limit // 2`` characters."""

    __slots__ = ("_head", "_tail", "half", "total")

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self._head: list[str] = []
        self._tail: list[str] = []
        self.total = 0

    def add(self, text: str) -> None:
        n = len(text)
        head_len = min(self.total, self.half)
        self.total += n
        taken = 0
        if head_len < self.half:
            take = text[: self.half - head_len]
            self._head.append(take)
            taken = len(take)
        if n > taken:
            # Slice from the end of the original: a 50 MB chunk is never copied whole.
            self._tail.append(text[-min(self.half, n - taken) :])
            if len(self._tail) > 64 or sum(map(len, self._tail)) > 2 * self.half:
                joined = "".join(self._tail)
                self._tail = [joined[-self.half :]]

    def text(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)[-self.half :]
        kept = len(head) + len(tail)
        # Colour codes (logging, tqdm, a coloured print) are noise to a reader of the record.
        if kept >= self.total:
            return clean_text(strip_ansi(head + tail))
        return clean_text(strip_ansi(head) + trim_marker(self.total) + strip_ansi(tail))


def _b64_bytes(data: Any) -> int:
    if isinstance(data, str):
        # Decoded size of base64 text, without decoding it (padding '=' carries no data).
        return len(data) * 3 // 4 - data[-2:].count("=")
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return 0


class _Stream:
    """One run of adjacent chunks of the same stream, as a frontend merges them."""

    __slots__ = ("name", "sink")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.sink = Bounded(limit)


def _display_id(content: dict[str, Any]) -> str | None:
    # ``transient`` may be present and None (nbclient guards against this too).
    transient = content.get("transient")
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    return str(display_id) if display_id else None


class CellCapture:
    """Outputs of one execute request, keyed by its msg_id, as a frontend applies them.

    The order of outputs is kept (adjacent chunks of one stream merge, as nbformat
    and JupyterLab do); ``clear_output(wait=True)`` clears only when the next output
    arrives; ``update_display_data`` replaces the display it targets in this cell, and
    is kept as an explicit ``update`` when its target was shown by an earlier cell.
    """

    def __init__(self, msg_id: str, code: str, started: float, limit: int, shown_before: DisplayIds) -> None:
        self.msg_id = msg_id
        self.code = code
        self.started = started
        self.finished: float | None = None
        self.limit = limit
        self.execution_count: int | None = None
        self.success = True
        self.error: dict[str, Any] | None = None
        self.outputs: list[tuple[str, Any]] = []
        """``("stream", _Stream)`` or ``(msg_type, content)``, in the order shown."""
        self.dropped = 0
        self.hints: list[dict[str, Any]] = []
        """Set on failure only (``kernel/diagnose.py``), before the cell is handed to the writer."""
        self.state: list[dict[str, str]] = []
        self._clear_next = False
        self._shown_before = shown_before
        self._own_ids: set[str] = set()
        """Display ids this cell has shown (even if cleared since)."""
        self._updates: dict[str, dict[str, Any]] = {}
        """display_id -> the latest data sent for a display an earlier cell shows. Not an
        output of this cell, so its clears do not touch it: the earlier cell keeps it."""
        self._lock = threading.Lock()

    def observe(self, msg_type: str, content: dict[str, Any]) -> None:
        """Called from the kernel's send path: file the message, cheaply."""
        with self._lock:
            if msg_type == "clear_output":
                if content.get("wait"):
                    self._clear_next = True
                else:
                    self._clear()
                return
            if msg_type == "update_display_data":
                # An update is not new output: it does not trigger a waiting clear.
                self._update(content)
                return
            if self._clear_next:
                self._clear()
            if msg_type == "stream":
                self._stream(content)
                return
            if msg_type == "error":
                # Whether the cell failed is the shell's to say (``success``): an error
                # shown by code that handled it (``showtraceback()`` in an except block)
                # is an output, not a failure.
                self.error = content
            elif (display_id := _display_id(content)) is not None:
                # A display with an id updates every display with that id, here and in
                # earlier cells (as JupyterLab and nbclient do).
                self._update(content, explicit=display_id in self._shown_before)
                self._own_ids.add(display_id)
            if len(self.outputs) < MAX_OUTPUTS:
                self.outputs.append((msg_type, content))
            else:
                self.dropped += 1

    def _clear(self) -> None:
        self.outputs.clear()
        self.dropped = 0
        self._clear_next = False

    def _stream(self, content: dict[str, Any]) -> None:
        name = str(content.get("name", "stdout"))
        text = content.get("text", "")
        last = self.outputs[-1][1] if self.outputs else None
        if not (isinstance(last, _Stream) and last.name == name):
            if len(self.outputs) < MAX_OUTPUTS:
                last = _Stream(name, self.limit)
                self.outputs.append(("stream", last))
            else:
                # Past the cap, the text joins the latest run of its stream: the order
                # is lost, the text (and its tail, usually what matters) is not.
                last = next((o for _, o in reversed(self.outputs) if isinstance(o, _Stream) and o.name == name), None)
                if last is None:
                    self.dropped += 1
                    return
        last.sink.add(text if isinstance(text, str) else str(text))

    def _update(self, content: dict[str, Any], *, explicit: bool | None = None) -> None:
        """Show ``content`` in this cell's displays with its id; keep it as an explicit
        update (``explicit``, by default: unless only this cell ever showed that id)."""
        display_id = _display_id(content)
        if display_id is None:
            return
        for i, (msg_type, shown) in enumerate(self.outputs):
            if msg_type in ("display_data", "execute_result") and _display_id(shown) == display_id:
                self.outputs[i] = (msg_type, {**shown, "data": content.get("data") or {}})
        if explicit is None:
            # Its target is in an earlier cell, or was shown before recording began.
            explicit = display_id in self._shown_before or display_id not in self._own_ids
        if not explicit:
            return
        if display_id in self._updates or len(self._updates) < MAX_OUTPUTS:
            self._updates.pop(display_id, None)
            self._updates[display_id] = content
        else:
            self.dropped += 1

    def event(self) -> dict[str, Any]:
        """The ``cell_executed`` event; runs on the writer thread, off the hot path."""
        with self._lock:
            updates = [("update", content) for content in self._updates.values()]
            outputs = summarize_outputs(self.outputs + updates, self.limit, success=self.success)
            if self.dropped:
                outputs.append({"type": "display", "text": f"[{self.dropped} more outputs not kept]"})
            # Cells are turned into events in order, on one thread: what this cell
            # shows is "earlier" for every later cell's updates.
            self._shown_before.add_all(_display_id(c) for t, c in self.outputs if t != "stream")
            error = None
            if not self.success:
                err = self.error or {}
                error = {
                    "ename": clean_text(str(err.get("ename", "Error"))),
                    "evalue": readable(str(err.get("evalue", "")), self.limit),
                    "traceback": _trim_traceback(err.get("traceback") or [], self.limit),
                }
        end = self.finished if self.finished is not None else self.started
        return {
            "kind": "cell_executed",
            "code": trim_text(clean_text(self.code), self.limit * 4),
            "execution_count": self.execution_count,
            "status": "error" if error else "ok",
            "duration_ms": round((end - self.started) * 1000, 3),
            "outputs": outputs,
            "error": error,
            **({"hints": self.hints} if self.hints else {}),
            **({"state": self.state} if self.state else {}),
        }


class DisplayIds:
    """The display ids shown by earlier cells of this kernel, newest kept (bounded)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}

    def __contains__(self, display_id: object) -> bool:
        return display_id in self._ids

    def add_all(self, ids: Iterable[str | None]) -> None:
        for display_id in ids:
            if display_id:
                self._ids.pop(display_id, None)
                self._ids[display_id] = None
        while len(self._ids) > self.LIMIT:
            self._ids.pop(next(iter(self._ids)))


def _handled_error(content: dict[str, Any], limit: int) -> dict[str, Any]:
    """An error shown (and handled) rather than the cell's failure: one display line."""
    shown = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
    return {"type": "display", "text": readable(shown, limit)}


def _trim_traceback(frames: list[Any], limit: int) -> list[str]:
    """ANSI-free traceback lines, at most ``limit`` chars in all, head and tail kept."""
    text = strip_ansi(clean_text("\n".join(str(f) for f in frames)))
    return trim_text(text, limit).split("\n")


def summarize_outputs(outputs: list[tuple[str, Any]], limit: int, *, success: bool = True) -> list[dict[str, Any]]:
    """Turn filed messages into compact, JSON-safe output records, in their order.

    Images are measured; small PNG and JPEG ones are kept for models that can see.
    A display that has a ``display_id`` carries it: a later ``update`` (or a later
    display with the same id) replaces what it shows, as in the notebook.
    """
    result: list[dict[str, Any]] = []
    errors = [i for i, (msg_type, _) in enumerate(outputs) if msg_type == "error"]
    failure = errors[-1] if errors and not success else -1
    for i, (msg_type, content) in enumerate(outputs):
        if msg_type == "error":
            # The cell's own failure is its ``error`` field; an earlier one was shown and handled.
            if i != failure:
                result.append(_handled_error(content, limit))
            continue
        if isinstance(content, _Stream):
            sink = content.sink
            result.append({"type": "stream", "name": content.name, "text": sink.text(), "chars": sink.total})
            continue
        kind = {"execute_result": "result", "update": "update"}.get(msg_type, "display")
        result.extend(_summarize_data(kind, content, limit))
    return result


def _summarize_data(kind: str, content: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """A display, result or update: its images measured (small ones kept), then its text."""
    result: list[dict[str, Any]] = []
    data = content.get("data") or {}
    if not isinstance(data, dict):
        return result
    display_id = _display_id(content)
    ident = {"display_id": clean_text(display_id)} if display_id else {}
    for mime, value in data.items():
        if mime.startswith("image/"):
            size = _b64_bytes(value)
            image: dict[str, Any] = {"type": "image", "mime": mime, "bytes": size, **ident}
            if mime in KEPT_IMAGES and isinstance(value, str) and 0 < size <= IMAGE_KEEP_BYTES:
                image["data"] = value.replace("\n", "")
            if kind == "update":
                image["update"] = True
            result.append(image)
    text = data.get("text/plain")
    if text is None:
        rich = [m for m in data if not m.startswith("image/")]
        if not rich:
            return result
        text = f"<{rich[0]}>"
    if isinstance(text, list):
        text = "".join(text)
    result.append({"type": kind, "text": readable(str(text), limit), **ident})
    return result


def summarize_nbformat(outputs: Any, limit: int) -> list[dict[str, Any]]:
    """nbformat outputs (an Output widget's ``outputs``) summarised like a cell's, within ``limit``."""
    if not isinstance(outputs, (list, tuple)):
        return []
    last = [out for out in outputs[-MAX_OUTPUTS:] if isinstance(out, dict)]
    records = [record for out in last for record in _summarize_nbformat_one(out, limit)]
    hidden = max(0, len(outputs) - MAX_OUTPUTS)
    return within_budget(records, limit, hidden)


def within_budget(records: list[dict[str, Any]], limit: int, hidden: int = 0) -> list[dict[str, Any]]:
    """The newest of ``records`` whose text fits in ``limit`` characters, the rest counted.

    For a widget's value, which is recorded at every change (a loop printing into an
    Output widget changes it at every flush): each record must stay small. Pictures
    are measured only.
    """
    kept: list[dict[str, Any]] = []
    budget = limit
    for record in reversed(records):
        size = len(record.get("text", ""))
        if kept and size > budget:
            break
        record = {k: v for k, v in record.items() if k != "data"}
        if size > budget:
            record["text"] = trim_text(record["text"], max(budget, 1))
        kept.append(record)
        budget -= size
    dropped = len(records) - len(kept) + hidden
    head = [{"type": "display", "text": f"[{dropped} earlier outputs not kept]"}] if dropped else []
    return head + kept[::-1]


def _summarize_nbformat_one(out: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    output_type = out.get("output_type")
    if output_type == "stream":
        text = out.get("text", "")
        text = "".join(text) if isinstance(text, list) else str(text)
        shown = readable(text, limit)
        return [{"type": "stream", "name": str(out.get("name", "stdout")), "text": shown, "chars": len(text)}]
    if output_type == "error":
        return [_handled_error(out, limit)]
    if output_type in ("display_data", "execute_result"):
        return _summarize_data("result" if output_type == "execute_result" else "display", out, limit)
    return []
