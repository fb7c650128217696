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
``--pin`` is a quieter method on a small machine: this script (the notebook client) runs on
the first CPU and every thread of each kernel on the others, moved there before the first
cell, so the threads the extension starts later (its writer) run beside the kernel's own
and compete with them, as they do for a person. Without it, the client and the kernel share
every CPU, and which thread lands where moves a 4 ms cell by more than the cost measured.
``--interleave`` is the quietest method: each pair is two fresh kernels, A and B, started
side by side, and one client runs their cells alternately (cell i in A then in B, the next
one in B then in A), each timed from nbclient's start of the cell to its end. A moment of
a slow machine then costs both kernels alike, instead of one whole run; the kernels still
take turns, so neither competes with the other's cells (only with its background threads,
the writer's commits among them). Its A/A control stays within about ±3% per pair, where
whole runs spread ±15%.
``--baseline PATH`` compares two versions of the extension: A loads the package found
at PATH (a checkout, put first on the kernel's ``PYTHONPATH``), B this one; a change
that does not move the cost gives a ratio of 1 but for noise.

With the extension, each B run's history must hold one ``cell_executed`` per cell
after the first; the script checks it once the run is over.

``--mix CYCLES`` replaces the tiny cells with an analysis' (see :func:`mix_cells`): pandas,
plots, sleeps of 10 ms to 1 s; cycles of eight cells.

Usage: python benchmarks/p1_steady_state.py [--cells 1000 | --mix 6] [--pairs 5] [--pin | --interleave]
           [--control | --baseline PATH | --watch]
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


MIX_SETUP = (
    "import time\nimport numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\n%matplotlib inline"
)


def mix_cells(cycles: int, first: str) -> list[str]:
    """``--mix``: cells as an analysis has them, 10 ms to 1 s each (imports untimed, in cell 2).

    Each cycle: a 10,000-row DataFrame, a groupby shown as HTML, a line plot (a PNG),
    a 10 ms sleep, ~30 ms of Python, a printed ``describe()``, a 100 ms sleep, a 1 s sleep.
    """
    body: list[str] = []
    for i in range(cycles):
        body += [
            f"df = pd.DataFrame({{'a': np.arange(10_000) % 7, 'b': np.random.default_rng({i}).random(10_000)}})",
            "df.groupby('a')['b'].agg(['mean', 'std', 'count'])",
            f"fig, ax = plt.subplots(figsize=(4, 3))\nax.plot(df['b'][:500])\nax.set_title('cycle {i}')\nplt.show()",
            "time.sleep(0.01)",
            "total = sum(k * k for k in range(300_000))\ntotal",
            "print(df.describe())",
            "time.sleep(0.1)",
            "time.sleep(1.0)",
        ]
    return [first, MIX_SETUP, *body]


TIMED_FROM = 1
"""The first timed cell: the one after the load (``--mix``: after the imports too)."""
KERNEL_CPUS: set[int] | None = None
"""With ``--pin``: the CPUs each kernel's threads are moved to before its first cell."""


def pin_kernel(pid: int) -> None:
    assert KERNEL_CPUS is not None
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), KERNEL_CPUS)


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
        if cell_index == 0 and KERNEL_CPUS is not None and not silent_load:
            pin_kernel(client.km.provisioner.pid)  # type: ignore[union-attr]
        if cell_index == TIMED_FROM:
            marks["start"] = time.perf_counter()

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        if execute_reply.get("content", {}).get("status") != "ok":
            failed.append(cell_index)
        marks["end"] = time.perf_counter()

    async def on_notebook_start(notebook: Any) -> None:
        if not silent_load:
            return
        if KERNEL_CPUS is not None:
            pin_kernel(client.km.provisioner.pid)  # type: ignore[union-attr]
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


def _notebook(sources: list[str]) -> Any:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell(s) for s in sources]
    return nb


Variant = tuple[list[str], dict[str, str]]
"""A run's cell sources and the environment of its kernel."""


