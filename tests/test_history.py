"""The durable event store, exercised on real SQLite files (no mocks)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ambient_jupyter.history as history_mod
from ambient_jupyter.history import SCHEMA_VERSION, History, HistoryError, normalize_notebook

LOGGER = "ambient_jupyter.history"
NB = "kernel:test-notebook"
# Children must import the very package this test imported (not some other checkout).
PKG_ROOT = Path(history_mod.__file__).resolve().parents[1]


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "cell_executed", "cell_id": f"c{i}", "outputs": [{"text": f"out {i}"}], **extra}


def _bad_files(db: Path) -> list[Path]:
    """The moved-aside main files (``<name>.bad-<stamp>``), without their -wal/-shm."""
    return sorted(p for p in db.parent.glob(f"{db.name}.bad-*") if not p.name.endswith(("-wal", "-shm")))


def _stored_rows(db: Path) -> list[tuple[str, int, str | None, str]]:
    """Read the raw table, bypassing History, so the API cannot hide duplicate rows."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT n.path, e.seq, e.dedup_key, e.body FROM events e "
            "JOIN notebooks n ON n.id = e.notebook_id ORDER BY n.path, e.seq"
        ).fetchall()
    finally:
        conn.close()


def _history_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


# -- append / read --------------------------------------------------------------


def test_append_read_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with History(db) as h:
        sent = [_event(i, text="naïve ☃ \U0001f600") for i in range(5)]
        stored = [h.append(NB, ev) for ev in sent]
        for ev, rec in zip(sent, stored, strict=True):
            assert rec["seq"] >= 1
            assert rec["notebook"] == NB
            assert "at" in rec
            assert {k: rec[k] for k in ev} == ev
        assert h.read(NB) == stored
        assert h.last_seq(NB) == 5

    # A fresh handle sees the same events: they are on disk, not in a cache.
    with History(db) as h:
        assert h.read(NB) == stored
        assert h.append(NB, _event(99))["seq"] == 6


