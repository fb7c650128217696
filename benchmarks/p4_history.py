"""P4: one durable append (p50/p95) and reading 10,000 events after a seq, on a real SQLite file."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ambient_jupyter.history import History


def cell_event(i: int) -> dict:
    return {
        "kind": "cell_executed",
        "code": f"df_{i} = df.groupby('store').revenue.sum()",
        "execution_count": i,
        "status": "ok",
        "duration_ms": 1.5,
        "outputs": [{"type": "stream", "name": "stdout", "text": "x" * 400, "chars": 400}],
        "error": None,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "p4.sqlite")
        latencies = []
        for i in range(1000):
            started = time.perf_counter()
            history.append("bench.ipynb", cell_event(i))
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        p50, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95)]
        print(f"durable appends: n=1000 p50={p50:.3f} ms p95={p95:.3f} ms (WAL, synchronous=FULL)")
        history.append_many("bench.ipynb", [(cell_event(i), None) for i in range(1000, 11_500)])
        after = history.last_seq("bench.ipynb") - 10_000
        reads = []
        for _ in range(5):
            started = time.perf_counter()
            events = history.read("bench.ipynb", after)
            reads.append((time.perf_counter() - started) * 1000)
            assert len(events) == 10_000
        read_ms = statistics.median(reads)
        print(f"read 10,000 events after seq {after}: median of 5 = {read_ms:.1f} ms")
        history.close()
    print(f"P4 append_p50_ms={p50:.3f} (target <=5) read_10k_ms={read_ms:.1f} (target <=300)")


if __name__ == "__main__":
    main()
