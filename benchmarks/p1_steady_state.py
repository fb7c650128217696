"""P1, steady state: what the kernel hook costs a person who works with it loaded.

Method (issue 15): nbclient runs 1,000 tiny cells (``x{i} = {i} * 2``, then ``x{i}``,
alternating) in a fresh kernel whose first cell is either ``%load_ext ambient_jupyter``
(B) or ``pass`` (A). Nothing else runs between the timed cells: no switch cells, no
forced garbage collection, no waiting for the writer. Each run is timed from the
start of its second cell to the end of its last (nbclient's ``on_cell_start`` and
``on_cell_executed``), so kernel start-up and the load itself are out, and the
writer's commits land wherever they land, as they do for a person. Whole runs
alternate A B A B; the figure is the median of the per-pair ratios B/A.

``--control`` is the A/A run that shows the method's noise: B loads nothing either.
``--watch`` compares the two ways the extension gets loaded: A by a ``%load_ext`` cell,
B as JupyterLab's automatic watching does (a silent execute before the first cell,
which the recorder does not record); the hook is the same, so the ratio is 1 but for
noise.
``--baseline PATH`` compares two versions of the extension: A loads the package found
at PATH (a checkout, put first on the kernel's ``PYTHONPATH``), B this one; a change
that does not move the cost gives a ratio of 1 but for noise.

With the extension, each B run's history must hold one ``cell_executed`` per cell
after the first; the script checks it once the run is over.

Usage: python benchmarks/p1_steady_state.py [--cells 1000] [--pairs 5] [--control | --baseline PATH | --watch]
"""

from __future__ import annotations

import argparse
import asyncio
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

LOAD = "%load_ext ambient_jupyter"
LOADED = "'ambient_jupyter' in get_ipython().extension_manager.loaded"


def cells(n: int, first: str) -> list[str]:
    body = [f"x{i // 2} = {i // 2} * 2" if i % 2 == 0 else f"x{i // 2}" for i in range(n - 1)]
    return [first, *body]


async def timed_run(sources: list[str], env: dict[str, str], silent_load: bool = False) -> float:
    """Seconds from the start of cell 2 to the end of the last cell, in a fresh kernel.

    ``silent_load``: load the extension as JupyterLab's watcher does, before the cells.
    """
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell(s) for s in sources]
    marks: dict[str, float] = {}
    failed: list[int] = []

    def on_cell_start(cell: Any, cell_index: int) -> None:
        if cell_index == 1:
            marks["start"] = time.perf_counter()

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        if execute_reply.get("content", {}).get("status") != "ok":
            failed.append(cell_index)
        marks["end"] = time.perf_counter()

    async def on_notebook_start(notebook: Any) -> None:
        if not silent_load:
            return
        assert client.kc is not None
        msg_id = client.kc.execute(LOAD, silent=True, store_history=False, user_expressions={"loaded": LOADED})
        reply = await client.async_wait_for_reply(msg_id)
        loaded = (reply or {}).get("content", {}).get("user_expressions", {}).get("loaded", {})
        if loaded.get("data", {}).get("text/plain") != "True":
            raise RuntimeError(f"the silent load did not load the extension: {reply}")

    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", on_cell_start=on_cell_start, on_cell_executed=on_cell_executed,
        on_notebook_start=on_notebook_start,
    )
    await client.async_execute(env=env)
    if failed:
        raise RuntimeError(f"cells {failed[:5]} failed")
    return marks["end"] - marks["start"]


def recorded(db: Path, notebook: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=30)
    try:
        row = conn.execute(
            "SELECT count(*) FROM events e JOIN notebooks n ON n.id = e.notebook_id "
            "WHERE n.path = ? AND e.kind = 'cell_executed'",
            (notebook,),
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return int(row[0])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=5)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--control", action="store_true", help="A/A: neither run loads the extension")
    mode.add_argument("--baseline", type=Path, help="A loads the extension from this checkout instead of 'pass'")
    mode.add_argument("--watch", action="store_true", help="A loads by a %%load_ext cell, B silently (auto-watch)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ambient-p1s-"))
    db = tmp / "history.sqlite"
    env = {**os.environ, "AMBIENT_DB": str(db), "AMBIENT_HOST": "runner", "AMBIENT_QUIET": "1"}
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "A": (cells(args.cells, LOAD if args.baseline or args.watch else "pass"), dict(env)),
        "B": (cells(args.cells, "pass" if args.control or args.watch else LOAD), dict(env)),
    }
    if args.baseline:
        base = str(args.baseline.resolve())
        variants["A"][1]["PYTHONPATH"] = os.pathsep.join(p for p in (base, env.get("PYTHONPATH")) if p)
    label = (
        "CONTROL (A/A)" if args.control else f"A=baseline {args.baseline}" if args.baseline
        else f"A={LOAD}" if args.watch else "A=pass"
    )
    b_label = "pass" if args.control else "silent load (auto-watch)" if args.watch else LOAD
    print(f"P1s cells={args.cells} pairs={args.pairs} {label} B={b_label}")

    await timed_run(cells(50, "pass"), env)  # warm the page and bytecode caches, untimed
    ratios: list[float] = []
    added: list[float] = []
    problems: list[str] = []
    for k in range(1, args.pairs + 1):
        seconds = {}
        for name in ("A", "B"):
            sources, run_env = variants[name]
            notebook = str(tmp / f"p1s-{k}-{name}.ipynb")
            silent = args.watch and name == "B"
            seconds[name] = await timed_run(sources, {**run_env, "AMBIENT_NOTEBOOK": notebook}, silent)
            # Loaded by its first cell: every later one is recorded; loaded silently: all of them.
            want = args.cells if silent else args.cells - 1 if sources[0] == LOAD else 0
            if want:
                # Committed by the writer within its window; give it a moment after the run.
                for _ in range(100):
                    if recorded(db, notebook) >= want:
                        break
                    time.sleep(0.05)
            got = recorded(db, notebook)
            if got != want:
                problems.append(f"pair {k} {name}: {got} cell_executed events, expected {want}")
        ratios.append(seconds["B"] / seconds["A"])
        added.append((seconds["B"] - seconds["A"]) / (args.cells - 1) * 1000)
        print(f"P1s pair {k}: A {seconds['A']:.3f}s B {seconds['B']:.3f}s ratio {ratios[-1]:.3f}")
    for problem in problems:
        print(f"P1s PROBLEM: {problem}")
    shutil.rmtree(tmp, ignore_errors=True)
    name = (
        "control_ratio" if args.control else "baseline_ratio" if args.baseline
        else "watch_ratio" if args.watch else "steady_ratio"
    )
    print(
        f"P1s {name}={statistics.median(ratios):.3f} added_ms_per_cell={statistics.median(added):.3f} "
        f"ratios={','.join(f'{r:.3f}' for r in ratios)} (target <=1.03)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
