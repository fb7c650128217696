"""``ambient-jupyter run | history | models``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from . import __version__
from ._trim import code_for_terminal, hints_for_terminal, printable

__all__ = ["main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:  # also refuses nan
        msg = f"expected a number greater than 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"expected a whole number, 0 or more, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


RUN_EPILOG = """\
when a cell fails:
  --agent off   the assistant explains the failure (it cannot propose code)
  --agent ask   it proposes a fix as a new cell, shows the exact code and asks
                "Run this cell? [y/N]"; with no terminal (stdin or stdout not a
                TTY) nothing it proposes runs
  --agent auto  its fix runs on its own as a new cell right after the failing one
A fix that runs cleanly makes the failing cell count as fixed, and the run goes on.
Agent cells carry their provenance in cell metadata ("ambient"); approvals are
recorded in the history only, never read from the notebook.

settings: --model, --expert, --agent and --quiet default to $AMBIENT_MODEL,
$AMBIENT_EXPERT, $AMBIENT_AGENT and $AMBIENT_QUIET; $AMBIENT_COOLDOWN,
$AMBIENT_MAX_REPLY_TOKENS and $AMBIENT_OUTPUT_LIMIT apply as well. The notebook's
kernel gets the same settings (for %%ask).

exit status: 0 if no unfixed cell error remains (cells tagged raises-exception do
not count), 1 otherwise, 130 if stopped with Ctrl-C, 2 if the notebook is missing.
"""


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="execute a notebook headless, with the assistant watching (and fixing, with --agent)",
        description="Execute a notebook cell by cell with the assistant watching; write the executed notebook.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("notebook", help="the .ipynb to run")
    p.add_argument("-o", "--output", help="where to write the executed notebook (default: NAME.run.ipynb)")
    p.add_argument(
        "--model", default=None, metavar="SPEC", help="the watcher's model (default: $AMBIENT_MODEL or auto)"
    )
    p.add_argument(
        "--expert",
        default=None,
        metavar="SPEC",
        help="the expert's model, e.g. openai:gpt-4o-mini; it takes the turn when the watcher's action is "
        "invalid twice ('' for none; default: $AMBIENT_EXPERT, else none)",
    )
    p.add_argument(
        "--agent",
        choices=["off", "ask", "auto"],
        default=None,
        help="what the agent may do when a cell fails (default: $AMBIENT_AGENT or ask; see below)",
    )
    # None when absent, so that $AMBIENT_QUIET decides.
    p.add_argument(
        "--quiet",
        action="store_true",
        default=None,
        help="do not consult the model on failures: no diagnosis and no fixes (default: $AMBIENT_QUIET)",
    )
    p.add_argument("--allow-errors", action="store_true", help="keep running after a cell that fails and is not fixed")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="time limit for each of the notebook's cells; past it the kernel is interrupted (default: none)",
    )
    p.add_argument(
        "--agent-timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="time limit for each cell the agent adds; past it the kernel is interrupted and the cell "
        "is not run again (default: 120)",
    )
    p.add_argument(
        "--max-fix-attempts",
        type=_count,
        default=2,
        metavar="N",
        help="fixes the agent may try for one failing cell (default: 2)",
    )
    p.add_argument(
        "--max-fixes", type=_count, default=5, metavar="N", help="fixes the agent may try in the whole run (default: 5)"
    )
    p.add_argument("--kernel", default=None, help="kernel name (default: the notebook's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_history(sub: Any) -> None:
    p = sub.add_parser(
        "history",
        help="print a notebook's conversation history",
        description="Print a notebook's conversation history. Exit status 1 if the notebook has no events "
        "(the closest recorded notebooks are named on stderr).",
    )
    p.add_argument("--notebook", help="the notebook (default: the most recently active one)")
    p.add_argument("--after", type=int, default=0, help="only events with seq greater than this")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--list", action="store_true", help="list the notebooks in the history")


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import AmbientSettings
    from .runner import run_notebook

    if not os.path.isfile(args.notebook):
        print(f"ambient-jupyter: no notebook at {args.notebook}", file=sys.stderr)
        return 2
    # The flags are these traits; a flag not given leaves the trait to the environment.
    # (An empty --model means the same as none; an empty --expert turns the expert off.)
    flags = {"model": args.model or None, "expert": args.expert, "agent": args.agent, "quiet": args.quiet}
    settings = AmbientSettings(**{name: value for name, value in flags.items() if value is not None})
    result = run_notebook(
        args.notebook,
        args.output,
        settings=settings,
        allow_errors=args.allow_errors,
        timeout=args.timeout,
        kernel_name=args.kernel,
        progress=not args.no_progress,
        agent_timeout=args.agent_timeout,
        max_fix_attempts=args.max_fix_attempts,
        max_fixes=args.max_fixes,
    )
    status = "ok" if not result.errors else f"{len(result.errors)} failing cell(s)"
    if result.fixed:
        status += f", {len(result.fixed)} fixed by the agent"
    if result.interrupted:
        status = "stopped by Ctrl-C" + (f" ({status})" if result.errors or result.fixed else "")
    print(
        f"ran {result.cells} cells in {result.seconds:.1f}s: {status}\n"
        f"executed notebook: {result.output}\n"
        f"history: ambient-jupyter history --notebook {args.notebook}",
        file=sys.stderr,
    )
    return result.exit_code


def _format(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    head = f"#{event.get('seq')} {event.get('at', '')[11:19]}"
    if kind == "cell_executed":
        line = (
            f"{head} cell [{event.get('execution_count')}] {event.get('status')} "
            f"{event.get('duration_ms', 0):.0f} ms"
        )
        body = code_for_terminal(str(event.get("code", "")))
        if event.get("error"):
            err = event["error"]
            body += f"\n    ! {err.get('ename')}: {err.get('evalue')}"
        return "\n".join([line, body, *hints_for_terminal(event.get("hints"), "    ")])
    if kind == "action_proposed":
        who = "the kernel's analysis" if event.get("origin") == "hint" else event.get("model")
        line = f"{head} proposed by {who}: {event.get('action')} {json.dumps(event.get('args') or {})}"
        return f"{line}\n{code_for_terminal(str(event.get('code', '')), event.get('diff'))}"
    if kind == "kernel_state":
        names = ", ".join(str(e.get("name")) for e in event.get("entries") or [])
        return f"{head} kernel state: {names or event.get('note') or 'nothing'}"
    if kind == "widget_changed":
        return (
            f"{head} widget {event.get('widget_class')} '{event.get('description') or event.get('widget')}' "
            f"{event.get('trait')}: {event.get('old')!r} -> {event.get('new')!r}"
        )
    if kind == "user_message":
        return f"{head} you ({event.get('source')}): {event.get('text')}"
    if kind == "assistant_message":
        return f"{head} ambient ({event.get('model')}, {event.get('state')}): {event.get('text')}"
    if kind == "model_error":
        return f"{head} model error ({event.get('model')}): {event.get('message')}"
    rest = {k: v for k, v in event.items() if k not in ("seq", "at", "notebook", "kind")}
    return f"{head} {kind}: {json.dumps(rest)}"


def _cmd_history(args: argparse.Namespace) -> int:
    from .history import History, normalize_notebook

    with History() as history:
        if args.list:
            for path, last, updated in history.notebooks():
                print(f"{last:>7} events  {updated}  {path}")
            return 0
        if args.notebook:
            notebook = normalize_notebook(args.notebook)
            if history.last_seq(notebook) == 0:
                return _no_events(notebook, history)
        else:
            known = history.notebooks()
            if not known:
                print(f"ambient-jupyter: the history at {history.path} is empty", file=sys.stderr)
                return 0
            notebook = known[0][0]
        for event in history.iter_events(notebook, args.after):
            # Readable lines show the person's text: no control characters reach the terminal.
            print(json.dumps(event, ensure_ascii=False) if args.json else printable(_format(event)))
    return 0


def _no_events(notebook: str, history: Any) -> int:
    """Say that ``notebook`` has no events, and name the recorded notebooks most like it."""
    import difflib

    print(f"ambient-jupyter: no events recorded for {printable(notebook)}", file=sys.stderr)
    known = [path for path, _last, _updated in history.notebooks()]
    # A kernel that could not tell its notebook (nbconvert, plain nbclient) records
    # under kernel:<working dir>/<id>: those of the notebook's folder come first.
    folder = os.path.dirname(notebook)
    nearby = [p for p in known if p.startswith(f"kernel:{folder}/") or p.startswith(f"ipython:{folder}")]
    alike = difflib.get_close_matches(notebook, known, n=5, cutoff=0.5)
    closest = list(dict.fromkeys([*nearby, *alike]))[:5]
    if closest:
        print("the closest recorded notebooks (see --list for all):", file=sys.stderr)
        for path in closest:
            print(f"  {printable(path)}", file=sys.stderr)
    else:
        print("ambient-jupyter history --list shows every recorded notebook", file=sys.stderr)
    return 1


def _cmd_models(_args: argparse.Namespace) -> int:
    from .backends import available_models

    models = asyncio.run(available_models())
    width = max(len(m.spec) for m in models)
    for m in models:
        print(f"{m.spec:<{width}}  {m.backend:<9}  {m.status}")
    return 0 if any(m.status.startswith("ready") for m in models) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ambient-jupyter", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_history(sub)
    sub.add_parser("models", help="list the backends and models that answer now")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="ambient-jupyter: %(message)s")
    handler = {"run": _cmd_run, "history": _cmd_history, "models": _cmd_models}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("ambient-jupyter: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
