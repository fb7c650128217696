"""P5: delivery latency of a streaming reply fanned out to 20 WebSocket tabs of one notebook.

A real Jupyter server (subprocess, ambient extension, model ``ollama:tiny:1b``) talks
to a fake Ollama in a third process that streams one piece every ``token_delay``
(0.02 s: 50 messages/s). Each piece carries the wall-clock time at which the fake
wrote it (``<i=K t=EPOCH>``); every tab stamps each frame as it reads it, so the
delivery latency of a frame to a tab is receive time - emit time (one machine, one
clock). It covers the whole path: Ollama NDJSON -> httpx -> Assistant -> Room
broadcast -> per-client queue -> WebSocket -> tab.

Twenty tabs follow ``fanout.ipynb``; one more tab follows ``solo.ipynb`` as the
baseline (the same stream to a single tab, through the same server). Rounds
alternate (fan-out, solo, solo, fan-out, ...) so that machine noise lands on both.
We check that every tab got every piece exactly once, in emit order, and that all 20
saw the same frames in the same order (tokens and stored events).

``--seconds`` is the total time streamed to the 20 tabs (RELIABILITY case 16 runs
``--seconds 60 --rounds 1``). Exit status 1 if a tab lost, duplicated or reordered
anything. The last line is the figure.

Usage: python benchmarks/p5_fanout.py [--seconds 24] [--rounds 4] [--tabs 20] [--baseline-seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _server import FakeOllamaProcess, JupyterServer, WsClient, install_deadline, percentile

FANOUT_NB = "fanout.ipynb"
SOLO_NB = "solo.ipynb"
PIECE = re.compile(r"<i=(\d+) t=([0-9.]+)>")


@dataclass
class Tab:
    """A tab that reads every frame as it comes and stamps it on arrival."""

    client: WsClient
    notebook: str
    frames: list[tuple[float, str]] = field(default_factory=list)
    replies: int = 0
    reply_seen: asyncio.Event = field(default_factory=asyncio.Event)
    closed: str | None = None

    async def run(self) -> None:
        conn = self.client.conn
        while True:
            text = await conn.read_message()
            now = time.time()
            if text is None:
                self.closed = f"closed by the server ({conn.close_code} {conn.close_reason})"
                self.reply_seen.set()
                return
            self.frames.append((now, text))
            if '"assistant_message"' in text:
                frame = json.loads(text)
                if frame.get("type") == "event" and frame["event"].get("kind") == "assistant_message":
                    self.replies += 1
                    self.reply_seen.set()


@dataclass
class Round:
    label: str
    pieces: int
    latencies_ms: list[float]
    emit_rate: float
    """Pieces per second as the fake wrote them."""
    problems: list[str]
    same_order: bool


async def stream(tabs: list[Tab], pieces: int) -> Round:
    """One chat on the tabs' notebook, whose reply is ``pieces`` stamped pieces; wait for it everywhere."""
    notebook = tabs[0].notebook
    start = [len(t.frames) for t in tabs]
    target = [t.replies + 1 for t in tabs]
    for t in tabs:
        t.reply_seen.clear()
    await tabs[0].client.send(
        {"type": "chat", "notebook": notebook, "text": f"stream {pieces}", "client_id": f"p5-{time.time_ns()}"}
    )
    deadline = time.monotonic() + pieces * 0.02 * 3 + 30
    for t, want in zip(tabs, target, strict=True):
        while t.replies < want and t.closed is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{notebook}: a tab did not get the reply in time")
            await asyncio.wait_for(t.reply_seen.wait(), left)
            t.reply_seen.clear()

    problems: list[str] = []
    latencies: list[float] = []
    orders: list[list[str]] = []
    emits: list[float] = []
    for n, (t, s) in enumerate(zip(tabs, start, strict=True)):
        if t.closed:
            problems.append(f"tab {n}: {t.closed}")
        order: list[str] = []
        indices: list[int] = []
        for received, text in t.frames[s:]:
            frame = json.loads(text)
            if frame["type"] == "token":
                match = PIECE.search(frame["text"])
                if match is None:
                    problems.append(f"tab {n}: unexpected token text {frame['text']!r}")
                    continue
                indices.append(int(match.group(1)))
                emitted = float(match.group(2))
                latencies.append((received - emitted) * 1000)
                if n == 0:
                    emits.append(emitted)
                order.append(frame["text"])
            elif frame["type"] == "event":
                order.append(f"event {frame['event']['seq']} {frame['event']['kind']}")
        if indices != list(range(pieces)):
            missing = sorted(set(range(pieces)) - set(indices))
            problems.append(
                f"tab {n}: got {len(indices)} of {pieces} pieces; missing {missing[:5]}, "
                f"in order: {indices == sorted(indices)}, unique: {len(set(indices)) == len(indices)}"
            )
        orders.append(order)
    same = all(o == orders[0] for o in orders)
    if not same:
        problems.append("the tabs saw different frames or a different order")
    rate = (len(emits) - 1) / (emits[-1] - emits[0]) if len(emits) > 1 and emits[-1] > emits[0] else float("nan")
    return Round(f"{len(tabs)} tab(s)", pieces, latencies, rate, problems, same)


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    return (
        f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms over {len(latencies)} deliveries"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=24.0, help="total seconds streamed to the tabs")
    parser.add_argument("--rounds", type=int, default=4, help="the fan-out time is split into this many replies")
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument(
        "--baseline-seconds", type=float, default=None, help="total seconds streamed to 1 tab (default: half)"
    )
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between pieces (0.02: 50/s)")
    parser.add_argument(
        "--server-config-py", default="", help="a jupyter_server_config.py for the server (to A/B a change)"
    )
    args = parser.parse_args()
    base_seconds = args.seconds / 2 if args.baseline_seconds is None else args.baseline_seconds
    rounds = max(1, args.rounds)
    fan_pieces = max(2, round(args.seconds / rounds / args.token_delay))
    solo_pieces = round(base_seconds / rounds / args.token_delay)
    install_deadline(60 + 3 * (args.seconds + base_seconds))

    started = time.monotonic()
    with (
        FakeOllamaProcess(args.token_delay) as fake,
        JupyterServer(
            env={"AMBIENT_MODEL": "ollama:tiny:1b", "OLLAMA_HOST": fake.url, "AMBIENT_AGENT": "off"},
            config_py=Path(args.server_config_py).read_text() if args.server_config_py else "",
        ) as server,
    ):
        print(f"P5 server {server.url} (pid {server.proc.pid if server.proc else '?'}), fake Ollama {fake.url}")
        tabs = [Tab(await WsClient.connect(server), FANOUT_NB) for _ in range(args.tabs)]
        solo = Tab(await WsClient.connect(server), SOLO_NB)
        for t in [*tabs, solo]:
            await t.client.hello(t.notebook)
        readers = [asyncio.ensure_future(t.run()) for t in [*tabs, solo]]
        try:
            # Warm-up (untimed): the backend is resolved and its context length fetched on first use.
            await stream(tabs, 10)
            await stream([solo], 10)
            fan: list[Round] = []
            base: list[Round] = []
            for r in range(rounds):
                order = ("fan", "solo") if r % 2 == 0 else ("solo", "fan")
                for side in order:
                    if side == "solo" and solo_pieces < 2:
                        continue
                    result = await stream(tabs, fan_pieces) if side == "fan" else await stream([solo], solo_pieces)
                    (fan if side == "fan" else base).append(result)
                    print(
                        f"P5 round {r + 1} {result.label}: {result.pieces} pieces at {result.emit_rate:.1f}/s; "
                        f"latency {summary(result.latencies_ms)}; problems: {result.problems or 'none'}",
                        flush=True,
                    )
        finally:
            for task in readers:
                task.cancel()
            for t in [*tabs, solo]:
                t.client.close()

    fan_lat = [x for r in fan for x in r.latencies_ms]
    base_lat = [x for r in base for x in r.latencies_ms]
    problems = [p for r in fan + base for p in r.problems]
    same_order = all(r.same_order for r in fan)
    frames = sum(r.pieces for r in fan)
    print(f"P5 {args.tabs} tabs, all rounds: {summary(fan_lat)}")
    print(f"P5 1 tab (baseline), all rounds: {summary(base_lat)}")
    rate = statistics.median(r.emit_rate for r in fan)
    print(f"P5 emit rate (median over rounds) {rate:.1f} pieces/s; total {time.monotonic() - started:.0f} s")
    base_p95 = percentile(base_lat, 95) if base_lat else float("nan")
    fan_p95 = percentile(fan_lat, 95)
    if problems:
        print("P5 PROBLEMS: " + "; ".join(problems[:10]))
    print(
        f"P5 ratio of p95s, {args.tabs} tabs / 1 tab: {fan_p95 / base_p95:.2f}; target p95 <= 50 ms: "
        f"{'met' if fan_p95 <= 50 else 'MISSED'}"
    )
    print(
        f"p95_ms={fan_p95:.1f} p50_ms={percentile(fan_lat, 50):.1f} max_ms={max(fan_lat):.1f} clients={args.tabs} "
        f"frames={frames} same_order={same_order and not problems} baseline_1tab_p95_ms={base_p95:.1f}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
