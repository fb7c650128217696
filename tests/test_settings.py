"""One ``AmbientSettings`` for every host, and ``ambient-jupyter run`` honouring all of it.

The runner tests run the real CLI in a subprocess (ipykernel, nbclient, SQLite) with
the watcher behind the Ollama wire fake and the expert behind the OpenAI wire fake:
the watcher is scripted to propose code that does not parse, every time, so the turn
reaches the expert only if the runner's assistant was given one.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import events_of, make_notebook
from fakes.ollama_server import FakeOllama, ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)
from fakes.openai_server import FakeOpenAI, openai_server_fixture  # noqa: F401 (the `openai_server` fixture)

from ambient_jupyter.assistant import Assistant
from ambient_jupyter.config import ENV, AmbientSettings
from ambient_jupyter.history import History

WATCHER = "ollama:tiny:1b"
EXPERT = "openai:fake-gpt"
CELLS = [
    "import os\nprint('kernel expert:', os.environ.get('AMBIENT_EXPERT'))",
    "data = [1, 2, 3]",
    "mean = sum(data) / 0",  # the kernel's analyzer has no fix for this, so a model is asked
    "print('mean', mean)",
]
BROKEN = "mean = sum(data) / len(data"
"""The watcher's fix: it does not parse, so it fails validation (twice)."""
FIX = "mean = sum(data) / len(data)\n"


def edit(code: str, text: str, cell: int = 3) -> str:
    return json.dumps({"action": "edit_cell", "text": text, "cell": cell, "code": code})


@pytest.fixture
def models(
    ollama_server: FakeOllama, openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeOllama, FakeOpenAI]:
    # Whatever the machine running the tests has set must not decide these runs.
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ollama_server.reply = edit(BROKEN, "Divide by the count.")
    openai_server.reply = edit(FIX, "Divide by the number of items, not by zero.")
    return ollama_server, openai_server


