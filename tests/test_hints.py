"""The kernel's analyzer: real exceptions from real code, hints checked against the live namespace,
and candidate fixes that are right by construction (they parse, differ, and run to the intended value)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ambient_jupyter.code_check import line_diff, parse_problem, same_code
from ambient_jupyter.hints import analyze, candidate


def fail(setup: str, code: str, tmp_path: Path, cells: list[str] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Run ``setup`` then ``code`` for real; analyze the exception ``code`` raised."""
    ns: dict[str, Any] = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(setup, ns)
        ran = [setup]
        try:
            exec(compile(code, "<cell>", "exec"), ns)
        except BaseException as exc:
            # The namespace itself, as in a kernel: the code's functions have it as their globals.
            return analyze(exc, code, ns, notebook_cells=cells, ran_cells=ran, cwd=str(tmp_path)), ns
    finally:
        os.chdir(cwd)
    raise AssertionError(f"{code!r} did not fail")


def run_fix(setup: str, fix: str, tmp_path: Path) -> dict[str, Any]:
    """Run the candidate on a fresh namespace, as a person re-running the fixed notebook would."""
    ns: dict[str, Any] = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(setup, ns)
        exec(compile(fix, "<fix>", "exec"), ns)
    finally:
        os.chdir(cwd)
    return ns


CASES = [
    # (id, setup, failing code, hint kind, text that names the fix, expression, value after the fix)
    ("name", "total = 5", "out = totl + 1", "name", "`total`", "out", 6),
    ("import", "", "out = np.arange(3).sum()", "import", "import numpy as np", "out", 3),
    ("attribute", "import numpy as np", "out = np.arrange(4).sum()", "attribute", "`arange`", "out", 6),
    ("column", "import pandas as pd\nsales = pd.DataFrame({'Region': ['N', 'S', 'N'], 'units': [1, 2, 3]})",
     "out = sales.groupby('region')['units'].sum()['N']", "column", "'Region'", "out", 4),
    ("column-list", "import pandas as pd\ndf = pd.DataFrame({'revenue': [1.5, 2.5], 'cost': [1, 1]})",
     "out = df[['revnue', 'cost']].sum().sum()", "column", "'revenue'", "out", 6.0),
    ("key", "d = {'Name': 'Ada', 'age': 36}", "out = d['name']", "key", "'Name'", "out", "Ada"),
    ("module", "", "import pandsa as pd\nout = pd.__name__", "module", "`pandas`", "out", "pandas"),
    ("module-from", "", "from colections import Counter\nout = Counter('aab')['a']", "module", "`collections`",
     "out", 2),
    ("import-name", "", "from collections import Countr\nout = Countr('aab')['a']", "module", "`Counter`", "out", 2),
    ("str-int", "total = 42", "out = 'Total: ' + total", "type", "str(total)", "out", "Total: 42"),
    ("sum-numbers", "nums = ['1', '2', '3']", "out = sum(nums)", "type", "int", "out", 6),
    ("sum-words", "words = ['a', 'b']", "out = sum(words)", "type", "join", "out", "ab"),
    ("none-sort", "xs = [3, 1, 2]", "s = xs.sort()\nout = s[0]", "none", "sorted", "out", 1),
    ("none-append", "xs = [1]", "ys = xs.append(2)\nout = len(ys)", "none", "append", "out", 2),
    ("off-by-one", "xs = [1, 2, 3]\nout = 0", "for i in range(len(xs) + 1):\n    out += xs[i]", "index",
     "range(len(", "out", 6),
    ("past-end", "xs = [1, 2, 3]", "out = xs[len(xs)]", "index", "len(xs) - 1", "out", 3),
    ("pairs", "xs = [1, 4, 9]", "out = [xs[i + 1] - xs[i] for i in range(len(xs))]", "index", "len(xs) - 1",
     "out", [3, 5]),
    ("bracket", "", "out = sum([1, 2, 3]", "syntax", ")", "out", 6),
    ("colon", "out = 0", "for x in [1, 2]\n    out += x", "syntax", ":", "out", 3),
    ("indent", "out = 0", "for x in [1, 2]:\nout += x", "indentation", "indent", "out", 3),
    ("unexpected-indent", "", "a = 1\n    out = a + 1", "indentation", "indent", "out", 2),
    ("matmul", "import numpy as np\nA = np.ones((2, 3)); B = np.ones((4, 3))", "out = (A @ B).shape",
     "shape", ".T", "out", (2, 4)),
    ("broadcast", "import numpy as np\nM = np.ones((3, 4)); v = np.arange(3)", "out = (M * v)[:, 0].tolist()",
     "shape", "reshape", "out", [0.0, 1.0, 2.0]),
    ("keyword", "xs = [3, 1, 2]", "out = sorted(xs, reversed=True)", "keyword", "`reverse`", "out", [3, 2, 1]),
    ("keyword-user", "def area(width, height=1):\n    return width * height", "out = area(2, hieght=3)",
     "keyword", "`height`", "out", 6),
    ("keyword-synonym", "import pandas as pd\ndf = pd.DataFrame({'x': [2, 1]})",
     "out = df.sort_values(column='x')['x'].tolist()", "keyword", "`by`", "out", [1, 2]),
    ("keyword-cut-short", "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})",
     "out = df.sort_values('x', ascend=False)['x'].tolist()", "keyword", "`ascending`", "out", [2, 1]),
    ("keyword-no-signature", "from datetime import timedelta", "out = timedelta(hour=2).seconds", "keyword",
     "`hours`", "out", 7200),
    # Inside a function of the cell: the names where it failed (its parameters) count.
    ("name-in-function", "", "def need(stock, minimum_order):\n    return max(0, minimum_ordr - stock)\n"
     "out = need(2, 10)", "name", "`minimum_order`", "out", 8),
    ("attribute-in-chain", "import pandas as pd\ndf = pd.DataFrame({'e': ['a', 'a', 'b']})",
     "out = (\n    df\n    .drop_duplicate()\n    .shape[0]\n)", "attribute", "`drop_duplicates`", "out", 2),
    ("named-agg", "import pandas as pd\ndf = pd.DataFrame({'s': ['a', 'a'], 'quantity': [1, 2]})",
     "out = df.groupby('s').agg(items=('quanity', 'sum'))['items'].tolist()", "column", "'quantity'", "out", [3]),
    ("sum-generator-numbers", "rows = [{'amount': '2.5'}, {'amount': '1.5'}]",
     "out = sum(row['amount'] for row in rows)", "type", "float", "out", 4.0),
    ("sum-generator-join", "lines = ['>id', ' AC ', 'GT  ']", "out = sum(line.strip() for line in lines[1:])",
     "type", "join", "out", "ACGT"),
    ("sort-as-value", "names = {'b', 'a'}", "out = list(enumerate(list(names).sort(), start=1))", "none",
     "sorted", "out", [(1, "a"), (2, "b")]),
    ("submodule", "", "from numpy.linlag import norm\nout = float(norm([3, 4]))", "module", "`numpy.linalg`",
     "out", 5.0),
    ("index-by-attribute", "import datetime\nMONTHS = ['Jan', 'Feb', 'Mar']\nday = datetime.date(2024, 3, 1)",
     "out = MONTHS[day.month]", "index", "day.month - 1", "out", "Mar"),
    ("frame-shape", "import numpy as np\nimport pandas as pd\nmonthly = list(range(12))",
     "out = pd.DataFrame(np.array(monthly), index=['q1', 'q2', 'q3', 'q4'], columns=['a', 'b', 'c']).shape",
     "shape", "reshape", "out", (4, 3)),
]


