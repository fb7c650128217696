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

Usage: python benchmarks/p1_kernel_overhead.py [--cells 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
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


async def run_once(first: str, cells: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Seconds for the measured cells, and (errors, outputs) seen by the client."""
    nb = build_notebook(first, cells)
    last = len(cells)
    marks: dict[str, float] = {}
    errors = 0

    def on_cell_start(cell: Any, cell_index: int) -> None:
        if cell_index == 1:
            marks["start"] = time.perf_counter()

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        nonlocal errors
        if execute_reply.get("content", {}).get("status") == "error":
            errors += 1
        if cell_index == last:
            marks["end"] = time.perf_counter()

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
    outputs = sum(len(c.get("outputs", [])) for c in nb.cells[1:])
    return marks["end"] - marks["start"], errors, outputs


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
    """Errors and outputs as recorded, to compare with what the client saw."""
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
        "outputs": sum(len(e.get("outputs") or []) for e in events),
        "distinct_counts": len({e.get("execution_count") for e in events}),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    cells = make_cells(args.cells)
    tmp = Path(tempfile.mkdtemp(prefix="ambient-p1-"))
    db = tmp / "history.sqlite"
    base_env = dict(os.environ)
    base_env.update(AMBIENT_DB=str(db), AMBIENT_HOST="runner", AMBIENT_QUIET="1")
    base_env.pop("AMBIENT_NOTEBOOK", None)
    print(f"P1 python={sys.executable}")
    print(f"P1 history={db} cells={len(cells)} rounds={args.rounds} (ABBA order)")

    times: dict[str, list[float]] = {"with": [], "without": []}
    expected_errors = sum(1 for c in cells if c.startswith("int('not a number"))
    problems: list[str] = []

    # One untimed warm-up of each, so the page cache and bytecode caches are hot for both.
    for variant in ("with", "without"):
        env = dict(base_env, AMBIENT_NOTEBOOK=str(tmp / f"warmup-{variant}.ipynb"))
        first = "%load_ext ambient_jupyter" if variant == "with" else "pass"
        seconds, _, _ = await run_once(first, cells[:200], env)
        print(f"P1 warm-up {variant:7s} 200 cells {seconds:.2f}s")

    for r in range(args.rounds):
        order = ("with", "without") if r % 2 == 0 else ("without", "with")
        for variant in order:
            notebook = str(tmp / f"round{r}-{variant}.ipynb")
            env = dict(base_env, AMBIENT_NOTEBOOK=notebook)
            first = "%load_ext ambient_jupyter" if variant == "with" else "pass"
            seconds, errors, outputs = await run_once(first, cells, env)
            times[variant].append(seconds)
            line = (
                f"P1 round {r + 1} {variant:7s} {seconds:7.3f}s "
                f"({seconds / len(cells) * 1000:.3f} ms/cell, client saw {errors} errors, {outputs} outputs)"
            )
            if variant == "with":
                counts, lag = wait_for_events(db, notebook, len(cells))
                n = counts.get("cell_executed", 0)
                stats = event_stats(db, notebook)
                line += (
                    f"; history: {n} cell_executed events (other kinds: "
                    f"{ {k: v for k, v in counts.items() if k != 'cell_executed'} }), "
                    f"{stats['errors']} errors, {stats['outputs']} outputs, "
                    f"writer drained {lag:.2f}s after the last cell"
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

    with_s = statistics.median(times["with"])
    without_s = statistics.median(times["without"])
    ratio = with_s / without_s
    sum_ratio = sum(times["with"]) / sum(times["without"])
    per_round = [w / wo for w, wo in zip(times["with"], times["without"])]
    print(f"P1 with    s: {', '.join(f'{t:.3f}' for t in times['with'])}")
    print(f"P1 without s: {', '.join(f'{t:.3f}' for t in times['without'])}")
    print(f"P1 per-round ratios: {', '.join(f'{x:.3f}' for x in per_round)}; ratio of sums {sum_ratio:.3f}")
    print(f"P1 added per cell: {(with_s - without_s) / len(cells) * 1e6:.1f} us (median-based)")
    total_events = count_events(db, str(tmp / f"round{args.rounds - 1}-with.ipynb")).get("cell_executed", 0)
    print(f"P1 history check (last round): {total_events} cell_executed events for {len(cells)} cells")
    for problem in problems:
        print(f"P1 PROBLEM: {problem}")
    print(
        f"P1 overhead_ratio={ratio:.3f} (target <=1.03) with_s={with_s:.3f} "
        f"without_s={without_s:.3f} cells={len(cells)}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
