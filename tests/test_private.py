"""The history is private: it holds people's code and outputs, secrets included.

Real SQLite files under a permissive umask (022). Where the tests run as root they also
read the files as user ``nobody``, the way another local user would try.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambient_jupyter.history import History

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
