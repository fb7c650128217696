"""Approval round trip through a real server, in a short notebook and in a very long one.

A real Jupyter server (subprocess, ambient extension) serves two notebooks whose
histories were seeded straight into its SQLite file before it started: one holds
about ``--small`` events, the other about ``--large``. Each holds, spread through
it, the ``insert_cell`` proposals the benchmark will approve (code and sha256 as
the assistant stores them) and, at its very start, a ``settings_changed`` to
``ask``, so the mode in force is the oldest event of its kind.

One tab per notebook (a WebSocket that may run code). A round trip is: the tab sends
a ``decide`` frame (approve, with the proposal's sha256); the ``action_decided``
event frame arrives; the ``run`` frame arrives at that same tab. Rounds alternate
between the notebooks (small, large, large, small, ...) so the machine's drift
lands on both. Before the change this path read the whole history several times
per approval (the proposal, the agent mode, the approval check), so its cost grew
with the notebook; the figure is how much longer the same approval takes in the
long notebook.

The last line is the figure: ``ratio`` is p50 (long) / p50 (short), target <= 1.2.

Usage: python benchmarks/approval_roundtrip.py [--small 100] [--large 100000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from _server import ROOT, JupyterServer, WsClient, install_deadline, percentile

# Runnable from a checkout without installing the package; appended, so that the
# history is seeded by the same ambient_jupyter the server imports (PYTHONPATH included).
sys.path.append(str(ROOT))

from ambient_jupyter.actions import code_sha256
from ambient_jupyter.history import History

SMALL_NB = "short.ipynb"
LARGE_NB = "long.ipynb"
BATCH = 5000

def _cell(i: int) -> dict[str, object]:
    """An ordinary executed cell, about the size of a short real one."""
    return {
        "kind": "cell_executed",
        "cell_id": f"cell-{i % 400}",
        "execution_count": i,
        "code": f"df{i % 7} = load({i})\ndf{i % 7}.describe()",
        "status": "ok",
        "duration_ms": 3.2,
        "outputs": [{"output_type": "execute_result", "data": {"text/plain": f"count {i}\nmean 0.5\nstd 0.29"}}],
    }


def _proposal(action_id: str, n: int) -> dict[str, object]:
    code = f"fixed_{n} = df0.dropna()\nfixed_{n}.head()"
    return {
        "kind": "action_proposed",
        "action_id": action_id,
        "action": "insert_cell",
        "code": code,
        "sha256": code_sha256(code),
        "args": {"after": 1},
        "text": "Drop the missing rows first.",
        "model": "bench",
        "role": "watcher",
    }


def seed(db: Path, notebook: str, total: int, actions: int, tag: str) -> dict[str, str]:
    """Append ~``total`` events to ``notebook`` with ``actions`` proposals spread evenly; their id -> sha256."""
    every = max(1, total // (actions + 1))
    events: list[dict[str, object]] = [{"kind": "settings_changed", "agent": "ask", "by": "sidebar"}]
    proposals: dict[str, str] = {}
    n = 0
    while len(events) < total or len(proposals) < actions:
        if len(events) % every == 0 and len(proposals) < actions:
            action_id = f"{tag}-{len(proposals)}"
            proposal = _proposal(action_id, len(proposals))
            proposals[action_id] = str(proposal["sha256"])
            events.append(proposal)
        else:
            events.append(_cell(n))
            n += 1
    with History(db) as history:
        for start in range(0, len(events), BATCH):
            history.append_many(notebook, [(e, None) for e in events[start : start + BATCH]])
    return proposals


async def round_trip(tab: WsClient, notebook: str, action_id: str, sha256: str) -> tuple[float, float]:
    """Seconds from the ``decide`` frame to its ``action_decided`` event frame, and to the ``run`` frame."""
    started = time.perf_counter()
    await tab.send(
        {"type": "decide", "notebook": notebook, "action_id": action_id, "decision": "approve", "sha256": sha256}
    )
    decided = run = None
    while decided is None or run is None:
        frame = await tab.until(
            lambda f: f.get("action_id") == action_id or f.get("event", {}).get("action_id") == action_id
        )
        now = time.perf_counter() - started
        if frame["type"] == "event" and frame["event"].get("kind") == "action_decided":
            decided = now
        elif frame["type"] == "run":
            run = now
    return decided, run


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100, help="events in the short notebook")
    parser.add_argument("--large", type=int, default=100_000, help="events in the long notebook")
    parser.add_argument("--rounds", type=int, default=30, help="approvals per notebook")
    args = parser.parse_args()
    install_deadline(900)

    server = JupyterServer(
        env={"AMBIENT_MODEL": "ollama:tiny:1b", "OLLAMA_HOST": "http://127.0.0.1:9", "AMBIENT_AGENT": "ask"},
    )
    try:
        # Seeded before the server opens anything, as a history written by earlier sessions.
        t0 = time.monotonic()
        ids = {
            SMALL_NB: seed(server.db, str(server.root / SMALL_NB), args.small, args.rounds + 1, "s"),
            LARGE_NB: seed(server.db, str(server.root / LARGE_NB), args.large, args.rounds + 1, "l"),
        }
        with History(server.db) as history:
            last = {nb: history.last_seq(str(server.root / nb)) for nb in ids}
    except BaseException:
        server.stop()
        raise
    print(f"seeded {last[SMALL_NB]:,} and {last[LARGE_NB]:,} events in {time.monotonic() - t0:.1f} s", flush=True)
    with server:
        tabs = {nb: await WsClient.connect(server) for nb in ids}
        try:
            for nb, tab in tabs.items():
                # After the last seq: the tab has seen the history, so nothing is replayed.
                await tab.hello(nb, last[nb])
            pending = {nb: list(actions.items()) for nb, actions in ids.items()}
            for nb, tab in tabs.items():  # warm-up, untimed: the room, its engine, the first reads
                action_id, sha256 = pending[nb].pop()
                await round_trip(tab, nb, action_id, sha256)
            times: dict[str, list[tuple[float, float]]] = {nb: [] for nb in ids}
            for r in range(args.rounds):
                order = (SMALL_NB, LARGE_NB) if r % 2 == 0 else (LARGE_NB, SMALL_NB)
                for nb in order:
                    action_id, sha256 = pending[nb].pop(0)
                    times[nb].append(await round_trip(tabs[nb], nb, action_id, sha256))
        finally:
            for tab in tabs.values():
                tab.close()

    p50: dict[str, float] = {}
    for nb, label in ((SMALL_NB, "short"), (LARGE_NB, "long")):
        decided = [d * 1000 for d, _ in times[nb]]
        ran = [r * 1000 for _, r in times[nb]]
        p50[nb] = percentile(ran, 50)
        print(
            f"{label} ({last[nb]:,} events): decide->action_decided p50 {percentile(decided, 50):.1f} ms; "
            f"decide->run p50 {p50[nb]:.1f} ms, p95 {percentile(ran, 95):.1f} ms, max {max(ran):.1f} ms "
            f"({len(ran)} approvals)",
            flush=True,
        )
    ratio = p50[LARGE_NB] / p50[SMALL_NB]
    print(
        f"approval_roundtrip ratio={ratio:.2f} small_p50_ms={p50[SMALL_NB]:.1f} large_p50_ms={p50[LARGE_NB]:.1f} "
        f"small_events={last[SMALL_NB]} large_events={last[LARGE_NB]} rounds={args.rounds} (target <=1.2)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
