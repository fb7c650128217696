"""Capture of one cell's outputs as the kernel publishes them, in bounded memory.

We observe the messages the kernel sends (``Session.send``), so we see exactly
what any frontend sees, whatever drives the kernel. That call is on the hot path
(the IOPub thread for streams, the shell thread for the rest): observing only
files a reference or slices a string, never encodes, copies or waits.
"""

from __future__ import annotations

import threading
from typing import Any

from .._trim import clean_text, strip_ansi, trim_marker

__all__ = ["OUTPUT_TYPES", "Bounded", "CellCapture", "summarize_outputs"]

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
        if kept >= self.total:
            return clean_text(head + tail)
        return clean_text(head + trim_marker(self.total) + tail)


def _b64_bytes(data: Any) -> int:
    if isinstance(data, str):
        # Decoded size of base64 text, without decoding it (padding '=' carries no data).
        return len(data) * 3 // 4 - data[-2:].count("=")
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return 0


class CellCapture:
    """Outputs of one execute request, keyed by its msg_id."""

    def __init__(self, msg_id: str, code: str, started: float, limit: int) -> None:
        self.msg_id = msg_id
        self.code = code
        self.started = started
        self.finished: float | None = None
        self.limit = limit
        self.execution_count: int | None = None
        self.success = True
        self.error: dict[str, Any] | None = None
        self.outputs: list[tuple[str, Any]] = []
        self.dropped = 0
        self.hints: list[dict[str, Any]] = []
        """Set on failure only (``kernel/diagnose.py``), before the cell is handed to the writer."""
        self.state: list[dict[str, str]] = []
        self._streams: dict[str, Bounded] = {}
        self._lock = threading.Lock()

    def observe(self, msg_type: str, content: dict[str, Any]) -> None:
        """Called from the kernel's send path: file the message, cheaply."""
        with self._lock:
            if msg_type == "stream":
                name = content.get("name", "stdout")
                sink = self._streams.get(name)
                if sink is None:
                    sink = self._streams[name] = Bounded(self.limit)
                    self.outputs.append(("stream", name))
                sink.add(content.get("text", ""))
            elif msg_type == "error":
                # Whether the cell failed is the shell's to say (``success``): an error
                # shown by code that handled it (an Output widget's ``with out:``,
                # ``showtraceback()`` in an except block) is an output, not a failure.
                self.error = content
                if len(self.outputs) < MAX_OUTPUTS:
                    self.outputs.append(("error", content))
            elif msg_type == "clear_output":
                self.outputs.clear()
                self._streams.clear()
            elif len(self.outputs) < MAX_OUTPUTS:
                self.outputs.append((msg_type, content))
            else:
                self.dropped += 1

    def event(self) -> dict[str, Any]:
        """The ``cell_executed`` event; runs on the writer thread, off the hot path."""
        with self._lock:
            outputs = summarize_outputs(self.outputs, self._streams, self.limit, success=self.success)
            if self.dropped:
                outputs.append({"type": "display", "text": f"[{self.dropped} more outputs not kept]"})
            error = None
            if not self.success:
                err = self.error or {}
                error = {
                    "ename": clean_text(str(err.get("ename", "Error"))),
                    "evalue": _trim_line(clean_text(strip_ansi(str(err.get("evalue", "")))), self.limit),
                    "traceback": _trim_traceback(err.get("traceback") or [], self.limit),
                }
        end = self.finished if self.finished is not None else self.started
        return {
            "kind": "cell_executed",
            "code": _trim_line(clean_text(self.code), self.limit * 4),
            "execution_count": self.execution_count,
            "status": "error" if error else "ok",
            "duration_ms": round((end - self.started) * 1000, 3),
            "outputs": outputs,
            "error": error,
            **({"hints": self.hints} if self.hints else {}),
            **({"state": self.state} if self.state else {}),
        }


def _trim_line(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + trim_marker(len(text)) + text[-half:]


def _trim_traceback(frames: list[Any], limit: int) -> list[str]:
    """ANSI-free traceback lines, at most ``limit`` chars in all, head and tail kept."""
    text = strip_ansi(clean_text("\n".join(str(f) for f in frames)))
    return _trim_line(text, limit).split("\n")


def summarize_outputs(
    outputs: list[tuple[str, Any]], streams: dict[str, Bounded], limit: int, *, success: bool = True
) -> list[dict[str, Any]]:
    """Turn filed messages into compact, JSON-safe output records.

    Images are never kept: only their mime type and size.
    """
    result: list[dict[str, Any]] = []
    for msg_type, content in outputs:
        if msg_type == "error":
            # The cell's own failure is its ``error`` field; this one was shown and handled.
            if success:
                shown = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
                result.append({"type": "display", "text": _trim_line(clean_text(strip_ansi(shown)), limit)})
            continue
        if msg_type == "stream":
            sink = streams.get(content)
            if sink is not None:
                result.append({"type": "stream", "name": content, "text": sink.text(), "chars": sink.total})
            continue
        data = content.get("data") or {}
        for mime, value in data.items():
            if mime.startswith("image/"):
                size = _b64_bytes(value)
                image: dict[str, Any] = {"type": "image", "mime": mime, "bytes": size}
                if mime in KEPT_IMAGES and isinstance(value, str) and 0 < size <= IMAGE_KEEP_BYTES:
                    image["data"] = value.replace("\n", "")
                result.append(image)
        text = data.get("text/plain")
        if text is None:
            rich = [m for m in data if not m.startswith("image/")]
            if not rich:
                continue
            text = f"<{rich[0]}>"
        if isinstance(text, list):
            text = "".join(text)
        kind = "result" if msg_type == "execute_result" else "display"
        result.append({"type": kind, "text": _trim_line(clean_text(strip_ansi(str(text))), limit)})
    return result
