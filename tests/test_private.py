"""The history is private: it holds people's code and outputs, secrets included.

Real SQLite files under a permissive umask (022). Where the tests run as root they also
read the files as user ``nobody``, the way another local user would try.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_notebook
from fakes.ollama_server import ollama_server_fixture  # noqa: F401 (the `ollama_server` fixture)

from ambient_jupyter.history import History
from ambient_jupyter.redact import redact, redact_text

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

SECRET = 'api_key = "sk-live-0123456789abcdef"'
NOBODY = 65534


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp folders are private already)."""
    old = os.umask(0o022)
    folder = Path(tempfile.mkdtemp(prefix="ambient-private-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        os.umask(old)
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def nobody_can_read(path: Path) -> bool | None:
    """Whether user ``nobody`` can read ``path`` (None where this process cannot switch users)."""
    if os.getuid() != 0:
        return None
    done = subprocess.run(["cat", str(path)], user=NOBODY, capture_output=True, check=False)
    return done.returncode == 0 and SECRET.encode() in done.stdout


def files_of(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")]


def test_a_new_history_is_private_under_a_permissive_umask(shared_dir: Path) -> None:
    db = shared_dir / "ambient_jupyter" / "history.sqlite"
    with History(db) as history:
        history.append("kernel:x", {"kind": "cell_executed", "code": SECRET, "status": "ok"})
        assert mode(db.parent) == 0o700
        for path in files_of(db):
            assert path.exists(), path
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert nobody_can_read(db / ".." / "history.sqlite-wal") in (False, None)


def test_an_existing_readable_history_is_tightened_on_open(
    shared_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = shared_dir / "history.sqlite"
    with History(db) as history:
        history.append("kernel:x", {"kind": "cell_executed", "code": SECRET, "status": "ok"})
    # As an older version left it: the umask's 0644, readable by every local user.
    for path in files_of(db):
        if path.exists():
            path.chmod(0o644)
    db.with_name("plain.txt").write_text(SECRET)
    assert nobody_can_read(db.with_name("plain.txt")) in (True, None)  # the check can see a leak
    with caplog.at_level(logging.WARNING, logger="ambient_jupyter.history"), History(db) as history:
        assert history.read("kernel:x")[0]["code"] == SECRET
        for path in files_of(db):
            if path.exists():
                assert mode(path) == 0o600, (path, oct(mode(path)))
        assert nobody_can_read(db) in (False, None)
    assert "it is now private" in caplog.text
    # A folder named by the person (AMBIENT_DB) may be shared: it is left as it is.
    assert mode(shared_dir) == 0o755


# -- redaction (opt-in) ----------------------------------------------------------------------

KEY = "sk-live-0123456789abcdefXYZ"
PLANTED = [f'api_key = "{KEY}"\nprint("using", api_key)', "rate = 1 / 0"]


def _run(nb: Path, fake: Any, redact: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": fake.url, "AMBIENT_REDACT": redact, "AMBIENT_COOLDOWN": "0"}
    command = [sys.executable, "-m", "ambient_jupyter", "run", str(nb), "--model", "ollama:tiny:1b"]
    return subprocess.run(
        [*command, "--agent", "off", "--no-progress"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=180,
    )


@pytest.mark.parametrize("redact", ["1", "0"])
def test_redaction_keeps_a_planted_key_out_of_the_history_and_the_prompt(
    tmp_path: Path, history: History, ollama_server: Any, redact: str
) -> None:
    ollama_server.reply = json.dumps({"action": "explain", "text": "It divides by zero."})
    nb = make_notebook(tmp_path / "keys.ipynb", PLANTED)
    run = _run(nb, ollama_server, redact)
    assert run.returncode == 1, run.stderr[-2000:]
    stored = json.dumps(history.read(str(nb)))
    prompts = json.dumps(ollama_server.chat_requests())
    assert ollama_server.chat_requests(), "the model was asked about the failure"
    if redact == "1":
        assert KEY not in stored and KEY not in prompts
        assert 'api_key = \\"[REDACTED]\\"' in stored and "using [REDACTED]" in stored  # code and output
        assert "[REDACTED]" in prompts
    else:  # the control: without redaction the key is there, so the check above can fail
        assert KEY in stored and KEY in prompts
    # The notebook file itself is the person's: never changed.
    assert KEY in nb.with_name("keys.run.ipynb").read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('client = OpenAI(api_key="sk-proj-abcdefghijklmnop1234")', 'client = OpenAI(api_key="[REDACTED]")'),
        ("PASSWORD=hunter22\n", "PASSWORD=[REDACTED]\n"),
        ('{"token": "abc.def"}', '{"token": "[REDACTED]"}'),
        ("postgres://bob:s3cret@db:5432/x", "postgres://bob:[REDACTED]@db:5432/x"),
        ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED] here"),
        ("GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "GITHUB_TOKEN=[REDACTED]"),
        # What is not a secret stays as it was: code must still read as code.
        ("tokens = tokenize(text)", "tokens = tokenize(text)"),
        ("max_tokens = 1024", "max_tokens = 1024"),
        ('auth_header = f"Bearer {tok}"', 'auth_header = f"Bearer {tok}"'),
        ("token = get_token()", "token = get_token()"),
        ("total = sum(data) / len(data)", "total = sum(data) / len(data)"),
    ],
)
def test_what_redaction_finds_and_what_it_leaves(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redaction_keeps_the_records_links() -> None:
    event = {"kind": "action_proposed", "action_id": "a1", "sha256": "sk-" + "a" * 40, "code": f'k = "{KEY}"'}
    assert redact(event) == {**event, "code": 'k = "[REDACTED]"'}


@pytest.mark.timeout(60)
def test_redaction_of_a_huge_cell_does_not_hang() -> None:
    """A megabyte of one letter, or of a name-like pattern, is scanned once: before the
    patterns were bounded, the first of these took hours (a backtracking scan per position)."""
    for text in ("x" * 1_000_000, "x." * 500_000, "ab://" * 200_000, "password=" * 100_000):
        redacted = redact_text(text)
        assert len(redacted) <= len(text) + 20 * len(text) // 9
    assert redact_text("x" * 100 + " api_key = 'abcdefgh12'").endswith("api_key = '[REDACTED]'")
