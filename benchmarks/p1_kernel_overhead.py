"""P1: kernel overhead of the recorder on 2,000 tiny cells, with vs without, in one kernel.

Baseline: plain nbclient, the same cells in the same kernel with the extension
unloaded (``%unload_ext`` removes its IPython hooks and its ``Session.send`` observer).

One nbclient run of one notebook: 2,000 measured cells with the extension loaded and
the same 2,000 cells without it, in alternating blocks (``--block`` cells each; the
order of each pair of blocks alternates, ABBA), switched by untimed
``%load_ext ambient_jupyter`` / ``%unload_ext ambient_jupyter`` cells. Each measured
cell is timed from nbclient's ``on_cell_start`` to its ``on_cell_executed``; the
kernel's CPU time is read at every block boundary. Running both variants in the
same kernel process, interleaved, cancels the drift of a shared 2-core machine,
which separate runs of several seconds each do not.

What a switch costs stays in its untimed cell: the load cell waits until the
writer thread has opened the history (once per kernel in real use, but once per
block here), and both switch cells collect their garbage.

That run is repeated ``--repeat`` times, each in a fresh kernel; the figure is the
total time with / total time without, over all repeats, and each repeat's own ratio
is printed. Why repeat: on this 2-core machine one run's ratio moves by about
±0.02 even when both variants are identical, so one run cannot tell 1.01 from 1.03.
``--control`` measures exactly that noise: its "with" switch cell loads and at once
unloads the extension, so both variants run unrecorded and the true ratio is 1.

With the extension, the history (``AMBIENT_DB``, a temp file) must end up holding
one ``cell_executed`` event per measured cell with the extension on, and none for
the others; the script waits for the kernel's writer thread and checks that.

Usage: python benchmarks/p1_kernel_overhead.py [--cells 2000] [--block 10] [--repeat 3] [--control]
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), or NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


# Each switch cell collects its own garbage, so no timed block pays for it.
_COLLECT = "import gc as _gc\n_gc.collect()"
LOAD = (
    "%load_ext ambient_jupyter\n"
    "import ambient_jupyter.kernel as _ak\n"
    "_ak.current().writer.history  # waits until the writer thread has opened the history\n" + _COLLECT
)
UNLOAD = "%unload_ext ambient_jupyter\n" + _COLLECT
CONTROL_LOAD = "%load_ext ambient_jupyter\n%unload_ext ambient_jupyter\n" + _COLLECT


def plan(cells: list[str], block: int, load: str = LOAD) -> list[tuple[str, str | None]]:
    """``(source, variant)`` per notebook cell; variant None marks an untimed switch cell."""
    out: list[tuple[str, str | None]] = []
    loaded = False
    for b, start in enumerate(range(0, len(cells), block)):
        chunk = cells[start : start + block]
        # ABBA over pairs of blocks: with, without, without, with, with, ...
        order = ("with", "without") if b % 2 == 0 else ("without", "with")
        for variant in order:
            want = variant == "with"
            if want != loaded:
                out.append((load if want else UNLOAD, None))
                loaded = want
            out.extend((src, variant) for src in chunk)
    return out


class Measure:
    """Per-variant totals: wall time of the measured cells, kernel CPU, latencies."""

    def __init__(self) -> None:
        self.seconds = {"with": 0.0, "without": 0.0}
        self.cpu = {"with": 0.0, "without": 0.0}
        self.latencies: dict[str, list[float]] = {"with": [], "without": []}
        self.errors = {"with": 0, "without": 0}


async def run(cells: list[str], block: int, env: dict[str, str], load: str = LOAD) -> Measure:
    steps = plan(cells, block, load)
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell(src) for src, _ in steps]
    m = Measure()
    started: dict[int, float] = {}
    cpu_at: dict[int, float] = {}
    client: NotebookClient | None = None

    def kernel_pid() -> int | None:
        try:
            return int(client.km.provisioner.process.pid)  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            return None

    def on_cell_start(cell: Any, cell_index: int) -> None:
        variant = steps[cell_index][1]
        if variant is not None and (cell_index == 0 or steps[cell_index - 1][1] != variant):
            pid = kernel_pid()
            cpu_at[cell_index] = _cpu_seconds(pid) if pid else float("nan")
        started[cell_index] = time.perf_counter()

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        now = time.perf_counter()
        variant = steps[cell_index][1]
        if variant is None:
            if execute_reply.get("content", {}).get("status") != "ok":
                raise RuntimeError(f"switch cell {cell_index} failed: {execute_reply.get('content')}")
            return
        elapsed = now - started[cell_index]
        m.seconds[variant] += elapsed
        m.latencies[variant].append(elapsed)
        if execute_reply.get("content", {}).get("status") == "error":
            m.errors[variant] += 1
        last_of_run = cell_index + 1 == len(steps) or steps[cell_index + 1][1] != variant
        if last_of_run:
            first = max(i for i in cpu_at if i <= cell_index)
            pid = kernel_pid()
            m.cpu[variant] += (_cpu_seconds(pid) if pid else float("nan")) - cpu_at[first]

    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
    )
    await client.async_execute(env=env)
    return m


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


def check(db: Path, notebook: str, cells: list[str], m: Measure, control: bool) -> tuple[list[str], str]:
    """What is wrong with one repeat's history and error counts (nothing, normally)."""
    expected_errors = sum(1 for c in cells if c.startswith("int('not a number"))
    want = 0 if control else len(cells)
    if control:
        time.sleep(1.0)  # nothing should arrive; give a stray writer the time to show it
        counts, lag = count_events(db, notebook), 0.0
    else:
        counts, lag = wait_for_events(db, notebook, want)
    problems: list[str] = []
    got = counts.get("cell_executed", 0)
    if got != want:
        problems.append(f"{got} cell_executed events, expected {want}")
    if not control:
        stats = event_stats(db, notebook)
        if stats["errors"] != expected_errors:
            problems.append(f"{stats['errors']} errors recorded, expected {expected_errors}")
    if m.errors["with"] != expected_errors or m.errors["without"] != expected_errors:
        problems.append(f"the client saw {m.errors} errors, expected {expected_errors} each")
    return problems, f"{got} cell_executed events recorded (expected {want}), the last {lag:.2f}s after the last cell"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs, each in a fresh kernel (default 3)")
    parser.add_argument(
        "--control", action="store_true", help="A/A: both variants unrecorded, to measure the method's noise"
    )
    args = parser.parse_args()

    cells = make_cells(args.cells)
    load = CONTROL_LOAD if args.control else LOAD
    tmp = Path(tempfile.mkdtemp(prefix="ambient-p1-"))
    db = tmp / "history.sqlite"
    env = dict(os.environ)
    env.update(AMBIENT_DB=str(db), AMBIENT_HOST="runner", AMBIENT_QUIET="1")
    print(f"P1 python={sys.executable}")
    print(
        f"P1 history={db} cells={len(cells)} per variant, blocks of {args.block}, one kernel per repeat, ABBA, "
        f"repeats={args.repeat}{' CONTROL (A/A: both variants unrecorded)' if args.control else ''}"
    )

    # An untimed warm-up run, so page and bytecode caches are hot for both variants.
    await run(cells[:200], args.block, dict(env, AMBIENT_NOTEBOOK=str(tmp / "warmup.ipynb")), load)
    total = Measure()
    problems: list[str] = []
    n = len(cells)
    for k in range(1, args.repeat + 1):
        notebook = str(tmp / f"p1-{k}.ipynb")
        m = await run(cells, args.block, dict(env, AMBIENT_NOTEBOOK=notebook), load)
        found, recorded = check(db, notebook, cells, m, args.control)
        problems += [f"repeat {k}: {p}" for p in found]
        for v in ("with", "without"):
            total.seconds[v] += m.seconds[v]
            total.cpu[v] += m.cpu[v]
            total.latencies[v] += m.latencies[v]
        print(
            f"P1 repeat {k}: ratio {m.seconds['with'] / m.seconds['without']:.3f} "
            f"(with {m.seconds['with']:.3f}s, without {m.seconds['without']:.3f}s; "
            f"kernel CPU +{(m.cpu['with'] - m.cpu['without']) / n * 1e6:.0f} us/cell); {recorded}"
        )

    runs = args.repeat * n
    ratio = total.seconds["with"] / total.seconds["without"]
    lat = {v: statistics.median(total.latencies[v]) for v in total.latencies}
    print(f"P1 measured cells: with {len(total.latencies['with'])}, without {len(total.latencies['without'])}")
    print(f"P1 total: with {total.seconds['with']:.3f}s, without {total.seconds['without']:.3f}s")
    print(
        f"P1 median cell latency: with {lat['with'] * 1000:.3f} ms, without {lat['without'] * 1000:.3f} ms "
        f"(ratio {lat['with'] / lat['without']:.3f})"
    )
    print(
        f"P1 kernel CPU: with {total.cpu['with']:.2f}s, without {total.cpu['without']:.2f}s "
        f"(+{(total.cpu['with'] - total.cpu['without']) / runs * 1e6:.0f} us/cell)"
    )
    print(f"P1 added wall time per cell: {(total.seconds['with'] - total.seconds['without']) / runs * 1e6:.0f} us")
    for problem in problems:
        print(f"P1 PROBLEM: {problem}")
    shutil.rmtree(tmp, ignore_errors=True)
    name = "control_ratio" if args.control else "overhead_ratio"
    target = "(A/A: 1 but for noise)" if args.control else "(target <=1.03)"
    print(
        f"P1 {name}={ratio:.3f} {target} with_s={total.seconds['with']:.3f} "
        f"without_s={total.seconds['without']:.3f} cells={n} repeats={args.repeat}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
