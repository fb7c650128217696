"""P2: prompt tokens the embedded model evaluates to react to event #500 vs event #5.

A synthetic but realistic stream of 500 events (short cells with short outputs,
widget changes, a failure every so often) is appended to a real History, and an
Assistant on the embedded model (``LlamaCppBackend()``, default n_ctx) is driven
as an ambient host drives it: after each new event ``assistant.prefill()`` (the
watcher keeps the KV cache warm while the user is idle); events #5 and #500 are
failed cells, to which the host reacts at once with ``assistant.react(event)``.

Right after each reaction we read ``backend.usage`` (``prompt_evaluated``: prompt
tokens not served from the KV cache; ``prompt_tokens``: the whole prompt) and
cross-check with llama.cpp's own counter of prompt tokens decoded
(``llama_perf_context().n_p_eval``). The figure is evaluated@500 / evaluated@5.

We also report what each idle prefill cost (the window cuts show up there), and,
for every event, whether a reaction at that point would itself have had to cut
the window (and so re-read about half the context while the user waits).

Usage: python benchmarks/p2_reaction_cost.py [--events 500]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import llama_cpp

from ambient_jupyter.assistant import Assistant, _failure_note
from ambient_jupyter.backends.llamacpp import LlamaCppBackend
from ambient_jupyter.context import MESSAGE_OVERHEAD, Transcript
from ambient_jupyter.history import History

REACT_AT = (5, 500)

# -- a synthetic notebook session ----------------------------------------------

# Short cells (SmolLM2 spends a token per digit, so numbers are kept small): most
# notebook cells are one-liners with a short result or none. (code, outputs, weight)
_OK_CELLS: list[tuple[str, list[dict[str, Any]], int]] = [
    ("x = {k}", [], 4),
    ("threshold = {k}", [], 3),
    ("import numpy as np", [], 1),
    ("y = f(x)", [], 3),
    ("n += 1", [], 2),
    ("df = load({k})", [], 2),
    ("df.shape", [{"type": "result", "text": "({n}, 8)"}], 3),
    ("df.a.mean()", [{"type": "result", "text": "{k}.5"}], 3),
    ("print(len(rows))", [{"type": "stream", "name": "stdout", "text": "{n}\n", "chars": 3}], 2),
    ("model.fit(X, y)", [{"type": "result", "text": "LinearRegression()"}], 1),
    ("plt.plot(x, y)", [{"type": "image", "mime": "image/png", "bytes": 18213}], 1),
    ("df.head(2)", [{"type": "result", "text": "   a  b\n0  {k}  3\n1  2  {k}"}], 1),
]
_WEIGHTS = [w for _, _, w in _OK_CELLS]

_ERRORS: list[tuple[str, str, str]] = [
    ("df.groupby('regoin').sum()", "KeyError", "'regoin'"),
    ("dff.describe()", "NameError", "name 'dff' is not defined"),
    ("int(row['count'])", "ValueError", "invalid literal for int() with base 10: 'n/a'"),
]

_WIDGETS: list[tuple[str, str, Any, Any]] = [
    ("IntSlider", "threshold", 3, 4),
    ("Dropdown", "column", "revenue", "units"),
    ("FloatSlider", "alpha", 0.5, 0.6),
]


def failed_cell(i: int, count: int, which: int) -> dict[str, Any]:
    code, ename, evalue = _ERRORS[which % len(_ERRORS)]
    return {
        "kind": "cell_executed",
        "code": code,
        "execution_count": count,
        "status": "error",
        "duration_ms": 4,
        "outputs": [],
        "error": {
            "ename": ename,
            "evalue": evalue,
            "traceback": [
                f"Cell In[{count}], line 1",
                f"----> 1 {code}",
                f"{ename}: {evalue}",
            ],
        },
    }


def make_event(i: int, count: int, rng: random.Random) -> dict[str, Any]:
    """The i-th event (1-based); ``count`` is the next execution count."""
    if i in REACT_AT:
        return failed_cell(i, count, 0)  # the same failure at #5 and #500: comparable sizes
    if i % 5 == 4:  # slider drags make widget events common
        cls, label, old, new = _WIDGETS[rng.randrange(len(_WIDGETS))]
        return {
            "kind": "widget_changed",
            "widget": f"{rng.getrandbits(64):016x}",
            "widget_class": cls,
            "description": label,
            "trait": "value",
            "old": old,
            "new": new,
        }
    if i % 37 == 0:
        return failed_cell(i, count, rng.randrange(len(_ERRORS)))
    return ok_cell(count, rng)


def ok_cell(count: int, rng: random.Random) -> dict[str, Any]:
    """A short cell that ran fine, drawn from the weighted mix (P9 builds its notebooks from it too)."""
    code, outputs, _ = rng.choices(_OK_CELLS, weights=_WEIGHTS)[0]
    fill = {"n": rng.randrange(10, 99), "k": rng.randrange(1, 9)}
    return {
        "kind": "cell_executed",
        "code": code.format(**fill),
        "execution_count": count,
        "status": "ok",
        "duration_ms": rng.randrange(1, 9),
        "outputs": [{k: (v.format(**fill) if isinstance(v, str) else v) for k, v in o.items()} for o in outputs],
        "error": None,
    }


# -- measuring ------------------------------------------------------------------


def reaction_instruction(event: dict[str, Any]) -> str:
    """The tail ``Assistant.react`` adds (its own words, so the same size)."""
    return str(_failure_note(event)["content"])


def watcher(assistant: Assistant) -> Transcript | None:
    """The watcher's transcript, once the assistant has built it."""
    return assistant._transcripts.get("watcher")