async def interleaved_run(a: Variant, b: Variant) -> tuple[float, float]:
    """Seconds of cells 2..N in each of two fresh kernels whose cells alternate."""
    clients = [NotebookClient(_notebook(sources), timeout=120, kernel_name="python3") for sources, _ in (a, b)]
    spent = [0.0, 0.0]
    async with clients[0].async_setup_kernel(env=a[1]), clients[1].async_setup_kernel(env=b[1]):
        for i in range(len(a[0])):
            for k in (0, 1) if i % 2 == 0 else (1, 0):  # neither always goes first
                started = time.perf_counter()
                cell = clients[k].nb.cells[i]
                await clients[k].async_execute_cell(cell, i)
                if i >= TIMED_FROM:
                    spent[k] += time.perf_counter() - started
                if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                    raise RuntimeError(f"cell {i} failed in {'AB'[k]}")
    return spent[0], spent[1]


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
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--pin", action="store_true", help="the client on the first CPU, each kernel on the others")
    method.add_argument("--interleave", action="store_true", help="two kernels per pair, their cells alternating")
    parser.add_argument("--mix", type=int, metavar="CYCLES", help="an analysis' cells instead")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--control", action="store_true", help="A/A: neither run loads the extension")
    mode.add_argument("--baseline", type=Path, help="A loads the extension from this checkout instead of 'pass'")
    mode.add_argument("--watch", action="store_true", help="A loads by a %%load_ext cell, B silently (auto-watch)")
    args = parser.parse_args()
    if args.interleave and args.watch:
        parser.error("--watch loads silently before the first cell: use whole runs")
    global KERNEL_CPUS, TIMED_FROM
    make = mix_cells if args.mix else cells
    if args.mix:
        TIMED_FROM = 2
        args.cells = args.mix
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs at least 2 CPUs")
        os.sched_setaffinity(0, {cpus[0]})
        KERNEL_CPUS = set(cpus[1:])

    tmp = Path(tempfile.mkdtemp(prefix="ambient-p1s-"))
    db = tmp / "history.sqlite"
    env = {**os.environ, "AMBIENT_DB": str(db), "AMBIENT_HOST": "runner", "AMBIENT_QUIET": "1"}
    variants: dict[str, Variant] = {
        "A": (make(args.cells, LOAD if args.baseline or args.watch else "pass"), dict(env)),
        "B": (make(args.cells, "pass" if args.control or args.watch else LOAD), dict(env)),
    }
    if args.baseline:
        base = str(args.baseline.resolve())
        variants["A"][1]["PYTHONPATH"] = os.pathsep.join(p for p in (base, env.get("PYTHONPATH")) if p)
    label = (
        "CONTROL (A/A)" if args.control else f"A=baseline {args.baseline}" if args.baseline
        else f"A={LOAD}" if args.watch else "A=pass"
    )
    b_label = "pass" if args.control else "silent load (auto-watch)" if args.watch else LOAD
    pinned = f" pinned: client CPU {min(os.sched_getaffinity(0))}, kernels {sorted(KERNEL_CPUS)}" if KERNEL_CPUS else ""
    interleaved = " interleaved" if args.interleave else ""
    kind = " (mix)" if args.mix else ""
    print(f"P1s cells={len(variants['A'][0])}{kind} pairs={args.pairs} {label} B={b_label}{pinned}{interleaved}")

    await timed_run(cells(50, "pass"), env)  # warm the page and bytecode caches, untimed
    ratios: list[float] = []
    added: list[float] = []
    problems: list[str] = []
    for k in range(1, args.pairs + 1):
        seconds = {}
        envs = {name: {**variants[name][1], "AMBIENT_NOTEBOOK": str(tmp / f"p1s-{k}-{name}.ipynb")} for name in "AB"}
        if args.interleave:
            seconds["A"], seconds["B"] = await interleaved_run(
                (variants["A"][0], envs["A"]), (variants["B"][0], envs["B"])
            )
        for name in ("A", "B"):
            sources, notebook = variants[name][0], envs[name]["AMBIENT_NOTEBOOK"]
            silent = args.watch and name == "B"
            if not args.interleave:
                seconds[name] = await timed_run(sources, envs[name], silent)
            # Loaded by its first cell: every later one is recorded; loaded silently: all of them.
            want = len(sources) if silent else len(sources) - 1 if sources[0] == LOAD else 0
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
        timed = len(variants["A"][0]) - TIMED_FROM
        added.append((seconds["B"] - seconds["A"]) / timed * 1000)
        print(f"P1s pair {k}: A {seconds['A']:.3f}s B {seconds['B']:.3f}s ratio {ratios[-1]:.3f}")
    for problem in problems:
        print(f"P1s PROBLEM: {problem}")
    shutil.rmtree(tmp, ignore_errors=True)
    name = (
        "control_ratio" if args.control else "baseline_ratio" if args.baseline
        else "watch_ratio" if args.watch else "mix_ratio" if args.mix else "steady_ratio"
    )
    print(
        f"P1s {name}={statistics.median(ratios):.3f} added_ms_per_cell={statistics.median(added):.3f} "
        f"ratios={','.join(f'{r:.3f}' for r in ratios)} (target <=1.03)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
