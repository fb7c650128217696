"""P7: latency of ``GET ambient/api/status`` while the embedded model writes a long reply,
vs while the server is idle.

A real Jupyter server (subprocess, ambient extension, ``AMBIENT_MODEL=embedded``,
``max_reply_tokens`` raised so replies are long). A prober process sends
``GET ambient/api/status`` (token header, one keep-alive connection, as a browser
tab would) every 5-15 ms and times each request from sending it to having read the
whole response. Windows alternate, idle and busy: in a busy window a WebSocket
client keeps a chat streaming the whole time (a new chat, in a new notebook so
that its prompt stays short, as soon as a reply is stored), and sampling starts
only once tokens flow; at the end of the window the reply is stopped (``stop``
frame) and the next idle window starts once the server reports ``idle``.
Alternating windows put the machine's other load on both sides.

The figure is p95(busy) / p95(idle) over all samples of each kind (target <= 1.2).

Usage: python benchmarks/p7_status_under_load.py [--pairs 8] [--window 5] [--max-tokens 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _server import TOKEN, JupyterServer, WsClient, install_deadline, percentile

NB = "p7/chat-0.ipynb"
PROMPTS = [
    "Write a long, detailed tutorial on cleaning a pandas DataFrame, with many numbered steps and code.",
    "Explain in great detail, step by step, how to build and evaluate a linear regression model in Python.",
    "Write a thorough guide to plotting with matplotlib: line plots, histograms, scatter plots, styling.",
]


class Prober:
    """Times ``GET /ambient/api/status`` while a window label is set.

    The requests come from a separate process (this script with ``--probe PORT``), so
    that reading the driver's token frames in this process never delays them. It
    prints one ``label ms`` line per sample; a thread here collects them.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._label: str | None = None
        self.samples: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def label(self) -> str | None:
        return self._label

    @label.setter
    def label(self, value: str | None) -> None:
        self._label = value
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(f"{value or '-'}\n")
        self._proc.stdin.flush()

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--probe", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._collect, name="p7-collect", daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            label, _, value = line.rstrip("\n").partition(" ")
            if label == "!":
                self.errors.append(value)
            else:
                self.samples.setdefault(label, []).append(float(value))

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the prober exits at EOF
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)


def probe_main(port: int) -> int:
    """The prober process: GET status every 5-15 ms while stdin's last line is a label."""
    label: list[str | None] = [None]
    done = threading.Event()

    def read_labels() -> None:
        for line in sys.stdin:
            text = line.strip()
            label[0] = None if text == "-" else text
        done.set()

    threading.Thread(target=read_labels, daemon=True).start()
    headers = {"Authorization": f"token {TOKEN}"}
    rng = random.Random(7)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not done.is_set():
        current = label[0]
        if current is None:
            done.wait(0.005)
            continue
        try:
            t0 = time.perf_counter()
            conn.request("GET", "/ambient/api/status", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            elapsed = time.perf_counter() - t0
            if resp.status != 200 or b'"version"' not in body:
                print(f"! HTTP {resp.status} {body[:100]!r}", flush=True)
            elif label[0] == current:  # the window did not change under us
                print(f"{current} {elapsed * 1000:.4f}", flush=True)
        except (OSError, http.client.HTTPException) as exc:
            print(f"! {type(exc).__name__}: {exc}", flush=True)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        done.wait(rng.uniform(0.005, 0.015))
    conn.close()
    return 0


class Driver:
    """The WebSocket tab that keeps the model busy."""

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.state = "idle"
        self.tokens = 0
        self.replies = 0
        self.incomplete = 0
        self.chats = 0
        self.notebook = NB
        self.changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.client.read(timeout=3600)
            kind = frame.get("type")
            if kind == "token":
                self.tokens += 1
                if self.state != "streaming":
                    self.state = "streaming"
                    self.changed.set()
            elif kind == "status":
                self.state = frame["state"]
                self.changed.set()
            elif kind == "event" and frame["event"].get("kind") == "assistant_message":
                self.replies += 1
                self.incomplete += frame["event"].get("state") != "complete"
                self.changed.set()
            elif kind == "error":
                raise RuntimeError(f"the server refused a frame: {frame['message']}")

    async def wait(self, predicate: Any, timeout: float = 120.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if self._task.done():
                self._task.result()
            self.changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("the server did not reach the expected state in time")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))

    async def chat(self) -> None:
        """A new chat, in a notebook of its own: a short prompt and a long reply, every time
        (in one notebook, the prompt would grow with every reply until the window is cut)."""
        self.chats += 1
        self.notebook = f"p7/chat-{self.chats}.ipynb"
        text = PROMPTS[self.chats % len(PROMPTS)]
        await self.client.send({"type": "hello", "notebook": self.notebook, "after_seq": 0})
        await self.client.send(
            {"type": "chat", "notebook": self.notebook, "text": text, "client_id": f"p7-{time.time_ns()}"}
        )

    async def stop(self) -> None:
        await self.client.send({"type": "stop", "notebook": self.notebook})

    def close(self) -> None:
        self._task.cancel()
        self.client.close()


