"""Fix rate: how often ``ambient-jupyter run --agent auto`` fixes a real notebook bug.

The corpus is ``benchmarks/fix_corpus/`` (written by its ``_make.py``): 48 small
analyses in 16 crash families, each with one bug in one cell, the minimal fix of
that cell, and a string that the last cell prints only when the work was done
right. Three modes:

``--verify``
    Check the corpus with plain nbclient: each buggy notebook raises the intended
    exception in the intended cell, and with ``fixed_cell`` applied it runs clean and
    its last cell prints ``expected``.
default
    Run each task's notebook as a user would, in a copy of its folder with a fresh
    history: ``ambient-jupyter run notebook.ipynb -o out.ipynb --agent auto --model
    SPEC`` with no terminal. A task is *solved* if the run exits 0 and the executed
    notebook's last code cell prints ``expected``. Every ``action_proposed`` of the
    run is read back from the history and counted as unparseable if its code does
    not parse as an IPython cell.
``--hints``
    Run with ``--agent off`` and count the tasks whose failing cell's
    ``cell_executed`` event carries a hint (``hints[].text`` or ``hints[].fix``)
    naming the task's ``hint``.

Inherited ``AMBIENT_*`` settings other than ``AMBIENT_THREADS`` are dropped, so an
expert model or a quiet setting in the caller's environment does not change what is
measured. A JSON report goes to ``benchmarks/out/``, named after the mode and the
corpus folder. The last line is the figure.

``--corpus DIR`` runs another corpus of the same layout (default ``benchmarks/fix_corpus``),
such as the held-out ``benchmarks/fix_corpus_heldout``.

Usage::

    .venv/bin/python benchmarks/fix_rate.py --verify [--jobs 2]
    .venv/bin/python benchmarks/fix_rate.py [--only FAMILY_OR_ID,...] [--jobs N] [--model SPEC] [--timeout S]
    .venv/bin/python benchmarks/fix_rate.py --hints [--only ...]
    .venv/bin/python benchmarks/fix_rate.py --corpus benchmarks/fix_corpus_heldout [--verify | --hints] [...]
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fix_corpus"
OUT = HERE / "out"
KEEP_ENV = {"AMBIENT_THREADS"}
"""``AMBIENT_*`` variables passed on to the runs (the machine's setting, not the product's)."""
GRACE_S = 20.0
"""After a timeout, how long a run may take to stop on SIGINT before it is killed."""

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


# -- the corpus ------------------------------------------------------------------------


def load_tasks(only: str | None) -> list[dict[str, Any]]:
    """The manifest's tasks, or those whose family or id is in the comma-separated ``only``."""
    tasks: list[dict[str, Any]] = json.loads((CORPUS / "tasks.json").read_text())
    if not only:
        return tasks
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    known = {t["id"] for t in tasks} | {t["family"] for t in tasks}
    unknown = sorted(wanted - known)
    if unknown:
        msg = f"--only: no task or family named {', '.join(unknown)}"
        raise SystemExit(msg)
    return [t for t in tasks if t["id"] in wanted or t["family"] in wanted]


def copy_task(task: dict[str, Any], parent: Path) -> Path:
    """A private copy of the task's folder (a run writes next to its notebook)."""
    target = parent / task["id"]
    shutil.copytree(CORPUS / task["id"], target)
    return target


def cell_text(cell: Any) -> str:
    """What a code cell printed or displayed, as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(str(out.get("text", "")))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def last_code_cell(nb: Any) -> Any | None:
    code = [c for c in nb.cells if c.cell_type == "code"]
    return code[-1] if code else None


def parses(code: str) -> bool:
    """Whether ``code`` parses as an IPython cell (magics allowed), as a person would run it."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in the code warn; not our concern here
            ast.parse(TransformerManager().transform_cell(code))
    except (SyntaxError, ValueError, IndexError, TypeError):
        return False
    return True


# -- --verify ------------------------------------------------------------------------------