def would_cut(transcript: Transcript, new: list[dict[str, Any]], event: dict[str, Any]) -> tuple[bool, bool]:
    """Would (a prefill, a reaction) right now move the window? Checked on copies: no side effects."""
    result = []
    for tail in ([], [{"role": "user", "content": reaction_instruction(event)}]):
        sim = dataclasses.replace(transcript, entries=list(transcript.entries))
        sim.extend(new)
        before = sim.start
        sim.messages(tail)  # type: ignore[arg-type]
        result.append(sim.start != before)
    return result[0], result[1]


class Counter:
    """llama.cpp's own count of tokens decoded in prompt batches (n_p_eval) and singly (n_eval)."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.ctx = backend._model()._ctx.ctx

    def read(self) -> tuple[int, int]:
        perf = llama_cpp.llama_perf_context(self.ctx)
        return int(perf.n_p_eval), int(perf.n_eval)


@dataclasses.dataclass
class Reaction:
    at: int
    seq: int
    evaluated: int
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float | None
    n_p_eval: int
    cut: bool
    reply: str


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    global REACT_AT
    REACT_AT = (5, args.events)

    tmp = Path(tempfile.mkdtemp(prefix="ambient-p2-"))
    os.environ["AMBIENT_DB"] = str(tmp / "history.sqlite")
    history = History(tmp / "history.sqlite")
    notebook = str(tmp / "analysis.ipynb")
    backend = LlamaCppBackend()
    assistant = Assistant(history, notebook, backend, cooldown=0, max_reply_tokens=96)
    counter = Counter(backend)
    n_ctx = await backend.context_length()
    print(f"P2 model={backend.path.name} n_ctx={n_ctx} threads={backend._model().context_params.n_threads}")
    print(f"P2 history={history.path} events={args.events} react_at={REACT_AT}")

    rng = random.Random(500)
    count = 0
    reactions: dict[int, Reaction] = {}
    prefill_eval: list[int] = []
    prefill_s: list[float] = []
    react_cuts: list[int] = []
    """Events at which a reaction (not the idle prefill) would have paid for a window cut."""
    overflow: list[int] = []
    """Events whose own arrival overflows the window (a prefill then cuts, idle)."""
    kinds: dict[str, int] = {}
    started = time.perf_counter()

    for i in range(1, args.events + 1):
        event = make_event(i, count + 1, rng)
        if event["kind"] == "cell_executed":
            count += 1
        kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
        stored = await asyncio.to_thread(history.append, notebook, event)

        transcript = watcher(assistant)
        if transcript is not None:
            new = await asyncio.to_thread(history.read, notebook, transcript.last_seq)
            prefill_cut, reaction_cut = would_cut(transcript, new, stored)
            if prefill_cut:
                overflow.append(i)
            if reaction_cut:
                react_cuts.append(i)

        before = counter.read()
        cuts_before = transcript.cuts if transcript is not None else 0
        t0 = time.perf_counter()
        if i in REACT_AT:
            reply = await assistant.react(stored)
            if reply is None:
                print(f"P2 PROBLEM: the assistant did not react to event #{i}")
                return 1
            after = counter.read()
            usage = backend.usage
            assert watcher(assistant) is not None
            reactions[i] = Reaction(
                at=i,
                seq=stored["seq"],
                evaluated=usage.prompt_evaluated,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                first_token_s=usage.first_token_s,
                n_p_eval=after[0] - before[0],
                cut=watcher(assistant).cuts != cuts_before,
                reply=reply.text if reply.state == "complete" else f"[{reply.state}] {reply.text}",
            )
            r = reactions[i]
            print(
                f"P2 react @{i} (seq {r.seq}): prompt_evaluated={r.evaluated} prompt_tokens={r.prompt_tokens} "
                f"llama.cpp n_p_eval={r.n_p_eval} completion_tokens={r.completion_tokens} "
                f"first_token={r.first_token_s:.3f}s window_cut_during_reaction={r.cut} "
                f"reply={r.reply[:60]!r}",
                flush=True,
            )
        else:
            await assistant.prefill()
            after = counter.read()
            prefill_eval.append((after[0] - before[0]) + (after[1] - before[1]))
            prefill_s.append(time.perf_counter() - t0)
        if i % 50 == 0:
            assert watcher(assistant) is not None
            print(
                f"P2 ... event {i}: cuts={watcher(assistant).cuts} window_start={watcher(assistant).start} "
                f"prefill tokens so far={sum(prefill_eval)} elapsed={time.perf_counter() - started:.0f}s",
                flush=True,
            )

    transcript = watcher(assistant)
    assert transcript is not None
    first, last = reactions[REACT_AT[0]], reactions[REACT_AT[1]]
    eval_rate = sum(prefill_eval) / sum(prefill_s) if sum(prefill_s) else float("nan")
    big = [x for x in prefill_eval if x > 400]
    small = [x for x in prefill_eval if x <= 400]
    window = transcript.entries[transcript.start :]
    digest = transcript.summary()
    estimated = transcript._system_tokens + sum(e.tokens for e in window)
    estimated += backend.count_tokens(digest) + MESSAGE_OVERHEAD if digest else 0
    actual, _ = backend.render(transcript.messages(), generation_prompt=False)
    print(f"P2 event kinds: {kinds}; history last seq {history.last_seq(notebook)}")
    print(
        f"P2 idle prefills: {len(prefill_eval)} calls, {sum(prefill_eval)} tokens evaluated in "
        f"{sum(prefill_s):.1f}s ({eval_rate:.0f} tok/s); per call median {statistics.median(prefill_eval)}, "
        f"max {max(prefill_eval)}; {len(big)} re-reads after a cut (mean {statistics.mean(big) if big else 0:.0f} "
        f"tokens), the rest mean {statistics.mean(small):.1f} tokens"
    )
    print(
        f"P2 window: cuts={transcript.cuts}, {len(window)} of {len(transcript.entries)} entries kept, "
        f"budget={transcript.budget}; estimated {estimated} tokens vs rendered {len(actual)} "
        f"(+{len(actual) - estimated} for {len(window) + 1 + bool(digest)} messages; "
        f"MESSAGE_OVERHEAD={MESSAGE_OVERHEAD})"
    )
    tail_only = [i for i in react_cuts if i not in overflow]
    share = len(react_cuts) / max(1, args.events - 1)
    print(
        f"P2 a reaction would itself have cut the window (re-reading ~half the context while the "
        f"user waits) at {len(react_cuts)} of {args.events - 1} events ({share:.1%}): "
        f"{len(react_cuts) - len(tail_only)} where the event itself overflows, {len(tail_only)} only because "
        f"of the reaction's instruction tail (prefill checks without it); at {react_cuts[:16]}"
    )
    cold_s = last.prompt_tokens / eval_rate if eval_rate == eval_rate and eval_rate > 0 else float("nan")
    print(
        f"P2 at #{last.at}: evaluated {last.evaluated} of {last.prompt_tokens} prompt tokens "
        f"({last.evaluated / last.prompt_tokens:.1%}); a cold prompt would evaluate all "
        f"{last.prompt_tokens} (~{cold_s:.1f}s at {eval_rate:.0f} tok/s vs first token in "
        f"{last.first_token_s:.2f}s)"
    )
    print(f"P2 llama.cpp n_p_eval during the reactions: @{first.at} {first.n_p_eval}, @{last.at} {last.n_p_eval}")
    print(f"P2 total {time.perf_counter() - started:.0f}s")
    ratio = last.evaluated / first.evaluated
    print(
        f"P2 eval_ratio={ratio:.2f} (target <=1.5) eval_at_5={first.evaluated} "
        f"eval_at_500={last.evaluated} prompt_at_500={last.prompt_tokens} cuts={transcript.cuts}"
    )
    history.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
