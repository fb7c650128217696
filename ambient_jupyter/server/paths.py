"""Turn a client's notebook path into the history's notebook identifier, safely.

Clients name notebooks by contents path (relative to the server's root, ``/``
separated), as JupyterLab does. The kernel names the same notebook by the absolute
path Jupyter Server gives it in ``JPY_SESSION_NAME``; both must land on one id.
Nothing is ever read from or written to the path itself: it is only a key, but a key
outside the root would let one user read another place's conversation, so such
paths are refused.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote

from ..history import normalize_notebook

__all__ = ["BadNotebookPath", "NotebookRef", "resolve_notebook"]

MAX_PATH = 1024


class BadNotebookPath(ValueError):
    """The path is not a notebook path under the server root (the message says why)."""


@dataclass(frozen=True)
class NotebookRef:
    api_path: str
    """The contents path, as clients spell it."""
    notebook_id: str
    """The history's identifier: the absolute path, as the kernel spells it."""


def resolve_notebook(root_dir: str, path: object) -> NotebookRef:
    """Validate ``path`` and map it to the history's identifier.

    Raises :class:`BadNotebookPath` for anything that is not a plain relative path to
    an ``.ipynb`` file inside ``root_dir`` (symlinks included).
    """
    if not isinstance(path, str) or not path.strip():
        raise BadNotebookPath("a notebook path is required")
    if len(path) > MAX_PATH or "\x00" in path or "\\" in path:
        raise BadNotebookPath("the notebook path is not valid")
    # Clients send decoded paths; anything still percent-encoded is refused rather
    # than decoded a second time (a classic way to smuggle "..").
    if unquote(path) != path:
        raise BadNotebookPath("the notebook path must not be percent-encoded")
    api_path = path.strip("/") if not path.startswith("/") else ""
    if not api_path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise BadNotebookPath("the notebook path must be relative to the server root")
    parts = api_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadNotebookPath("the notebook path must not contain '.', '..' or empty segments")
    if not api_path.endswith(".ipynb"):
        raise BadNotebookPath("only notebooks (.ipynb) have a conversation")
    # The id uses the root as Jupyter Server spells it (absolute, symlinks kept), as
    # the kernel's JPY_SESSION_NAME does; the containment check uses real paths.
    root = os.path.abspath(os.path.expanduser(root_dir))
    joined = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(joined)]) != real_root:
        raise BadNotebookPath("the notebook path leaves the server root")
    return NotebookRef(api_path=posixpath.join(*parts), notebook_id=normalize_notebook(joined))