def _execute(nb: Any, cwd: Path) -> Exception | None:
    """Run ``nb`` in place on a fresh kernel; the CellExecutionError it stopped at, if any."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=False, resources={"metadata": {"path": str(cwd)}}
    )
    try:
        # The kernel's own stderr (a TCP warning per kernel) would drown the report.
        client.execute(stderr=subprocess.DEVNULL)
    except CellExecutionError as exc:
        return exc
    return None


def verify_task(task: dict[str, Any], work: Path) -> tuple[bool, str]:
    """Check one task on a real kernel; (passed, what was seen)."""
    folder = copy_task(task, work)
    index = task["fixed_cell"]["index"]
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    if not 0 <= index < len(nb.cells) or nb.cells[index].cell_type != "code":
        return False, f"fixed_cell.index {index} is not a code cell"
    if nb.cells[index].source == task["fixed_cell"]["source"]:
        return False, "fixed_cell.source is the buggy cell unchanged"

    error = _execute(nb, folder)
    if error is None:
        return False, "the buggy notebook ran without an error"
    failed = [i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    ename = getattr(error, "ename", "?")
    if failed != [index]:
        return False, f"the buggy notebook failed in cell(s) {failed} ({ename}), not in cell {index}"
    if ename != task["error"]:
        return False, f"the buggy cell raised {ename}, not {task['error']}"
    if any(task["expected"] in cell_text(c) for c in nb.cells if c.cell_type == "code"):
        return False, "the buggy notebook printed the expected text"

    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    nb.cells[index].source = task["fixed_cell"]["source"]
    error = _execute(nb, folder)
    if error is not None:
        return False, f"the fixed notebook fails: {getattr(error, 'ename', '?')}: {getattr(error, 'evalue', '')}"
    last = last_code_cell(nb)
    printed = cell_text(last) if last is not None else ""
    if task["expected"] not in printed:
        return False, f"the fixed notebook's last cell printed {printed.strip()!r}, not {task['expected']!r}"
    return True, f"{ename} in cell {index}; fixed prints {task['expected']!r}"


def verify(tasks: list[dict[str, Any]], jobs: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="ambient-fix-verify-"))
    passed = 0
    started = time.monotonic()

    def one(task: dict[str, Any]) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = verify_task(task, work)
        except Exception as exc:  # a broken task must not hide the others' results
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        say(
            f"{'PASS' if ok else 'FAIL'}  {task['id']:<34} {task['family']:<15} {time.monotonic() - t0:5.1f}s  {detail}"
        )
        return ok

    try:
        for ok in _map(one, tasks, jobs):
            passed += ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    families = len({t["family"] for t in tasks})
    say(f"verified {len(tasks)} tasks in {families} families in {time.monotonic() - started:.0f}s")
    say(f"VERIFY passed={passed}/{len(tasks)}")
    return 0 if passed == len(tasks) else 1


def _map(fn: Callable[[dict[str, Any]], Any], tasks: list[dict[str, Any]], jobs: int) -> Iterable[Any]:
    if jobs <= 1:
        return map(fn, tasks)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    with pool:
        return list(pool.map(fn, tasks))


# -- running the product ------------------------------------------------------------


def cli_command() -> list[str]:
    """The installed ``ambient-jupyter`` next to this python, else the module."""
    script = Path(sys.executable).with_name("ambient-jupyter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ambient_jupyter"]


def run_env(db: Path, jobs: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBIENT_") or k in KEEP_ENV}
    env["AMBIENT_DB"] = str(db)
    if jobs > 1 and not env.get("AMBIENT_THREADS"):
        # Each run's embedded model would take every CPU; parallel runs share them instead.
        env["AMBIENT_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str, float]:
    """Run the CLI with no terminal; (exit code or None on timeout, its output and stderr, seconds)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [*cli_command(), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT is the CLI's Ctrl-C: it stops the run and shuts its kernel down.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = None
        err.seek(0)
        text = err.read()
    return code, text, time.monotonic() - t0


def history_events(folder: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Every event of the task's notebook, through ``ambient-jupyter history --json``."""
    out = subprocess.run(
        [*cli_command(), "history", "--notebook", "notebook.ipynb", "--json"],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        msg = f"ambient-jupyter history exited {out.returncode}: {out.stderr.strip()[-300:]}"
        raise RuntimeError(msg)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def failing_event(events: list[dict[str, Any]], buggy: str) -> dict[str, Any] | None:
    """The ``cell_executed`` event (status error) of the task's buggy cell."""
    errors = [e for e in events if e.get("kind") == "cell_executed" and e.get("status") == "error"]
    same = [e for e in errors if e.get("code") == buggy]
    return (same or errors or [None])[0]


def names_hint(event: dict[str, Any] | None, hint: str) -> tuple[bool, int]:
    """Whether some hint of ``event`` names ``hint``; and how many hints it has."""
    hints = event.get("hints") if event else None
    if not isinstance(hints, list):
        return False, 0
    for h in hints:
        if isinstance(h, dict) and any(isinstance(h.get(k), str) and hint in h[k] for k in ("text", "fix")):
            return True, len(hints)
    return False, len(hints)


def run_task(task: dict[str, Any], work: Path, *, model: str, timeout: float, hints: bool, jobs: int) -> dict[str, Any]:
    """One task through the CLI, judged; a dict for the report."""
    folder = copy_task(task, work)
    env = run_env(folder / "history.sqlite", jobs)
    agent = "off" if hints else "auto"
    buggy = nbformat.read(folder / "notebook.ipynb", as_version=4).cells[task["fixed_cell"]["index"]].source
    args = ["run", "notebook.ipynb", "-o", "out.ipynb", "--agent", agent, "--model", model]
    code, log, seconds = run_cli(args, folder, env, timeout)
    result: dict[str, Any] = {
        "id": task["id"],
        "family": task["family"],
        "exit": code,
        "timed_out": code is None,
        "seconds": round(seconds, 1),
        "log_tail": log[-1500:],
    }
    printed = ""
    agent_cells = 0
    if (folder / "out.ipynb").exists():
        nb = nbformat.read(folder / "out.ipynb", as_version=4)
        last = last_code_cell(nb)
        printed = cell_text(last) if last is not None else ""
        agent_cells = sum(1 for c in nb.cells if "ambient" in c.get("metadata", {}))
    result["printed"] = printed[-500:]
    result["agent_cells"] = agent_cells
    result["solved"] = code == 0 and task["expected"] in printed

    try:
        events = history_events(folder, env)
    except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
        result["history_error"] = str(exc)
        events = []
    proposals = [e for e in events if e.get("kind") == "action_proposed"]
    result["proposals"] = [
        {"code": str(p.get("code", "")), "parses": parses(str(p.get("code", "")))} for p in proposals
    ]
    result["unparseable"] = sum(not p["parses"] for p in result["proposals"])
    if hints:
        event = failing_event(events, buggy)
        named, count = names_hint(event, task["hint"])
        result["named"] = named
        result["hints"] = event.get("hints") if event else None
        result["hint_count"] = count
    return result


def task_line(r: dict[str, Any], hints: bool) -> str:
    status = "TIMEOUT" if r["timed_out"] else f"exit {r['exit']}"
    head = f"{r['id']:<34} {r['family']:<15}"
    if hints:
        named = "yes" if r["named"] else "no"
        return f"{head} named={named:<3} {r['seconds']:6.1f}s  hints={r['hint_count']}  ({status})"
    solved = "yes" if r["solved"] else "no"
    return (
        f"{head} solved={solved:<3} {r['seconds']:6.1f}s  "
        f"proposals={len(r['proposals'])} unparseable={r['unparseable']}  ({status})"
    )


def family_table(results: list[dict[str, Any]], key: str) -> list[str]:
    families: dict[str, list[bool]] = {}
    for r in results:
        families.setdefault(r["family"], []).append(bool(r[key]))
    lines = [f"{'family':<15} {key:>7}", f"{'-' * 15} {'-' * 7}"]
    lines += [f"{f:<15} {sum(v):>3}/{len(v):<3}" for f, v in families.items()]
    return lines


def benchmark(args: argparse.Namespace, tasks: list[dict[str, Any]]) -> int:
    mode = "hints" if args.hints else "fix"
    work = Path(tempfile.mkdtemp(prefix=f"ambient-fix-{mode}-"))
    started = datetime.now(timezone.utc)
    say(f"fix_rate: {len(tasks)} tasks, mode={mode}, model={args.model}, jobs={args.jobs}, work={work}")
    threads = run_env(work / "history.sqlite", args.jobs).get("AMBIENT_THREADS", "unset (every CPU)")
    say(f"fix_rate: cli={' '.join(cli_command())}, AMBIENT_THREADS={threads}")

    def one(task: dict[str, Any]) -> dict[str, Any]:
        try:
            r = run_task(task, work, model=args.model, timeout=args.timeout, hints=args.hints, jobs=args.jobs)
        except Exception as exc:  # one broken run is reported and the others still run
            r = {
                "id": task["id"],
                "family": task["family"],
                "exit": None,
                "timed_out": False,
                "seconds": 0.0,
                "solved": False,
                "named": False,
                "hint_count": 0,
                "proposals": [],
                "unparseable": 0,
                "crash": f"{type(exc).__name__}: {exc}",
            }
        say(task_line(r, args.hints))
        return r

    try:
        by_id = {r["id"]: r for r in _map(one, tasks, args.jobs)}
    finally:
        if args.keep:
            say(f"fix_rate: kept the runs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results = [by_id[t["id"]] for t in tasks]
    key = "named" if args.hints else "solved"
    say("")
    for line in family_table(results, key):
        say(line)
    n = len(results)
    good = sum(bool(r[key]) for r in results)
    proposals = sum(len(r["proposals"]) for r in results)
    unparseable = sum(r["unparseable"] for r in results)
    rate = 100.0 * good / n if n else 0.0
    if args.hints:
        figure = f"HINT_RATE named={good}/{n} ({rate:.1f}%)"
    else:
        figure = f"FIX_RATE solved={good}/{n} ({rate:.1f}%) unparseable={unparseable}/{proposals} proposals"

    OUT.mkdir(exist_ok=True)
    report = OUT / f"fix_rate{'_hints' if args.hints else ''}_{CORPUS.name}.json"
    report.write_text(
        json.dumps(
            {
                "started": started.isoformat(timespec="seconds"),
                "mode": mode,
                "corpus": str(CORPUS),
                "model": args.model,
                "only": args.only,
                "timeout_s": args.timeout,
                "jobs": args.jobs,
                "ambient_threads": threads,
                "figure": figure,
                "tasks": results,
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )
    say(f"report: {report}")
    say(figure)
    return 0


def main() -> int:
    global CORPUS  # --corpus sets it once, before any task is read or copied
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--verify", action="store_true", help="check the corpus with plain nbclient, no model")
    mode.add_argument("--hints", action="store_true", help="run with --agent off and score the failing cells' hints")
    parser.add_argument("--only", help="comma-separated task ids or family names")
    parser.add_argument("--jobs", type=int, default=1, help="tasks run at once (default 1; 2 on a small machine)")
    parser.add_argument("--model", default="embedded", help="the model spec passed to the CLI (default: embedded)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per task run (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (out.ipynb, history.sqlite)")
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS, help="the corpus folder with its tasks.json (default: fix_corpus)"
    )
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    if not (args.corpus / "tasks.json").is_file():
        parser.error(f"--corpus: no tasks.json in {args.corpus}")
    CORPUS = args.corpus.resolve()
    tasks = load_tasks(args.only)
    if args.verify:
        return verify(tasks, args.jobs)
    return benchmark(args, tasks)


if __name__ == "__main__":
    sys.exit(main())