def test_read_after_returns_exactly_the_later_events(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        stored = [h.append(NB, _event(i)) for i in range(10)]
        for after in (0, 1, 4, 9, 10, 25):
            got = h.read(NB, after=after)
            assert [e["seq"] for e in got] == list(range(after + 1, 11))
            assert got == stored[after:]
        assert h.read(NB, after=3, limit=2) == stored[3:5]
        assert h.read("kernel:never-written") == []
        assert h.last_seq("kernel:never-written") == 0


def test_seq_strictly_increasing_and_independent_per_notebook(tmp_path: Path) -> None:
    a, b = "kernel:a", "kernel:b"
    with History(tmp_path / "h.sqlite") as h:
        seqs: dict[str, list[int]] = {a: [], b: []}
        for i in range(30):
            nb = a if i % 3 else b  # interleaved, uneven
            seqs[nb].append(h.append(nb, _event(i))["seq"])
        batch = h.append_many(b, [(_event(100), None), (_event(101), None)])
        seqs[b].extend(e["seq"] for e in batch)

        assert seqs[a] == list(range(1, 21))
        assert seqs[b] == list(range(1, 13))
        assert [e["seq"] for e in h.read(a)] == seqs[a]
        assert [e["seq"] for e in h.read(b)] == seqs[b]
        assert {nb for nb, _, _ in h.notebooks()} == {a, b}
        assert dict((nb, s) for nb, s, _ in h.notebooks()) == {a: 20, b: 12}


# -- dedup ----------------------------------------------------------------------


def test_dedup_key_stores_one_row_and_returns_same_seq(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    with History(db) as h:
        first = h.append(NB, _event(1, text="hello"), dedup_key="chat-1")
        h.append(NB, _event(2))
        # A resend (even with a different body) returns the original, writes nothing.
        again = h.append(NB, _event(3, text="hello, resent"), dedup_key="chat-1")
        assert again["seq"] == first["seq"] == 1
        assert again == first
        assert h.last_seq(NB) == 2
        assert [e["seq"] for e in h.read(NB)] == [1, 2]

        # Same key twice in one batch: one row.
        batch = h.append_many(NB, [(_event(4), "chat-2"), (_event(5), "chat-2")])
        assert [e["seq"] for e in batch] == [3, 3]

        # Keys are scoped to a notebook.
        other = h.append("kernel:other", _event(6), dedup_key="chat-1")
        assert other["seq"] == 1

    rows = _stored_rows(db)
    assert [(nb, seq, key) for nb, seq, key, _ in rows] == [
        ("kernel:other", 1, "chat-1"),
        (NB, 1, "chat-1"),
        (NB, 2, None),
        (NB, 3, "chat-2"),
    ]

    # Dedup survives reopening: it is in the file, not in memory.
    with History(db) as h:
        assert h.append(NB, _event(7), dedup_key="chat-2")["seq"] == 3
        assert h.last_seq(NB) == 3


# -- several processes ------------------------------------------------------------

_WORKER = r"""
import json, sys
from ambient_jupyter.history import History

db, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # wait for "go" so all workers start together
h = History(db)
seqs = [h.append("kernel:shared", {"kind": "w", "worker": worker, "i": i})["seq"] for i in range(count)]
print(json.dumps(seqs), flush=True)
"""


def test_concurrent_processes_get_gapless_unique_seqs(tmp_path: Path) -> None:
    workers, per_worker = 4, 200
    db = tmp_path / "h.sqlite"  # not created yet: the first open races too
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(PKG_ROOT)}

    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), f"w{n}", str(per_worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for n in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    acked: dict[tuple[str, int], int] = {}
    for n, (p, (out, err)) in enumerate(zip(procs, results, strict=True)):
        assert p.returncode == 0, err
        seqs = json.loads(out.splitlines()[-1])
        assert len(seqs) == per_worker
        assert seqs == sorted(set(seqs)), "each writer sees its own seqs strictly increase"
        acked.update({(f"w{n}", i): s for i, s in enumerate(seqs)})

    total = workers * per_worker
    assert sorted(acked.values()) == list(range(1, total + 1))

    with History(db) as h:
        events = h.read("kernel:shared")
        assert h.last_seq("kernel:shared") == total
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    # Every append is stored exactly once, under the seq its writer was told.
    assert {(e["worker"], e["i"]): e["seq"] for e in events} == acked
    assert len(_stored_rows(db)) == total


def test_open_waits_for_a_writer_on_a_new_file(tmp_path: Path) -> None:
    # The window two Histories hit when they create one file at the same moment, made
    # deterministic: a writer holds the lock for 0.3 s on a not-yet-WAL file. SQLite
    # then fails PRAGMA journal_mode=WAL at once, without its busy handler.
    db = tmp_path / "h.sqlite"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE unrelated (x)")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    try:
        with History(db, busy_timeout=10) as h:  # should wait, not fail
            assert h.append(NB, _event(1))["seq"] == 1
    finally:
        release.join()
        other.close()


# -- unusable files -----------------------------------------------------------------


def _assert_moved_aside_and_usable(
    db: Path, caplog: pytest.LogCaptureFixture, original: bytes | None
) -> tuple[Path, str]:
    """Open bad ``db``; check it was moved aside, logged and replaced.

    Returns the moved-aside file and the logged error message.
    """
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        h = History(db)  # must not raise
    try:
        bad = _bad_files(db)
        assert len(bad) == 1, list(db.parent.iterdir())
        if original is not None:
            assert bad[0].read_bytes() == original
        errors = _history_errors(caplog)
        assert len(errors) == 1
        message = errors[0].getMessage()
        assert str(db) in message
        assert bad[0].name in message

        assert h.append(NB, _event(1))["seq"] == 1
        assert h.append(NB, _event(2))["seq"] == 2
        assert [e["seq"] for e in h.read(NB)] == [1, 2]
    finally:
        h.close()
    # The replacement is a real database at the original path, and reopening it is quiet.
    assert db.read_bytes().startswith(b"SQLite format 3\x00")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=LOGGER), History(db) as h:
        assert h.last_seq(NB) == 2
    assert _history_errors(caplog) == []
    assert len(_bad_files(db)) == 1
    return bad[0], message


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"hello", id="tiny"),
        pytest.param(b"this is not a database\n" * 500, id="text"),
        pytest.param(bytes(range(256)) * 64, id="binary"),
        pytest.param(b"SQLite format 3\x00" + b"\xff" * 8000, id="fake-header"),
    ],
)
def test_garbage_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes) -> None:
    db = tmp_path / "history.sqlite"
    db.write_bytes(garbage)
    _assert_moved_aside_and_usable(db, caplog, original=garbage)


