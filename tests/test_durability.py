"""SIGKILL a writer 200 times mid-append: every acknowledged event must survive intact.

A child process appends in a loop and prints each seq only after ``append`` returned,
so a printed line is an acknowledgement. The parent kills it at a random moment and
starts the next child on the same file. Set ``AMBIENT_DURABILITY_SEED`` to replay a run.

The kernel's writer thread groups commits; it too must acknowledge an event only once
its commit is visible to other connections.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import ambient_jupyter.history as history_mod
from ambient_jupyter.history import History

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

KILLS = 200
MAX_DELAY_S = 0.060
NOTEBOOK = "kernel:durability"
# Children must import the very package this test imported (not some other checkout).
PKG_ROOT = Path(history_mod.__file__).resolve().parents[1]

# Kept tiny: it runs 200 times, so it imports nothing but the history module.
CHILD = r"""
import hashlib, random, sys
from ambient_jupyter.history import History

db, seed, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
h = History(db)
print("ready", flush=True)
i = 0
while True:
    # Mostly small events; ~100 KB ones make the kill likely to land mid-write.
    size = rng.choices([40, 600, 8_000, 100_000], weights=[55, 30, 13, 2])[0]
    payload = rng.randbytes(size // 2).hex()
    pid = f"r{run}-{i}"
    seq = h.append("kernel:durability", {"kind": "crash_test", "pid": pid, "payload": payload}, dedup_key=pid)["seq"]
    sys.stdout.write(f"{seq} {pid} {len(payload)} {hashlib.sha256(payload.encode()).hexdigest()}\n")
    sys.stdout.flush()
    i += 1
"""


@dataclass(frozen=True)
class Ack:
    seq: int
    pid: str
    size: int
    sha256: str


def _run_and_kill(script: Path, db: Path, run: int, seed: int, delay: float, env: dict[str, str]) -> list[Ack]:
    """Start one child, SIGKILL it ``delay`` s after it is ready, return its acknowledgements."""
    err_path = db.parent / "child.err"
    with err_path.open("wb") as err:
        # -S skips site-packages: faster start-up, and the child needs only PYTHONPATH.
        proc = subprocess.Popen(
            [sys.executable, "-S", str(script), str(db), str(seed), str(run)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert ready == b"ready\n", f"run {run}: child did not start: {err_path.read_text()}"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            # stdout only (stderr goes to a file), so reading it to EOF cannot deadlock.
            out = proc.stdout.read()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run {run}: child died on its own: {err_path.read_text()}"

    acks = []
    for line in out.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            continue  # killed mid-print: never acknowledged
        seq, pid, size, digest = line.decode().split()
        acks.append(Ack(int(seq), pid, int(size), digest))
    return acks


@pytest.mark.timeout(300)
def test_sigkill_during_appends_loses_no_acknowledged_event(tmp_path: Path) -> None:
    seed = int(os.environ.get("AMBIENT_DURABILITY_SEED", random.SystemRandom().randrange(2**32)))
    print(f"durability seed={seed} (replay with AMBIENT_DURABILITY_SEED={seed})")
    rng = random.Random(seed)

    db = tmp_path / "history.sqlite"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(PKG_ROOT)}
    env.pop("PYTHONSTARTUP", None)

    acked: dict[int, Ack] = {}
    started = time.monotonic()
    for run in range(KILLS):
        for ack in _run_and_kill(script, db, run, rng.randrange(2**32), rng.uniform(0, MAX_DELAY_S), env):
            # A seq acknowledged twice would mean a later run overwrote an earlier event.
            assert ack.seq not in acked, f"seq {ack.seq} acknowledged twice: {acked[ack.seq]} and {ack}"
            acked[ack.seq] = ack
    elapsed = time.monotonic() - started

    # No run may have found the file unusable and started over (that would drop events).
    assert sorted(p.name for p in tmp_path.glob("history.sqlite.bad-*")) == []

    conn = sqlite3.connect(db)  # also replays the last child's WAL, as History would
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        notebooks = conn.execute("SELECT id, path, last_seq FROM notebooks").fetchall()
        rows = conn.execute("SELECT notebook_id, seq, kind, dedup_key, body FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()

    assert len(notebooks) == 1
    nb_id, nb_path, last_seq = notebooks[0]
    assert nb_path == NOTEBOOK
    stored: dict[int, dict[str, object]] = {}
    for row_nb, seq, kind, dedup_key, body in rows:
        assert row_nb == nb_id
        event = json.loads(body)  # a torn or half-written body would fail here
        assert isinstance(event, dict), f"seq {seq}: body is not an object: {body[:200]!r}"
        assert {"kind", "seq", "notebook"} <= event.keys(), f"seq {seq}: malformed body {body[:200]!r}"
        assert event["kind"] == kind == "crash_test"
        assert event["seq"] == seq
        assert event["notebook"] == NOTEBOOK
        assert event["pid"] == dedup_key
        stored[seq] = event

    assert list(stored) == list(range(1, len(stored) + 1)), "seqs must run 1..N with no gaps"
    assert last_seq == len(stored)

    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{len(missing)} acknowledged events lost, first seqs {missing[:10]}"
    for seq, ack in acked.items():
        event = stored[seq]
        assert event["pid"] == ack.pid, f"seq {seq} holds {event['pid']}, acknowledged as {ack.pid}"
        payload = event["payload"]
        assert isinstance(payload, str)
        assert len(payload) == ack.size
        assert hashlib.sha256(payload.encode()).hexdigest() == ack.sha256, f"seq {seq} payload differs"

    # The public API agrees with the raw table, and the next append continues the stream.
    with History(db) as h:
        assert [e["seq"] for e in h.read(NOTEBOOK)] == list(stored)
        assert h.append(NOTEBOOK, {"kind": "after"})["seq"] == len(stored) + 1

    print(
        f"durability: seed={seed} kills={KILLS} acknowledged={len(acked)} stored={len(stored)} "
        f"stored_unacknowledged={len(stored) - len(acked)} "
        f"db_mb={db.stat().st_size / 1e6:.1f} elapsed_s={elapsed:.1f}"
    )
    # Passed: drop the (up to ~100 MB) file now rather than leave it in pytest's tmp dirs.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# -- the kernel's writer thread: grouped commits, acknowledged only once durable ------


def test_writer_groups_commits_and_acknowledges_only_committed_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ambient_jupyter.kernel import writer as writer_mod

    db = tmp_path / "history.sqlite"
    monkeypatch.setattr(writer_mod, "GROUP_WINDOW", 1.0)
    reader = sqlite3.connect(db, check_same_thread=False)  # another connection: sees commits only
    groups: list[list[int]] = []
    unseen: list[int] = []

    def committed(events: list[dict[str, object]]) -> None:
        seqs = [int(e["seq"]) for e in events]  # type: ignore[call-overload]
        groups.append(seqs)
        on_disk = {s for (s,) in reader.execute("SELECT seq FROM events")}
        unseen.extend(s for s in seqs if s not in on_disk)

    w = writer_mod.Writer(lambda: History(db), lambda: NOTEBOOK, committed)
    try:
        w.history  # noqa: B018 (waits until the thread has opened the file)
        for i in range(40):  # like quick cells: events a couple of ms apart
            w.submit(lambda i=i: {"kind": "cell_executed", "i": i})
            time.sleep(0.002)
        assert w.flush(5)
        assert sorted(s for g in groups for s in g) == list(range(1, 41))
        assert len(groups) <= 3, f"40 events within the window took {len(groups)} commits"
        assert unseen == [], "an event was acknowledged before its commit"

        # A flush ends the grouping window at once rather than waiting it out.
        monkeypatch.setattr(writer_mod, "GROUP_WINDOW", 30.0)
        w.submit(lambda: {"kind": "cell_executed", "i": 40})
        started = time.monotonic()
        assert w.flush(10)
        assert time.monotonic() - started < 5
        assert groups[-1] == [41]
    finally:
        w.close(5)
        reader.close()
    with History(db) as h:
        assert [e["i"] for e in h.read(NOTEBOOK)] == list(range(41))
