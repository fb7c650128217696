"""P1: kernel overhead of the recorder on a notebook of 2,000 tiny cells.

Runs the same notebook with nbclient twice per round: once with
``%load_ext ambient_jupyter`` as its first cell, once with a no-op first cell.
Only the 2,000 measured cells are timed (from ``on_cell_start`` of the first of
them to ``on_cell_executed`` of the last), so kernel start-up, the extension's
own loading and shutdown are excluded. The variants alternate (ABBA order over
the rounds) to cancel drift, and the figure is the ratio of the median times.

With the extension, the history (``AMBIENT_DB``, a temp file) must end up holding
one ``cell_executed`` event per measured cell; the script waits for the kernel's
writer thread and checks that.

Usage: python benchmarks/p1_kernel_overhead.py [--cells 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook


def make_cells(n: int) -> list[str]:
    """A deterministic, realistic mix of tiny cells (no sleeps, no heavy imports)."""
    cells: list[str] = []
    for i in range(n):
        k = i % 20
        if k in (0, 5, 11, 16):
            cells.append(f"x = {i} + 1")
        elif k in (1, 9):
            cells.append(f"print({i})")
        elif k in (2, 13):
            cells.append("x * 2")  # execute_result
        elif k == 3:
            cells.append(f"data = [j * j for j in range({i % 50 + 5})]\nlen(data)")
        elif k == 4:
            cells.append(f"label = 'run-{i}'\nprint(label, x)")
        elif k == 6:
            cells.append(f"def f(a, b={i}):\n    return a + b\n\nf(x)")
        elif k == 7:
            cells.append("import math\nmath.sqrt(x)")
        elif k == 8:
            cells.append(f"d = {{'i': {i}, 'sq': {i} ** 2, 'name': 'item{i}'}}\nd")
        elif k == 10:
            cells.append("for j in range(3):\n    print('step', j, x + j)")
        elif k == 12:
            cells.append("total = sum(data)\ntotal")
        elif k == 14:
            cells.append(f"s = 'value={i}'\ns.upper()")
        elif k == 15:
            cells.append("y = x if x % 2 else -x")
        elif k == 17:
            cells.append("from IPython.display import display\ndisplay({'x': x, 'y': y})")
        elif k == 18:
            cells.append("import sys\nprint('warn', x, file=sys.stderr)")
        else:  # 19
            cells.append(f"text = ' '.join(str(j) for j in range({i % 30}))\ntext[:40]")
    # A few failing cells (about 0.25 %), as a real session has.
    for i in range(397, n, 500):
        cells[i] = f"int('not a number {i}')"
    return cells


def build_notebook(first: str, cells: list[str]) -> Any:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell(first), *(new_code_cell(src) for src in cells)]
    return nb


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), or NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


class Run:
    """What one notebook run measured."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.kernel_cpu = float("nan")
        self.latencies: list[float] = []
        self.errors = 0


async def run_once(first: str, cells: list[str], env: dict[str, str]) -> Run:
    """Execute the notebook; time only the measured cells (indices 1..len(cells))."""
    nb = build_notebook(first, cells)
    last = len(cells)
    run = Run()
    started: dict[int, float] = {}
    marks: dict[str, float] = {}
    client: NotebookClient | None = None

    def kernel_pid() -> int | None:
        try:
            return int(client.km.provisioner.process.pid)  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            return None

    def on_cell_start(cell: Any, cell_index: int) -> None:
        now = time.perf_counter()
        started[cell_index] = now
        if cell_index == 1:
            pid = kernel_pid()
            marks["cpu0"] = _cpu_seconds(pid) if pid else float("nan")
            marks["start"] = now

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        now = time.perf_counter()
        if cell_index >= 1:
            run.latencies.append(now - started[cell_index])
            if execute_reply.get("content", {}).get("status") == "error":
                run.errors += 1
        if cell_index == last:
            marks["end"] = now
            pid = kernel_pid()
            marks["cpu1"] = _cpu_seconds(pid) if pid else float("nan")

    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
    )
    await client.async_execute(env=env)
    first_outputs = nb.cells[0].get("outputs", [])
    if any(o.get("output_type") == "error" for o in first_outputs):
        raise RuntimeError(f"the first cell failed: {first_outputs}")
    run.seconds = marks["end"] - marks["start"]
    run.kernel_cpu = marks["cpu1"] - marks["cpu0"]
    return run


