"""A kernel death with no server and no runner to see it (VS Code, ``jupyter console``):
the next kernel that loads the extension finds the cell the dead one was running.

Real ipykernels started by jupyter_client, the product's own history file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import events_of, make_notebook
from jupyter_client.manager import KernelManager

from ambient_jupyter.history import History
from ambient_jupyter.kernel.inflight import folder_for

pytestmark = pytest.mark.timeout(180)

QUIET = {"AMBIENT_QUIET": "1"}
STUBBORN = """import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    try:
        time.sleep(0.1)
    except BaseException:
        pass"""
KILLER = "import os, signal\nprint('about to die')\nos.kill(os.getpid(), signal.SIGKILL)"


class Kernel:
    """One real kernel whose frontend names ``notebook`` (as JupyterLab would)."""

    def __init__(self, notebook: Path) -> None:
        self.km = KernelManager()
        self.km.start_kernel(env={**os.environ, **QUIET, "AMBIENT_NOTEBOOK": str(notebook)})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str) -> dict[str, Any]:
        return self.kc.execute_interactive(code, timeout=60, output_hook=lambda _msg: None)

    def stop(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernels() -> Iterator[Any]:
    started: list[Kernel] = []

    def start(notebook: Path) -> Kernel:
        started.append(Kernel(notebook))
        return started[-1]

    yield start
    for kernel in started:
        kernel.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambient_jupyter", *args], capture_output=True, text=True, timeout=300)


def _wait_dead(km: KernelManager) -> None:
    for _ in range(200):
        if not km.is_alive():
            return
        time.sleep(0.05)
    raise AssertionError("the kernel did not die")


def _pages(ambient_db: Path) -> list[str]:
    return sorted(p.name for p in folder_for(ambient_db).glob("*.cell"))


def test_the_next_kernel_records_a_death_nobody_saw(
    tmp_path: Path, history: History, ambient_db: Path, kernels: Any
) -> None:
    nb = make_notebook(tmp_path / "alone.ipynb", [])
    first = kernels(nb)
    first.run("%load_ext ambient_jupyter")
    first.run("a = 1")
    dead_pid = first.km.provisioner.pid
    first.kc.execute(KILLER)
    _wait_dead(first.km)
    assert f"{dead_pid}.cell" in _pages(ambient_db)
    assert [e["kind"] for e in history.read(str(nb))] == ["cell_executed"]  # nobody saw it

    second = kernels(nb)
    second.run("%load_ext ambient_jupyter")
    second.run("b = 2")
    second.run("%unload_ext ambient_jupyter")  # commits, and removes its own page
    events = history.read(str(nb))
    assert [e["kind"] for e in events] == ["cell_executed", "kernel_died", "cell_executed"]
    died = events[1]
    assert (died["code"], died["by"]) == (KILLER, "kernel")
    assert _pages(ambient_db) == []

    from ambient_jupyter.context import Transcript

    transcript = Transcript(budget=4000, count_tokens=len)
    transcript.extend(events)
    assert "the kernel died while this cell ran" in str(transcript.messages())


def test_a_shutdown_asked_for_during_a_cell_is_not_a_death(
    tmp_path: Path, history: History, ambient_db: Path, kernels: Any
) -> None:
    """A restart of a busy kernel ends in a kill when the cell does not stop: the person
    asked for it, so the next kernel records nothing."""
    nb = make_notebook(tmp_path / "restarted.ipynb", [])
    first = kernels(nb)
    first.run("%load_ext ambient_jupyter")
    # A cell that only a kill can stop (ipykernel ends a plain loop by itself on shutdown).
    first.kc.execute(STUBBORN)
    time.sleep(1.0)  # the cell is running
    first.km.shutdown_wait_time = 2.0
    first.km.restart_kernel(now=False)  # shutdown request, then a kill: the loop never ends
    first.kc.wait_for_ready(timeout=60)
    first.run("%load_ext ambient_jupyter")
    first.run("c = 3")
    first.run("%unload_ext ambient_jupyter")
    assert [e["kind"] for e in history.read(str(nb))] == ["cell_executed"]


def test_a_death_the_runner_recorded_is_not_recorded_again(tmp_path: Path, history: History, ambient_db: Path) -> None:
    """The runner and the next kernel both know the death: it is stored once, under one key."""
    nb = make_notebook(tmp_path / "dies.ipynb", ["a = 1", KILLER])
    assert cli("run", str(nb), "--quiet", "--no-progress").returncode == 1
    assert len(events_of(history, nb, "kernel_died")) == 1
    assert _pages(ambient_db), "the dead kernel left no page"
    later = make_notebook(tmp_path / "later.ipynb", ["b = 2"])
    assert cli("run", str(later), "--quiet", "--no-progress").returncode == 0
    (died,) = events_of(history, nb, "kernel_died")
    assert died["by"] == "runner"
    assert events_of(history, later, "kernel_died") == []
    assert _pages(ambient_db) == []
