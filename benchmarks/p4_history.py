"""P4: latency of one durable history append, and of reading 10,000 events after a seq.

Baseline: none; both figures are absolute (ms), as the targets are (<= 5 ms, <= 300 ms).

Runs on a real SQLite file in a temporary directory (WAL, ``synchronous=FULL``, the
settings :class:`ambient_jupyter.history.History` always uses), so every append
includes its fsync. Usage, from the project root::

    python benchmarks/p4_history.py

The last line is the one-line summary the CI log is grepped for.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout, without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ambient_jupyter.history import History

NOTEBOOK = "bench/p4.ipynb"
WARMUP = 50
APPENDS = 2_000
READ_N = 10_000
EXTRA_EVENTS = 10_500  # inserted in batches after the timed appends, so the file holds > READ_N
READ_REPEATS = 5
APPEND_TARGET_MS = 5.0
READ_TARGET_MS = 300.0


def cell_executed(i: int) -> dict[str, Any]:
    """A typical ``cell_executed`` event: short code, ~500 bytes of outputs."""
    text = "".join(f"store {s:02d}: revenue {1000 + 37 * s + i % 97:>8}\n" for s in range(20))[:440]
    return {
        "kind": "cell_executed",
        "cell_id": f"cell-{i % 40:04d}",
        "execution_count": i,
        "code": f"totals_{i} = df.groupby('store').revenue.sum()\nprint(totals_{i}.to_string())",
        "status": "ok",
        "duration_ms": 12.5,
        "outputs": [{"type": "stream", "name": "stdout", "text": text, "chars": len(text)}],
        "error": None,
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation."""
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def time_appends(history: History, n: int, start: int) -> list[float]:
    latencies: list[float] = []
    for i in range(start, start + n):
        event = cell_executed(i)  # built outside the timed region: we measure the store
        t0 = time.perf_counter_ns()
        history.append(NOTEBOOK, event)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
    return latencies


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ambient-p4-") as tmp:
        path = Path(tmp) / "history.sqlite"
        history = History(path)
        try:
            journal = history.conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = history.conn.execute("PRAGMA synchronous").fetchone()[0]
            print(
                f"SQLite {sqlite3.sqlite_version}, journal_mode={journal}, synchronous={sync} (2 = FULL), file in {tmp}"
            )
            sample = history.append(NOTEBOOK, cell_executed(0))
            body = history.conn.execute("SELECT length(body) FROM events WHERE seq = ?", (sample["seq"],))
            outputs = len(json.dumps(sample["outputs"]))
            print(f"event body: {body.fetchone()[0]} bytes stored, of which outputs {outputs} bytes")

            time_appends(history, WARMUP, start=1)  # page cache, statement cache
            latencies = sorted(time_appends(history, APPENDS, start=1 + WARMUP))
            p50 = percentile(latencies, 50)
            p95 = percentile(latencies, 95)
            print(
                f"durable append x{APPENDS}: p50={p50:.3f} ms p95={p95:.3f} ms p99={percentile(latencies, 99):.3f} ms "
                f"max={latencies[-1]:.3f} ms mean={statistics.fmean(latencies):.3f} ms"
            )

            next_i = 1 + WARMUP + APPENDS
            for start in range(next_i, next_i + EXTRA_EVENTS, 500):
                history.append_many(NOTEBOOK, [(cell_executed(i), None) for i in range(start, start + 500)])
            last = history.last_seq(NOTEBOOK)
            after = last - READ_N
            print(f"history holds {last} events, {os.path.getsize(path) / 1e6:.1f} MB (+ WAL)")

            reads: list[float] = []
            for _ in range(READ_REPEATS):
                t0 = time.perf_counter_ns()
                events = history.read(NOTEBOOK, after=after)
                reads.append((time.perf_counter_ns() - t0) / 1e6)
                if len(events) != READ_N or events[0]["seq"] != after + 1 or events[-1]["seq"] != last:
                    msg = f"read(after={after}) returned {len(events)} events, expected {READ_N}"
                    raise SystemExit(msg)
            read_ms = statistics.median(reads)
            print(
                f"read {READ_N} events after seq {after} (decoded to dicts): median of {READ_REPEATS} = "
                f"{read_ms:.1f} ms, runs: {', '.join(f'{r:.1f}' for r in reads)} ms"
            )
        finally:
            history.close()

    print(
        f"P4 append_p50_ms={p50:.2f} (target <={APPEND_TARGET_MS:g}) "
        f"read_10k_ms={read_ms:.1f} (target <={READ_TARGET_MS:g})"
    )


if __name__ == "__main__":
    main()
