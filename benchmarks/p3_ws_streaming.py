"""P3: what the WebSocket path adds to a streamed reply of the real embedded model.

Two sides, same model (SmolLM2-135M through ``LlamaCppBackend``), same prompts:

* **server**: a real Jupyter server (subprocess, ambient extension,
  ``AMBIENT_MODEL=embedded``). A WebSocket client sends ``hello`` once, then per
  round a ``chat`` with a fresh ``client_id``; it times sending the chat -> the first
  ``token`` frame (ws TTFT), and the token frames' rate (first -> last frame).
* **backend**: ``create_backend("embedded")`` in this process, streamed directly
  (``Backend.stream`` with the same action schema, the text read out of the JSON by
  ``TextStream``, as the server's Assistant does) with the *identical* messages
  list: the server builds its prompt with ``context.Transcript`` from the history,
  so we do the same from the same history file (the round's question appended as
  the server will store it; after the round we rebuild the server's prompt from
  what it stored and check that it is the one we used). Timed from the call to the
  first piece of text, and first -> last piece.

Both sides keep their own model and KV cache, in different processes, and go
through the same sequence of prompts with the same seed, so their caches hold the
same tokens at each round (checked: the two replies are compared word for word).
Rounds alternate (server, backend, backend, server, ...), never concurrently (2 cores).

Both figures are medians over rounds of paired differences/ratios (each round's two
sides ran back to back, so they share the machine's load): the overhead is
ws TTFT - backend TTFT, the rate ratio is ws frames/s / backend pieces/s, each
rate over first -> last piece. Targets: <= 20 ms, >= 0.97.

Usage: python benchmarks/p3_ws_streaming.py [--rounds 16] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _server import JupyterServer, WsClient, install_deadline

from ambient_jupyter.actions import TextStream, action_schema
from ambient_jupyter.assistant import REPLY_RESERVE
from ambient_jupyter.backends import create_backend
from ambient_jupyter.backends.base import Message
from ambient_jupyter.context import Transcript
from ambient_jupyter.cpus import usable_cpus
from ambient_jupyter.history import History
from ambient_jupyter.server.paths import resolve_notebook

NB = "p3.ipynb"
QUESTIONS = [
    "How do I drop rows with missing values in a pandas DataFrame? Explain the options.",
    "What is the difference between a list and a tuple in Python? Give examples.",
    "Explain how to group a DataFrame by a column and compute the mean of each group.",
    "How can I read a CSV file with a custom separator and parse the dates?",
    "Describe three ways to speed up a slow loop over a numpy array.",
    "How do I plot a histogram of a column with matplotlib, with labelled axes?",
    "What does the random seed do, and why should an analysis set it?",
    "How do I merge two DataFrames on a key column, keeping all rows of the left one?",
]


@dataclass
class Gen:
    ttft_s: float
    stamps: list[float]
    text: str

    @property
    def gap_tok_s(self) -> float:
        """1 / median gap between pieces: insensitive to a burst of load from other processes."""
        gaps = [b - a for a, b in itertools.pairwise(self.stamps)]
        return 1 / statistics.median(gaps) if gaps and statistics.median(gaps) > 0 else float("nan")

    @property
    def tok_s(self) -> float:
        span = self.stamps[-1] - self.stamps[0] if len(self.stamps) > 1 else 0.0
        return (len(self.stamps) - 1) / span if span > 0 else float("nan")


async def server_round(client: WsClient, text: str, client_id: str) -> tuple[Gen, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    conn = client.conn
    stamps: list[float] = []
    pieces: list[str] = []
    t0 = time.perf_counter()
    await client.send({"type": "chat", "notebook": NB, "text": text, "client_id": client_id})
    deadline = loop.time() + 300
    while True:
        raw = await asyncio.wait_for(conn.read_message(), max(0.001, deadline - loop.time()))
        now = time.perf_counter()
        if raw is None:
            raise ConnectionError(f"the server closed the socket ({conn.close_code} {conn.close_reason})")
        frame = json.loads(raw)
        if frame["type"] == "token":
            stamps.append(now)
            pieces.append(frame["text"])
        elif frame["type"] == "event" and frame["event"].get("kind") == "assistant_message":
            reply = frame["event"]
            break
        elif frame["type"] == "error":
            raise RuntimeError(f"the server refused the chat: {frame['message']}")
    if not stamps:
        raise RuntimeError(f"no token frame before the reply: {reply}")
    streamed = "".join(pieces)
    if streamed != reply.get("text"):
        print(f"P3 note: streamed text differs from the stored reply ({len(streamed)} vs {len(reply['text'])} chars)")
    return Gen(stamps[0] - t0, stamps, streamed), reply


async def backend_round(backend: Any, messages: list[Message], max_tokens: int) -> Gen:
    """The backend called as the server's assistant calls it: the same action schema, and
    the text read out of the JSON as it streams (what a person sees is the text)."""
    schema = action_schema(("explain",), max_tokens=max_tokens)  # the server runs with AMBIENT_AGENT=off
    stream = TextStream()
    stamps: list[float] = []
    pieces: list[str] = []
    t0 = time.perf_counter()
    async for piece in backend.stream(messages, json_schema=schema, max_tokens=max_tokens):
        text = stream.feed(piece)
        if text:
            stamps.append(time.perf_counter())
            pieces.append(text)
    return Gen(stamps[0] - t0, stamps, "".join(pieces))


def predicted(transcript: Transcript, history: History, notebook_id: str, text: str) -> list[Message]:
    """The prompt the server will build for ``text``: the history so far, then the question."""
    sim = dataclasses.replace(transcript, entries=list(transcript.entries))
    sim.extend(history.read(notebook_id, sim.last_seq))
    sim.extend([{"kind": "user_message", "text": text, "seq": sim.last_seq + 1}])
    return sim.messages()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128, help="max_reply_tokens of the server, and ours")
    parser.add_argument(
        "--server-config-py",
        default="",
        help="a jupyter_server_config.py for the server, also run here first (to A/B a change to the backend)",
    )
    args = parser.parse_args()
    install_deadline(300)
    config_py = Path(args.server_config_py).read_text() if args.server_config_py else ""
    if config_py:
        exec(compile(config_py, args.server_config_py, "exec"), {"__name__": "server_config"})

    # The server gives an in-process model every CPU but one (AmbientExtension.model_threads);
    # the direct side gets the same, so both decode alike.
    threads = str(max(1, usable_cpus() - 1))
    os.environ["AMBIENT_THREADS"] = threads
    backend = create_backend("embedded")
    budget = await backend.context_length() - max(REPLY_RESERVE, args.max_tokens)
    transcript = Transcript(budget=budget, count_tokens=backend.count_tokens)
    started = time.monotonic()
    env = {"AMBIENT_MODEL": "embedded", "AMBIENT_AGENT": "off", "AMBIENT_THREADS": threads}
    with JupyterServer(
        env=env, args=[f"--AmbientSettings.max_reply_tokens={args.max_tokens}"], config_py=config_py
    ) as server:
        notebook_id = resolve_notebook(str(server.root), NB).notebook_id
        history = History(server.db)
        client: WsClient | None = None
        try:
            client = await WsClient.connect(server)
            await client.hello(NB)
            results: dict[str, list[Gen]] = {"server": [], "backend": []}
            identical: list[bool] = []
            for r in range(args.rounds + 1):  # round 0: warm-up (model loads), not counted
                text = QUESTIONS[r % len(QUESTIONS)]
                messages = predicted(transcript, history, notebook_id, text)
                order = ("server", "backend") if r % 2 == 0 else ("backend", "server")
                got: dict[str, Gen] = {}
                for side in order:
                    if side == "server":
                        got[side], reply = await server_round(client, text, f"p3-{r}-{time.time_ns()}")
                    else:
                        got[side] = await backend_round(backend, messages, args.max_tokens)
                # The prompt the server used, rebuilt from what it stored: must be ours.
                transcript.extend(history.read(notebook_id, transcript.last_seq, limit=None))
                question_seq = int(reply["reply_to"])
                server_view = dataclasses.replace(
                    transcript, entries=[e for e in transcript.entries if e.seq <= question_seq]
                )
                if server_view.messages() != messages:
                    print(f"P3 PROBLEM: round {r}: the server's prompt is not the one the backend got")
                    return 1
                same = got["server"].text == got["backend"].text
                s, b = got["server"], got["backend"]
                print(
                    f"P3 round {r}{' (warm-up)' if r == 0 else ''} [{order[0]} first] prompt {len(messages)} msgs: "
                    f"ws ttft {s.ttft_s * 1000:.1f} ms, {len(s.stamps)} frames at {s.tok_s:.1f}/s | backend ttft "
                    f"{b.ttft_s * 1000:.1f} ms, {len(b.stamps)} pieces at {b.tok_s:.1f}/s | "
                    f"diff {(s.ttft_s - b.ttft_s) * 1000:+.1f} ms, same text: {same}",
                    flush=True,
                )
                if r == 0:
                    continue
                identical.append(same)
                for side in results:
                    results[side].append(got[side])
        finally:
            if client is not None:
                client.close()
            history.close()

    srv, bk = results["server"], results["backend"]
    diffs = [(s.ttft_s - b.ttft_s) * 1000 for s, b in zip(srv, bk, strict=True)]
    ratios = [s.tok_s / b.tok_s for s, b in zip(srv, bk, strict=True)]
    gap_ratios = [s.gap_tok_s / b.gap_tok_s for s, b in zip(srv, bk, strict=True)]
    ws_ttft = statistics.median(g.ttft_s for g in srv) * 1000
    bk_ttft = statistics.median(g.ttft_s for g in bk) * 1000
    ws_rate = statistics.median(g.tok_s for g in srv)
    bk_rate = statistics.median(g.tok_s for g in bk)
    overhead = statistics.median(diffs)
    ratio = statistics.median(ratios)
    print(f"P3 identical replies server vs backend: {sum(identical)}/{len(identical)} rounds")
    print(f"P3 per-round ttft differences (ms), sorted: {', '.join(f'{d:.1f}' for d in sorted(diffs))}")
    print(f"P3 per-round rate ratios, sorted: {', '.join(f'{x:.3f}' for x in sorted(ratios))}")
    print(
        f"P3 cross-checks: difference of the medians {ws_ttft - bk_ttft:.1f} ms; ratio of the median rates "
        f"{ws_rate / bk_rate:.3f}; 1/median-gap rate ratio (median over rounds) {statistics.median(gap_ratios):.3f}"
    )
    print(
        f"P3 targets: overhead {overhead:.1f} ms (<= 20: {'met' if overhead <= 20 else 'MISSED'}), rate ratio "
        f"{ratio:.3f} (>= 0.97: {'met' if ratio >= 0.97 else 'MISSED'}); total {time.monotonic() - started:.0f} s"
    )
    print(
        f"ttft_overhead_ms={overhead:.1f} token_rate_ratio={ratio:.3f} ws_ttft_ms={ws_ttft:.1f} "
        f"backend_ttft_ms={bk_ttft:.1f} ws_tok_s={ws_rate:.1f} backend_tok_s={bk_rate:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
