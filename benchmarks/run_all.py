"""Run the benchmarks (P1-P9) one after another, print a table, and write docs/benchmarks.md.

Each benchmark runs once, as a subprocess with the venv's python, from the project
root; each already measures its figure against its baseline within that one run.
Its last line of output is its figure, as ``key=value`` pairs. A benchmark that
crashes, times out or prints no figure shows up as failed, with the end of its
output, and the others still run.

Exit status: 0 if every benchmark ran and met its target, 1 otherwise.

Usage::

    .venv/bin/python benchmarks/run_all.py [--only P1,P3] [--no-write] [--out PATH] [--quick] [-v]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from _report import machine, markdown
from _suite import SUITE, Bench, Result, parse_figures

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
TAIL_LINES = 25
HEARTBEAT_S = 60.0


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is only the table."""
    print(f"[run_all] {message}", file=sys.stderr, flush=True)


def default_python() -> str:
    """The project's venv if there is one (the benchmarks need its packages), else this python."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# -- running one benchmark --------------------------------------------------------


def _pump(stream: IO[str], sink: list[str], echo: str | None) -> None:
    """Collect a child's lines (and echo them to stderr with ``-v``) as they come, so no pipe fills up."""
    for line in stream:
        sink.append(line)
        if echo is not None:
            sys.stderr.write(f"{echo} {line}")
            sys.stderr.flush()


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child's process group (the benchmarks clean up their servers on it), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait(proc: subprocess.Popen[str], bench: Bench, timeout: float, started: float) -> bool:
    """Wait for the child, logging a heartbeat; False if it ran past ``timeout`` (it is then stopped)."""
    while True:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            _stop(proc)
            return False
        try:
            proc.wait(min(HEARTBEAT_S, left))
            return True
        except subprocess.TimeoutExpired:
            if left > HEARTBEAT_S:
                log(f"{bench.id} still running, {time.monotonic() - started:.0f} s")


def run_one(bench: Bench, python: str, extra: Sequence[str], timeout: float, verbose: bool) -> Result:
    cmd = [python, str(HERE / bench.script), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a timeout stops all of it
        )
    except OSError as exc:  # no such interpreter: this one fails, the others still run
        return Result(bench, 0.0, {}, "", f"could not start: {exc}", " ".join(cmd))
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, out, f"  {bench.id} |" if verbose else None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, f"  {bench.id} !" if verbose else None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    finished = _wait(proc, bench, timeout, started)
    for reader in readers:
        reader.join(10)
    return _result(bench, proc.returncode, finished, time.monotonic() - started, out, err, timeout)


def _result(
    bench: Bench, code: int | None, finished: bool, seconds: float, out: list[str], err: list[str], timeout: float
) -> Result:
    lines = [line.rstrip("\n") for line in out if line.strip()]
    last = lines[-1] if lines else ""
    figures = parse_figures(last)
    missing = [t.key for t in bench.targets if t.key not in figures]
    if not finished or (bench.targets and len(missing) == len(bench.targets)):
        figures = {}  # a line from the middle of a run (settings, a traceback), not its figure
    error: str | None = None
    if not finished:
        error = f"timed out after {timeout:.0f} s"
    elif code != 0:
        error = f"exit status {code}"
    elif not figures:
        error = "no key=value figure on its last line"
    elif missing:
        error = f"no {', '.join(missing)} on its last line"
    # stderr says why a script crashed; for a script that reported a problem itself, stdout does.
    source = err if any(line.strip() for line in err) else out
    tail = "".join(source[-TAIL_LINES:]) if error else ""
    return Result(bench, seconds, figures, last, error, tail)


# -- the table --------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    rows = [("Bench", "Against", "Figure", "Target", "Result", "Time")]
    for r in results:
        b = r.bench
        rows.append(
            (
                b.id,
                b.baseline,
                b.show(r.figures) if r.figures else "-",
                ", ".join(str(t) for t in b.targets) or "-",
                r.verdict if r.error is None else f"FAILED ({r.error})",
                f"{r.seconds:.0f} s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------


def select(only: str | None) -> list[Bench]:
    if not only:
        return list(SUITE)
    wanted = [name.strip().upper() for name in only.split(",") if name.strip()]
    known = {b.id: b for b in SUITE}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        msg = f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}"
        raise SystemExit(msg)
    return [known[name] for name in wanted]


def arguments(bench: Bench, quick: bool, plot: Path | None) -> list[str]:
    """The script's arguments: ``--quick`` settings, and where the growth plot goes (nowhere with --no-write)."""
    extra = list(bench.quick) if quick else []
    if bench.id == "P9":
        extra += ["--plot", str(plot) if plot else ""]
    return extra


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated ids, e.g. P1,P3 (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print the table only; write no files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the page to write (default docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="smoke-test settings (fast, not figures to publish)")
    parser.add_argument("--python", default=default_python(), help="interpreter for the benchmarks (default: .venv)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: its own)")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo each benchmark's output to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The benchmarks run from the project root: a relative interpreter path is meant from here.
    python = os.path.abspath(args.python) if os.sep in args.python else args.python
    benches = select(args.only)
    out: Path | None = None if args.no_write else args.out.resolve()
    # The page shows the plot next to itself, in img/ (docs/img/growth.png for docs/benchmarks.md).
    plot = out.parent / "img" / "growth.png" if out else None
    started = datetime.now(timezone.utc)
    log(f"{len(benches)} benchmark(s) with {python}")
    results: list[Result] = []
    for n, bench in enumerate(benches, 1):
        extra = arguments(bench, args.quick, plot)
        log(f"[{n}/{len(benches)}] {bench.id} {bench.title}: {bench.script} {' '.join(extra)}".rstrip())
        result = run_one(bench, python, extra, args.timeout or bench.timeout, args.verbose)
        results.append(result)
        log(
            f"{bench.id} done in {result.seconds:.0f} s: {result.verdict}"
            + (f" ({result.error})" if result.error else "")
        )
    print(table(results))
    if out is not None:
        info = machine(python)
        grown = plot is not None and plot.exists() and any(r.bench.id == "P9" and r.error is None for r in results)
        rel = os.path.relpath(plot, out.parent) if grown and plot else None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(results, info, started=started, quick=args.quick, plot=rel))
        log(f"wrote {out}")
    return 0 if all(r.verdict in ("met", "no target") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