def run_cli(nb: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``ambient-jupyter run`` with no terminal, as a CI job runs it."""
    command = [sys.executable, "-m", "ambient_jupyter", "run", str(nb), "--model", WATCHER, "--no-progress", *args]
    return subprocess.run(
        command,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_the_expert_fixed_it(
    nb: Path, run: subprocess.CompletedProcess[str], history: History, watcher: FakeOllama, expert: FakeOpenAI
) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    replies = events_of(history, nb, "assistant_message")
    assert [(r["role"], r["model"], r["state"]) for r in replies] == [
        ("watcher", WATCHER, "error"),
        ("watcher", WATCHER, "error"),
        ("expert", EXPERT, "complete"),
    ]
    assert "not valid" in replies[0]["text"]
    (proposal,) = events_of(history, nb, "action_proposed")
    assert (proposal["role"], proposal["model"], proposal["code"]) == ("expert", EXPERT, FIX)
    (executed,) = events_of(history, nb, "action_executed")
    assert executed["action_id"] == proposal["action_id"] and executed["ok"] is True
    assert len(watcher.chat_requests()) == 2 and len(expert.chat_requests()) == 1
    # The person at the terminal is told who wrote the fix.
    assert f"the expert ({EXPERT}) took this turn" in run.stderr, run.stderr
    assert "fix ran ok; cell [3] counts as fixed" in run.stderr, run.stderr
    written = nbformat.read(nb.with_name(f"{nb.stem}.run.ipynb"), as_version=4)
    added = written.cells[3]
    assert added.source == FIX and added.metadata["ambient"]["role"] == "expert"


def test_run_hands_the_turn_to_the_expert_given_by_the_flag(
    tmp_path: Path, history: History, models: tuple[FakeOllama, FakeOpenAI]
) -> None:
    watcher, expert = models
    nb = make_notebook(tmp_path / "mean.ipynb", CELLS)
    run = run_cli(nb, "--agent", "auto", "--expert", EXPERT, env={"AMBIENT_MAX_REPLY_TOKENS": "700"})
    assert_the_expert_fixed_it(nb, run, history, watcher, expert)
    # The other settings reach the runner's assistant too: the longest turn, from the environment...
    assert [b["options"]["num_predict"] for b in watcher.chat_requests()] == [700, 700]
    assert expert.chat_requests()[0]["max_tokens"] == 700
    # ...and the kernel gets the same settings as the runner (for %%ask in the notebook).
    written = nbformat.read(nb.with_name(f"{nb.stem}.run.ipynb"), as_version=4)
    assert "kernel expert: openai:fake-gpt" in written.cells[0].outputs[0]["text"]


def test_run_takes_the_expert_from_ambient_expert(
    tmp_path: Path, history: History, models: tuple[FakeOllama, FakeOpenAI]
) -> None:
    watcher, expert = models
    nb = make_notebook(tmp_path / "mean.ipynb", CELLS)
    run = run_cli(nb, "--agent", "auto", env={"AMBIENT_EXPERT": EXPERT})
    assert_the_expert_fixed_it(nb, run, history, watcher, expert)


def test_an_empty_expert_flag_overrides_ambient_expert(
    tmp_path: Path, history: History, models: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _watcher, expert = models
    nb = make_notebook(tmp_path / "mean.ipynb", CELLS)
    run = run_cli(nb, "--agent", "auto", "--expert", "", env={"AMBIENT_EXPERT": EXPERT})
    assert run.returncode == 1, run.stderr[-3000:]
    replies = events_of(history, nb, "assistant_message")
    assert [(r["role"], r["state"]) for r in replies] == [("watcher", "error"), ("watcher", "error")]
    assert expert.chat_requests() == []
    assert "the expert" not in run.stderr


def test_run_honours_the_cooldown(tmp_path: Path, history: History, models: tuple[FakeOllama, FakeOpenAI]) -> None:
    """Two failures in a row: with AMBIENT_COOLDOWN=0 each is diagnosed (the default, 30 s, lets one go)."""
    watcher, _expert = models
    watcher.reply = json.dumps({"action": "explain", "text": "It divides by zero."})
    nb = make_notebook(tmp_path / "twice.ipynb", ["1 / 0", "2 / 0"])
    run = run_cli(nb, "--agent", "off", "--allow-errors", env={"AMBIENT_COOLDOWN": "0"})
    assert run.returncode == 1, run.stderr[-3000:]
    failed = [e["seq"] for e in events_of(history, nb, "cell_executed")]
    replies = events_of(history, nb, "assistant_message")
    assert [r["reply_to"] for r in replies] == failed


# -- the settings object ---------------------------------------------------------------


def test_settings_come_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBIENT_MODEL", "ollama:a:1b")
    monkeypatch.setenv("AMBIENT_EXPERT", EXPERT)
    monkeypatch.setenv("AMBIENT_AGENT", "AUTO")
    monkeypatch.setenv("AMBIENT_QUIET", "yes")
    monkeypatch.setenv("AMBIENT_COOLDOWN", "2.5")
    monkeypatch.setenv("AMBIENT_OUTPUT_LIMIT", "500")
    monkeypatch.setenv("AMBIENT_MAX_REPLY_TOKENS", "300")
    from_env = AmbientSettings()
    assert (from_env.model, from_env.expert, from_env.agent, from_env.quiet) == ("ollama:a:1b", EXPERT, "auto", True)
    assert (from_env.cooldown, from_env.output_limit, from_env.max_reply_tokens) == (2.5, 500, 300)
    given = AmbientSettings(model="embedded", expert="", quiet=False, max_reply_tokens=50)
    assert (given.model, given.expert, given.quiet, given.max_reply_tokens) == ("embedded", "", False, 50)
    # What a started kernel gets reads back as the same settings.
    for name, value in given.environ().items():
        monkeypatch.setenv(name, value)
    again = AmbientSettings()
    assert {n: getattr(again, n) for n in ENV} == {n: getattr(given, n) for n in ENV}


def test_a_bad_number_in_the_environment_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AMBIENT_COOLDOWN", "soon")
    monkeypatch.setenv("AMBIENT_MAX_REPLY_TOKENS", "0")
    with caplog.at_level(logging.WARNING, logger="ambient_jupyter"):
        settings = AmbientSettings()
        assert (settings.cooldown, settings.max_reply_tokens) == (30.0, 1024)
    assert "AMBIENT_COOLDOWN='soon'" in caplog.text and "AMBIENT_MAX_REPLY_TOKENS='0'" in caplog.text


def test_every_host_builds_its_assistant_from_the_settings(history: History) -> None:
    settings = AmbientSettings(
        model=WATCHER, expert=EXPERT, agent="off", quiet=True, cooldown=5.0, max_reply_tokens=99
    )
    seen: list[Any] = []
    assistant = Assistant.from_settings(history, "kernel:x", settings, on_event=seen.append)
    assert (assistant.model_spec, assistant.expert_spec, assistant.agent) == (WATCHER, EXPERT, "off")
    assert (assistant.quiet, assistant.cooldown, assistant.max_reply_tokens) == (True, 5.0, 99)
    assert assistant.on_event == seen.append
    # A host that knows the notebook's own mode passes it; no expert is None, not "".
    other = Assistant.from_settings(history, "kernel:x", AmbientSettings(expert=""), agent="auto")
    assert other.agent == "auto" and other.expert_spec is None
