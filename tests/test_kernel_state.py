"""Summaries of live kernel objects: what each kind reports, and the bounds that make them safe."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from jupyter_client.manager import start_new_kernel

from ambient_jupyter.code_check import assigned_names
from ambient_jupyter.context import render_state as render
from ambient_jupyter.kernel.state import TEXT_CAP, select_names, summarize

# pytest-timeout's default "signal" method holds SIGALRM during each test, and then
# summarize (rightly) does not borrow it. These tests want the timer free.
pytestmark = pytest.mark.timeout(600, method="thread")


HERE = f"{__name__}."
"""The type names of this module's classes start with it."""


def one(obj: Any, **kwargs: Any) -> dict[str, str]:
    entries = summarize({"x": obj}, ["x"], **kwargs)
    assert len(entries) == 1, entries
    return entries[0]


class SlowRepr:
    def __init__(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        self.calls += 1
        time.sleep(10)
        return "never"


class RaisingRepr:
    def __repr__(self) -> str:
        raise ValueError("broken repr")


class RaisingLen:
    def __len__(self) -> int:
        raise RuntimeError("broken len")


class RaisingGetattr:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


class ExitingRepr:
    def __repr__(self) -> str:
        raise SystemExit(3)


# --- each kind ----------------------------------------------------------------------


def test_dataframe_shape_columns_dtypes_index_and_first_rows() -> None:
    sales = pd.DataFrame({"Region": ["North", "South", "East", "West"], "units": [10, 20, 30, 40],
                          "price": [1.5, 2.5, 3.5, 4.5], "ok": [True, False, True, True]})
    entry = one(sales)
    assert entry["type"] == "pandas.DataFrame"
    text = entry["text"]
    assert text.startswith("pandas.DataFrame, shape (4, 4); columns Region (")
    for column in ("units (int64)", "price (float64)", "ok (bool)"):
        assert column in text
    assert "index RangeIndex(0..3)" in text
    # The first three rows, not the fourth.
    assert "North" in text and "East" in text and "West" not in text


def test_wide_dataframe_lists_some_columns_and_counts_the_rest() -> None:
    wide = pd.DataFrame(np.zeros((2, 500)), index=pd.Index(["a", "b"], name="key"))
    text = one(wide)["text"]
    assert "shape (2, 500)" in text
    assert "more" in text and "index Index [a, b]" in text
    assert len(text) <= TEXT_CAP


def test_series_length_dtype_name_and_index_labels() -> None:
    s = pd.Series(range(50), index=[f"row{i}" for i in range(50)], name="speed", dtype="int32")
    entry = one(s)
    assert entry["type"] == "pandas.Series"
    text = entry["text"]
    assert "length 50" in text and "dtype int32" in text and "name speed" in text
    assert "row0, row1" in text and "row9" in text and "row10" not in text


def test_dict_keys_with_scalar_values_only() -> None:
    config = {f"k{i}": i for i in range(30)} | {"model": RaisingRepr()}
    entry = one(config)
    assert entry["type"] == "dict"
    text = entry["text"]
    assert text.startswith("dict, len 31; keys {'k0': 0, 'k1': 1")
    assert "'k19': 19" in text and "'k20'" not in text
    assert "<RaisingRepr>" not in text  # beyond the first 20 keys


def test_list_set_and_tuple_show_len_and_first_items() -> None:
    assert one(list(range(1000)))["text"] == "list, len 1,000; first items [0, 1, 2, 3, 4]"
    assert one((1, "a"))["text"] == "tuple, len 2; first items [1, 'a']"
    assert one({7})["text"] == "set, len 1; first items [7]"


def test_module_public_names_and_count() -> None:
    entry = one(math)
    assert entry["type"] == "module"
    text = entry["text"]
    public = sorted(n for n in vars(math) if not n.startswith("_"))
    assert f"module math, {len(public)} public names: acos, " in text
    assert "__name__" not in text and "_" + "pi" not in text


def test_ndarray_shape_dtype_and_preview_only_when_small() -> None:
    small = one(np.arange(6, dtype=np.int16).reshape(2, 3))
    assert small["type"] == "numpy.ndarray"
    assert small["text"].startswith("numpy.ndarray, shape (2, 3), dtype int16; values [[0 1 2]")
    big = one(np.zeros((2000, 3000)))["text"]
    assert big == "numpy.ndarray, shape (2000, 3000), dtype float64"


def test_callables_signature_and_first_doc_line() -> None:
    def scale(values: list[float], factor: float = 2.0) -> list[float]:
        """Multiply every value.

        Longer text that is left out.
        """
        return [v * factor for v in values]

    text = one(scale)["text"]
    # Annotations are strings here (from __future__ import annotations), and show so.
    signature = "scale(values: 'list[float]', factor: 'float' = 2.0) -> 'list[float]'"
    assert text == f"function {signature}: Multiply every value."
    assert "Longer" not in text
    assert one(SlowRepr)["text"].startswith("type SlowRepr()")
    assert one(len)["text"].startswith("builtin_function_or_method len(obj, /): Return the number")


def test_other_objects_get_a_bounded_repr() -> None:
    text = one("x" * 10**7)["text"]
    assert text.startswith("str, len 10,000,000, 'xxx") and len(text) < 120
    assert len(one(b"y" * 10**7)["text"]) < 120
    assert one(10**20000)["text"] == "int, <int of 66439 bits>"


def test_matplotlib_figure_is_described_in_words() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure  # no pyplot: no backend needed

    fig = Figure()
    fig.suptitle("Quarter")
    ax, other = fig.subplots(1, 2)
    ax.plot([1, 2, 3], [3, 1, 2], label="revenue")
    ax.scatter([1, 2], [2, 2], label="targets")
    ax.set_title("Revenue by month")
    ax.set_xlabel("month")
    ax.set_ylabel("EUR")
    ax.legend()
    other.bar(["a", "b", "c"], [1, 2, 3])
    other.imshow(np.zeros((2, 2)))
    entry = one(fig)
    assert entry["type"] == "matplotlib.figure.Figure"
    text = entry["text"]
    assert text.startswith("matplotlib.figure.Figure 'Quarter', 2 axes; axes 0: title 'Revenue by month'")
    assert "x 'month', y 'EUR', 1 lines, 1 collections (scatter etc.)" in text
    assert "legend ['revenue', 'targets']" in text
    assert "axes 1: 3 bars, 1 images" in text
    axes = one(ax)
    assert axes["type"] == "matplotlib.axes.Axes"
    assert axes["text"].startswith("matplotlib.axes.Axes: title 'Revenue by month'")


def test_polars_frame_when_polars_is_imported() -> None:
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"a": list(range(10)), "b": ["x"] * 10})
    entry = one(df)
    assert entry["type"] == "polars.DataFrame"
    assert entry["text"].startswith("polars.DataFrame, shape (10, 2); columns a (Int64), b (String)")
    assert "first rows (0, 'x'); (1, 'x'); (2, 'x')" in entry["text"]


