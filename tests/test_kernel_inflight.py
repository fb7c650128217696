"""A kernel death with no server and no runner to see it (VS Code, ``jupyter console``):
the next kernel that loads the extension finds the cell the dead one was running.

Real ipykernels started by jupyter_client, the product's own history file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import events_of, make_notebook
from fakes.ollama_server import FakeOllama
from jupyter_client.manager import KernelManager

from ambient_jupyter.history import History
from ambient_jupyter.kernel import inflight
from ambient_jupyter.kernel.inflight import InFlight, folder_for, record_deaths
from ambient_jupyter.redact import redact_text

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

    def __init__(self, notebook: Path, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager()
        self.km.start_kernel(env={**os.environ, **(QUIET if env is None else env), "AMBIENT_NOTEBOOK": str(notebook)})
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

    def start(notebook: Path, env: dict[str, str] | None = None) -> Kernel:
        started.append(Kernel(notebook, env))
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


def _pages(ambient_db: Path) -> list[int]:
    """The process ids of the pages next to the history (named machine-pid-start.cell)."""
    return sorted(int(p.name.split("-")[1]) for p in folder_for(ambient_db).glob("*.cell"))


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
    assert dead_pid in _pages(ambient_db)
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


def test_a_restart_while_the_kernels_own_host_answers_is_not_a_death(
    tmp_path: Path, history: History, ambient_db: Path, kernels: Any
) -> None:
    """The in-kernel host's last chance to store its reply comes after the running cell is
    let go: a kill during that reply's wind-down is still the restart the person asked for."""
    fake = FakeOllama({"tiny:1b": 8192}).start()
    try:
        fake.reply = ['{"action": "explain", "text": "', *[f"w{i} " for i in range(400)], '"}']
        fake.token_delay = 0.05  # 20 s: still streaming when the restart comes
        nb = make_notebook(tmp_path / "answering.ipynb", [])
        first = kernels(nb, {"AMBIENT_MODEL": "ollama:tiny:1b", "OLLAMA_HOST": fake.url})
        first.run("%load_ext ambient_jupyter")
        first.run("1 / 0")  # the kernel's own host reacts, once the kernel is idle
        deadline = time.monotonic() + 60
        while not fake.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.chat_requests(), "the failure got no reaction"
        first.kc.execute(STUBBORN)
        time.sleep(1.0)  # the cell is running, and the reaction still streams
        first.km.shutdown_wait_time = 0.5  # the kill comes while the host still winds down
        first.km.restart_kernel(now=False)
        first.kc.wait_for_ready(timeout=60)
        first.run("%load_ext ambient_jupyter")
        first.run("%unload_ext ambient_jupyter")
    finally:
        fake.stop()
    kinds = [e["kind"] for e in history.read(str(nb))]
    assert "kernel_died" not in kinds, kinds
    assert kinds[0] == "cell_executed"


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


# -- the folder and its pages are not trusted ----------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _page(folder: Path, pid: int, body: bytes, *, length: int | None = None, size: int = inflight.SIZE) -> Path:
    """A page as a kernel of process ``pid`` would leave it (or not quite)."""
    header = inflight._HEADER.pack(inflight._MAGIC, len(body) if length is None else length, 1.0)
    path = folder / f"{inflight.MACHINE}-{pid}-{time.time_ns()}.cell"
    path.write_bytes((header + body).ljust(size, b"\0")[:size])
    return path


def test_hostile_pages_are_dropped_and_the_good_one_is_still_read(
    tmp_path: Path, history: History, ambient_db: Path
) -> None:
    """Another local user (a shared AMBIENT_DB folder) or a bug can leave anything there:
    a page must be exactly what a kernel writes, and one bad page stops no other."""
    known = str(tmp_path / "known.ipynb")
    history.append(known, {"kind": "cell_executed", "code": "a = 1", "status": "ok"})
    folder = folder_for(ambient_db)
    folder.mkdir(mode=0o700)
    dead = _dead_pid()
    hostile = [
        _page(folder, dead, b'["only", "two"]'),
        _page(folder, dead, b"[" * 50_000 + b"]" * 50_000),
        _page(folder, dead, b"42"),
        _page(folder, dead, b'"abc"'),
        _page(folder, dead, b"\xff\xfe not json"),
        _page(folder, dead, b"[]", length=inflight.SIZE * 2),  # a length past the page
        _page(folder, dead, b'["' + str(tmp_path / "never.ipynb").encode() + b'", "x = 1", "k.json"]'),
        _page(folder, dead, b'["x", "y", "z"]', size=inflight.SIZE * 4),  # not a page's size
    ]
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (folder / f"{inflight.MACHINE}-{dead}-1.cell").symlink_to(outside)
    os.mkfifo(folder / f"{inflight.MACHINE}-{dead}-2.cell")  # reading it would block for ever
    good = _page(folder, dead, json.dumps([known, "big = load()", "kernel-abc.json"]).encode())
    other_machine = folder / f"0123456789ab-{dead}-3.cell"
    other_machine.write_bytes(good.read_bytes())

    assert record_deaths(history, folder) == 1
    (died,) = [e for e in history.read(known) if e["kind"] == "kernel_died"]
    assert (died["code"], died["by"]) == ("big = load()", "kernel")
    assert [p for p, *_ in history.notebooks()] == [known]  # nothing recorded elsewhere
    assert outside.read_text() == "keep me"
    for path in [*hostile, good]:
        assert not path.exists(), path.name  # a gone process's page is removed, whatever it held
    assert other_machine.exists()  # another machine's kernels are not this one's to judge
    assert record_deaths(history, folder) == 0  # and nothing twice


def test_a_page_of_a_live_process_is_left_alone_even_unreadable(
    tmp_path: Path, history: History, ambient_db: Path
) -> None:
    folder = folder_for(ambient_db)
    folder.mkdir(mode=0o700)
    being_made = folder / f"{inflight.MACHINE}-{os.getpid()}-{time.time_ns()}.cell"
    being_made.write_bytes(b"\0" * inflight.SIZE)  # created, header not written yet
    assert record_deaths(history, folder) == 0
    assert being_made.exists()


def test_a_folder_that_is_not_ours_is_not_used(tmp_path: Path, history: History, ambient_db: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder_for(ambient_db).symlink_to(elsewhere)
    with pytest.raises(PermissionError):
        InFlight(folder_for(ambient_db), "kernel-1.json")
    assert record_deaths(history, folder_for(ambient_db)) == 0
    assert list(elsewhere.iterdir()) == []


def test_any_cell_fits_its_page_and_redaction_covers_it(tmp_path: Path, ambient_db: Path) -> None:
    key = "sk-" + "A1b2C3d4" * 5
    page = InFlight(folder_for(ambient_db), "kernel-1.json", redact=redact_text)
    try:
        assert os.stat(folder_for(ambient_db)).st_mode & 0o777 == 0o700
        assert os.stat(page.path).st_mode & 0o777 == 0o600
        for code in ("\U0001f600" * 100_000, "x" * 1_000_000, '"\\' * 50_000, f"api_key = '{key}'"):
            page.running("nb.ipynb", code)
            started, cell = inflight._read(page.path) or (0, None)
            assert (cell is not None and cell[0] == "nb.ipynb" and code.startswith(cell[1][:10])) or key in code
        assert key not in page.path.read_bytes().decode("utf-8", "replace")
        page.idle()
        assert inflight._read(page.path) == (started, None)
    finally:
        page.close()
    assert not page.path.exists()