async def busy_window(driver: Driver, prober: Prober, label: str, seconds: float) -> tuple[int, int]:
    """Keep a reply streaming for ``seconds`` while the prober samples; returns (chats, tokens)."""
    loop = asyncio.get_running_loop()
    chats = 1
    replies = driver.replies
    await driver.chat()
    await driver.wait(lambda: driver.state == "streaming")
    tokens0 = driver.tokens
    prober.label = label
    end = loop.time() + seconds
    while loop.time() < end:
        if driver.replies > replies:  # the reply ended: start the next one at once
            replies = driver.replies
            await driver.chat()
            chats += 1
        driver.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(driver.changed.wait(), max(0.001, min(0.05, end - loop.time())))
    prober.label = None
    tokens = driver.tokens - tokens0
    # Stop the reply; again if a chat sent just before was not streaming yet (stop ignores it).
    stopped = 0
    while not (driver.state == "idle" and driver.replies >= replies + 1):
        if stopped > 240:
            raise TimeoutError("the reply did not stop")
        await driver.stop()
        stopped += 1
        with contextlib.suppress(TimeoutError):
            await driver.wait(lambda: driver.state == "idle" and driver.replies >= replies + 1, timeout=0.5)
    return chats, tokens


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="idle/busy window pairs")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--max-tokens", type=int, default=1000, help="the server's max_reply_tokens")
    parser.add_argument(
        "--server-config-py", default="", help="a jupyter_server_config.py for the server (to A/B a change)"
    )
    args = parser.parse_args()
    config_py = Path(args.server_config_py).read_text() if args.server_config_py else ""
    install_deadline(120 + args.pairs * args.window * 4)

    started = time.monotonic()
    with JupyterServer(
        env={"AMBIENT_MODEL": "embedded", "AMBIENT_AGENT": "off"},
        args=[f"--AmbientSettings.max_reply_tokens={args.max_tokens}"],
        config_py=config_py,
    ) as server:
        driver = Driver(await WsClient.connect(server))
        prober = Prober(server.port)
        try:
            # Warm-up (untimed): the server loads the model on the first chat.
            # (Replies are JSON actions now, often shorter than a window: busy windows
            # chain chats, so only the first reply is awaited here.)
            await driver.chat()
            await driver.wait(lambda: driver.replies >= 1 and driver.state == "idle", timeout=180)
            prober.start()
            per_pair: list[tuple[float, float]] = []
            for p in range(args.pairs):
                order = ("idle", "busy") if p % 2 == 0 else ("busy", "idle")
                for side in order:
                    label = f"{side}-{p}"
                    if side == "idle":
                        await asyncio.sleep(0.3)  # let the stopped reply's storage settle
                        prober.label = label
                        await asyncio.sleep(args.window)
                        prober.label = None
                        detail = ""
                    else:
                        chats, tokens = await busy_window(driver, prober, label, args.window)
                        detail = f" ({chats} chat(s), {tokens} tokens, {tokens / args.window:.0f} tok/s)"
                    got = prober.samples.get(label, [])
                    print(
                        f"P7 window {label}: {len(got)} samples, p50 {statistics.median(got):.2f} ms, "
                        f"p95 {percentile(got, 95):.2f} ms, max {max(got):.2f} ms{detail}",
                        flush=True,
                    )
                idle = prober.samples.get(f"idle-{p}", [])
                busy = prober.samples.get(f"busy-{p}", [])
                per_pair.append((percentile(idle, 95), percentile(busy, 95)))
        finally:
            prober.stop()
            driver.close()

    idle_all = [x for k, v in prober.samples.items() if k.startswith("idle") for x in v]
    busy_all = [x for k, v in prober.samples.items() if k.startswith("busy") for x in v]
    idle_p95, busy_p95 = percentile(idle_all, 95), percentile(busy_all, 95)
    pair_ratios = sorted(b / i for i, b in per_pair)
    print(
        f"P7 idle: {len(idle_all)} samples, p50 {statistics.median(idle_all):.2f} ms, p95 {idle_p95:.2f} ms, "
        f"p99 {percentile(idle_all, 99):.2f} ms"
    )
    print(
        f"P7 busy: {len(busy_all)} samples, p50 {statistics.median(busy_all):.2f} ms, p95 {busy_p95:.2f} ms, "
        f"p99 {percentile(busy_all, 99):.2f} ms"
    )
    print(f"P7 per-pair p95 ratios, sorted: {', '.join(f'{r:.2f}' for r in pair_ratios)}")
    if prober.errors:
        print(f"P7 PROBLEMS: {len(prober.errors)} failed requests, e.g. {prober.errors[:3]}")
    ratio = busy_p95 / idle_p95
    print(
        f"P7 p50 ratio {statistics.median(busy_all) / statistics.median(idle_all):.2f}; target p95 ratio <= 1.2: "
        f"{'met' if ratio <= 1.2 else 'MISSED'}; total {time.monotonic() - started:.0f} s"
    )
    print(
        f"status_p95_ratio={ratio:.2f} busy_p95_ms={busy_p95:.2f} idle_p95_ms={idle_p95:.2f} "
        f"samples={len(idle_all) + len(busy_all)}"
    )
    return 1 if prober.errors else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        sys.exit(probe_main(int(sys.argv[2])))
    sys.exit(asyncio.run(main()))
