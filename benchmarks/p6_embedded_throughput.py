"""P6: decode throughput of our LlamaCppBackend vs raw llama-cpp-python, same GGUF.

Ours streams through its async interface (worker thread -> asyncio queue ->
``Backend.stream`` stall guard); raw is ``llama_cpp.Llama.create_completion(...,
stream=True)`` on its own ``Llama`` instance (so the two never share a KV cache).
Both get the same prompt token ids (rendered once with the GGUF's chat template),
the same sampling settings (temperature, repeat_penalty, seed, stop strings) and
the same ``max_tokens`` and the same decode/prompt threads (``--raw-defaults``
gives raw llama-cpp-python its own defaults instead); both KV caches are cleared before every generation, so
both do the same prefill, which is excluded anyway: tokens/s is measured from the
first streamed token to the last one, as the consumer sees them, over
``tokens - 1`` intervals. Rounds alternate (ABBA) and the figure is the ratio of
the medians.

Usage: python benchmarks/p6_embedded_throughput.py [--rounds 7] [--max-tokens 128] [--raw-defaults]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import llama_cpp

from ambient_jupyter.backends.base import Message
from ambient_jupyter.backends.llamacpp import LlamaCppBackend, embedded_model_path

MESSAGES: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant who writes long, thorough answers."},
    {
        "role": "user",
        "content": "Write a detailed, step-by-step tutorial on cleaning a pandas DataFrame, "
        "with at least ten numbered steps and a code example for each step.",
    },
]


@dataclass
class Gen:
    tokens: int
    """Tokens as counted by the side itself (usage.completion_tokens / chunks)."""
    pieces: int
    """Non-empty text pieces the consumer received."""
    ttft_s: float
    span_s: float
    """First piece to last piece, at the consumer."""
    text: str
    gaps: list[float]
    """Seconds between consecutive pieces."""

    @property
    def gap_tok_s(self) -> float:
        """1 / median inter-token gap: robust to a burst of load from other processes."""
        return 1 / statistics.median(self.gaps) if self.gaps else float("nan")

    @property
    def tok_s(self) -> float:
        return (self.pieces - 1) / self.span_s if self.span_s > 0 else float("nan")


async def run_ours(backend: LlamaCppBackend, max_tokens: int) -> Gen:
    backend._model().reset()  # clear the KV cache: same prefill work as raw
    pieces: list[str] = []
    stamps: list[float] = []
    t0 = time.perf_counter()
    async for piece in backend.stream(MESSAGES, max_tokens=max_tokens):
        stamps.append(time.perf_counter())
        pieces.append(piece)
    return _gen(backend.usage.completion_tokens, pieces, stamps, t0)


def _gen(tokens: int, pieces: list[str], stamps: list[float], t0: float) -> Gen:
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return Gen(tokens, len(pieces), stamps[0] - t0, stamps[-1] - stamps[0], "".join(pieces), gaps)


def run_raw(llm: Any, prompt: list[int], stop: list[str], backend: LlamaCppBackend, max_tokens: int) -> Gen:
    llm.reset()
    chunks = 0
    pieces: list[str] = []
    stamps: list[float] = []
    t0 = time.perf_counter()
    for chunk in llm.create_completion(
        prompt,
        max_tokens=max_tokens,
        temperature=backend.temperature,
        repeat_penalty=1.1,
        stop=stop,
        stream=True,
        seed=backend.seed,
    ):
        chunks += 1
        text = chunk["choices"][0]["text"]
        if text:
            stamps.append(time.perf_counter())
            pieces.append(text)
    return _gen(chunks, pieces, stamps, t0)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--raw-defaults",
        action="store_true",
        help="raw llama-cpp-python with its own thread defaults (half the CPUs) instead of ours",
    )
    args = parser.parse_args()

    backend = LlamaCppBackend()
    await backend.context_length()  # loads the model on its compute thread, as a host does
    ours_llm = backend._model()
    prompt, stop = backend.render(MESSAGES)
    # By default both sides use the same threads, so the figure is what our streaming
    # path costs; --raw-defaults compares with llama-cpp-python as it comes.
    threads = {} if args.raw_defaults else {"n_threads": backend.n_threads, "n_threads_batch": backend.n_threads}
    raw = llama_cpp.Llama(model_path=str(embedded_model_path()), n_ctx=backend.n_ctx, verbose=False, **threads)
    print(f"P6 model={backend.path.name} n_ctx={backend.n_ctx} prompt_tokens={len(prompt)} stop={stop}")
    print(
        f"P6 threads: ours {ours_llm.context_params.n_threads}/{ours_llm.context_params.n_threads_batch}, "
        f"raw {raw.context_params.n_threads}/{raw.context_params.n_threads_batch} (decode/batch); "
        f"temperature={backend.temperature} seed={backend.seed} max_tokens={args.max_tokens}"
    )

    # Warm-up (untimed): first decodes page the weights in and repack them.
    await run_ours(backend, 16)
    run_raw(raw, prompt, stop, backend, 16)

    results: dict[str, list[Gen]] = {"ours": [], "raw": []}
    for r in range(args.rounds):
        order = ("ours", "raw") if r % 2 == 0 else ("raw", "ours")
        for side in order:
            if side == "ours":
                gen = await run_ours(backend, args.max_tokens)
                extra = f" usage.generation_s={backend.usage.generation_s:.3f}"
            else:
                gen = run_raw(raw, prompt, stop, backend, args.max_tokens)  # plain blocking use
                extra = ""
            results[side].append(gen)
            label = "usage.completion_tokens" if side == "ours" else "chunks"
            print(
                f"P6 round {r + 1} {side:4s} {label}={gen.tokens} text_pieces={gen.pieces} "
                f"ttft={gen.ttft_s:.3f}s first->last={gen.span_s:.3f}s {gen.tok_s:.1f} tok/s "
                f"(1/median gap {gen.gap_tok_s:.1f}){extra}",
                flush=True,
            )

    same = all(o.text == w.text for o, w in zip(results["ours"], results["raw"], strict=True))
    print(f"P6 identical text ours vs raw in every round: {same}; sample: {results['ours'][0].text[:70]!r}")
    ours_tok_s = statistics.median(g.tok_s for g in results["ours"])
    raw_tok_s = statistics.median(g.tok_s for g in results["raw"])
    ttft_ours = statistics.median(g.ttft_s for g in results["ours"])
    ttft_raw = statistics.median(g.ttft_s for g in results["raw"])
    print(f"P6 median time to first token (prefill {len(prompt)} tokens): ours {ttft_ours:.3f}s, raw {ttft_raw:.3f}s")
    gap_ours = statistics.median(g.gap_tok_s for g in results["ours"])
    gap_raw = statistics.median(g.gap_tok_s for g in results["raw"])
    print(
        f"P6 robust check, 1/median inter-token gap: ours {gap_ours:.1f}, raw {gap_raw:.1f} tok/s "
        f"(ratio {gap_ours / gap_raw:.3f})"
    )
    ratio = ours_tok_s / raw_tok_s
    print(f"P6 throughput_ratio={ratio:.3f} (target >=0.95) ours_tok_s={ours_tok_s:.1f} raw_tok_s={raw_tok_s:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