@pytest.mark.parametrize(("setup", "code", "kind", "names", "expr", "value"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_family_gets_a_hint_and_a_fix_that_runs_to_the_intended_value(
    tmp_path: Path, setup: str, code: str, kind: str, names: str, expr: str, value: Any
) -> None:
    hints, _ = fail(setup, code, tmp_path)
    assert hints, f"no hint for {code!r}"
    assert hints[0]["kind"] == kind, hints
    assert names in hints[0]["text"], hints[0]["text"]
    found = candidate(hints)
    assert found is not None, hints
    fix = found["fix"]
    # Right by construction: it parses, it is not the failing code, and it does what was meant.
    assert parse_problem(fix) is None and not same_code(fix, code)
    assert run_fix(setup, fix, tmp_path)[expr] == value
    assert found["change"]


def test_a_missing_file_is_matched_against_the_folder(tmp_path: Path) -> None:
    (tmp_path / "sales_2024.csv").write_text("region,units\nN,3\n")
    (tmp_path / "notes.txt").write_text("")
    setup = "import pandas as pd"
    hints, _ = fail(setup, "df = pd.read_csv('sales2024.csv')\nout = int(df['units'].sum())", tmp_path)
    assert hints[0]["kind"] == "file" and hints[0]["candidates"][0] == "sales_2024.csv"
    assert run_fix(setup, hints[0]["fix"], tmp_path)["out"] == 3


def test_a_file_in_a_subfolder_is_found(tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "tides.txt").write_text("1.5\n2.5\n")
    hints, _ = fail("", "with open('tides.txt') as fh:\n    out = sum(float(x) for x in fh)", tmp_path)
    assert hints[0]["kind"] == "file" and hints[0]["candidates"] == ["inputs/tides.txt"]
    assert run_fix("", hints[0]["fix"], tmp_path)["out"] == 4.0


def test_cells_run_out_of_order_are_found_in_the_notebook(tmp_path: Path) -> None:
    cells = ["import math", "area = math.pi * radius ** 2", "radius = 2.0"]
    hints, _ = fail("import math", cells[1], tmp_path, cells=cells)
    assert hints[0]["kind"] == "out_of_order" and "radius" in hints[0]["text"]
    assert run_fix("import math", hints[0]["fix"], tmp_path)["area"] == pytest.approx(12.566, rel=1e-3)
    # Without the notebook's cells the same failure is only a missing name (no guess).
    hints, _ = fail("import math", cells[1], tmp_path, cells=None)
    assert hints[0]["kind"] == "name" and "fix" not in hints[0]


def test_ambiguous_or_unknown_gets_facts_but_no_fix(tmp_path: Path) -> None:
    # Two equally close names: a hint lists both, nothing is guessed.
    hints, _ = fail("value_a = 1\nvalue_b = 2", "out = value_c", tmp_path)
    assert set(hints[0]["candidates"][:2]) == {"value_a", "value_b"} and "fix" not in hints[0]
    # Nothing close at all.
    hints, _ = fail("", "out = zzqx", tmp_path)
    assert hints[0]["kind"] == "name" and "no defined name is close" in hints[0]["text"]
    # An exception the analyzer has no family for.
    hints, _ = fail("", "out = 1 / 0", tmp_path)
    assert hints == []
    # A removed API is not a typo of a longer name: `.dt.week` is not `.dt.weekday` cut short.
    hints, _ = fail("import pandas as pd\ns = pd.Series(pd.to_datetime(['2024-01-01']))", "out = s.dt.week", tmp_path)
    assert hints[0]["kind"] == "attribute" and "fix" not in hints[0], hints
    # A shadowed built-in: a fact, not an edit.
    hints, _ = fail("sum = 5", "out = sum([1, 2])", tmp_path)
    assert "hides the built-in `sum()`" in hints[0]["text"] and "fix" not in hints[0]


def test_hostile_objects_do_not_break_the_analyzer(tmp_path: Path) -> None:
    setup = (
        "class Hostile:\n"
        "    def __getattr__(self, name):\n"
        "        raise SystemExit('no')\n"
        "    def __dir__(self):\n"
        "        raise RuntimeError('no dir')\n"
        "    def __len__(self):\n"
        "        raise RuntimeError('no len')\n"
        "h = Hostile()\n"
    )
    hints, _ = fail(setup, "h.valeu", tmp_path)
    assert hints == [] or "fix" not in hints[0]
    hints, _ = fail(setup, "out = h[3]", tmp_path)  # not subscriptable: a TypeError with no family
    assert hints == []


def test_text_from_the_data_is_bounded(tmp_path: Path) -> None:
    setup = "d = {('k' * 5000 + str(i)): i for i in range(3000)}"
    hints, _ = fail(setup, "d['K' * 5000 + '7']", tmp_path)  # the same letters in another case: a candidate
    # 400 characters, plus the marker that says how much was cut.
    assert hints and all(len(h["text"]) <= 480 for h in hints)
    assert all(len(c) <= 300 for c in hints[0]["candidates"]) and len(hints[0]["missing"]) <= 300


def test_a_candidate_keeps_the_rest_of_the_cell_and_magics_untouched(tmp_path: Path) -> None:
    code = "%time x = 1\nsales.groupby('region').size()  # count per region\nprint('done')"
    setup = "import pandas as pd\nsales = pd.DataFrame({'Region': ['N']})"
    hints, _ = fail(setup, code.split("\n", 1)[1], tmp_path)  # exec cannot run the magic: analyze its twin
    hint = hints[0]
    from ambient_jupyter.hints import analyze as again

    exc = KeyError("region")
    ns = {"pd": pd, "sales": pd.DataFrame({"Region": ["N"]})}
    fixed = candidate(again(exc, code, ns))
    assert fixed is not None and fixed["fix"].startswith("%time x = 1\n")
    assert line_diff(code, fixed["fix"]) == [
        [" ", "%time x = 1"],
        ["-", "sales.groupby('region').size()  # count per region"],
        ["+", "sales.groupby('Region').size()  # count per region"],
        [" ", "print('done')"],
    ]
    assert hint["kind"] == "column"


@pytest.mark.parametrize(
    ("old", "new", "lost"),
    [
        ("total = sum(xs) / 0", "total = sum(xs)", None),
        ("total = sum(xs) / 0", "105987634", "does nothing"),
        ("total = sum(xs) / 0", "# total = sum(xs)\n", "does nothing"),
        ("per_store = df.groupby('s').sum()\nper_store", "df.groupby('s').sum()", "no longer sets `per_store`"),
        ("print(x / 0)", "print(x)", None),
        ("def f(a):\n    return a +\n", "def f(a):\n    return a + 1\n", None),
    ],
)
def test_a_fix_that_drops_the_cells_work_is_not_a_fix(old: str, new: str, lost: str | None) -> None:
    from ambient_jupyter.code_check import lost_purpose

    found = lost_purpose(old, new)
    assert (found is None) if lost is None else (found is not None and lost in found), found
