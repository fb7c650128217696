"""Durability: SIGKILL a writer at random points, 200 times; nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

CHILD = r"""
import sys
from ambient_jupyter.history import History
db, start, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = History(db)
print("ready", flush=True)
i = start
while True:
    payload = ("p%d-" % i) * (25_000 if i % big == 0 else 10)
    stored = h.append("nb.ipynb", {"kind": "user_message", "text": payload, "pid": i})
    # Acknowledged: the append has returned, so its commit is durable.
    print(stored["seq"], i, flush=True)
    i += 1
"""

KILLS = 200


@pytest.mark.timeout(400)
def test_sigkill_at_random_points_loses_no_acknowledged_event(tmp_path: Path) -> None:
    seed = int(os.environ.get("AMBIENT_SIGKILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"seed={seed}")
    db = tmp_path / "durable.sqlite"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acked: dict[int, int] = {}  # seq -> payload id
    next_id = 0
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(script), str(db), str(next_id), str(rng.choice([3, 7, 50]))],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 0.06))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:  # a line cut by the kill is not an acknowledgement
                acked[int(parts[0])] = int(parts[1])
                next_id = max(next_id, int(parts[1]) + 1)
        next_id += 1_000  # payload ids of unacknowledged appends are never reused

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT seq, kind, body FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    stored: dict[int, int] = {}
    for seq, kind, body in rows:
        event = json.loads(body)  # no partial row: every body parses
        assert event["seq"] == seq and event["kind"] == kind == "user_message"
        assert event["text"].startswith(f"p{event['pid']}-")
        stored[seq] = event["pid"]
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1))  # strictly increasing, no gaps
    missing = {s: p for s, p in acked.items() if stored.get(s) != p}
    assert not missing, f"acknowledged but lost: {list(missing.items())[:5]}"
    print(f"kills={KILLS} acknowledged={len(acked)} stored={len(stored)}")
