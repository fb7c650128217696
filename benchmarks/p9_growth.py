"""P9: how the reaction to a failed cell grows with notebook length (10 / 100 / 1,000 executed cells).

Baseline: the same reaction in the 10-cell notebook, measured in the same run.

Each size N gets a notebook of its own in one real History (a temp SQLite file;
``History.append`` commits each event durably, as the kernel's writer does): N
``cell_executed`` events from P2's cell mix (short cells with short outputs, a
failure every 37 cells). An Assistant on the embedded model (``LlamaCppBackend()``,
default n_ctx; agent mode ``ask`` and the default ``max_reply_tokens``, as the
Jupyter server runs it) watches each notebook the way a host that keeps the model
warm does: after every event the watcher's transcript is brought up to date and its
window checked (so its cuts fall where an idle prefill would put them), and right
before each failure ``assistant.prefill()`` lets the model read the notebook so far.
That prefill is untimed: it is the host's idle time, and it restores this
notebook's prefix in the KV cache that the other sizes' rounds used in between.

Then a failed cell (P2's failures, the same one for every size in a round) is
committed, and ``assistant.react(event)`` is timed from the commit to the first
piece of reply text the user sees (``on_token``: the action's ``text``, after its
JSON head) and to the stored reply. Rounds alternate the order of the sizes, so the
machine's other load lands on all of them; the figure is the median per size, and
the growth ratio is the largest size's median over the smallest's.

After the warm rounds, each size gets one **cold** reaction: llama.cpp's KV cache is
cleared first, so the whole prompt is evaluated while the user waits. That is what
a host that never prefills gives the first reaction of a session.

Why the curve flattens: the context builder (``context.Transcript``) keeps the prompt
within the model's budget (n_ctx minus the reply reserve) and cuts old events, half
the budget at a time, at stable points. Once a notebook fills the window (about 100
of these cells), its prompt stops growing, and so does the reaction.

Writes a plot to docs/img/growth.png (needs matplotlib: ``pip install "matplotlib>=3.5"``, the ``bench`` extra).

Usage: python benchmarks/p9_growth.py [--sizes 10,100,1000] [--rounds 3] [--plot PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2_reaction_cost import _ERRORS, failed_cell, ok_cell

from ambient_jupyter.actions import action_schema
from ambient_jupyter.assistant import FIX_ACTIONS, Assistant
from ambient_jupyter.backends.llamacpp import LlamaCppBackend, _grammar
from ambient_jupyter.history import History

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLOT = ROOT / "docs" / "img" / "growth.png"
MAX_REPLY_TOKENS = 1024
"""The hosts' default turn budget (``AmbientSettings.max_reply_tokens``)."""


def executed_cell(count: int, rng: random.Random) -> dict[str, Any]:
    """The cell run with execution count ``count``: P2's mix, so the two benchmarks' notebooks compare."""
    if count % 37 == 0:
        return failed_cell(count, count, rng.randrange(len(_ERRORS)))
    return ok_cell(count, rng)


@dataclass
class Sample:
    """One timed reaction."""

    size: int
    mode: str
    """``warm`` (the host prefilled while idle) or ``cold`` (nothing of the notebook cached)."""
    ttft_ms: float
    """Commit of the failed cell -> first reply text the user sees."""
    reply_ms: float
    """Commit of the failed cell -> reply stored."""
    model_ttft_ms: float
    """The backend's own request -> first token (JSON included)."""
    prompt_tokens: int
    evaluated: int
    completion_tokens: int
    ms_per_token: float
    """Decoding, first token to last (llama.cpp's own timing, grammar included)."""
    cut: bool
    """The reaction itself moved the window (and so re-read part of the context)."""
    state: str


