"""P12: constrained decoding at the speed of free decoding (issue 15's "P11").

The requests are P8's (10 notebooks × 10 kinds of request, built exactly as the
assistant builds them: a real History, ``context.Transcript``, ``actions.action_schema``),
sent to the shipped ``LlamaCppBackend()`` (SmolLM2-135M-Instruct). For each request:

* **constrained**: ``json_schema=schema``, as every turn is sent (llguidance's masks);
* **free**: the same prompt with no schema, stopped after the same number of tokens
  the constrained reply had, so both decode equally long outputs at the same
  positions in the context;
* **gbnf** (for reference): the same schema through llama.cpp's own grammar sampler,
  what the backend used before and still falls back to.

The order of the three rotates from request to request. Decode speed is tokens after
the first over the time from the first token to the last (``backend.usage``), summed
over all requests per side, so prompt evaluation and cache warmth do not enter it.
Every constrained output must also be schema-valid (``jsonschema``, no repair), as in P8.
The figure (last line) is the constrained/free tokens-per-second ratio; target ≥ 0.9.

Usage: python benchmarks/p12_constrained_speed.py [--requests 30] [--max-tokens 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from p8_constrained_actions import NOTEBOOKS, REQUESTS, is_schema_valid

from ambient_jupyter.actions import action_schema
from ambient_jupyter.backends import llamacpp
from ambient_jupyter.backends.llamacpp import LlamaCppBackend
from ambient_jupyter.context import Transcript
from ambient_jupyter.history import History

SIDES = ("constrained", "free", "gbnf")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=1024, help="the turn budget (the default max_reply_tokens)")
    args = parser.parse_args()

    backend = LlamaCppBackend(seed=7)
    budget = await backend.context_length() - 512
    tokens = dict.fromkeys(SIDES, 0)
    seconds = dict.fromkeys(SIDES, 0.0)
    valid: list[bool] = []
    engines: set[str | None] = set()
    guide_for = llamacpp.guide_for
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "p12.sqlite")
        for nb, events in NOTEBOOKS.items():
            for event in events:
                history.append(nb, event)
        jobs = [(nb, req) for req in REQUESTS for nb in NOTEBOOKS][: args.requests]
        for i, (nb, (question, allowed)) in enumerate(jobs):
            transcript = Transcript(budget=budget, count_tokens=backend.count_tokens)
            transcript.extend(history.read(nb))
            schema = action_schema(allowed, transcript.plugins, transcript.cells, max_tokens=args.max_tokens)
            messages = transcript.messages([{"role": "user", "content": question}])
            # The constrained reply first: its length bounds the other two.
            raw = await backend.complete(messages, json_schema=schema, max_tokens=args.max_tokens)
            engines.add(backend.constrained_by)
            valid.append(is_schema_valid(raw, schema))
            length = backend.usage.completion_tokens
            runs = {"constrained": (backend.usage.completion_tokens, backend.usage.generation_s)}
            order = ("free", "gbnf") if i % 2 == 0 else ("gbnf", "free")
            for side in order:
                if side == "gbnf":
                    llamacpp.guide_for = lambda _llm, _schema: None  # type: ignore[assignment]
                try:
                    await backend.complete(
                        messages, json_schema=schema if side == "gbnf" else None, max_tokens=max(2, length)
                    )
                finally:
                    llamacpp.guide_for = guide_for
                runs[side] = (backend.usage.completion_tokens, backend.usage.generation_s)
            for side, (n, s) in runs.items():
                if n > 1 and s:
                    tokens[side] += n - 1
                    seconds[side] += s
            if (i + 1) % 10 == 0:
                rates = {side: tokens[side] / seconds[side] for side in SIDES if seconds[side]}
                print(
                    f"P12 {i + 1}/{len(jobs)}: "
                    + ", ".join(f"{side} {rate:.1f} tok/s" for side, rate in rates.items())
                    + f", valid {sum(valid)}/{len(valid)} ({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
        history.close()
    rate = {side: tokens[side] / seconds[side] for side in SIDES}
    print(f"P12 engines used for the constrained side: {sorted(map(str, engines))}")
    print(
        f"P12 decode tok/s: constrained {rate['constrained']:.1f} ({tokens['constrained']} tokens), "
        f"free {rate['free']:.1f} ({tokens['free']}), llama.cpp grammar {rate['gbnf']:.1f} ({tokens['gbnf']}); "
        f"constrained outputs schema-valid {sum(valid)}/{len(valid)}"
    )
    ratio = rate["constrained"] / rate["free"]
    print(
        f"constrained_free_ratio={ratio:.3f} gbnf_free_ratio={rate['gbnf'] / rate['free']:.3f} "
        f"valid={sum(valid) / len(valid):.2%} requests={len(valid)}"
    )
    return 0 if ratio >= 0.9 and all(valid) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
