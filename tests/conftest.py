"""Shared fixtures: every test gets its own history file, and helpers to run notebooks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from ambient_jupyter.history import History

ROOT = Path(__file__).resolve().parent.parent

# A real Jupyter server per test (jp_serverapp, jp_fetch, jp_ws_fetch, ...).
pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(autouse=True)
def ambient_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private history file: tests never touch the user's real history."""
    db = tmp_path / "history.sqlite"
    monkeypatch.setenv("AMBIENT_DB", str(db))
    for var in ("AMBIENT_NOTEBOOK", "AMBIENT_HOST", "AMBIENT_MODEL", "AMBIENT_QUIET", "JPY_SESSION_NAME"):
        monkeypatch.delenv(var, raising=False)
    # Tests that want a model say so; by default nothing reaches for Ollama on :11434.
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    return db


@pytest.fixture
def history(ambient_db: Path) -> Iterator[History]:
    h = History(ambient_db)
    yield h
    h.close()


def make_notebook(path: Path, cells: list[str | tuple[str, dict[str, Any]]]) -> Path:
    """Write a notebook of code cells; a cell may be ``(source, metadata)``."""
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    for cell in cells:
        source, metadata = cell if isinstance(cell, tuple) else (cell, {})
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata=metadata))
    nbformat.write(nb, path)
    return path


def run_with_nbclient(path: Path, *, allow_errors: bool = True, env: dict[str, str] | None = None,
                      timeout: int = 120) -> nbformat.NotebookNode:
    """Execute ``path`` with plain nbclient, as any third-party tool would."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    )
    kernel_env = {**os.environ, **(env or {})}
    client.execute(env=kernel_env)
    return nb


def events_of(history: History, notebook: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    events = history.read(str(notebook))
    return [e for e in events if kind is None or e["kind"] == kind]