def test_libraries_are_only_recognised_never_imported() -> None:
    code = textwrap.dedent("""
        import sys
        from ambient_jupyter.kernel.state import summarize
        before = set(sys.modules)
        summarize({"d": {"a": 1}, "n": 3, "f": print}, ["d", "n", "f"])
        print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in
                     ("pandas", "numpy", "polars", "matplotlib")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- failures and time --------------------------------------------------------------


def test_user_code_that_raises_is_reported_not_raised() -> None:
    ns = {"r": RaisingRepr(), "n": RaisingLen(), "g": RaisingGetattr(), "e": ExitingRepr()}
    texts = {e["name"]: e["text"] for e in summarize(ns, list(ns))}
    assert texts == {
        "r": f"{HERE}RaisingRepr, <repr raised ValueError>",
        "n": texts["n"],
        "g": texts["g"],
        "e": f"{HERE}ExitingRepr (summary failed: SystemExit raised)",
    }
    assert texts["n"].startswith(f"{HERE}RaisingLen, len raised RuntimeError, <")
    assert texts["g"].startswith(f"{HERE}RaisingGetattr, attribute lookup raised RuntimeError, <")


def test_a_slow_repr_is_cut_at_the_deadline_and_the_timer_restored() -> None:
    slow = SlowRepr()
    started = time.perf_counter()
    entries = summarize({"slow": slow, "after": 1}, ["slow", "after"], time_limit=0.2)
    took = time.perf_counter() - started
    assert took <= 0.3, took
    assert slow.calls == 1
    # The one entry says why; the whole time went to it, so nothing follows.
    slow_type = f"{HERE}SlowRepr"
    assert entries == [{"name": "slow", "type": slow_type, "text": f"{slow_type} (repr took too long)"}]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_a_user_alarm_is_left_alone_and_no_user_code_runs() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        slow = SlowRepr()
        entries = summarize({"slow": slow, "items": [1, 2]}, ["slow", "items"])
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < remaining <= 30  # still the user's timer, not re-armed or cancelled
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert slow.calls == 0
    assert [e["text"] for e in entries] == [
        f"{HERE}SlowRepr (details skipped: SIGALRM is in use)",
        "list, len 2 (details skipped: SIGALRM is in use)",
    ]


def test_off_the_main_thread_no_user_code_runs() -> None:
    slow = SlowRepr()
    frame = pd.DataFrame({"a": [1, 2]})
    result: list[list[dict[str, str]]] = []
    worker = threading.Thread(target=lambda: result.append(summarize({"s": slow, "f": frame}, ["s", "f"])))
    worker.start()
    worker.join(5)
    assert slow.calls == 0
    assert [e["text"] for e in result[0]] == [
        f"{HERE}SlowRepr (details skipped: not on the main thread)",
        "pandas.DataFrame, shape (2, 1) (details skipped: not on the main thread)",
    ]


# --- budget and selection -----------------------------------------------------------


def test_the_character_budget_holds_for_the_sum_and_each_entry() -> None:
    ns = {f"v{i}": {f"key{j}": "v" * 50 for j in range(40)} for i in range(20)}
    entries = summarize(ns, list(ns), budget=1000)
    assert 1 < len(entries) < 20
    assert sum(len(e["text"]) for e in entries) <= 1000
    assert all(len(e["text"]) <= TEXT_CAP for e in entries)
    assert summarize(ns, list(ns), budget=10) == []


def test_missing_and_repeated_names_are_skipped_and_order_kept() -> None:
    entries = summarize({"a": 1, "b": 2}, ["b", "missing", "a", "b"])
    assert [e["name"] for e in entries] == ["b", "a"]


def test_select_names_order_and_filtering() -> None:
    ns: dict[str, Any] = {
        "sales": pd.DataFrame(), "total": 1, "rate": 0.1, "np": np, "pd": pd, "math": math, "_tmp": 2,
        "_": 5, "__": 6, "_i3": "x", "_3": 7, "_oh": {}, "In": [], "Out": {}, "get_ipython": print,
        "exit": None, "quit": None, "__builtins__": {}, "old": 3, "unused": 4,
    }
    code = "result = np.log(sales['units']) * rate\ntotal += 1\n_ + _i3"
    assert select_names(ns, code=code) == ["np", "sales", "rate", "total"]
    assert select_names(ns, question="why is _tmp bigger than old? use math") == ["_tmp", "old", "math"]
    # Recent names, newest first, but no modules, private names or plumbing.
    recent = ["math", "_tmp", "Out", "_", "old", "sales", "unused"]
    assert select_names(ns, code="print(total)", question="and rate?", recent=recent) == [
        "total", "rate", "old", "sales", "unused"]
    assert select_names(ns, recent=recent, limit=2) == ["old", "sales"]
    # Code that does not parse (a magic) still names what it touches.
    assert select_names(ns, code="%timeit sales.sum() + total") == ["sales", "total"]


def test_assigned_names_in_source_order() -> None:
    code = textwrap.dedent("""
        import numpy as np, os.path
        from math import pi as PI, tau
        a = b = 1
        c, (d, *e) = 1, (2, 3)
        a += 1
        f: int = 3
        g: int
        for i in range(3):
            total = i
        with open(__file__) as fh:
            pass
        if (n := 10) > 3:
            df = None
        def fn(x):
            inner = x
        class K:
            attr = 1
        squares = [k * k for k in range(3)]
        obj.attr = 5
        frame["col"] = 1
    """)
    assert assigned_names(code) == [
        "np", "os", "PI", "tau", "a", "b", "c", "d", "e", "f", "i", "total", "fh", "n", "df", "fn", "K",
        "squares"]
    assert assigned_names("%matplotlib inline\nx = 1") == []
    assert assigned_names("") == []


def test_render_one_line_per_entry_and_tables_indented() -> None:
    ns = {"sales": pd.DataFrame({"Region": ["N", "S"], "units": [1, 2]}), "n": 3}
    block = render(summarize(ns, ["sales", "n"]))
    lines = block.splitlines()
    assert lines[0].startswith("sales: pandas.DataFrame, shape (2, 2); columns Region (")
    assert lines[0].endswith("first rows:")
    assert all(line.startswith("    ") for line in lines[1:-1])
    assert lines[-1] == "n: int, 3"
    assert render([]) == ""


# --- the bounds, in a real kernel ---------------------------------------------------

SETUP = """
import gc, json, signal, time, tracemalloc
import numpy as np, pandas as pd
from ambient_jupyter.kernel.state import summarize

class SlowRepr:
    def __repr__(self):
        time.sleep(10)
        return "never"

class RaisingRepr:
    def __repr__(self):
        raise ValueError("broken repr")

class RaisingLen:
    def __len__(self):
        raise RuntimeError("broken len")

class RaisingGetattr:
    def __getattr__(self, name):
        raise RuntimeError(name)

class ExitingRepr:
    def __repr__(self):
        raise SystemExit(1)

# 2 float64 columns of 2**26 rows: 1 GiB. copy=False, so the frame holds this array.
frame = pd.DataFrame(np.ones((2**26, 2)), copy=False)
items = list(range(10**7))
slow, bad_repr, bad_len, bad_getattr, exits = SlowRepr(), RaisingRepr(), RaisingLen(), RaisingGetattr(), ExitingRepr()
NAMES = ["frame", "items", "slow", "bad_repr", "bad_len", "bad_getattr", "exits"]
gc.collect()
"""

MEASURE = """
report = {"frame_bytes": int(frame.memory_usage().sum()), "items": len(items), "calls": {}}
for name in NAMES:
    t0 = time.perf_counter()
    try:
        entries, error = summarize(globals(), [name], budget=3000, time_limit=0.2), None
    except BaseException as exc:
        entries, error = [], repr(exc)
    report["calls"][name] = {"seconds": round(time.perf_counter() - t0, 4), "error": error,
                             "text": entries[0]["text"] if entries else None}
t0 = time.perf_counter()
together = summarize(globals(), NAMES, budget=1500, time_limit=0.2)
report["together"] = {"seconds": round(time.perf_counter() - t0, 4), "names": [e["name"] for e in together],
                      "chars": sum(len(e["text"]) for e in together)}
# Memory: what the summaries allocate at their peak (slow excluded: it only sleeps).
tracemalloc.start()
summarize(globals(), [n for n in NAMES if n != "slow"], budget=3000, time_limit=2.0)
report["peak_alloc_bytes"] = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps(report))
"""


def _execute(kc: Any, code: str) -> tuple[str, str, dict[str, Any]]:
    """Run ``code``: its status, stdout, and execute_result data."""
    out: list[str] = []
    result: dict[str, Any] = {}

    def hook(msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "execute_result":
            result.update(content["data"])
        elif kind == "error":
            out.append("\n".join(content["traceback"]))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=180)
    return reply["content"]["status"], "".join(out), result


def test_bounds_in_a_real_kernel() -> None:
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        status, out, _ = _execute(kc, SETUP)
        assert status == "ok", out
        status, out, _ = _execute(kc, MEASURE)
        assert status == "ok", out
        report = json.loads(out.strip().splitlines()[-1])
        figures = json.dumps(report, indent=1)
        print(figures)

        assert report["frame_bytes"] >= 2**30, figures
        assert report["items"] == 10**7, figures
        calls = report["calls"]
        for name, call in calls.items():
            assert call["error"] is None, f"{name}: {figures}"
            assert call["seconds"] <= 0.3, f"{name} took {call['seconds']} s: {figures}"
            assert call["text"] is not None and len(call["text"]) <= TEXT_CAP, f"{name}: {figures}"
        assert calls["frame"]["text"].startswith("pandas.DataFrame, shape (67,108,864, 2); columns 0 (float64)")
        assert calls["items"]["text"] == "list, len 10,000,000; first items [0, 1, 2, 3, 4]"
        # The slow repr really ran and was cut by the timer, not skipped.
        assert calls["slow"]["text"] == "SlowRepr (repr took too long)", figures
        assert calls["slow"]["seconds"] >= 0.19, figures
        assert calls["bad_repr"]["text"] == "RaisingRepr, <repr raised ValueError>"
        assert calls["bad_len"]["text"].startswith("RaisingLen, len raised RuntimeError")
        assert calls["bad_getattr"]["text"].startswith("RaisingGetattr, attribute lookup raised RuntimeError")
        assert calls["exits"]["text"] == "ExitingRepr (summary failed: SystemExit raised)"
        together = report["together"]
        assert together["seconds"] <= 0.3, figures
        assert together["chars"] <= 1500, figures
        assert together["names"] == ["frame", "items", "slow"], figures  # the slow one used up the time
        # Heads and slices only: a copy of the frame (1 GiB) or the list (80 MB) would show here.
        assert report["peak_alloc_bytes"] < 5 * 2**20, figures

        # The kernel still works, and no alarm or handler of ours is left behind.
        status, _, result = _execute(kc, "1 + 1")
        assert (status, result.get("text/plain")) == ("ok", "2")
        _, out, _ = _execute(kc, "print(signal.getitimer(signal.ITIMER_REAL), repr(signal.getsignal(signal.SIGALRM)))")
        assert out.strip() == "(0.0, 0.0) <Handlers.SIG_DFL: 0>", out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