def count_events(db: Path, notebook: str) -> dict[str, int]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute(
            "SELECT e.kind, count(*) FROM events e JOIN notebooks n ON n.id = e.notebook_id "
            "WHERE n.path = ? GROUP BY e.kind",
            (notebook,),
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {str(k): int(c) for k, c in rows}


def wait_for_events(db: Path, notebook: str, want: int, timeout: float = 60.0) -> tuple[dict[str, int], float]:
    started = time.perf_counter()
    counts = count_events(db, notebook)
    while counts.get("cell_executed", 0) < want and time.perf_counter() - started < timeout:
        time.sleep(0.05)
        counts = count_events(db, notebook)
    return counts, time.perf_counter() - started


def event_stats(db: Path, notebook: str) -> dict[str, int]:
    """Errors and execution counts as recorded, to compare with what the client saw."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        bodies = conn.execute(
            "SELECT e.body FROM events e JOIN notebooks n ON n.id = e.notebook_id "
            "WHERE n.path = ? AND e.kind = 'cell_executed' ORDER BY e.seq",
            (notebook,),
        ).fetchall()
    finally:
        conn.close()
    events = [json.loads(b) for (b,) in bodies]
    return {
        "errors": sum(1 for e in events if e.get("status") == "error"),
        "distinct_counts": len({e.get("execution_count") for e in events}),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    cells = make_cells(args.cells)
    tmp = Path(tempfile.mkdtemp(prefix="ambient-p1-"))
    db = tmp / "history.sqlite"
    base_env = dict(os.environ)
    base_env.update(AMBIENT_DB=str(db), AMBIENT_HOST="runner", AMBIENT_QUIET="1")
    base_env.pop("AMBIENT_NOTEBOOK", None)
    print(f"P1 python={sys.executable}")
    print(f"P1 history={db} cells={len(cells)} rounds={args.rounds} (ABBA order)")

    runs: dict[str, list[Run]] = {"with": [], "without": []}
    expected_errors = sum(1 for c in cells if c.startswith("int('not a number"))
    problems: list[str] = []
    last_count = 0

    # One short untimed run of each first, so page and bytecode caches are hot for both.
    for variant in ("with", "without"):
        env = dict(base_env, AMBIENT_NOTEBOOK=str(tmp / f"warmup-{variant}.ipynb"))
        first = "%load_ext ambient_jupyter" if variant == "with" else "pass"
        warm = await run_once(first, cells[:200], env)
        print(f"P1 warm-up {variant:7s} 200 cells {warm.seconds:.2f}s")

    for r in range(args.rounds):
        order = ("with", "without") if r % 2 == 0 else ("without", "with")
        for variant in order:
            notebook = str(tmp / f"round{r}-{variant}.ipynb")
            env = dict(base_env, AMBIENT_NOTEBOOK=notebook)
            first = "%load_ext ambient_jupyter" if variant == "with" else "pass"
            run = await run_once(first, cells, env)
            runs[variant].append(run)
            line = (
                f"P1 round {r + 1} {variant:7s} {run.seconds:7.3f}s "
                f"({run.seconds / len(cells) * 1000:.3f} ms/cell, "
                f"median cell {statistics.median(run.latencies) * 1000:.3f} ms, "
                f"kernel cpu {run.kernel_cpu:.2f}s, client saw {run.errors} errors)"
            )
            if variant == "with":
                counts, lag = wait_for_events(db, notebook, len(cells))
                n = last_count = counts.get("cell_executed", 0)
                stats = event_stats(db, notebook)
                others = {k: v for k, v in counts.items() if k != "cell_executed"}
                line += (
                    f"; history: {n} cell_executed events"
                    f"{f' + {others}' if others else ''}, {stats['errors']} errors, "
                    f"{stats['distinct_counts']} distinct execution counts, "
                    f"all in {lag:.2f}s after the last cell"
                )
                if n != len(cells):
                    problems.append(f"round {r + 1}: {n} cell_executed events, expected {len(cells)}")
                if stats["errors"] != expected_errors:
                    problems.append(f"round {r + 1}: {stats['errors']} errors recorded, expected {expected_errors}")
            else:
                counts = count_events(db, notebook)
                if counts:
                    problems.append(f"round {r + 1}: the run without the extension recorded {counts}")
            print(line, flush=True)

    def med(variant: str, key: Any) -> float:
        return statistics.median(key(run) for run in runs[variant])

    with_s = med("with", lambda run: run.seconds)
    without_s = med("without", lambda run: run.seconds)
    ratio = with_s / without_s
    sum_ratio = sum(run.seconds for run in runs["with"]) / sum(run.seconds for run in runs["without"])
    per_round = [w.seconds / wo.seconds for w, wo in zip(runs["with"], runs["without"], strict=True)]
    lat_with = statistics.median(x for run in runs["with"] for x in run.latencies)
    lat_without = statistics.median(x for run in runs["without"] for x in run.latencies)
    cpu_with = med("with", lambda run: run.kernel_cpu)
    cpu_without = med("without", lambda run: run.kernel_cpu)
    print(f"P1 with    s: {', '.join(f'{run.seconds:.3f}' for run in runs['with'])}")
    print(f"P1 without s: {', '.join(f'{run.seconds:.3f}' for run in runs['without'])}")
    print(f"P1 per-round ratios: {', '.join(f'{x:.3f}' for x in per_round)}; ratio of sums {sum_ratio:.3f}")
    print(
        f"P1 median cell latency: with {lat_with * 1000:.3f} ms, without {lat_without * 1000:.3f} ms "
        f"(ratio {lat_with / lat_without:.3f})"
    )
    print(
        f"P1 kernel CPU for the cells (median): with {cpu_with:.2f}s, without {cpu_without:.2f}s "
        f"(+{(cpu_with - cpu_without) / len(cells) * 1e6:.0f} us/cell)"
    )
    print(f"P1 added wall time per cell: {(with_s - without_s) / len(cells) * 1e6:.0f} us (medians)")
    print(f"P1 history check (last round): {last_count} cell_executed events for {len(cells)} cells")
    for problem in problems:
        print(f"P1 PROBLEM: {problem}")
    print(
        f"P1 overhead_ratio={ratio:.3f} (target <=1.03) with_s={with_s:.3f} "
        f"without_s={without_s:.3f} cells={len(cells)}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