def test_empty_file_is_a_fresh_database_not_garbage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "history.sqlite"
    db.touch()
    with caplog.at_level(logging.ERROR, logger=LOGGER), History(db) as h:
        assert h.append(NB, _event(1))["seq"] == 1
    assert _bad_files(db) == []
    assert _history_errors(caplog) == []


def _make_truncated_database(db: Path) -> bytes:
    """Write a >1 MB history to ``db``, cut it in half, and return what is left."""
    with History(db) as h:
        for start in range(0, 3000, 500):
            h.append_many(NB, [(_event(i, pad="x" * 400), None) for i in range(start, start + 500)])
    # Closing the last connection checkpoints the WAL into the main file; drop any
    # leftovers so the truncated main file is all there is.
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    size = db.stat().st_size
    assert size > 1_000_000
    os.truncate(db, size // 2)
    return db.read_bytes()


def test_truncated_database_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "history.sqlite"
    truncated = _make_truncated_database(db)

    _, message = _assert_moved_aside_and_usable(db, caplog, original=truncated)
    assert "malformed" in message


def test_newer_schema_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "history.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x TEXT)")
    conn.execute("INSERT INTO future VALUES ('from a newer version')")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    original = db.read_bytes()

    bad, message = _assert_moved_aside_and_usable(db, caplog, original=original)
    assert "newer" in message

    conn = sqlite3.connect(bad)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert conn.execute("SELECT x FROM future").fetchall() == [("from a newer version",)]
    finally:
        conn.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


_OPENER = r"""
import json, sys, time
from ambient_jupyter.history import History

db, worker, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "slow"
if slow:
    # Widen the race window: dawdle just before renaming the bad file, so the other
    # processes have all found it unusable before the first one moves it aside.
    _move_aside = History._move_aside
    def _slow_move_aside(self, why):
        time.sleep(0.05)
        return _move_aside(self, why)
    History._move_aside = _slow_move_aside
print("ready", flush=True)
sys.stdin.readline()  # wait for "go" so all openers hit the bad file together
with History(db) as h:
    print(json.dumps(h.append("kernel:shared", {"kind": "w", "worker": worker})["seq"]), flush=True)
"""


def _run_together(script: Path, args: list[list[str]], pkg_root: Path = PKG_ROOT) -> list[tuple[int, str, str]]:
    """Start one process per argument list, release them at once, return (rc, out, err)."""
    env = {**os.environ, "PYTHONPATH": str(pkg_root)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *a],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for a in args
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, results, strict=True)]


