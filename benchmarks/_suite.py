"""What each benchmark measures, against what, and its target: the registry ``run_all.py`` runs.

Every benchmark prints its figure as its last line, as ``key=value`` pairs (other
words on that line, such as ``P4`` or ``(target <=5)``, are ignored). A benchmark is
described here, not changed: its script stays runnable on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SUITE", "Bench", "Result", "Target", "number", "parse_figures"]

# A pair is a word, "=", then anything up to whitespace; "<=1.03)" has no word before its "=".
_PAIR = re.compile(r"(?:^|\s)([A-Za-z_][\w.]*)=(\S+)")


def parse_figures(line: str) -> dict[str, str]:
    """The ``key=value`` pairs of a benchmark's last line, values as printed."""
    return {m.group(1): m.group(2) for m in _PAIR.finditer(line)}


def number(value: str | None) -> float | None:
    """A printed figure as a number (``100.00%`` -> 100.0, ``1.2x`` -> 1.2); None if it is not one."""
    if value is None:
        return None
    try:
        return float(value.rstrip("%×x"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    """A bound on one figure: ``key`` must be ``op`` (<= or >=) ``limit``."""

    key: str
    op: str
    limit: float
    unit: str = ""

    def met(self, figures: dict[str, str]) -> bool | None:
        """True or False, or None when the figure is missing or not a number."""
        value = number(figures.get(self.key))
        if value is None or value != value:  # missing, or NaN
            return None
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def __str__(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {self.limit:g}{self.unit}"


@dataclass(frozen=True)
class Bench:
    """One benchmark script and how to read its figure."""

    id: str
    script: str
    title: str
    baseline: str
    """What the figure is measured against, in the same run."""
    figure: str | Callable[[dict[str, str]], str]
    """How to show the figures: a ``str.format`` template over the last line's values, or a function."""
    targets: tuple[Target, ...]
    method: str
    """One paragraph for docs/benchmarks.md."""
    quick: tuple[str, ...] = ()
    """Arguments for ``--quick``: a smoke test that the script works, not a figure to publish."""
    timeout: float = 3600.0

    def show(self, figures: dict[str, str]) -> str:
        try:
            return self.figure(figures) if callable(self.figure) else self.figure.format_map(figures)
        except (KeyError, ValueError, IndexError):  # another size list, an older script: show it raw
            return " ".join(f"{k}={v}" for k, v in figures.items())


def _growth_figure(figures: dict[str, str]) -> str:
    """P9 names its keys after the sizes it ran (``ttft_ms_1000``, ``growth_ratio_1000_vs_10``)."""
    sizes = sorted(int(k.rsplit("_", 1)[1]) for k in figures if re.fullmatch(r"ttft_ms_\d+", k))
    growth = f"growth_ratio_{sizes[-1]}_vs_{sizes[0]}"
    times = " / ".join(figures[f"ttft_ms_{n}"] for n in sizes)
    cells = " / ".join(f"{n:,}" for n in sizes)
    return f"{figures[growth]}× first reply text at {sizes[-1]:,} vs {sizes[0]:,} cells ({times} ms at {cells} cells)"


SUITE: tuple[Bench, ...] = (
    Bench(
        id="P1",
        script="p1_kernel_overhead.py",
        title="Kernel overhead of the recorder",
        baseline="plain nbclient: the same cells, same kernel, extension unloaded",
        figure="{overhead_ratio}× (with {with_s} s / without {without_s} s, {cells} cells × {repeats} runs)",
        targets=(Target("overhead_ratio", "<=", 1.03, "×"),),
        method=(
            "One nbclient run of one notebook: 2,000 small cells with `%load_ext ambient_jupyter` and the same "
            "2,000 without it, in alternating blocks of 10 (ABBA) switched by untimed load/unload cells, so both "
            "variants share one kernel and the machine's drift. The load cell waits until the history is open and "
            "both switch cells collect their garbage, so a switch's cost stays in its untimed cell. Each cell is "
            "timed from nbclient's `on_cell_start` to `on_cell_executed`. The run is made three times, each in a "
            "fresh kernel, because one run's ratio moves by about ±0.02 on this machine even when both sides are "
            "identical (`--control`, an A/A run, measures that). The script also checks that the history holds "
            "exactly one `cell_executed` event per recorded cell. Figure: total time with / total time without, "
            "over the three runs."
        ),
        quick=("--cells", "200", "--block", "20", "--repeat", "1"),
    ),
    Bench(
        id="P2",
        script="p2_reaction_cost.py",
        title="Prompt cost of a reaction late in a notebook",
        baseline="the same reaction at event #5 (embedded model, same run)",
        figure="{eval_ratio}× ({eval_at_500} vs {eval_at_5} prompt tokens evaluated; prompt {prompt_at_500})",
        targets=(Target("eval_ratio", "<=", 1.5, "×"),),
        method=(
            "500 synthetic events (short cells, widget changes, a failure every so often) are appended to a real "
            "history; an `Assistant` on the embedded model prefills after each event, as an idle host would, and "
            "reacts to the failed cells at events #5 and #500. The figure is the number of prompt tokens the model "
            "had to evaluate (not served from its KV cache) at #500 over #5, cross-checked with llama.cpp's own "
            "counter. It shows that the append-only prompt makes a reaction cost O(new event), not O(notebook)."
        ),
        quick=("--events", "60"),
    ),
    Bench(
        id="P3",
        script="p3_ws_streaming.py",
        title="WebSocket streaming overhead",
        baseline="a direct backend call (same model, prompt and action schema, no server)",
        figure="first token {ttft_overhead_ms} ms later, token rate ×{token_rate_ratio} "
        "(ws {ws_ttft_ms} ms vs direct {backend_ttft_ms} ms)",
        targets=(Target("ttft_overhead_ms", "<=", 20, " ms"), Target("token_rate_ratio", ">=", 0.97)),
        method=(
            "A real Jupyter server with the extension and the embedded model answers chats over its WebSocket; "
            'the same messages go to `create_backend("embedded")` called directly in the benchmark process, with '
            "the same action schema. Rounds alternate server/direct; each pair's replies are compared word for "
            "word. Figures: median over rounds of (ws time to first token - direct time to first token), and of "
            "ws frames/s over direct pieces/s."
        ),
        quick=("--rounds", "2", "--max-tokens", "32"),
    ),
    Bench(
        id="P4",
        script="p4_history.py",
        title="History append and read",
        baseline="absolute: a durable SQLite append (WAL, synchronous=FULL, fsync included)",
        figure="append p50 {append_p50_ms} ms, read 10k events {read_10k_ms} ms",
        targets=(Target("append_p50_ms", "<=", 5, " ms"), Target("read_10k_ms", "<=", 300, " ms")),
        method=(
            "2,000 `History.append` calls on a real SQLite file in a temp directory, each committed with its disk "
            "sync, timed one by one (p50 reported); then 10,000 events read back after a seq and decoded to "
            "dicts (median of 5)."
        ),
    ),
    Bench(
        id="P5",
        script="p5_fanout.py",
        title="Fan-out of a streaming reply to 20 tabs",
        baseline="absolute p95; the same stream to 1 tab of the same server is shown for reference",
        figure="p95 {p95_ms} ms to {clients} tabs (1 tab: {baseline_1tab_p95_ms} ms), same order: {same_order}",
        targets=(Target("p95_ms", "<=", 50, " ms"),),
        method=(
            "A real Jupyter server streams replies from a fake Ollama (a separate process that stamps each piece "
            "with the time it wrote it, 50 pieces/s) to 20 WebSocket tabs of one notebook. Delivery latency is "
            "receive time - emit time, over the whole path (NDJSON, httpx, assistant, room, per-client queue, "
            "WebSocket). Every tab must get every piece once, in order, and all tabs the same frames."
        ),
        quick=("--seconds", "4", "--rounds", "2", "--tabs", "5"),
    ),
    Bench(
        id="P6",
        script="p6_embedded_throughput.py",
        title="Embedded model decode throughput",
        baseline="raw llama-cpp-python (same GGUF, prompt tokens, sampling and threads)",
        figure="{throughput_ratio}× ({ours_tok_s} vs raw {raw_tok_s} tok/s)",
        targets=(Target("throughput_ratio", ">=", 0.95, "×"),),
        method=(
            "Our `LlamaCppBackend` streaming through its async interface vs `llama_cpp.Llama.create_completion"
            "(stream=True)` on its own instance, same prompt token ids, sampling settings, seed and threads, both "
            "KV caches cleared before each generation. Tokens/s from the first streamed token to the last, "
            "rounds in ABBA order; figure: ratio of the medians."
        ),
        quick=("--rounds", "2", "--max-tokens", "32"),
    ),
    Bench(
        id="P7",
        script="p7_status_under_load.py",
        title="Server responsiveness while the model writes",
        baseline="an idle server (the same server, alternating idle and busy windows)",
        figure="{status_p95_ratio}× (busy p95 {busy_p95_ms} ms / idle p95 {idle_p95_ms} ms)",
        targets=(Target("status_p95_ratio", "<=", 1.2, "×"),),
        method=(
            "A separate prober process sends `GET ambient/api/status` every 5-15 ms to a real Jupyter server "
            "running the embedded model. Windows alternate idle and busy (a chat streaming a long reply the whole "
            "window). Figure: p95 latency busy / p95 latency idle."
        ),
        quick=("--pairs", "2", "--window", "2", "--max-tokens", "200"),
    ),
    Bench(
        id="P8",
        script="p8_constrained_actions.py",
        title="Schema-valid actions from the 135M model",
        baseline="free (unconstrained) decoding of the same prompts",
        figure="{constrained_valid} valid constrained vs {free_valid} free ({requests} requests)",
        targets=(Target("constrained_valid", ">=", 100, "%"),),
        method=(
            "100 action requests over 10 notebooks, built as the assistant builds them (real history, "
            "`Transcript`, the turn's action schema), each sent to the embedded model with llama.cpp's JSON-schema "
            "grammar and without it. An output counts only if its raw text validates against the schema."
        ),
        quick=("--requests", "10", "--max-tokens", "256"),
    ),
    Bench(
        id="P9",
        script="p9_growth.py",
        title="Reaction latency vs notebook length",
        baseline="the same reaction in a 10-cell notebook (same run)",
        figure=_growth_figure,
        targets=(),
        method=(
            "Notebooks of 10, 100 and 1,000 executed cells (P2's cell mix) in a real history; an `Assistant` on "
            "the embedded model reacts to a failed cell in each, timed from the commit of the failed cell to the "
            "first reply text the user sees and to the stored reply. Warm: the model read the notebook while "
            "idle (`Assistant.prefill()`, untimed), so the cache holds it as a host that keeps the model warm "
            "leaves it; three rounds per size in alternating order, medians. Cold: one reaction per size with "
            "the KV cache cleared. No target in the issue; the figure is the growth of the warm first-text time."
        ),
        quick=("--sizes", "10,100", "--rounds", "1"),
    ),
    Bench(
        id="P10",
        script="approval_roundtrip.py",
        title="Approval round trip vs notebook length",
        baseline="the same approval in a 100-event notebook (same server, same run)",
        figure="{ratio}× (p50 {large_p50_ms} ms with {large_events} events / {small_p50_ms} ms with {small_events})",
        targets=(Target("ratio", "<=", 1.2, "×"),),
        method=(
            "A real Jupyter server with the extension serves two notebooks whose histories were seeded into its "
            "SQLite file: about 100 and 100,000 events, each with the proposals to approve spread through it and "
            "the agent mode set at its very start. One tab per notebook sends a `decide` frame (approve, with the "
            "sha256); timed to the `run` frame at that tab, rounds alternating between the notebooks. "
            "Figure: p50 long / p50 short."
        ),
        quick=("--large", "10000", "--rounds", "5"),
    ),
    Bench(
        id="P11",
        script="replay_long.py",
        title="A long history opened in the sidebar",
        baseline="a 1,000-event history opened the same way (same server, same browser)",
        figure="first card {first_ms} ms, newest of {events} {last_ms} ms; "
        "1,000 events: {small_first_ms} / {small_last_ms} ms",
        targets=(),
        method=(
            "JupyterLab with the extension as installed serves a notebook whose history holds 100,000 "
            "executed-cell events; Chromium opens it with the Ambient panel showing. A script in the page "
            "marks when the panel's WebSocket opened and, at each animation frame, whether the log holds a card "
            "and the newest event's card: the first frame with each. A fresh view asks for the newest 500 events "
            "(older ones a page at a time, on request). No target: the issue asks for the numbers."
        ),
        quick=("--events", "5000", "--small", "500"),
    ),
)


@dataclass
class Result:
    """What one run of a benchmark gave."""

    bench: Bench
    seconds: float
    figures: dict[str, str]
    last_line: str
    error: str | None
    """Why the run counts as failed (exit status, timeout, no figure), or None."""
    tail: str
    """The end of its stderr (or stdout, if stderr was empty), for a failed run."""

    @property
    def verdict(self) -> str:
        """``met``, ``not met``, ``failed`` or ``no target``."""
        if self.error is not None:
            return "failed"
        if not self.bench.targets:
            return "no target"
        return "met" if all(t.met(self.figures) for t in self.bench.targets) else "not met"