class Notebook:
    """One size: its notebook in the history, its assistant, and its next execution count."""

    def __init__(self, history: History, root: Path, backend: LlamaCppBackend, size: int, max_reply: int) -> None:
        self.history = history
        self.size = size
        self.path = str(root / f"growth-{size}.ipynb")
        self.count = 0
        self._first_text_at: float | None = None
        self.assistant = Assistant(
            history, self.path, backend, agent="ask", cooldown=0, max_reply_tokens=max_reply, on_token=self._on_text
        )

    def _on_text(self, _reply_id: str, _text: str) -> None:
        if self._first_text_at is None:
            self._first_text_at = time.perf_counter()

    async def _commit(self, event: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        return await asyncio.to_thread(self.history.append, self.path, event)

    async def fill(self, rng: random.Random) -> None:
        """N executed cells, each checked against the window as an idle host's prefill would."""
        for _ in range(self.size):
            await self._commit(executed_cell(self.count + 1, rng))
            (await self.assistant.transcript()).messages()

    async def describe(self) -> str:
        """The window after filling, and what compiling this turn's grammar costs (part of every reaction)."""
        t = await self.assistant.transcript()
        schema = action_schema(FIX_ACTIONS, t.plugins, t.cells, max_tokens=self.assistant.max_reply_tokens)
        _grammar.cache_clear()  # a reaction after a new cell never finds its grammar cached
        t0 = time.perf_counter()
        _grammar(json.dumps(schema))
        compile_ms = (time.perf_counter() - t0) * 1000
        return (
            f"window keeps {len(t.entries) - t.start} of {len(t.entries)} events after {t.cuts} cut(s) "
            f"(budget {t.budget} tokens); the reaction's grammar ({len(t.cells)} cell refs) compiles in "
            f"{compile_ms:.0f} ms"
        )

    async def react(self, which: int, *, cold: bool) -> Sample:
        """Commit failure ``which`` and time the unprompted reaction to it."""
        backend = await self.assistant.backend()
        assert isinstance(backend, LlamaCppBackend)
        if cold:
            backend._model().reset()  # nothing of this notebook in the KV cache
        else:
            await self.assistant.prefill()  # the host's idle time: not timed
        cuts = (await self.assistant.transcript()).cuts
        event = await self._commit(failed_cell(0, self.count + 1, which))
        self._first_text_at = None
        t0 = time.perf_counter()
        turn = await self.assistant.react(event)
        done = time.perf_counter()
        if turn is None or self._first_text_at is None:
            msg = f"no reaction with text to the failure in the {self.size}-cell notebook"
            raise RuntimeError(msg)
        usage = backend.usage
        return Sample(
            size=self.size,
            mode="cold" if cold else "warm",
            ttft_ms=(self._first_text_at - t0) * 1000,
            reply_ms=(done - t0) * 1000,
            model_ttft_ms=(usage.first_token_s or float("nan")) * 1000,
            prompt_tokens=usage.prompt_tokens,
            evaluated=usage.prompt_evaluated,
            completion_tokens=usage.completion_tokens,
            ms_per_token=usage.generation_s * 1000 / max(1, usage.completion_tokens - 1),
            cut=(await self.assistant.transcript()).cuts != cuts,
            state=turn.state,
        )


def median_of(samples: list[Sample], size: int, mode: str, field: str) -> float:
    values = [getattr(s, field) for s in samples if s.size == size and s.mode == mode]
    return statistics.median(values) if values else float("nan")


def print_table(samples: list[Sample], sizes: list[int]) -> None:
    print(
        "P9 cells mode  runs  ttft_ms  reply_ms  model_ttft_ms  prompt_tok  evaluated  completion  "
        "ms/tok  cut_in_reaction"
    )
    for mode in ("warm", "cold"):
        for size in sizes:
            got = [s for s in samples if s.size == size and s.mode == mode]
            if not got:
                continue

            def med(field: str, got: list[Sample] = got) -> float:
                return statistics.median(getattr(s, field) for s in got)

            print(
                f"P9 {size:5d} {mode:5s} {len(got):4d} {med('ttft_ms'):8.0f} {med('reply_ms'):9.0f} "
                f"{med('model_ttft_ms'):14.0f} {med('prompt_tokens'):11.0f} {med('evaluated'):10.0f} "
                f"{med('completion_tokens'):11.0f} {med('ms_per_token'):7.1f}  {sum(s.cut for s in got)}/{len(got)}"
            )


def plot(samples: list[Sample], sizes: list[int], path: Path, title: str) -> bool:
    """Two small panels (first text, complete reply) vs notebook length; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file only
        import matplotlib.pyplot as plt
    except ImportError:
        print('P9 note: matplotlib is not installed (.venv/bin/pip install "matplotlib>=3.5"); no plot written')
        return False
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    panels = (("ttft_ms", "first reply text"), ("reply_ms", "complete reply"))
    for ax, (field, label) in zip(axes, panels, strict=True):
        for mode, style, legend in (("warm", "o-", "warm (host prefilled)"), ("cold", "s--", "cold (no cache)")):
            ys = [median_of(samples, size, mode, field) / 1000 for size in sizes]
            ax.plot(sizes, ys, style, label=legend)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.set_xlabel("executed cells in the notebook")
        ax.set_ylabel("seconds after the failed cell")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summary_line(samples: list[Sample], sizes: list[int]) -> str:
    """The figure: medians per size, and how the largest size compares with the smallest."""
    parts = [f"ttft_ms_{n}={median_of(samples, n, 'warm', 'ttft_ms'):.0f}" for n in sizes]
    parts += [f"reply_ms_{n}={median_of(samples, n, 'warm', 'reply_ms'):.0f}" for n in sizes]
    parts += [f"cold_ttft_ms_{n}={median_of(samples, n, 'cold', 'ttft_ms'):.0f}" for n in sizes]
    parts += [f"prompt_tokens_{n}={median_of(samples, n, 'warm', 'prompt_tokens'):.0f}" for n in sizes]
    small, large = sizes[0], sizes[-1]
    growth = median_of(samples, large, "warm", "ttft_ms") / median_of(samples, small, "warm", "ttft_ms")
    reply_growth = median_of(samples, large, "warm", "reply_ms") / median_of(samples, small, "warm", "reply_ms")
    parts += [
        f"growth_ratio_{large}_vs_{small}={growth:.2f}",
        f"reply_growth_ratio_{large}_vs_{small}={reply_growth:.2f}",
    ]
    return " ".join(parts)


async def measure(notebooks: list[Notebook], rounds: int) -> list[Sample]:
    samples: list[Sample] = []
    for r in range(rounds):
        # Alternate the order, so no size always follows the same one.
        order = notebooks if r % 2 == 0 else notebooks[::-1]
        for nb in order:
            samples.append(await nb.react(r, cold=False))
            print(f"P9 round {r + 1} {sample_line(samples[-1])}", flush=True)
    for nb in notebooks:
        samples.append(await nb.react(rounds, cold=True))
        print(f"P9 cold    {sample_line(samples[-1])}", flush=True)
    return samples


def sample_line(s: Sample) -> str:
    return (
        f"{s.size:5d} cells {s.mode}: first text {s.ttft_ms:.0f} ms, reply {s.reply_ms:.0f} ms "
        f"({s.completion_tokens} tokens, {s.state}); prompt {s.prompt_tokens} tokens, {s.evaluated} evaluated"
        f"{', window cut during the reaction' if s.cut else ''}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000", help="executed cells per notebook, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="warm reactions per size (then one cold each)")
    parser.add_argument("--max-reply-tokens", type=int, default=MAX_REPLY_TOKENS)
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to write ('' for none)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ambient-p9-"))
    os.environ["AMBIENT_DB"] = str(tmp / "history.sqlite")  # nothing reaches the user's history
    history = History(tmp / "history.sqlite")
    try:
        backend = LlamaCppBackend()
        n_ctx = await backend.context_length()
        threads = backend._model().context_params.n_threads
        notebooks = [Notebook(history, tmp, backend, size, args.max_reply_tokens) for size in sizes]
        rng = random.Random(9)
        for nb in notebooks:
            await nb.fill(rng)
            print(f"P9 {nb.size} cells: {await nb.describe()}")
        print(
            f"P9 model={backend.path.name} n_ctx={n_ctx} threads={threads} sizes={sizes} rounds={args.rounds} "
            f"setup {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        samples = await measure(notebooks, args.rounds)
    finally:
        history.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(samples, sizes)
    if args.plot:
        plural = "s" * (threads != 1)
        title = f"Reaction to a failed cell, {backend.path.stem} (n_ctx {n_ctx}, {threads} thread{plural})"
        if plot(samples, sizes, Path(args.plot), title):
            print(f"P9 plot: {args.plot}")
    print(f"P9 total {time.perf_counter() - started:.0f}s")
    print(summary_line(samples, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
