"""A long history opened in the sidebar: time to the first rendered event and to the newest.

A real JupyterLab (subprocess, the ambient extension as installed) serves one notebook
whose history was seeded with ``--events`` executed-cell events before it started,
and a second notebook with ``--small`` events as the reference. Debian's Chromium
opens each (Playwright), with the Ambient panel showing. A script in the page marks,
on its own clock, when the panel's WebSocket opened, and then at each animation frame
whether the panel's log holds a card yet, and the card of the newest event: the first
frame with any card, and the first with the newest one. (A fresh view asks for the
newest 500 events; older ones are read a page at a time, on request.) Nothing is timed
across processes.

The last line is the figure: ``first_ms`` and ``last_ms`` (the newest card) for the
long history, from the socket opening, and the same for the short one. No target: the
issue asks for the numbers.

Usage: python benchmarks/replay_long.py [--events 100000] [--small 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from browser_lab import LabServer, Sidebar, dismiss_notifications, launch_chromium  # noqa: E402
from conftest import make_notebook  # noqa: E402

from ambient_jupyter.history import History  # noqa: E402

# Installed before the page's own scripts: watch the panel's socket and its log.
MARKS = """
(() => {
  const marks = (window.__replay = { open: null, first: null, last: null, want: 0 });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      if (String(url).includes('/ambient/ws')) {
        this.addEventListener('open', () => { if (marks.open === null) marks.open = performance.now(); });
      }
    }
  };
  const frame = now => {
    const log = document.querySelector('#jp-ambient-sidebar .jp-Ambient-log');
    if (log && marks.first === null && log.querySelector('[data-seq]')) marks.first = now;
    if (log && log.querySelector(`[data-seq="${marks.want}"]`)) { marks.last = now; return; }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
})();
"""


def seed(db: Path, notebook: Path, count: int) -> None:
    with History(db) as history:
        batch: list[tuple[dict[str, object], None]] = []
        for i in range(1, count + 1):
            code = f"df_{i % 97} = load(part={i})\nsummary_{i % 13} = df_{i % 97}.describe()"
            batch.append(({"kind": "cell_executed", "code": code, "status": "ok", "execution_count": i}, None))
            if len(batch) == 5000:
                history.append_many(str(notebook), batch)
                batch = []
        if batch:
            history.append_many(str(notebook), batch)


def measure(browser: object, lab: LabServer, name: str, count: int) -> tuple[float, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.add_init_script(MARKS.replace("want: 0", f"want: {count}"))
        page.goto(lab.url(f"lab/tree/{name}"), wait_until="domcontentloaded", timeout=120_000)
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.wait_for(timeout=120_000)
        dismiss_notifications(page)
        Sidebar(page).open()
        page.wait_for_function("window.__replay.last !== null", timeout=900_000, polling=500)
        marks = page.evaluate("window.__replay")
        return marks["first"] - marks["open"], marks["last"] - marks["open"]
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events in the long history")
    parser.add_argument("--small", type=int, default=1_000, help="events in the short one (the reference)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ambient-replay-") as tmp:
        lab = LabServer(Path(tmp), {"AMBIENT_MODEL": "ollama:tiny:1b", "OLLAMA_HOST": "http://127.0.0.1:9"})
        lab.root.mkdir(parents=True)
        for name in ("long.ipynb", "short.ipynb"):
            make_notebook(lab.root / name, ["x = 1"])
        started = time.monotonic()
        seed(lab.db, lab.root / "long.ipynb", args.events)
        seed(lab.db, lab.root / "short.ipynb", args.small)
        print(f"seeded {args.events:,} + {args.small:,} events in {time.monotonic() - started:.1f} s", flush=True)
        with lab, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                small_first, small_last = measure(browser, lab, "short.ipynb", args.small)
                print(f"short ({args.small:,}): first {small_first:.0f} ms, newest {small_last:.0f} ms", flush=True)
                first, last = measure(browser, lab, "long.ipynb", args.events)
                print(f"long ({args.events:,}): first {first:.0f} ms, newest {last:.0f} ms", flush=True)
            finally:
                browser.close()
    print(
        f"replay_long events={args.events} first_ms={first:.0f} last_ms={last:.0f} "
        f"small_events={args.small} small_first_ms={small_first:.0f} small_last_ms={small_last:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
