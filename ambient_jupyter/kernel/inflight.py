"""The cell this kernel is running, kept where the kernel after it can read it.

A kernel cannot record its own death. The server (through its restarter) and
``ambient-jupyter run`` record it from outside; a frontend with neither of them (VS
Code, ``jupyter console``, a server without this extension) leaves no witness but
the next kernel. So each kernel keeps the cell it is running in a small file mapped
into its memory: writing it is a memory copy (no system call, nothing waits on the
disk), and what was written stays in the operating system's page cache when the
process is killed. The next kernel that loads the extension on the same history
reads the files of processes that are gone: one that still names a cell is a death
during that cell, recorded once, under the key the server and the runner use too.

A shutdown the person asked for (a restart, even of a busy kernel, which ends in a
kill) is not a death: ipykernel sets ``exit_now`` when it handles the request, and
the cell is forgotten then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
import time
from pathlib import Path
from typing import Any

from ..events import KernelDied, death_key
from ..history import History

__all__ = ["InFlight", "record_deaths"]

log = logging.getLogger("ambient_jupyter.kernel")

SIZE = 64 * 1024
"""Bytes per kernel: the header and the cell (a longer cell is kept up to this)."""
_MAGIC = b"AJC1"
_HEADER = struct.Struct("<4sId")
"""Magic, length of the cell's JSON (0: no cell running), the process's start time."""


def folder_for(history_path: Path) -> Path:
    """Where the kernels of one history file keep their cells: next to it, private."""
    return history_path.with_name(history_path.name + ".running")


def _started(pid: int) -> float | None:
    """When process ``pid`` started, or None if there is none."""
    try:
        import psutil  # type: ignore[import-untyped]  # ipykernel's own dependency

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 (gone, or not ours to see: either way not a live kernel of ours)
        return None


class InFlight:
    """This kernel's page: ``running(code)`` as a cell starts, ``idle()`` when it ends."""

    def __init__(self, folder: Path, connection_file: str) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}.cell"
        self._connection = os.path.basename(connection_file)
        started = _started(os.getpid()) or time.time()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._map[: _HEADER.size] = _HEADER.pack(_MAGIC, 0, started)

    def running(self, notebook: str, code: str) -> None:
        body = json.dumps([notebook, code, self._connection]).encode()
        if len(body) > SIZE - _HEADER.size:
            body = json.dumps([notebook, code[: (SIZE - _HEADER.size) // 8], self._connection]).encode()
        # The cell first, its length last: a kernel killed between the two leaves a
        # length that still describes what is there (the previous cell's, or none).
        self._map[_HEADER.size : _HEADER.size + len(body)] = body
        self._map[4:8] = struct.pack("<I", len(body))

    def idle(self) -> None:
        self._map[4:8] = b"\0\0\0\0"

    def close(self) -> None:
        """A clean end: nothing for the next kernel to report."""
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _read(path: Path) -> tuple[int, float, list[Any] | None] | None:
    """(pid, start time, [notebook, code, connection file] or None when idle); None if unreadable."""
    try:
        pid = int(path.stem)
        data = path.read_bytes()
        magic, length, started = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            return None
        cell = json.loads(data[_HEADER.size : _HEADER.size + length]) if length else None
    except (ValueError, OSError, struct.error):
        return None
    return pid, started, cell


def record_deaths(history: History, folder: Path) -> int:
    """Record the death of every kernel of this history that died during a cell; returns how many.

    The files of gone processes are removed either way: a process that ended idle, or
    one whose file cannot be read, has nothing to report.
    """
    if not folder.is_dir():
        return 0
    recorded = 0
    for path in folder.glob("*.cell"):
        read = _read(path)
        if read is not None:
            pid, started, cell = read
            alive = _started(pid)
            if alive is not None and abs(alive - started) < 1.0:
                continue  # a kernel that is running now
            if cell is not None:
                notebook, code, connection = (str(part) for part in cell)
                event = KernelDied(code=code, by="kernel").model_dump(exclude={"seq", "notebook"})
                try:
                    history.append(notebook, event, dedup_key=death_key(connection, pid))
                    recorded += 1
                except Exception:
                    log.warning("ambient-jupyter could not record the death of kernel %d", pid, exc_info=True)
                    continue  # keep the file: a later kernel may manage it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return recorded
