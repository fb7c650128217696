"""The timestamps events carry: standard library only, since the history imports no pydantic."""

from __future__ import annotations

import datetime as _dt


def now_iso() -> str:
    """The current time as an ISO-8601 UTC timestamp with milliseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
