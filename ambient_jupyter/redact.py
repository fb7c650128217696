"""Best-effort removal of common secrets from an event before it is stored (opt-in).

What it finds: keys with a known shape (OpenAI, Anthropic, GitHub, Slack, AWS access
key ids, Google API keys, JSON Web Tokens, PEM private keys), credentials in URLs,
and the value assigned or passed to a name that says it is secret (``password =``,
``api_key=``, ``"token": ``...). What it cannot find: a secret with no telltale shape
or name (``x = "hunter2"``), one split across lines or built at run time, or one in a
picture. It changes the record, so a redacted cell no longer reads exactly as the
notebook shows it; an agent proposal whose code was redacted no longer matches its
sha256, so it cannot be approved to run (nothing runs that no one saw).

Imports only the standard library: the history uses it in every process.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MARK", "redact", "redact_text"]

MARK = "[REDACTED]"

_SHAPES = re.compile(
    r"""
    -----BEGIN[ A-Z]*PRIVATE\ KEY-----[\s\S]*?-----END[ A-Z]*PRIVATE\ KEY-----
    | \bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}
    | \bgh[pousr]_[A-Za-z0-9]{30,}
    | \bgithub_pat_[A-Za-z0-9_]{30,}
    | \bxox[abprs]-[A-Za-z0-9\-]{10,}
    | \bAKIA[0-9A-Z]{16}\b
    | \bAIza[0-9A-Za-z_\-]{35}
    | \beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}
    """,
    re.VERBOSE,
)
# scheme://user:password@host: the password goes.
# Every repeat is bounded, and a match starts only at a word's start: a long run of
# letters (a megabyte of "x") is one linear scan, not a scan per position.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]{0,31}://[^\s:/@]{1,256}:)[^\s/@]{1,256}(?=@)", re.IGNORECASE
)
# A name that says "secret", then = or : (a Python assignment or keyword argument, a
# JSON or YAML key, an environment line), then the value: a quoted string, or a bare
# word of six or more characters with a letter in it that ends there (so a call, an
# f-string, a list or a number is left alone).
_NAMED = re.compile(
    r"""
    (?P<head>
        \b\w{0,64}(?:passw(?:or)?d|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|auth)[\w\-]{0,64}
        ["']?\s*[:=]\s*
    )
    (?P<value>"[^"\n]+"|'[^'\n]+'|(?=[\w\-+/=]*[A-Za-z])[\w\-+/=]{6,}(?=$|[\s,;]))
    """,
    re.IGNORECASE | re.VERBOSE,
)


def redact_text(text: str) -> str:
    """``text`` with every secret this module recognises replaced by :data:`MARK`."""
    text = _SHAPES.sub(MARK, text)
    text = _URL_CREDENTIALS.sub(lambda m: m.group("head") + MARK, text)

    def named(match: re.Match[str]) -> str:
        value = match.group("value")
        if value.strip("'\"") == MARK:
            return match.group(0)
        quote = value[0] if value[0] in "'\"" else ""
        return f"{match.group('head')}{quote}{MARK}{quote}"

    return _NAMED.sub(named, text)


def redact(value: Any) -> Any:
    """``value`` (an event, or any part of one) with every string redacted; keys stay."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: v if k in _KEEP else redact(v) for k, v in value.items()}
    return value


# Fields that identify rather than say anything: a hash or an id is never a secret
# of the person's, and changing it would break the record's links.
_KEEP = frozenset({"kind", "sha256", "action_id", "reply_id", "client_id", "cell_id", "model_id", "widget", "at"})