@pytest.mark.parametrize("timing", ["natural", "slow"])
@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_processes_opening_one_bad_file_together(tmp_path: Path, content: str, timing: str) -> None:
    # Several processes find the same unusable file at once. One moves it aside; the
    # others must neither fail (the file is gone under them) nor move the fresh
    # replacement aside (which would strand events appended to it). "slow" makes the
    # overlap certain rather than likely.
    workers = 6
    db = tmp_path / "history.sqlite"
    if content == "garbage":
        bad_bytes = b"this is not a database\n" * 200
        db.write_bytes(bad_bytes)
    else:
        bad_bytes = _make_truncated_database(db)
    script = tmp_path / "opener.py"
    script.write_text(_OPENER)

    results = _run_together(script, [[str(db), f"w{n}", timing] for n in range(workers)])

    for rc, _, err in results:
        assert rc == 0, err
    acked = sorted(int(out.splitlines()[-1]) for _, out, _ in results)
    assert acked == list(range(1, workers + 1))

    bad = _bad_files(db)
    assert len(bad) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert bad[0].read_bytes() == bad_bytes  # moved aside, not deleted or overwritten
    with History(db) as h:
        events = h.read("kernel:shared")
    # Every acknowledged append is in the one live file.
    assert sorted(e["worker"] for e in events) == [f"w{n}" for n in range(workers)]
    assert [e["seq"] for e in events] == acked


def test_move_aside_tolerates_a_file_already_gone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "history.sqlite"
    with History(db) as h:
        h.append(NB, _event(1))
        db.rename(tmp_path / "elsewhere.sqlite")  # as if another process moved it aside
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert h._move_aside("test") is False
    assert _bad_files(db) == []
    assert _history_errors(caplog) == []


def test_open_times_out_with_a_locked_message(tmp_path: Path) -> None:
    # Another process holds the write lock on a not-yet-WAL file for longer than we wait.
    db = tmp_path / "h.sqlite"
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE unrelated (x)")
    try:
        with pytest.raises(HistoryError) as info:
            History(db, busy_timeout=0.3)
    finally:
        other.execute("ROLLBACK")
        other.close()
    message = str(info.value)
    assert "locked by another process" in message
    assert "writable" not in message
    assert "AMBIENT_DB" in message


@pytest.mark.skipif(not hasattr(history_mod, "fcntl") or history_mod.fcntl is None, reason="no flock")
def test_open_waits_for_a_process_moving_the_file_aside(tmp_path: Path) -> None:
    import fcntl

    db = tmp_path / "h.sqlite"
    with History(db) as h:
        h.append(NB, _event(1))
    fd = os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a process moving the file aside does
        with pytest.raises(HistoryError, match="locked by another process"):
            History(db, busy_timeout=0.3)
        release = threading.Timer(0.3, fcntl.flock, (fd, fcntl.LOCK_UN))
        release.start()
        with History(db, busy_timeout=10) as h:  # waits for the lock, then opens
            assert h.last_seq(NB) == 1
        release.join()
    finally:
        os.close(fd)


# -- notebook identifiers ---------------------------------------------------------


def test_normalize_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = os.path.join("sub", "analysis.ipynb")
    assert normalize_notebook(rel) == str(tmp_path / "sub" / "analysis.ipynb")
    assert os.path.isabs(normalize_notebook("x.ipynb"))
    assert normalize_notebook(os.path.join("sub", "..", "x.ipynb")) == str(tmp_path / "x.ipynb")
    absolute = str(tmp_path / "abs.ipynb")
    assert normalize_notebook(absolute) == absolute

    for ident in ("kernel:1234-abcd", "kernel:", "ipython:session-7", "kernel:a/../b"):
        assert normalize_notebook(ident) == ident

    for bad in ("", "nb\x00.ipynb", "kernel:\x00"):
        with pytest.raises(ValueError):
            normalize_notebook(bad)


def test_history_uses_normalized_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with History(tmp_path / "h.sqlite") as h:
        rec = h.append("nb.ipynb", _event(1))
        assert rec["notebook"] == str(tmp_path / "nb.ipynb")
        # Both spellings name one stream.
        assert h.append(str(tmp_path / "nb.ipynb"), _event(2))["seq"] == 2
        assert [e["seq"] for e in h.read("./nb.ipynb")] == [1, 2]
        with pytest.raises(ValueError):
            h.append("", _event(3))
        with pytest.raises(ValueError):
            h.read("a\x00b")
        assert [nb for nb, _, _ in h.notebooks()] == [str(tmp_path / "nb.ipynb")]
